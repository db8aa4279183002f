"""The package's own promises: one dependency list in two files, ruff-clean code."""

from __future__ import annotations

import shutil
import subprocess
import tomllib

import pytest
import yaml

from tests.conftest import ROOT


def test_environment_yml_matches_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = set(project["dependencies"]) | set(project["optional-dependencies"]["dev"])
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    pip = next(d["pip"] for d in env["dependencies"] if isinstance(d, dict))
    assert set(pip) - {"-e ."} == wanted
    assert "-e ." in pip


def test_design_card_packages_are_dependencies():
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for pkg in ("jupyterlab", "papermill", "nbval", "pandas", "seaborn", "paramiko", "kubernetes", "scapy"):
        assert pkg in deps


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff is not installed (make setup installs it)")
def test_ruff_is_clean():
    res = subprocess.run(["ruff", "check", "labtools", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
