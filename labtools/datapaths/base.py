"""What every service datapath offers: render the desired state, apply it (atomically where the datapath
can; each says what is not), clear it."""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

from labtools.hosts import Host
from labtools.model.services import ServicePort


@dataclass(frozen=True)
class Node:
    """The node the datapath runs on, as kube-proxy / Cilium know it."""

    name: str  # Kubernetes node name; decides which endpoints are local
    ip: str  # primary IPv6 address (NodePort frontend)
    uplink: str  # the interface NodePort traffic arrives on
    cluster_cidr: str  # pod CIDR for kube-proxy's local-traffic detector
    service_cidr: str
    pod_interfaces: dict[str, str] = field(default_factory=dict)  # endpoint IP -> host-side veth


@dataclass
class Programmed:
    """What `apply` did, with the timings the sweep records (programming latency)."""

    datapath: str
    services: int
    render_s: float
    apply_s: float
    objects: int  # rules, map entries or elements written
    detail: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Applied:
    """What `apply_change` did: the objects written, and what the datapath timed itself (eBPF: `map_calls_s`,
    the time inside the bpf() calls alone), so that callers read it from the result, not from the object."""

    objects: int
    measured: dict[str, float] = field(default_factory=dict)


def changed_services(before: Sequence[ServicePort], after: Sequence[ServicePort]) -> set[tuple[str, str]]:
    """(namespace, name) of every Service added, removed, or whose ports or endpoints differ: what kube-proxy's
    change trackers report as `UpdatedServices` (pkg/proxy/servicechangetracker.go, ServicePortMap.Update)."""
    def by_service(ports: Sequence[ServicePort]) -> dict[tuple[str, str], set[ServicePort]]:
        out: dict[tuple[str, str], set[ServicePort]] = {}
        for p in ports:
            out.setdefault((p.namespace, p.name), set()).add(p)
        return out

    b, a = by_service(before), by_service(after)
    return {k for k in b.keys() | a.keys() if b.get(k) != a.get(k)}


class Datapath(ABC):
    """kube-proxy's shape: one sync renders the whole desired state, one call applies it atomically."""

    name: str  # an entry of `labtools.model.datapaths.REGISTRY`, which also says what tools it needs
    tools: tuple[str, ...] = ()  # the same as the registry's (tests/test_registry.py checks)
    # nftables tables ("family name") holding all of this datapath's state. Such a datapath can be
    # parked cheaply: a dormant table keeps its rules but unregisters its hooks.
    nft_tables: tuple[str, ...] = ()

    @abstractmethod
    def render(self, ports: Sequence[ServicePort], node: Node) -> object:
        """The complete desired state for these service ports (text, or map entries)."""

    @abstractmethod
    def apply(self, host: Host, rendered: object, node: Node) -> int:
        """Replace whatever this datapath had on `host` with `rendered`. Returns the objects written."""

    @abstractmethod
    def clear(self, host: Host, node: Node) -> None:
        """Remove everything this datapath put on `host`; a no-op when there is nothing."""

    @property
    def can_park(self) -> bool:
        return bool(self.nft_tables)

    def park(self, host: Host) -> None:
        """Take the datapath out of the packet path but keep its state (only when `can_park`)."""
        self._set_dormant(host, True)

    def resume(self, host: Host) -> None:
        """Put a parked datapath back into the packet path, unchanged."""
        self._set_dormant(host, False)

    def _set_dormant(self, host: Host, dormant: bool) -> None:
        if not self.can_park:
            raise NotImplementedError(f"{self.name} cannot be parked")
        flags = " { flags dormant; }" if dormant else ""  # re-adding a table without flags wakes it
        host.run(["nft", "-f", "-"], input="".join(f"add table {t}{flags}\n" for t in self.nft_tables))

    def render_change(self, before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node) -> object:
        """What this datapath writes to go from `before` to `after` when one Service changed: its partial
        sync (kube-proxy) or its map updates (Cilium), not the whole state again."""
        raise NotImplementedError(f"{self.name} models no partial update")

    def apply_change(self, host: Host, rendered: object, node: Node) -> Applied:
        """Write what `render_change` produced onto a node programmed with `before`. Returns the objects written
        and what the datapath measured while writing them."""
        raise NotImplementedError(f"{self.name} models no partial update")

    @contextlib.contextmanager
    def updater(self, host: Host, node: Node) -> Iterator[Callable[[object], Applied]]:
        """What writes changes while it is open: ``with dp.updater(host, node) as apply: apply(rendered)``.
        kube-proxy runs its restore tool once per sync, so here each change is its own `apply_change`; a
        datapath whose agent stays up between changes (eBPF) starts it on entry, so that its start-up is no
        part of a timed change."""
        yield lambda rendered: self.apply_change(host, rendered, node)

    def program(self, host: Host, ports: Sequence[ServicePort], node: Node) -> Programmed:
        t0 = time.perf_counter()
        rendered = self.render(ports, node)
        t1 = time.perf_counter()
        objects = self.apply(host, rendered, node)
        t2 = time.perf_counter()
        return Programmed(self.name, len({(p.namespace, p.name) for p in ports}), t1 - t0, t2 - t1, objects)
