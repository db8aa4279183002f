"""Service datapaths on the (emulated) worker: kube-proxy iptables/nftables modes and an eBPF NodePort.

`switch()` is the single entry point: it clears every other datapath from the node, then renders and
applies the chosen one for the given service ports ("none" leaves the node without service rules).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from labtools import services
from labtools.datapaths.base import Datapath, Node, Programmed
from labtools.datapaths.ebpf import EbpfDatapath
from labtools.datapaths.iptables import IptablesDatapath
from labtools.datapaths.nftables import NftablesDatapath
from labtools.errors import LabError
from labtools.hosts import Host, NetnsHost
from labtools.prereqs import require_tools
from labtools.topology import Endpoint, Inventory

NAMES = ("none", "iptables", "iptables-legacy", "nftables", "ebpf")


def get(name: str) -> Datapath | None:
    """The datapath called `name`; None for "none"."""
    if name == "none":
        return None
    if name == "iptables":
        return IptablesDatapath("nft")
    if name == "iptables-legacy":
        return IptablesDatapath("legacy")
    if name == "nftables":
        return NftablesDatapath()
    if name == "ebpf":
        return EbpfDatapath()
    raise LabError(f"unknown datapath {name!r}: choose one of {', '.join(NAMES)}")


def all_datapaths() -> list[Datapath]:
    return [d for d in (get(n) for n in NAMES) if d is not None]


def node_of(inv: Inventory) -> Node:
    """The worker as a `Node`: its address and uplink, and the veth of each pod behind it."""
    worker = inv.by_role("worker")
    ip = worker.global_v6()[0]
    uplink = next(i.name for i in worker.interfaces.values() if any(a.ip == ip for a in i.addresses))
    pods = {}
    for m in inv.machines.values():
        if m.role != "pod":
            continue
        for ifname in m.interfaces:
            link = inv.link_of(Endpoint(m.name, ifname))
            host_side = next((e for e in (link.members if link else []) if e.machine == worker.name), None)
            if host_side:
                pods[str(m.global_v6()[0])] = host_side.interface
    return Node(worker.name, str(ip), uplink, str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR), pods)


class Switcher:
    """Switches a node between datapaths, parking instead of clearing where that is cheap.

    A sweep interleaves datapaths within every repeat. Re-programming kube-proxy's nftables rules for
    10,000 Services takes minutes (the kernel names anonymous sets in quadratic time), so datapaths
    whose state lives in nftables tables (nftables, iptables-nft) are parked — their tables made
    dormant, hooks unregistered, rules kept — and resumed when the same `key` (the workload) comes
    back. The others (eBPF, iptables-legacy) are cleared and programmed again, which takes well under
    a second. Caveat, recorded by the sweep: a parked table keeps the conntrack hooks of the worker's
    namespace registered, so `none` and `ebpf` then run with conntrack on, as on a real node.
    """

    def __init__(self, host: Host, node: Node):
        self.host, self.node = host, node
        self.parked: dict[str, tuple[object, Programmed]] = {}  # name -> (key, how it was programmed)
        self.active: str | None = None
        self._cleared = False

    def use(self, name: str, ports: Sequence[services.ServicePort], key: object = None) -> Programmed:
        """Make `name` the node's only active datapath, programmed with `ports` (identified by `key`).

        With a `key`, a parked datapath programmed for the same key is resumed instead of programmed;
        the returned `Programmed` then carries the original programming and `detail["resumed_s"]`.
        """
        chosen = get(name)
        if not self._cleared:  # unknown state: take every datapath off the node once
            if isinstance(self.host, NetnsHost):
                require_tools("nft", "ip6tables-nft-restore", "ip6tables-legacy-restore", "tc", "conntrack")
            for d in all_datapaths():
                d.clear(self.host, self.node)
            self._cleared = True
        for d in all_datapaths():
            if d.name == name:
                continue
            if d.name == self.active and d.can_park and key is not None:
                d.park(self.host)
            elif d.name == self.active or (d.name in self.parked and key is None):
                d.clear(self.host, self.node)
                self.parked.pop(d.name, None)
        if name != self.active:
            # Entries of the previous datapath would carry over: e.g. replies that eBPF sent through the
            # stack leave entries whose reverse tuple matches a later client SYN, which kube-proxy's NAT
            # then never sees (only NEW connections are NATed). Every datapath starts untracked.
            self.host.run(["conntrack", "-F"], check=False)  # rc 1: the table was already empty
        self.active = name
        if chosen is None:
            return Programmed("none", len({(p.namespace, p.name) for p in ports}), 0.0, 0.0, 0)
        if name in self.parked and self.parked[name][0] == key and key is not None:
            t0 = time.perf_counter()
            chosen.resume(self.host)
            done = self.parked[name][1]
            return Programmed(done.datapath, done.services, done.render_s, done.apply_s, done.objects,
                              {**done.detail, "resumed_s": time.perf_counter() - t0})  # fmt: skip
        if name in self.parked:  # parked with another workload: start from nothing
            chosen.clear(self.host, self.node)
        done = chosen.program(self.host, ports, self.node)
        if chosen.can_park:
            self.parked[name] = (key, done)
        return done


def switch(host: Host, node: Node, name: str, ports: Sequence[services.ServicePort]) -> Programmed:
    """Make `name` the node's only service datapath, programmed with `ports`."""
    return Switcher(host, node).use(name, ports)


__all__ = ["NAMES", "Datapath", "Node", "Programmed", "Switcher", "all_datapaths", "get", "node_of", "switch"]
