"""Notebooks run headless with papermill, as `make reproduce` runs them."""

from __future__ import annotations

import nbformat
import papermill as pm
import pytest

from labtools.hosts import namespaces
from tests.conftest import IS_ROOT, ROOT

NOTEBOOKS = ROOT / "notebooks"


def test_every_notebook_has_a_parameters_cell():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


@pytest.mark.skipif(not IS_ROOT, reason="needs root: brings the lab up")
def test_testbed_setup_notebook_runs_headless(tmp_path):
    out = tmp_path / "00.ipynb"
    try:
        pm.execute_notebook(
            str(NOTEBOOKS / "00-lab-setup.ipynb"),
            str(out),
            parameters={"prefix": "pynb", "teardown": True},
            cwd=str(NOTEBOOKS),
            kernel_name="python3",
            progress_bar=False,
        )
    finally:
        namespaces.teardown("pynb")
    nb = nbformat.read(out, as_version=4)
    assert nb.metadata.papermill.parameters == {"prefix": "pynb", "teardown": True}
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "echo checks and the TCP transfer passed" in text
    assert "removed: ['pynb-client'" in text
    assert not namespaces.lab_namespaces("pynb")
