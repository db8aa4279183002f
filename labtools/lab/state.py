"""What a lab is programmed with, kept between commands: one typed record per concern, owned here.

The worker's service datapath is written only by its owner (`labtools.datapaths.worker.Worker`: `services
apply`, the sweep, bench, udp-check, the SRv6 matrix, captures), `labtools srv6 up` writes the tunnel mode;
`measure`, `capture` and `srv6 down` read them back. The records live under ``/run/labtools/<prefix>/``
(`paths.STATE_ROOT`), beside the lab's lock (`labtools.lab.lock`), go with `lab down`, and are written
atomically and only after the change they describe has succeeded: a change in progress first removes the old
record, so an interrupted apply leaves "unknown" rather than a record the worker no longer matches.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from labtools.base import paths
from labtools.lab.lock import LOCK_FILE


class ServicesState(BaseModel):
    """The worker's service datapath and the workload it was programmed with."""

    datapath: str
    services: int
    render_s: float
    apply_s: float
    objects: int
    workload: dict  # services.build() keyword arguments: the same Services can be rebuilt from it
    cilium_version: str | None = None  # the Cilium release the ebpf datapath models (None: another datapath)
    kube_proxy_version: str | None = None  # the kube-proxy release whose nftables layout is programmed
    cni: str | None = None  # how the pod was attached when the worker was programmed (netns lab)


class Srv6State(BaseModel):
    """The SRv6 tunnel's ingress mode and SIDs."""

    mode: str
    router_sid: str
    worker_sid: str


M = TypeVar("M", bound=BaseModel)
_FILES: dict[type[BaseModel], str] = {ServicesState: "services.json", Srv6State: "srv6.json"}


class LabState:
    """The state folder of one lab (by prefix, or inventory name on the SSH backend)."""

    def __init__(self, name: str):
        self.dir: Path = paths.state_dir(name)

    def get(self, kind: type[M]) -> M | None:
        path = self.dir / _FILES[kind]
        try:
            return kind.model_validate_json(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValidationError):
            path.unlink(missing_ok=True)  # unreadable: as good as unknown
            return None

    def put(self, record: BaseModel) -> None:
        paths.write_atomic(self.dir / _FILES[type(record)], record.model_dump_json(indent=1))

    def forget(self, kind: type[BaseModel]) -> None:
        """The record no longer describes the lab (a change is under way, or was undone)."""
        with contextlib.suppress(FileNotFoundError):
            (self.dir / _FILES[kind]).unlink()

    def clear(self) -> None:
        """Every record and log; the lock file stays (the command that clears holds it)."""
        if not self.dir.is_dir():
            return
        for p in self.dir.iterdir():
            if p.name == LOCK_FILE:
                continue
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
