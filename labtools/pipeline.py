"""The notebooks in order, headless, with papermill and the parameters of a profile (params/<profile>.yaml).

Two ways to run them:

- `reproduce(profile)`: measure. Brings the lab up (netns backend, root), runs every notebook with
  `measure=True` into `build/notebooks/` under a new run id, and takes the lab down again, even when a
  cell fails. Papermill keeps the parameters in each executed notebook's metadata.
- `figures()`: no root, no lab. Re-runs the notebooks that can load a committed run (`measure=False`,
  their default parameters: the reference run) in place, so `notebooks/*.ipynb` carry the outputs nbval
  checks, and every figure and table under `paper/` is regenerated from `data/` alone.
"""

from __future__ import annotations

import time
from pathlib import Path

import papermill as pm

from labtools.errors import LabError
from labtools.sweep import load_profile
from labtools.topology import REPO_ROOT

NOTEBOOKS = REPO_ROOT / "notebooks"
BUILD = REPO_ROOT / "build" / "notebooks"
# Notebooks in order; those that can read a committed run instead of measuring take `measure`/`run_id`.
ORDER = ("00-testbed-setup", "01-scale-sweep", "02-srv6-captures")
LOADS_DATA = ("01-scale-sweep", "02-srv6-captures")


def _execute(name: str, out: Path, parameters: dict) -> Path:
    src = NOTEBOOKS / f"{name}.ipynb"
    print(f"== {name} -> {out}", flush=True)
    try:
        pm.execute_notebook(str(src), str(out), parameters=parameters, cwd=str(NOTEBOOKS), kernel_name="python3",
                            progress_bar=False)  # fmt: skip
    except pm.PapermillExecutionError as e:
        raise LabError(f"{name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); the executed notebook "
                       f"with the error is {out}") from None  # fmt: skip
    return out


def reproduce(name: str, *, run_id: str | None = None, prefix: str | None = None) -> list[Path]:
    """Measure: every notebook with `measure=True`; returns the executed notebooks."""
    from labtools.lab import Lab

    params = load_profile(name)
    run_id = run_id or f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    prefix = prefix or params.get("00-testbed-setup", {}).get("prefix", "thesis")
    BUILD.mkdir(parents=True, exist_ok=True)
    lab = Lab(None, prefix)
    outs = []
    try:
        for nb in ORDER:
            if not (NOTEBOOKS / f"{nb}.ipynb").exists():
                continue
            p = {**params.get(nb, {}), "prefix": prefix}
            if nb in LOADS_DATA:
                p.update(run_id=run_id, measure=True)
            outs.append(_execute(nb, BUILD / f"{nb}.ipynb", p))
    finally:
        lab.down()
    print(f"run {run_id}: {len(outs)} notebooks in {BUILD}")
    return outs


def figures() -> list[Path]:
    """Regenerate figures and tables from committed data: the data-loading notebooks, in place."""
    outs = []
    for nb in LOADS_DATA:
        path = NOTEBOOKS / f"{nb}.ipynb"
        if path.exists():
            outs.append(_execute(nb, path, {}))
    return outs
