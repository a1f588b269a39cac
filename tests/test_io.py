"""save_model / load_model: a reloaded model answers exactly as the saved one, without refitting."""

from __future__ import annotations

import io
import json
import os
import zipfile

import bambi
import numpy as np
import pandas as pd
import polars as pl
import pytest
from polars.testing import assert_frame_equal

import bayesmer.io as bio
from bayesmer import NotFittedError, glm, glmer
from bayesmer.io import load_model, save_model


@pytest.fixture(scope="module")
def saved_glmer(titanic_glmer, tmp_path_factory):
    path = tmp_path_factory.mktemp("saved") / "titanic.bayesmer"
    titanic_glmer.save(path)
    return path


def _assert_same_answers(a, b) -> None:
    assert_frame_equal(a.params, b.params)
    assert_frame_equal(a.result_fit, b.result_fit)
    assert_frame_equal(a.diagnostics, b.diagnostics)
    assert_frame_equal(a.chain_diagnostics, b.chain_diagnostics)
    if a.spec.groups:
        assert_frame_equal(a.ranef, b.ranef)
        assert_frame_equal(a.ranef_var, b.ranef_var)
        assert_frame_equal(a.fixef, b.fixef)


def test_roundtrip_glmer_answers_identically(titanic_glmer, saved_glmer):
    loaded = load_model(saved_glmer)
    assert type(loaded) is type(titanic_glmer)
    assert loaded.formula == titanic_glmer.formula
    assert (loaded.family, loaded.link) == (titanic_glmer.family, titanic_glmer.link)
    assert loaded.factors == titanic_glmer.factors == {"pclass": None}
    assert loaded.priors == titanic_glmer.priors
    for attr in ("ci", "exponentiate", "draws", "tune", "chains", "random_seed"):
        assert getattr(loaded, attr) == getattr(titanic_glmer, attr)
    assert loaded.sampler_kwargs == titanic_glmer.sampler_kwargs
    assert_frame_equal(loaded.data, titanic_glmer.data)
    for group in ("posterior", "sample_stats"):
        original = titanic_glmer.posterior[group].to_dataset()
        assert loaded.posterior[group].to_dataset().identical(original)
    _assert_same_answers(titanic_glmer, loaded)
    assert loaded.convergence_problems == []


def test_roundtrip_emmeans_identical(titanic_glmer, saved_glmer):
    loaded = load_model(saved_glmer)
    for kwargs in (
        {},
        {"type": "link"},
        {"contrasts": "pairwise"},
        {"re": "marginal"},
        {"contrasts": "pairwise", "re": "groups"},
    ):
        assert_frame_equal(titanic_glmer.emmeans("sex", **kwargs), loaded.emmeans("sex", **kwargs))


def test_roundtrip_glm_through_model_save(titanic_glm, tmp_path):
    path = tmp_path / "glm.bayesmer"
    titanic_glm.save(str(path))
    loaded = load_model(str(path))
    assert type(loaded) is glm
    assert loaded.factors == {"sex": None}
    _assert_same_answers(titanic_glm, loaded)
    assert_frame_equal(titanic_glm.emmeans("sex"), loaded.emmeans("sex"))


def test_user_priors_and_prior_draws_survive(saved_glmer, tmp_path):
    model = load_model(saved_glmer)
    # A reloaded model is an ordinary one: give it user priors and prior draws, save again.
    model.priors = {
        "sexmale": ("normal", 0, 2.5),
        "1|pclass": bambi.Prior("HalfNormal", sigma=2.5),
    }
    model.fit(random_seed=4, progressbar=False)
    model.sample_prior(draws=100, random_seed=4)
    path = tmp_path / "again.bayesmer"
    save_model(model, path)
    again = load_model(path)
    assert again.priors["sexmale"] == ("normal", 0, 2.5)
    summary = again.prior_summary()
    assert summary["source"].to_list() == ["default", "user", "user"]
    assert summary["prior"].to_list() == model.prior_summary()["prior"].to_list()
    assert again.prior["prior"].to_dataset().identical(model.prior["prior"].to_dataset())
    _assert_same_answers(model, again)


