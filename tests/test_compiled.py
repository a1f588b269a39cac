"""The compiled-model cache: one compilation per model structure, in memory and on disk.

A cache hit must be invisible: the same log density and gradient, bit for bit, and the same
seeded draws as a fresh compilation of the model; anything that changes the compiled
functions (structure, data shape, library versions) must miss; a damaged disk entry is
rebuilt.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import nutpie
import polars as pl
import pytest

from bayesmer import compiled, glm, glmer, warm
from bayesmer.draws import fixed
from bayesmer.pymc_model import build_model
from bayesmer.sampling import CALLBACKS_FILE, compile_model, exact_arithmetic

ROOT = Path(__file__).resolve().parents[1]
FORMULA = "survived ~ sex + (1|pclass)"
FIT = {"progressbar": False}  # 4 chains x 1000 draws: the 3 classes need them to converge


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty disk cache in a temporary folder, and an empty memory cache."""
    monkeypatch.setenv(compiled.CACHE_ENV, str(tmp_path))
    compiled.clear_memory()
    yield tmp_path
    compiled.clear_memory()


def _model(data, formula=FORMULA, **kwargs):
    return build_model(glmer(formula, data, family="binomial", **kwargs).spec)


def _resample(data: pl.DataFrame, seed: int) -> pl.DataFrame:
    return data.sample(fraction=1.0, with_replacement=True, seed=seed)


def _logp(compiled_model, x: np.ndarray) -> tuple[int, float, np.ndarray]:
    """The log density callback nutpie calls, at ``x``: return code, value, gradient."""
    grad = np.zeros_like(x)
    logp = np.zeros(1)
    code = compiled_model.compiled_logp_func.ctypes(
        ctypes.c_uint64(len(x)),
        x.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        grad.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        logp.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
        ctypes.c_void_p(compiled_model.user_data.ctypes.data),
    )
    return code, float(logp[0]), grad


def test_cache_hit_has_the_log_density_and_draws_of_a_fresh_compile(titanic, cache):
    first = compiled.sampler(_model(titanic))
    other = _model(_resample(titanic, 1))
    hit = compiled.sampler(other)
    assert (first.source, hit.source) == ("compiled", "memory")
    assert hit.compilation is first.compilation
    _assert_same_density_and_draws(hit, compile_model(other))


def test_refit_on_new_data_of_the_same_shape_does_not_compile(titanic, cache, monkeypatch):
    model = glmer(FORMULA, titanic, family="binomial")
    model.fit(random_seed=1, **FIT)

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    monkeypatch.setattr(compiled, "compile_model", no_compiling)
    refit = glmer(FORMULA, _resample(titanic, 2), family="binomial")
    refit.fit(random_seed=1, **FIT)
    assert refit._sampler.source == "memory"
    assert refit.timings["compile"] < 0.1
    # the draws are the new data's: the cached compilation is bound to them
    assert not np.array_equal(fixed(model.posterior), fixed(refit.posterior))
    again = glmer(FORMULA, titanic, family="binomial")
    again.fit(random_seed=1, **FIT)
    np.testing.assert_array_equal(fixed(model.posterior), fixed(again.posterior))


def test_draws_carry_the_fits_own_level_names(titanic, cache):
    glmer(FORMULA, titanic, family="binomial").fit(random_seed=1, **FIT)
    renamed = titanic.with_columns(
        pl.col("pclass").replace_strict({1: "a", 2: "b", 3: "c"}, return_dtype=pl.String)
    )
    model = glmer(FORMULA, renamed, family="binomial")
    model.fit(random_seed=1, **FIT)
    assert model._sampler.source == "memory"
    assert list(model.posterior["posterior"]["u_pclass"].coords["pclass_level"].values) == [
        "a",
        "b",
        "c",
    ]
    assert model.ranef["level"].to_list() == ["a", "b", "c"]


