"""The package's own promises: one dependency list in two files, ruff-clean code."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

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


def test_ruff_is_clean():
    ruff = Path(sys.executable).with_name("ruff")  # the venv's own (make setup installs it), never skipped
    res = subprocess.run([str(ruff), "check", "labtools", "tests"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_import_contracts_are_kept():
    """The house's layers (pyproject's [tool.importlinter]): every module imports only from below."""
    lint = Path(sys.executable).with_name("lint-imports")
    res = subprocess.run([str(lint)], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    assert "3 kept, 0 broken" in res.stdout


def test_the_layout_shows_the_layers():
    """One folder per layer: only the package's entry points sit at its root."""
    root = sorted(p.name for p in (ROOT / "labtools").glob("*.py"))
    assert root == ["__init__.py", "__main__.py", "pipeline.py"]
    layers = {"base", "model", "hosts", "lab", "datapaths", "rigs", "experiments", "outputs", "cli"}
    assert layers <= {p.name for p in (ROOT / "labtools").iterdir() if (p / "__init__.py").exists()}


def test_no_function_is_longer_than_80_lines():
    import ast

    long = []
    for path in sorted((ROOT / "labtools").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1})")
    assert not long, "split these:\n" + "\n".join(long)


def test_old_module_names_still_import_with_a_deprecation_warning():
    code = ("import warnings; warnings.simplefilter('error')\n"
            "try:\n    from labtools import analysis\nexcept DeprecationWarning as e:\n    print(e)")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert "labtools.analysis moved to labtools.outputs.analysis" in res.stdout
    from labtools import verdicts  # noqa: F401 - the old name still works
    from labtools.outputs import verdicts as new

    assert sys.modules["labtools.verdicts"] is new


def test_outputs_load_neither_ssh_nor_kubernetes():
    heavy = ("paramiko", "kubernetes", "labtools.hosts", "labtools.lab")
    code = ("import sys, labtools.outputs.analysis, labtools.outputs.figures, labtools.outputs.paper; "
            f"print(sorted(m for m in {heavy!r} if m in sys.modules))")  # fmt: skip
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert res.stdout.strip() == "[]"


def test_a_non_editable_install_runs_from_a_copy_of_the_project(tmp_path):
    """`pip install .` (not -e): the package finds its own resources, and the project folder it runs in."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next((venv / "lib").glob("python3*/site-packages"))
    # The dependencies come from the project's environment (no downloads); labtools itself is installed.
    deps = next(p for p in map(Path, sys.path) if p.name == "site-packages" and (p / "pandas").exists())
    (site / "labtools-deps.pth").write_text(f"{deps}\n")
    build = tmp_path / "src"
    shutil.copytree(ROOT, build, ignore=shutil.ignore_patterns(".git", ".venv", "build", "data", "paper", "*.ipynb"))
    subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps",
                    str(build)], check=True, capture_output=True)  # fmt: skip
    project = tmp_path / "project"
    for part in ("params", "notebooks", "data", "paper"):
        shutil.copytree(ROOT / part, project / part, ignore=shutil.ignore_patterns("build", ".ipynb_checkpoints"))
    labtools = str(venv / "bin" / "labtools")
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABTOOLS_")}
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import labtools; print(labtools.__file__)"],
                           cwd=project, env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(venv) in where, where  # the installed copy, not this checkout
    assert subprocess.run([labtools, "--help"], cwd=project, env=env, capture_output=True).returncode == 0
    inv = subprocess.run([str(venv / "bin" / "python"), "-c",
                          "from labtools.model import topology; print(topology.load().path)"],
                         cwd=project, env=env, capture_output=True, text=True, check=True).stdout  # fmt: skip
    assert str(venv) in inv and Path(inv.strip()).exists()  # the default inventory ships in the package
    res = subprocess.run([labtools, "figures"], cwd=project, env=env, capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-3000:]
    assert (project / "paper" / "manifest.json").exists()
    assert "figures and tables regenerated" in res.stdout


def test_the_lock_pins_every_dependency_within_its_range():
    """requirements.lock (uv pip compile --generate-hashes) satisfies pyproject's ranges, with hashes."""
    from packaging.requirements import Requirement

    lock = (ROOT / "requirements.lock").read_text()
    pinned = dict(re.findall(r"^([A-Za-z0-9_.-]+)==([^\s\\]+)", lock, flags=re.M))
    pinned = {k.lower().replace("_", "-"): v for k, v in pinned.items()}
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dep in [*project["dependencies"], *project["optional-dependencies"]["dev"]]:
        req = Requirement(dep)
        name = req.name.lower().replace("_", "-")
        assert name in pinned, f"{name} is not in requirements.lock: run `make lock`"
        assert req.specifier.contains(pinned[name], prereleases=True), (name, pinned[name], str(req.specifier))
    assert lock.count("--hash=sha256:") >= len(pinned)  # every pin has its hashes
