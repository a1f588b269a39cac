"""Execute every tutorial as a notebook, so that none of them can rot.

Each ``tutorials/*.py`` (jupytext percent format) is converted to a notebook and run cell by
cell in a fresh ``python3`` kernel, in a temporary working directory. A cell that raises fails
the test. So does a :class:`bayesmer.ConvergenceWarning` printed by a cell that is not tagged
``expect-convergence-warning`` (the tag marks a fit that is meant to complain, to show what a
complaint looks like), a tutorial that draws no figure, and a figure that reached the notebook
as text only.

The executed notebooks are written next to the sources (``tutorials/*.ipynb``, ignored by git)
so readers can open them with their outputs.
"""

from __future__ import annotations

import os
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbclient import NotebookClient

TUTORIALS = Path(__file__).resolve().parent.parent / "tutorials"
NAMES = [
    "01_logistic_regression",
    "02_multilevel_logistic",
    "03_poisson_counts",
    "04_teaching_uncertainty",
    "05_random_slopes",
    "06_linear_mixed_models",
    "07_big_data",
    "08_crossed_effects",
]
#: Seconds one cell may take (a fit compiles, then samples, on a shared 2-core machine).
CELL_TIMEOUT = 900
EXPECT_WARNING_TAG = "expect-convergence-warning"


def _execute(name: str, workdir: Path) -> nbformat.NotebookNode:
    """Run one tutorial in a fresh kernel; write the executed notebook even if a cell fails."""
    nb = jupytext.read(TUTORIALS / f"{name}.py")
    # Let the kernel pick its inline backend, even when the tests run with MPLBACKEND=Agg.
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3")
    try:
        client.execute(cwd=str(workdir), env=env)
    finally:
        nbformat.write(nb, TUTORIALS / f"{name}.ipynb")
    return nb


def _stderr(cell: nbformat.NotebookNode) -> str:
    return "".join(
        out.get("text", "")
        for out in cell.get("outputs", [])
        if out.get("output_type") == "stream" and out.get("name") == "stderr"
    )


def _has_image(cell: nbformat.NotebookNode) -> bool:
    return any("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_tutorial_executes(name: str, tmp_path: Path) -> None:
    nb = _execute(name, tmp_path)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code, f"{name} has no code cells"

    unexpected = [
        i
        for i, cell in enumerate(code)
        if "ConvergenceWarning" in _stderr(cell)
        and EXPECT_WARNING_TAG not in cell.metadata.get("tags", [])
    ]
    assert not unexpected, (
        f"{name}: ConvergenceWarning in code cell(s) {unexpected}: "
        + " | ".join(_stderr(code[i]) for i in unexpected)
    )
    expected = [i for i, c in enumerate(code) if EXPECT_WARNING_TAG in c.metadata.get("tags", [])]
    for i in expected:
        assert "ConvergenceWarning" in _stderr(code[i]), (
            f"{name}: code cell {i} is tagged {EXPECT_WARNING_TAG} but did not warn"
        )
    assert any(_has_image(c) for c in code), f"{name} shows no figure"
    # A Figure returned by a cell but shown only as "<Figure size ...>" text was not displayed.
    undisplayed = [
        i
        for i, cell in enumerate(code)
        for out in cell.get("outputs", [])
        if out.get("data", {}).get("text/plain", "").startswith("<Figure")
        and "image/png" not in out.get("data", {})
    ]
    assert not undisplayed, f"{name}: figure(s) not rendered in code cell(s) {undisplayed}"