def test_structure_key_ignores_data_values_and_sees_structure_and_shapes(titanic):
    key = compiled.structure_key(_model(titanic))
    # new data of the same shape, autoscaled priors of other values: the same structure
    assert compiled.structure_key(_model(_resample(titanic, 4))) == key
    assert compiled.structure_key(_model(titanic, priors={"sexmale": ("normal", 0, 1)})) == key
    changed = {
        "link": _model(titanic, link="probit"),
        "term": _model(titanic, formula="survived ~ sex + alone + (1|pclass)"),
        "prior": _model(titanic, priors={"sexmale": ("student_t", 3, 0, 1)}),
        "shape": _model(titanic.filter(pl.col("pclass") < 3)),
        "family": build_model(glmer("sibsp ~ sex + (1|pclass)", titanic, family="poisson").spec),
        "groups": build_model(glm("survived ~ sex", titanic, family="binomial").spec),
    }
    keys = {name: compiled.structure_key(m) for name, m in changed.items()}
    assert key not in keys.values()
    assert len(set(keys.values())) == len(keys)


def test_structure_key_with_slopes_does_not_depend_on_what_the_process_compiled(titanic, cache):
    """The LKJ Cholesky factor's transform holds PyTensor variables: keyed by its pickle,
    which carries PyTensor's ids, a model with correlated slopes had another key after any
    other model was compiled in the process (a later process then missed the disk cache)."""
    rng = np.random.default_rng(3)
    data = pl.DataFrame(
        {"y": rng.integers(0, 2, 60), "x": rng.normal(size=60), "g": np.repeat(list("abcdef"), 10)}
    )

    def key():
        return compiled.structure_key(_model(data, formula="y ~ x + (x|g)"))

    before = key()
    assert compiled.sampler(_model(titanic)).source == "compiled"
    assert key() == before


def test_disk_cache_serves_a_later_compile_and_a_damaged_entry_is_rebuilt(titanic, cache):
    model = _model(titanic)
    assert compiled.sampler(model).source == "compiled"
    compiled.clear_memory()
    from_disk = compiled.sampler(_model(_resample(titanic, 5)))
    assert from_disk.source == "disk"
    x = np.random.default_rng(1).normal(0, 0.5, from_disk.compilation.compiled.n_dim)
    with from_disk.compilation.bound(from_disk.data) as bound:
        np.testing.assert_array_equal(
            _logp(bound, x)[2], _logp(compile_model(_model(_resample(titanic, 5))), x)[2]
        )
    (folder,) = cache.glob("compiled-*")
    numba_files = list((folder / "__pycache__").iterdir())
    assert numba_files
    for damaged in numba_files:
        damaged.write_bytes(b"not a numba cache file")
    compiled.clear_memory()
    rebuilt = compiled.sampler(model)
    assert rebuilt.source == "compiled"
    compiled.clear_memory()
    assert compiled.sampler(model).source == "disk"
    # a half-written copy of the callbacks' source is written again (and numba's entry,
    # checked against the source's contents, serves again)
    (source,) = folder.glob("callbacks_*.py")
    source.write_bytes(source.read_bytes()[:100])
    compiled.clear_memory()
    assert compiled.sampler(model).source == "disk"
    assert source.read_bytes() == CALLBACKS_FILE.read_bytes()
    fit = glmer(FORMULA, titanic, family="binomial")
    fit.fit(random_seed=1, **FIT)
    assert fit.posterior is not None


def _assert_same_density_and_draws(sampler, fresh, names=("b", "sd_pclass", "u_pclass")):
    """The sampler's compiled model (bound to its data) has ``fresh``'s log density, bit for
    bit, initial points and seeded draws (of the variables ``names``)."""
    settings = dict(draws=100, tune=150, chains=2, cores=1, seed=3, progress_bar=False)
    with sampler.compilation.bound(sampler.data) as bound:
        rng = np.random.default_rng(0)
        for _ in range(5):
            x = rng.normal(0, 0.5, fresh.n_dim)
            code, logp, grad = _logp(bound, x)
            want = _logp(fresh, x)
            assert code == want[0] == 0
            assert logp == want[1]
            np.testing.assert_array_equal(grad, want[2])
        for seed in (0, 7):
            np.testing.assert_array_equal(
                bound.initial_point_func(seed), fresh.initial_point_func(seed)
            )
        draws = nutpie.sample(bound, **settings)
    want_draws = nutpie.sample(fresh, **settings)
    for name in names:
        np.testing.assert_array_equal(
            draws["posterior"][name].values, want_draws["posterior"][name].values
        )


