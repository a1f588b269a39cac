"""``import bayesmer`` is quick: the sampler, plotting and LOO libraries load on first use."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: Heavy libraries bayesmer imports only when a model is built, fitted, summarised or plotted.
LAZY = (
    "pymc",
    "pytensor",
    "nutpie",
    "numba",
    "arviz",
    "arviz_stats",
    "xarray",
    "matplotlib",
    "scipy",
    "formulae",
    "pandas",
)


def _modules_after(code: str) -> set[str]:
    """Top-level names of the modules loaded by ``code`` in a fresh interpreter."""
    out = subprocess.run(
        [sys.executable, "-c", f"{code}\nimport sys\nprint(' '.join(sys.modules))"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return set(out.stdout.split())


def test_import_bayesmer_loads_no_heavy_library():
    loaded = _modules_after("import bayesmer")
    assert "bayesmer" in loaded
    eager = [m for m in LAZY if m in loaded]
    assert not eager, (
        f"import bayesmer loaded {eager}: import them inside the functions that use them "
        "(annotations under TYPE_CHECKING)"
    )


def test_building_a_specification_loads_no_sampler():
    modules = _modules_after(
        "import bayesmer\n"
        "data = bayesmer.load_dataset('titanic')\n"
        "bayesmer.glmer('survived ~ sex + (1|pclass)', data, family='binomial').spec"
    )
    # main effects are coded by bayesmer.design: formulae loads for other designs
    sampler = ["pymc", "pytensor", "nutpie", "numba", "arviz_stats", "xarray", "matplotlib"]
    assert [m for m in [*sampler, "formulae"] if m in modules] == []
    interaction = _modules_after(
        "import bayesmer\n"
        "data = bayesmer.load_dataset('titanic')\n"
        "bayesmer.glmer('survived ~ sex * fare + (1|pclass)', data, family='binomial').spec"
    )
    assert "formulae" in interaction
    assert [m for m in sampler if m in interaction] == []


def test_a_fit_of_the_seed_model_loads_no_arviz_formulae_or_scipy_stats():
    modules = _modules_after(
        "import bayesmer\n"
        "data = bayesmer.load_dataset('titanic')\n"
        "m = bayesmer.glmer('survived ~ sex + (1|pclass)', data, family='binomial')\n"
        "m.fit(draws=200, tune=200, chains=2, random_seed=1, progressbar=False)\n"
        "m.emmeans('sex')\n"
        "import sys, types\n"
        "for name in [n for n, m in sys.modules.items() if type(m) is not types.ModuleType]:\n"
        "    del sys.modules[name]  # stand-ins of bayesmer.deferred: not loaded\n"
    )
    assert "pymc" in modules and "nutpie" in modules
    unused = ["arviz", "arviz_stats", "arviz_plots", "matplotlib", "formulae"]
    assert [m for m in unused if m in modules] == []
