"""Figures, tables and numbers for the paper, each traceable to the notebook, parameters and data behind it.

As in showyourwork, every generated file under `paper/` has an entry in `paper/manifest.json`: the
notebook and parameters that made it, and the SHA-256 of both the data it was drawn from and of
itself. `check()` recomputes them, so a figure older than its data (or edited by hand) is caught.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from labtools.base import paths
from labtools.base.errors import LabError
from labtools.outputs import figstyle


def sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _rel(path: str | Path) -> str:
    return paths.relative(path)


def manifest_path() -> Path:
    """paper/manifest.json (or under $LABTOOLS_PAPER)."""
    return paths.paper_root() / "manifest.json"


def load_manifest(path: Path | None = None) -> dict:
    path = path or manifest_path()
    return json.loads(path.read_text()) if path.exists() else {"outputs": {}}


def record(outputs: Iterable[str | Path], *, notebook: str, params: Mapping, data: Iterable[str | Path],
           caption: str = "", manifest: Path | None = None) -> None:  # fmt: skip
    """Enter generated `outputs` into the manifest with the `data` files they were made from."""
    data = [Path(d) for d in data]
    missing = [str(d) for d in data if not d.exists()]
    if missing:
        raise LabError(f"cannot record provenance: data files missing: {', '.join(missing)}")
    manifest = manifest or manifest_path()
    man = load_manifest(manifest)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    for out in outputs:
        man["outputs"][_rel(out)] = {
            "sha256": sha256(out),
            "notebook": notebook,
            "params": json.loads(json.dumps(dict(params), default=str)),
            "data": {_rel(d): sha256(d) for d in data},
            "caption": caption,
            "made": stamp,
        }
    paths.write_atomic(manifest, json.dumps(man, indent=1, sort_keys=True) + "\n")


def save_figure(fig, name: str, *, notebook: str, params: Mapping, data: Iterable[str | Path], caption: str = "",
                directory: Path | None = None) -> list[Path]:  # fmt: skip
    """Write `fig` as `name`.pdf and `name`.png, in the paper's style (`figstyle`: fonts embedded as TrueType),
    and record both in the manifest."""
    directory = directory or paths.paper_root() / "figures"
    directory.mkdir(parents=True, exist_ok=True)
    outs = [directory / f"{name}.pdf", directory / f"{name}.png"]
    # A fixed creation date keeps the PDF's bytes (and hash) a function of the figure alone.
    with figstyle.context():
        fig.savefig(outs[0], bbox_inches="tight", metadata={"CreationDate": None})
        fig.savefig(outs[1], bbox_inches="tight", dpi=150)
    record(outs, notebook=notebook, params=params, data=data, caption=caption)
    return outs


def save_text(text: str, name: str, *, notebook: str, params: Mapping, data: Iterable[str | Path],
              caption: str = "", directory: Path | None = None) -> Path:  # fmt: skip
    """Write a generated LaTeX fragment (a table or macros) and record it in the manifest."""
    directory = directory or paths.paper_root() / "tables"
    directory.mkdir(parents=True, exist_ok=True)
    out = directory / name
    out.write_text(text)
    record([out], notebook=notebook, params=params, data=data, caption=caption)
    return out


def withdraw(name: str, manifest: Path | None = None) -> bool:
    """Remove a generated output that the data no longer supports (e.g. a figure of a measurement the new
    reference run does not have) and its manifest entry, so that no stale file stays behind with provenance
    that is no longer true. Returns whether there was one."""
    manifest = manifest or manifest_path()
    man = load_manifest(manifest)
    folder = paths.paper_root() / ("figures" if Path(name).suffix in (".pdf", ".png") else "tables")
    out = folder / name
    had = out.exists() or _rel(out) in man["outputs"]
    out.unlink(missing_ok=True)
    if man["outputs"].pop(_rel(out), None) is not None:
        paths.write_atomic(manifest, json.dumps(man, indent=1, sort_keys=True) + "\n")
    return had


def macro(name: str, value: object) -> str:
    """A LaTeX macro holding a generated number or word: `\\newcommand{\\name}{value}`."""
    if not name.isalpha():
        raise LabError(f"LaTeX macro names are letters only, got {name!r}")
    return f"\\newcommand{{\\{name}}}{{{value}}}\n"


def check(manifest: Path | None = None) -> list[str]:
    """Problems with the generated files: missing, edited, or older than the data they show."""
    problems = []
    for out, entry in load_manifest(manifest or manifest_path())["outputs"].items():
        path = paths.project_root() / out
        if not path.exists():
            problems.append(f"{out}: missing")
            continue
        if sha256(path) != entry["sha256"]:
            problems.append(f"{out}: changed since it was generated")
        for data, digest in entry["data"].items():
            dpath = paths.project_root() / data
            if not dpath.exists():
                problems.append(f"{out}: its data {data} is missing")
            elif sha256(dpath) != digest:
                problems.append(f"{out}: its data {data} changed after it was made (re-run {entry['notebook']})")
    return problems