def test_a_later_process_rebuilds_the_model_from_disk_without_compiling(
    titanic, cache, monkeypatch
):
    """What a new process finds (the memory cache cleared): the compiled model rebuilt from
    the structure's entry and numba's cache, nothing compiled, with a fresh compile's log
    density, initial points and draws on new data of the same shape."""
    assert compiled.sampler(_model(titanic)).source == "compiled"
    (entry,) = cache.glob("compiled-*/callbacks_*.json")
    compiled.clear_memory()

    def no_compiling(*args, **kwargs):
        raise AssertionError("compiled again")

    other = _model(_resample(titanic, 6))
    with monkeypatch.context() as patch:
        patch.setattr(compiled, "compile_model", no_compiling)
        rebuilt = compiled.sampler(other)
    assert rebuilt.source == "disk"
    assert rebuilt.compilation.compiled.logp_func is None  # no PyTensor function was made
    _assert_same_density_and_draws(rebuilt, compile_model(_model(_resample(titanic, 6))))
    # a fit from it has the coordinates of its own data
    fit = glmer(FORMULA, _resample(titanic, 6), family="binomial")
    fit.fit(random_seed=1, **FIT)
    assert fit._sampler.source == "memory"
    assert fit.posterior["posterior"]["b"].coords["term"].values.tolist() == [
        "(Intercept)",
        "sexmale",
    ]


def test_a_model_storing_its_free_variables_only_has_the_disk_cache_too(titanic, cache):
    """A large model's compilation (nutpie stores the free variables only, whose expansion
    reads no data) has bayesmer's callbacks, so a later process rebuilds it from disk; it
    fell back to stock nutpie's, compiled afresh in every process (12 s on issue 13's case)."""
    model = _model(titanic)
    free = [rv.name for rv in model.free_RVs]
    assert compiled.sampler(model, deterministics=False).source == "compiled"
    assert len(list(cache.glob("compiled-*/callbacks_*.json"))) == 1
    compiled.clear_memory()
    rebuilt = compiled.sampler(_model(_resample(titanic, 6)), deterministics=False)
    assert rebuilt.source == "disk"
    with exact_arithmetic():  # bayesmer compiles without fast-math flags
        stock = nutpie.compile_pymc_model(
            _model(_resample(titanic, 6)), backend="numba", var_names=free
        )
    _assert_same_density_and_draws(rebuilt, stock, names=free)


@pytest.mark.parametrize(
    "damage", [b"", b"{not json", b'{"version": 0}', b'{"version": 1, "n_dim": 6}']
)
def test_a_damaged_entry_is_compiled_again_and_rewritten(titanic, cache, damage):
    model = _model(titanic)
    assert compiled.sampler(model).source == "compiled"
    (entry,) = cache.glob("compiled-*/callbacks_*.json")
    written = entry.read_bytes()
    entry.write_bytes(damage)
    compiled.clear_memory()
    again = compiled.sampler(model)
    # the callbacks still come from numba's cache; PyTensor's functions are compiled
    assert again.source == "callbacks"
    assert entry.read_bytes() == written
    compiled.clear_memory()
    assert compiled.sampler(model).source == "disk"


def test_an_entry_without_numbas_files_is_compiled_again(titanic, cache):
    model = _model(titanic)
    assert compiled.sampler(model).source == "compiled"
    (folder,) = cache.glob("compiled-*")
    for numba_file in (folder / "__pycache__").iterdir():
        numba_file.unlink()
    compiled.clear_memory()
    assert compiled.sampler(model).source == "compiled"
    compiled.clear_memory()
    assert compiled.sampler(model).source == "disk"


def test_rebuilding_falls_back_to_compiling_when_nutpies_model_changes(
    titanic, cache, monkeypatch, caplog
):
    """nutpie's compiled-model class has private fields; a nutpie whose fields differ is
    compiled as before (the callbacks still from the cache), with the same draws."""
    model = _model(titanic)
    assert compiled.sampler(model).source == "compiled"
    compiled.clear_memory()
    monkeypatch.setattr(warm, "NUTPIE_FIELDS", warm.NUTPIE_FIELDS | {"_a_new_field"})
    assert not warm.supported()
    fallback = compiled.sampler(_model(_resample(titanic, 8)))
    assert fallback.source == "callbacks"
    _assert_same_density_and_draws(fallback, compile_model(_model(_resample(titanic, 8))))


def test_a_library_version_change_misses_the_disk_cache(titanic, cache, monkeypatch):
    model = _model(titanic)
    assert compiled.sampler(model).source == "compiled"
    compiled.clear_memory()
    versions = compiled.versions()
    monkeypatch.setattr(compiled, "versions", lambda: {**versions, "pytensor": "0.0.0"})
    assert compiled.sampler(model).source == "compiled"
    assert len(list(cache.glob("compiled-*"))) == 2


