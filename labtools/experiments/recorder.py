"""The one recorder every measurement writes through: a run folder with a manifest, atomic point files,
resume, and the tidy table.

``data/raw/<run-id>/``
    ``manifest.json`` — what kind of run, its parameters (a rerun with other parameters is refused),
    provenance (`experiments.provenance.collect`), when it started, plus run-level facts an experiment
    adds (`Recorder.note`); ``points/<key>.json`` — one finished measurement each: its tidy records and
    whatever raw output and context the experiment keeps; other files an experiment writes (pcaps) live
    beside them (`Recorder.path`).
``data/processed/<run-id>.csv``
    every record of every point, one value per row (`Recorder.table`).

A point file is written to a temporary name and renamed, so a crash leaves a whole point or none; a
point that does not parse (a truncated or emptied file) is named, moved aside to ``points/broken/`` and
measured again. Re-running the same run id with the same parameters measures only what is missing.

A new run's folder and manifest appear with its first point or file: a command refused after `open()`
(a missing kernel feature, a workload that does not fit, a lab that is down) leaves nothing behind, so
the same run id can be used again with other parameters.
"""

from __future__ import annotations

import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import pandas as pd

from labtools.base import paths
from labtools.base.errors import LabError
from labtools.base.paths import write_atomic

_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,150}$")


def _plain(value: object) -> object:
    return json.loads(json.dumps(value, default=str))