@pytest.mark.parametrize("kind", ["pandas", "lazy"])
def test_roundtrip_pandas_and_lazy_data(saved_glmer, titanic, tmp_path, kind):
    model = load_model(saved_glmer)
    model.data = titanic.to_pandas() if kind == "pandas" else titanic.lazy()
    model._spec = None
    path = tmp_path / f"{kind}.bayesmer"
    model.save(path)
    loaded = load_model(path)
    if kind == "pandas":
        assert isinstance(loaded.data, pd.DataFrame)
        pd.testing.assert_frame_equal(loaded.data, model.data)
    else:
        assert isinstance(loaded.data, pl.LazyFrame)
        # Only the used columns' distinct observations are stored, not the 891 rows.
        with zipfile.ZipFile(path) as archive:
            stored = pl.read_parquet(io.BytesIO(archive.read("data.parquet")))
        assert len(stored) < 20
        assert set(stored.columns) == {"survived", "sex", "pclass", "_weight"}
    assert_frame_equal(loaded.spec.cells, model.spec.cells)
    assert_frame_equal(loaded.spec.obs, model.spec.obs)
    _assert_same_answers(model, loaded)
    assert_frame_equal(model.emmeans("sex"), loaded.emmeans("sex"))
    assert loaded.loo().elpd == model.loo().elpd


def _lazy_cases() -> list[tuple[str, str, pl.DataFrame, dict]]:
    rng = np.random.default_rng(5)
    n = 300
    g = rng.integers(0, 12, n)
    x = rng.normal(size=n).round(1)
    base = pl.DataFrame(
        {
            "g": g,
            "x": x,
            "f": rng.choice(["lo", "mid", "hi"], n),
            "yes": rng.choice(["no", "yes"], n),
            "flag": rng.random(n) < 0.4,
            "k": rng.integers(0, 5, n),
            "t": rng.integers(5, 9, n),
            "count": rng.poisson(3, n),
            "days": rng.integers(1, 4, n).astype(float),
            "logdays": np.log(rng.integers(1, 4, n).astype(float)),
        }
    ).with_columns((pl.col("t") - pl.col("k")).alias("fails"))
    return [
        ("yes ~ f + (1|g)", "binomial", base, {"f": ["mid", "lo", "hi"], "yes": ["yes", "no"]}),
        ("flag ~ x + f", "binomial", base, {}),
        ("cbind(k, fails) ~ f + (1|g)", "binomial", base, {"g": None}),
        ("cbind(k, t) ~ x", "binomial", base, {}),
        ("count ~ f + offset(log(days)) + (1|g)", "poisson", base, {}),
        ("count ~ x + offset(logdays)", "poisson", base, {}),
    ]


@pytest.mark.parametrize(
    ("formula", "family", "data", "factors"),
    _lazy_cases(),
    ids=["two-level", "boolean", "cbind", "cbind-trials", "exposure", "offset"],
)
def test_observation_table_rebuilds_the_same_spec(formula, family, data, factors):
    kind = glmer if "|" in formula else glm
    model = kind(formula, data=data.lazy(), family=family)
    if factors:
        model.set_factors({k: v for k, v in factors.items() if v} or list(factors))
    spec = model.spec
    table, enums = bio._observation_table(spec)
    rebuilt = kind(
        formula,
        data=bio._read_data({"kind": "observations", "enums": enums}, _parquet(table)),
        family=family,
    )
    rebuilt.factors = dict(model.factors)
    other = rebuilt.spec
    assert other.terms == spec.terms
    assert other.response_levels == spec.response_levels
    assert [g.levels for g in other.groups] == [g.levels for g in spec.groups]
    assert_frame_equal(other.cells, spec.cells)
    assert_frame_equal(other.obs, spec.obs)
    np.testing.assert_allclose(other.X, spec.X)


def _parquet(frame: pl.DataFrame) -> bytes:
    buffer = io.BytesIO()
    frame.write_parquet(buffer)
    return buffer.getvalue()


# -- failure modes ------------------------------------------------------------------------------