SCRIPT = f"""
import bayesmer
model = bayesmer.glmer({FORMULA!r}, bayesmer.load_dataset("titanic"), family="binomial")
model.fit(random_seed=1, progressbar=False)
print(model._sampler.source, model.posterior["posterior"]["b"].values.sum().hex())
"""


@pytest.mark.slow
def test_two_processes_filling_the_cache_at_once_both_succeed(tmp_path):
    env = {**os.environ, compiled.CACHE_ENV: str(tmp_path), "PYTHONPATH": str(ROOT)}

    def start():
        return subprocess.Popen(
            [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, stdout=subprocess.PIPE, text=True
        )

    first, second = start(), start()
    outputs = [p.communicate(timeout=600)[0].split() for p in (first, second)]
    assert [first.returncode, second.returncode] == [0, 0]
    assert {source for source, _ in outputs} <= {"compiled", "callbacks", "disk"}
    later = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, cwd=ROOT, capture_output=True, text=True
    )
    assert later.returncode == 0
    source, draws = later.stdout.split()
    # rebuilt from the cache the two filled, with the seeded draws of the compiled fits
    assert source == "disk"
    assert {d for _, d in outputs} == {draws}


DENSITY_SCRIPT = """
import ctypes, hashlib, sys
import numpy as np, polars as pl
import bayesmer
from bayesmer import compiled
from bayesmer.pymc_model import build_model

rng = np.random.default_rng(7)
g = np.repeat(np.arange(20), 30)
x = rng.normal(size=g.size)
y = rng.binomial(1, 1 / (1 + np.exp(-(0.3 * x + rng.normal(0, 0.8, 20)[g]))))
slopes = pl.DataFrame({"y": y, "x": x, "g": [f"g{i}" for i in g]})
models = [
    bayesmer.glmer(FORMULA, bayesmer.load_dataset("titanic"), family="binomial"),
    bayesmer.glmer(
        "TICKS ~ YEAR + cHEIGHT + (1|BROOD)", bayesmer.load_dataset("grouseticks"), "poisson"
    ),
    bayesmer.glmer("y ~ x + (x|g)", slopes, family="binomial"),
]
for model in models:
    sampler = compiled.sampler(build_model(model.spec))
    digest = hashlib.sha256()
    with sampler.compilation.bound(sampler.data) as bound:
        points = np.random.default_rng(0).normal(0, 0.5, (50, bound.n_dim))
        for point in points:
            grad, logp = np.zeros(bound.n_dim), np.zeros(1)
            code = bound.compiled_logp_func.ctypes(
                ctypes.c_uint64(bound.n_dim),
                point.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                grad.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                logp.ctypes.data_as(ctypes.POINTER(ctypes.c_double)),
                ctypes.c_void_p(bound.user_data.ctypes.data),
            )
            assert code == 0, code
            digest.update(logp.tobytes() + grad.tobytes())
    print(sampler.source, digest.hexdigest())
""".replace("FORMULA", repr(FORMULA))


@pytest.mark.slow
def test_a_later_process_has_the_compiling_ones_log_density_bit_for_bit(tmp_path):
    """The process that compiles a model and every later one that loads it from the disk
    cache compute the same log density and gradient, bit for bit, for the fused binomial and
    Poisson likelihoods and for a plain graph with slopes (with fast-math flags, the first
    process ran the functions it had compiled on their own and later ones the callbacks'
    linked-in copies, optimised again, and a few values in a thousand differed in their last
    bit: seeded draws then parted after some hundred iterations). PyTensor's cache is empty
    too, as on a new machine."""
    env = {
        **os.environ,
        compiled.CACHE_ENV: str(tmp_path / "bayesmer"),
        "PYTENSOR_FLAGS": f"base_compiledir={tmp_path / 'pytensor'}",
        "PYTHONPATH": str(ROOT),
    }
    runs = [
        subprocess.run(
            [sys.executable, "-c", DENSITY_SCRIPT],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        for _ in range(2)
    ]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr[-2000:]
    first, later = (run.stdout.split() for run in runs)
    assert first[::2] == ["compiled"] * 3 and later[::2] == ["disk"] * 3
    assert first[1::2] == later[1::2]