class Recorder:
    """One run: ``Recorder(run_id, kind=..., params=...)``, then `open()`, `done()`, `write()`, `table()`."""

    def __init__(self, run_id: str, *, kind: str, params: dict, root: Path | None = None,
                 warn: Callable[[str], None] | None = None,
                 recorded_params: Callable[[dict], dict] | None = None):  # fmt: skip
        """`recorded_params(manifest)`: an existing run's parameters in today's terms (e.g. with the releases an
        older run was measured under, `experiments.releases.params_of`), compared with `params` on resume."""
        self.recorded_params = recorded_params or (lambda manifest: manifest.get("params"))
        self.run_id = paths.check_run_id(run_id)
        self.kind, self.params = kind, _plain(params)
        self.root = Path(root) if root is not None else paths.data_root()
        self.dir = self.root / "raw" / self.run_id
        self.points = self.dir / "points"
        self.manifest_path = self.dir / "manifest.json"
        self.warn = warn or (lambda msg: print(f"labtools: warning: {msg}", file=sys.stderr))
        self._unwritten: dict | None = None  # a new run's manifest until its first point or file
        self._extension: dict | None = None  # more blocks for an existing run, recorded with its first new point

    # -- the run

    def open(self, provenance: Callable[[], dict]) -> Recorder:
        """Start the run, or check that an existing one was made with the same parameters.

        `provenance` is called only for a new run (it is read once per run, not per point). A new run is
        written with its first point or file (`write`, `path`, `table`), not here.
        """
        if self.check():
            if self._extension is not None:  # whose code measured the new blocks
                self._extension["provenance"] = _plain(provenance())
            return self
        self._unwritten = {"run_id": self.run_id, "kind": self.kind, "params": self.params,
                           "provenance": _plain(provenance()), "started": time.time()}  # fmt: skip
        return self

    def check(self) -> bool:
        """Whether the run exists; an error when it exists with other parameters (before anything is measured)."""
        if not self.manifest_path.exists():
            return False
        old = self.manifest()
        there = self.recorded_params(old)
        if old.get("kind", self.kind) == self.kind and self._more_blocks(there):
            self._extension = {"repeats": [there["repeats"], self.params["repeats"]], "time": time.time()}
            return True
        if old.get("kind", self.kind) != self.kind or there != self.params:
            differ = sorted(k for k in {*(there or {}), *self.params} if (there or {}).get(k) != self.params.get(k))
            raise LabError(
                f"run {self.run_id} exists with other parameters ({self.manifest_path}): use a new run id, "
                f"or the same parameters to resume it.\n  differ: {', '.join(differ)}\n"
                f"  there: {json.dumps(there)}\n  now:   {json.dumps(self.params)}"
            )
        return True

    def _more_blocks(self, there: dict | None) -> bool:
        """Whether `params` asks an existing block-design run for more blocks and nothing else: each block is
        complete and drawn from (seed, block), so blocks added later are blocks like the first ones."""
        if not there or there.get("order") != "block" or self.params.get("order") != "block":
            return False
        same = {k: v for k, v in there.items() if k != "repeats"} == {
            k: v for k, v in self.params.items() if k != "repeats"}
        return same and int(self.params.get("repeats", 0)) > int(there.get("repeats", 0))

    def _create(self) -> None:
        if self._extension is not None:  # the manifest's plan grows with the first new point, not before
            man = self.manifest()
            man["params"] = {**man["params"], "repeats": self._extension["repeats"][1]}
            man.setdefault("extended", []).append(self._extension)
            write_atomic(self.manifest_path, json.dumps(man, indent=1))
            self._extension = None
        if self._unwritten is not None:
            self.points.mkdir(parents=True, exist_ok=True)
            write_atomic(self.manifest_path, json.dumps(self._unwritten, indent=1))
            self._unwritten = None

    def manifest(self) -> dict:
        if self._unwritten is not None:
            return dict(self._unwritten)
        try:
            return json.loads(self.manifest_path.read_text())
        except (OSError, ValueError) as e:
            raise LabError(f"{self.manifest_path} is unreadable ({e}): move it aside or use a new run id") from None

    def note(self, **facts: object) -> None:
        """Add run-level facts to the manifest (e.g. the SRv6 mode a capture ran in)."""
        man = self.manifest()
        man.update(_plain(facts))
        if self._unwritten is not None:
            self._unwritten = man
        else:
            write_atomic(self.manifest_path, json.dumps(man, indent=1))

    def path(self, *parts: str) -> Path:
        """A file or folder inside the run (pcaps, raw tool output); the run is created first."""
        self._create()
        return self.dir.joinpath(*parts)

    # -- points

    def _point(self, key: str) -> Path:
        if not _KEY.match(key):
            raise LabError(f"invalid point key {key!r}")
        return self.points / f"{key}.json"

    def _read(self, path: Path) -> dict | None:
        """A point's content, or None after moving a broken one aside (and saying so)."""
        try:
            point = json.loads(path.read_text())
            if not isinstance(point, dict) or not isinstance(point.get("records"), list):
                raise ValueError("no 'records' list")
            return point
        except (OSError, ValueError) as e:
            broken = self.points / "broken"
            broken.mkdir(exist_ok=True)
            target = broken / f"{path.name}.{int(time.time())}"
            os.replace(path, target)
            self.warn(f"point file {path} is broken ({e}): moved to {target}; it will be measured again")
            return None

    def done(self, key: str) -> bool:
        path = self._point(key)
        return path.exists() and self._read(path) is not None

    def pending(self, keys: Iterable[str]) -> list[str]:
        return [k for k in keys if not self.done(k)]

    def write(self, key: str, records: list[dict], **extra: object) -> Path:
        """Record one finished point: its tidy records and anything else worth keeping."""
        path = self._point(key)
        self._create()
        write_atomic(path, json.dumps({"records": records, **extra}, default=str))
        return path

    def read(self, key: str) -> dict | None:
        path = self._point(key)
        return self._read(path) if path.exists() else None

    def all_points(self) -> dict[str, dict]:
        out = {}
        for path in sorted(self.points.glob("*.json")):
            point = self._read(path)
            if point is not None:
                out[path.stem] = point
        return out

    def table(self, row: Callable[[dict, dict], dict] | None = None) -> Path:
        """Every record of every point as ``data/processed/<run-id>.csv``; `row(record, point)` may add columns."""
        self._create()
        rows = [row(rec, p) if row else rec for p in self.all_points().values() for rec in p["records"]]
        return write_atomic(self.root / "processed" / f"{self.run_id}.csv", pd.DataFrame(rows).to_csv(index=False))