def test_truncated_file_fails_clearly(saved_glmer, tmp_path):
    raw = saved_glmer.read_bytes()
    for keep in (len(raw) // 2, len(raw) - 30, 100):
        path = tmp_path / f"cut{keep}.bayesmer"
        path.write_bytes(raw[:keep])
        with pytest.raises(ValueError, match="truncated or damaged"):
            load_model(path)


def test_corrupted_member_fails_clearly(saved_glmer, tmp_path):
    raw = bytearray(saved_glmer.read_bytes())
    start = raw.find(b"posterior.npz") + 200
    raw[start : start + 50] = bytes(50)
    path = tmp_path / "corrupt.bayesmer"
    path.write_bytes(bytes(raw))
    with pytest.raises(ValueError, match="truncated or damaged"):
        load_model(path)


def test_not_a_bayesmer_file(tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("survived ~ sex\n")
    with pytest.raises(ValueError, match="not a bayesmer model file"):
        load_model(text)
    other_zip = tmp_path / "other.zip"
    with zipfile.ZipFile(other_zip, "w") as archive:
        archive.writestr("readme.txt", "hello")
    with pytest.raises(ValueError, match="not a bayesmer model file"):
        load_model(other_zip)
    wrong_format = tmp_path / "wrong.zip"
    with zipfile.ZipFile(wrong_format, "w") as archive:
        archive.writestr("bayesmer.json", json.dumps({"format": "something-else"}))
    with pytest.raises(ValueError, match="not a bayesmer model file"):
        load_model(wrong_format)
    with pytest.raises(FileNotFoundError, match="No bayesmer model file"):
        load_model(tmp_path / "missing.bayesmer")


def _rewrite(source, target, edit_meta=None, drop=()) -> None:
    with zipfile.ZipFile(source) as archive:
        members = {n: archive.read(n) for n in archive.namelist() if n not in drop}
    if edit_meta is not None:
        meta = json.loads(members["bayesmer.json"])
        edit_meta(meta)
        members["bayesmer.json"] = json.dumps(meta).encode()
    with zipfile.ZipFile(target, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)


def test_newer_format_version_is_refused(saved_glmer, tmp_path):
    path = tmp_path / "future.bayesmer"
    _rewrite(saved_glmer, path, edit_meta=lambda m: m.update(format_version=99))
    with pytest.raises(ValueError, match=r"newer bayesmer .*format version 99.*Upgrade"):
        load_model(path)


def test_missing_part_is_reported_as_damage(saved_glmer, tmp_path):
    path = tmp_path / "nodata.bayesmer"
    _rewrite(saved_glmer, path, drop=("data.parquet",))
    with pytest.raises(ValueError, match="damaged"):
        load_model(path)


def test_spec_mismatch_is_reported(saved_glmer, tmp_path):
    path = tmp_path / "mismatch.bayesmer"
    _rewrite(saved_glmer, path, edit_meta=lambda m: m["spec"].update(n_obs=5))
    with pytest.raises(ValueError, match="differs from the saved one in n_obs"):
        load_model(path)


def test_interrupted_save_keeps_the_old_file(titanic_glmer, saved_glmer, tmp_path, monkeypatch):
    path = tmp_path / "model.bayesmer"
    path.write_bytes(saved_glmer.read_bytes())
    before = path.read_bytes()
    original = zipfile.ZipFile.writestr

    def interrupted(self, name, data, *args, **kwargs):
        if str(name).endswith(".npz"):
            raise KeyboardInterrupt
        return original(self, name, data, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "writestr", interrupted)
    with pytest.raises(KeyboardInterrupt):
        titanic_glmer.save(path)
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.bayesmer"]


def test_save_unfitted_model_fails(titanic, tmp_path):
    model = glm("survived ~ sex", data=titanic, family="binomial")
    with pytest.raises(NotFittedError, match="not fitted"):
        save_model(model, tmp_path / "x.bayesmer")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_sampler_setting_fails_before_writing(saved_glmer, tmp_path):
    model = load_model(saved_glmer)
    model.sampler_kwargs = {"target_accept": 0.95, "callback": object()}
    with pytest.raises(ValueError, match="Cannot save sampler setting 'callback'"):
        model.save(tmp_path / "x.bayesmer")
    assert list(tmp_path.iterdir()) == []


def test_saved_file_gets_ordinary_permissions(titanic_glm, tmp_path):
    path = tmp_path / "perm.bayesmer"
    titanic_glm.save(path)
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask
    path.chmod(0o600)
    titanic_glm.save(path)
    assert path.stat().st_mode & 0o777 == 0o600
