"""Switching a node between datapaths, parking instead of clearing where that is cheap.

This is the mechanism; a lab's worker is switched only through `labtools.datapaths.worker.Worker`, which takes
the lab's lock and keeps the lab's record of what the worker holds."""

from __future__ import annotations

import time
from collections.abc import Sequence

from labtools.datapaths import registry
from labtools.datapaths.base import Node, Programmed
from labtools.hosts import Host
from labtools.lab import transit
from labtools.model import services
from labtools.model.datapaths import REGISTRY, SWITCH_TOOLS, Releases


class Switcher:
    """Switches a node between datapaths, parking instead of clearing where that is cheap.

    A sweep interleaves datapaths within every repeat, and programs the same workload again for every
    datapath and repeat. Waking a parked table takes milliseconds, a full sync of 10,000 Services seconds
    (iptables-nft, the 1.37 nftables layout) to minutes (the 1.35 and 1.36 layouts with several endpoints,
    whose anonymous sets the kernel names in quadratic time). So datapaths whose state lives in nftables
    tables (nftables, iptables-nft) are parked — their tables made dormant, hooks unregistered, rules kept —
    and resumed when the same `key` (the workload) comes back. The others (eBPF, iptables-legacy) are cleared
    and programmed again, which takes well under a second. Caveat, recorded by the sweep: a parked table keeps
    the conntrack hooks of the worker's namespace registered, so `none` and `ebpf` then run with conntrack on,
    as on a real node.
    """

    def __init__(self, host: Host, node: Node, *, cilium_version: str | None = None,
                 kube_proxy_version: str | None = None, releases: Releases | None = None):  # fmt: skip
        self.host, self.node = host, node
        self.releases = releases or Releases(**{k: v for k, v in (("cilium_version", cilium_version),
                                                                  ("kube_proxy_version", kube_proxy_version)) if v})
        self.parked: dict[str, tuple[object, Programmed]] = {}  # name -> (key, how it was programmed)
        self.active: str | None = None
        self._cleared = False

    @property
    def cilium_version(self) -> str:
        return self.releases.cilium_version

    @property
    def kube_proxy_version(self) -> str:
        return self.releases.kube_proxy_version

    def use(self, name: str, ports: Sequence[services.ServicePort], key: object = None) -> Programmed:
        """Make `name` the node's only active datapath, programmed with `ports` (identified by `key`).

        With a `key`, a parked datapath programmed for the same key is resumed instead of programmed;
        the returned `Programmed` then carries the original programming and `detail["resumed_s"]`.
        """
        chosen = registry.get(name, releases=self.releases)
        if not self._cleared:  # unknown state: take every datapath off the node once
            needed = dict.fromkeys([*SWITCH_TOOLS, *(t for spec in REGISTRY.values() for t in spec.tools)])
            self.host.require_tools(*needed)
            for d in registry.all_datapaths():
                d.clear(self.host, self.node)
            transit.detach_stale(self.host)  # a killed measurement's probe filters
            self._cleared = True
        for d in registry.all_datapaths():
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


def switch(host: Host, node: Node, name: str, ports: Sequence[services.ServicePort], *,
           cilium_version: str | None = None, kube_proxy_version: str | None = None) -> Programmed:  # fmt: skip
    """Make `name` the node's only service datapath, programmed with `ports` (ebpf: as `cilium_version`;
    nftables: in the layout of `kube_proxy_version`)."""
    return Switcher(host, node, cilium_version=cilium_version, kube_proxy_version=kube_proxy_version).use(name, ports)


