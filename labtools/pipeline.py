"""The notebooks in order, headless, with papermill and the parameters of a profile (params/<profile>.yaml).

Two ways to run them:

- `reproduce(profile)`: measure. Brings the lab up (netns backend, root), runs every notebook with
  `measure=True` into `build/notebooks/` under a new run id, and takes the lab down again, even when a
  cell fails. Papermill keeps the parameters in each executed notebook's metadata.
- `figures()`: no root, no lab. Re-runs the notebooks that can load a committed run (`measure=False`,
  their default parameters: the reference run) in place, so `notebooks/*.ipynb` carry the outputs nbval
  checks, and every figure and table under `paper/` is regenerated from `data/` alone. It refuses to start
  unless every data file of `paper/manifest.json` is there, and a notebook that fails keeps its committed
  copy: nothing else writes into `notebooks/`.

The paper folder a notebook writes to is a parameter of each run, handed to its kernel alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import papermill as pm

from labtools.base import paths
from labtools.base.errors import LabError
from labtools.model.plan import load_profile

# Notebooks in order; those that can read a committed run instead of measuring take `measure`/`run_id`.
ORDER = ("00-lab-setup", "01-scale-sweep", "02-srv6-captures", "03-claims", "04-programming")
LOADS_DATA = ("01-scale-sweep", "02-srv6-captures", "03-claims", "04-programming")


@contextlib.contextmanager
def _kernel_env(**values: str) -> Iterator[None]:
    """Environment for the kernel papermill starts (it inherits ours), restored as it was afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _execute(name: str, out: Path, parameters: dict, paper: Path, keep_failed: bool = True) -> Path:
    """Run one notebook with papermill into `out`, its figures and tables into `paper`; progress of its long
    cells reaches the terminal, not the notebook.

    The notebook is executed into a temporary file beside `out` and renamed only on success, so `out` is
    never half-written. On a failure the executed copy with the error replaces `out` if `keep_failed` (a
    build folder), else it is removed (the committed notebooks stay as they were); on Ctrl-C it is removed.
    """
    src = paths.notebooks_dir() / f"{name}.ipynb"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.tmp.ipynb")
    log = tmp.with_suffix(".progress")
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
    try:
        # The kernel's own log (startup warnings, and its complaints when an interrupt closes its channels) is
        # not the user's business: a failing cell is reported below, from the notebook.
        with _kernel_env(LABTOOLS_PROGRESS=str(log), LABTOOLS_PAPER=str(paper)):
            pm.execute_notebook(str(src), str(tmp), parameters=parameters, cwd=str(paths.notebooks_dir()),
                                kernel_name="python3", progress_bar=False,
                                extra_arguments=["--IPKernelApp.log_level=CRITICAL"])  # fmt: skip
        os.replace(tmp, out)
    except pm.PapermillExecutionError as e:
        where = f"; the executed notebook with the error is {out}" if keep_failed else ""
        if keep_failed:
            os.replace(tmp, out)
        raise LabError(f"{name} failed in cell {e.exec_count} ({e.ename}: {e.evalue}){where}") from None
    finally:
        tmp.unlink(missing_ok=True)
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
    paper = new_paper(run_id, name)  # the notebooks write there, not in paper/
    lab = Lab(None, prefix)
    outs = []
    try:
        for nb in ORDER:
            if not (paths.notebooks_dir() / f"{nb}.ipynb").exists():
                continue
            p = {**params.get(nb, {}), "prefix": prefix}
            if nb in LOADS_DATA:
                p.update(run_id=run_id, measure=True)
            outs.append(_execute(nb, build / f"{nb}.ipynb", p, paper))
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


def missing_reference_data() -> list[str]:
    """The data files the committed figures and tables were made from (paper/manifest.json) that are not
    there: `figures()` runs only when this is empty."""
    from labtools.outputs import figures as figs

    committed = figs.load_manifest(paths.project_root() / "paper" / "manifest.json")["outputs"]
    if not committed:
        return ["paper/manifest.json (it lists the reference data)"]
    needed = {d for entry in committed.values() for d in entry["data"]}

    def where(d: str) -> Path:  # the manifest names files relative to the project; $LABTOOLS_DATA moves data/
        return paths.data_root() / Path(d).relative_to("data") if d.startswith("data/") else paths.project_root() / d

    return sorted(d for d in needed if not where(d).exists())


def figures() -> list[Path]:
    """Regenerate figures and tables from committed data: the data-loading notebooks, in place.

    Only from complete reference data, checked first: a notebook that fails leaves its committed copy as
    it was, and one that cannot fail for missing data is never started."""
    missing = missing_reference_data()
    if missing:
        shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise LabError(f"the reference data is incomplete ({shown} missing under {paths.data_root()}): restore "
                       "data/ from the repository (git checkout -- data) before `labtools figures`")
    outs = []
    for nb in LOADS_DATA:
        path = paths.notebooks_dir() / f"{nb}.ipynb"
        if path.exists():
            outs.append(_execute(nb, path, {}, paths.paper_root(), keep_failed=False))
    return outs
