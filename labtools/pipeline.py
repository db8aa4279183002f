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

import json
import os
import shutil
import threading
import time
from pathlib import Path

import papermill as pm

from labtools.base import paths
from labtools.base.errors import LabError
from labtools.model.plan import load_profile

# Notebooks in order; those that can read a committed run instead of measuring take `measure`/`run_id`.
ORDER = ("00-lab-setup", "01-scale-sweep", "02-srv6-captures", "03-claims", "04-programming")
LOADS_DATA = ("01-scale-sweep", "02-srv6-captures", "03-claims", "04-programming")


def _execute(name: str, out: Path, parameters: dict) -> Path:
    """Run one notebook with papermill; progress of its long cells reaches the terminal, not the notebook."""
    src = paths.notebooks_dir() / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.with_suffix(".progress")
    log.write_text("")
    print(f"== {name} -> {out}", flush=True)
    t0 = time.monotonic()
    stop = threading.Event()

    def tail() -> None:  # the kernel's progress lines (labtools.base.progress writes them to $LABTOOLS_PROGRESS)
        with open(log) as fh:
            while not stop.is_set() or fh.tell() < log.stat().st_size:
                line = fh.readline()
                if line:
                    print(f"   {name}: {line.rstrip()}", flush=True)
                else:
                    stop.wait(1.0)

    watcher = threading.Thread(target=tail, daemon=True)
    watcher.start()
    os.environ["LABTOOLS_PROGRESS"] = str(log)  # the kernel inherits it
    try:
        # The kernel's own startup warnings (it talks to papermill over local TCP) are not the user's business.
        pm.execute_notebook(str(src), str(out), parameters=parameters, cwd=str(paths.notebooks_dir()),
                            kernel_name="python3", progress_bar=False,
                            extra_arguments=["--IPKernelApp.log_level=ERROR"])  # fmt: skip
    except pm.PapermillExecutionError as e:
        raise LabError(f"{name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}); the executed notebook "
                       f"with the error is {out}") from None  # fmt: skip
    finally:
        os.environ.pop("LABTOOLS_PROGRESS", None)
        stop.set()
        watcher.join(5)
        log.unlink(missing_ok=True)
    print(f"== {name}: done in {time.monotonic() - t0:.0f} s", flush=True)
    return out


def reproduce(name: str, *, run_id: str | None = None, prefix: str | None = None) -> list[Path]:
    """Measure: every notebook with `measure=True`; returns the executed notebooks."""
    from labtools.lab import Lab

    params = load_profile(name)
    run_id = run_id or f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    prefix = prefix or os.environ.get("LABTOOLS_PREFIX") or params.get("00-lab-setup", {}).get("prefix", "thesis")
    build = paths.build_dir() / "notebooks"
    build.mkdir(parents=True, exist_ok=True)
    paper = new_paper(run_id, name)
    os.environ["LABTOOLS_PAPER"] = str(paper)  # the notebooks (kernels inherit it) write there, not in paper/
    lab = Lab(None, prefix)
    outs = []
    try:
        for nb in ORDER:
            if not (paths.notebooks_dir() / f"{nb}.ipynb").exists():
                continue
            p = {**params.get(nb, {}), "prefix": prefix}
            if nb in LOADS_DATA:
                p.update(run_id=run_id, measure=True)
            outs.append(_execute(nb, build / f"{nb}.ipynb", p))
    finally:
        lab.down()
    print(f"run {run_id}: {len(outs)} notebooks in {build}; figures and tables in {paper} (make paper "
          f"PAPER_DIR={paper.relative_to(paths.project_root())} builds its PDF)")  # fmt: skip
    return outs


def new_paper(run_id: str, profile: str) -> Path:
    """build/paper: the thesis' sources, without any generated file, for a new run's figures and tables.

    The committed paper/ changes only through `figures()` from the reference runs; a new run gets its own
    copy, marked with the run (the PDF then carries a banner that names it).
    """
    src, dst = paths.project_root() / "paper", paths.build_dir() / "paper"
    shutil.rmtree(dst, ignore_errors=True)
    shutil.copytree(src, dst, ignore=shutil.ignore_patterns("build", "figures", "tables", "manifest.json"))
    (dst / "run.json").write_text(json.dumps({"run_id": run_id, "profile": profile}) + "\n")
    return dst


def figures() -> list[Path]:
    """Regenerate figures and tables from committed data: the data-loading notebooks, in place."""
    outs = []
    for nb in LOADS_DATA:
        path = paths.notebooks_dir() / f"{nb}.ipynb"
        if path.exists():
            outs.append(_execute(nb, path, {}))
    return outs
