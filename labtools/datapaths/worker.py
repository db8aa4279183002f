"""The one owner of what a lab's worker is programmed with.

Every change of the worker's service datapath goes through a `Worker`: `services apply`, the sweep (through
`rigs.lab.LabRig`), `services bench`, `udp-check`, the SRv6 matrix and captures. It holds the lab's lock
(`labtools.lab.lock`) from the first change until `close()`, and keeps the lab's record (`ServicesState`):
the record goes first, the worker is programmed, then the record is written (datapath, count, workload,
model releases, pod attachment). A failure or an interrupt in between leaves no record, which `measure`
reads as "unknown" and refuses (`WorkerStateUnknown`), rather than one the worker does not hold.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator

from labtools.base.errors import WorkerStateUnknown
from labtools.datapaths import registry as factories
from labtools.datapaths.base import Programmed
from labtools.datapaths.node import node_of
from labtools.datapaths.switcher import Switcher
from labtools.lab import Lab
from labtools.lab.state import ServicesState
from labtools.model import datapaths as registry
from labtools.model import services
from labtools.model.datapaths import Releases


class Worker:
    """A lab's worker, programmed only through here. Use as a context manager, or `close()` when done."""

    def __init__(self, lab: Lab, *, releases: Releases | None = None, command: str | None = None):
        self.lab = lab
        self.node = node_of(lab.inventory)
        self.host = lab.host(self.node.name)
        self.releases = releases or Releases()
        self.switcher = Switcher(self.host, self.node, releases=self.releases)
        self.command = command
        self._held = False
        self._cni: str | None = None

    def __enter__(self) -> Worker:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def open(self) -> None:
        """Take the lab's lock (refused at once when another command holds it)."""
        if not self._held:
            self.lab.lock.acquire(self.command)
            self._held = True
            self._cni = self.lab.pod_attachment()  # cannot change while the lock is held

    def close(self) -> None:
        """Give the lab's lock back; the worker keeps what it holds, and the record says what that is."""
        if self._held:
            self._held = False
            self.lab.lock.release()

    def check(self, name: str) -> None:
        """Refuse an unknown datapath or release before anything changes."""
        factories.get(name, releases=self.releases)

    def use(self, name: str, workload: services.Workload | None = None, key: object = None) -> Programmed:
        """Make `name` (``nftables@1.35`` names the release too) the worker's only datapath, programmed with
        `workload` (None: no Services), and record it. `key` lets the switcher resume a parked datapath."""
        self.check(name)
        spec, version = registry.split_release(name)
        releases = self.releases
        if version is not None:
            assert spec.release_param is not None
            releases = dataclasses.replace(releases, **{spec.release_param: version})
        self.open()
        self.lab.state.forget(ServicesState)  # from here until the record is written, the worker is unknown
        if releases != self.switcher.releases:  # another release: a fresh switcher clears every datapath first
            self.switcher = Switcher(self.host, self.node, releases=releases)
        ports = services.service_ports(workload, self.node.name) if workload is not None else []
        done = self.switcher.use(spec.name, ports, key=key)
        self.lab.state.put(ServicesState(
            datapath=done.datapath, services=done.services, render_s=round(done.render_s, 4),
            apply_s=round(done.apply_s, 4), objects=done.objects,
            workload=workload.params if workload is not None else {},
            cilium_version=releases.cilium_version if spec.release_param == registry.CILIUM_PARAM else None,
            kube_proxy_version=releases.kube_proxy_version if spec.release_param == registry.KUBE_PROXY_PARAM else None,
            cni=self._cni,
        ))  # fmt: skip
        return done

    @contextlib.contextmanager
    def changing(self, *, undone: bool = False) -> Iterator[None]:
        """A change outside `use` (the datapath's own update path: one Service added, removed, moved).

        The record goes first. With `undone` (the block changes the worker back to what it held) the record comes
        back when the block succeeds; without, the worker stays unknown until the next `use`."""
        self.open()
        record = self.lab.state.get(ServicesState)
        self.lab.state.forget(ServicesState)
        yield
        if undone and record is not None:
            self.lab.state.put(record)

    def clear(self) -> Programmed:
        """No service datapath on the worker (parked ones too), recorded."""
        return self.use("none")


def holds(lab: Lab) -> ServicesState:
    """What the lab's worker is programmed with, by its record; `WorkerStateUnknown` when there is none."""
    state = lab.state.get(ServicesState)
    if state is None:
        raise WorkerStateUnknown(
            f"what the worker of lab {lab.prefix or lab.inventory.name} holds is unknown: no Services are programmed "
            f"(or an apply was interrupted): run `labtools services apply{lab.hint}` first (-d none for no service "
            "datapath)"
        )
    return state
