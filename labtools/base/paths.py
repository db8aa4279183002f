"""Where things live: the one place that knows the project's folders, the run-state folder and the
package's own resources. Every other module asks here.

The *project* is the folder with `params/`, `notebooks/` and `data/` (a checkout, or a copy of one). It
is `$LABTOOLS_ROOT` if set, else the checkout this package was imported from (an editable install), else
the nearest folder upwards from the working directory that has `params/` (a non-editable install run
inside a project). `$LABTOOLS_DATA` and `$LABTOOLS_PAPER` move the data and paper folders on their own
(tests work on copies).

Resources that ship inside the package (the default inventories, the BPF and C sources and what
`make setup` compiles from them) are found next to the code, wherever it is installed.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from labtools.base.errors import LabError

PACKAGE = Path(__file__).resolve().parents[1]  # labtools/, this module sits in labtools/base/
INVENTORIES = PACKAGE / "inventories"
DEFAULT_INVENTORY = INVENTORIES / "thesis-netns.yml"
BPF = PACKAGE / "bpf"
TOOLS = PACKAGE / "tools"
# State that outlives one command but not the lab (which Services are programmed, the SRv6 mode).
STATE_ROOT = Path(os.environ.get("LABTOOLS_STATE") or "/run/labtools")

RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def _is_project(p: Path) -> bool:
    return (p / "params").is_dir() and (p / "notebooks").is_dir()


def project_root() -> Path:
    """The project folder (see the module docstring); raises when there is none."""
    env = os.environ.get("LABTOOLS_ROOT")
    if env:
        return Path(env).resolve()
    if _is_project(PACKAGE.parent):
        return PACKAGE.parent
    for p in (Path.cwd(), *Path.cwd().parents):
        if _is_project(p):
            return p
    raise LabError(
        "no labtools project here: run inside a checkout (a folder with params/ and notebooks/), "
        "or set LABTOOLS_ROOT to one"
    )


def data_root() -> Path:
    """data/: raw/<run>/ and processed/<run>.csv."""
    return Path(os.environ.get("LABTOOLS_DATA") or project_root() / "data")


def raw(run_id: str) -> Path:
    return data_root() / "raw" / check_run_id(run_id)


def processed(name: str) -> Path:
    return data_root() / "processed" / f"{name}.csv"


def paper_root() -> Path:
    """paper/: the LaTeX thesis, its generated figures/ and tables/ and manifest.json."""
    return Path(os.environ.get("LABTOOLS_PAPER") or project_root() / "paper")


def params_dir() -> Path:
    return project_root() / "params"


def notebooks_dir() -> Path:
    return project_root() / "notebooks"


def build_dir() -> Path:
    """build/: executed notebooks of new runs (never tracked)."""
    return project_root() / "build"


def state_dir(lab: str) -> Path:
    return STATE_ROOT / lab


def check_run_id(run_id: str) -> str:
    """A run id names a folder under data/raw: letters, digits, '.', '_', '-', no '/' or '..'."""
    if not RUN_ID_RE.match(run_id or "") or ".." in run_id:
        raise LabError(
            f"invalid run id {run_id!r}: 1-100 letters, digits, '.', '_' and '-', starting with a letter or "
            "digit (no '/' and no '..': a run lives in data/raw/<run-id>)"
        )
    return run_id


def writable_folder(path: str | Path, flag: str = "--out") -> Path:
    """`path` as a folder labtools may create and write in, checked before any work and without creating
    anything: a file, a file on the way to it or a place the user cannot write is a named error."""
    p = Path(path).absolute()
    if p.exists() and not p.is_dir():
        raise LabError(f"{flag} {path} is a file, not a folder")
    existing = next(a for a in (p, *p.parents) if a.exists())
    if not existing.is_dir():
        raise LabError(f"{flag} {path}: {existing} is a file, so no folder can be made under it")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise LabError(f"{flag} {path}: cannot write in {existing}")
    return p


def write_atomic(path: str | Path, text: str) -> Path:
    """Write `text` to `path` through a temporary file beside it and a rename: readers see all or nothing,
    and a crash leaves the old file (or none), never half of the new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def relative(path: str | Path) -> str:
    """`path` relative to the project when it lies inside it (manifests stay portable), else absolute."""
    p = Path(path).resolve()
    try:
        return str(p.relative_to(project_root()))
    except (ValueError, LabError):
        return str(p)
