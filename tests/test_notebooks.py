"""Notebooks run headless with papermill, as `make reproduce` runs them."""

from __future__ import annotations

import nbformat
import papermill as pm
import pytest

from labtools.hosts import namespaces
from tests.conftest import ROOT

NOTEBOOKS = ROOT / "notebooks"


def test_every_notebook_has_a_parameters_cell():
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        nb = nbformat.read(path, as_version=4)
        tagged = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
        assert len(tagged) == 1, f"{path.name} needs exactly one cell tagged 'parameters'"


@pytest.mark.lab
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


@pytest.mark.lab
def test_programming_notebook_measures_and_draws_headless(tmp_path, monkeypatch):
    monkeypatch.setenv("LABTOOLS_DATA", str(tmp_path / "data"))  # the kernel inherits both
    monkeypatch.setenv("LABTOOLS_PAPER", str(tmp_path / "paper"))
    add = {"change": "add", "counts": [1, 10], "datapaths": ["nftables@1.37", "ebpf"], "repeats": 1}
    cold = {"counts": [10], "datapaths": ["nftables@1.35", "nftables@1.37"], "repeats": 1}
    benches = {"change-add": add, "coldstart": cold}
    out = tmp_path / "04.ipynb"
    try:
        pm.execute_notebook(str(NOTEBOOKS / "04-programming.ipynb"), str(out),
                            parameters={"prefix": "pynb4", "measure": True, "run_id": "t", "benches": benches},
                            cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False)  # fmt: skip
    finally:
        namespaces.teardown("pynb4")
    nb = nbformat.read(out, as_version=4)
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code" for o in c.outputs)
    assert "2 runs: t-change-add, t-coldstart" in text
    assert "One change (add) at N = 10, until the client's probe sees it: nftables@1.37" in text
    assert "Cold start, nftables@1.35: N = 10:" in text
    assert (tmp_path / "paper" / "figures" / "programming-change.pdf").exists()
    assert (tmp_path / "paper" / "tables" / "programming-statements.tex").exists()
    assert not namespaces.lab_namespaces("pynb4")
