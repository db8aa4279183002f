"""Service datapaths on the (emulated) worker: kube-proxy iptables/nftables modes and an eBPF NodePort.

`switch()` is the single entry point: it clears every other datapath from the node, then renders and
applies the chosen one for the given service ports ("none" leaves the node without service rules).
"""

from __future__ import annotations

from labtools.base.errors import LabError
from labtools.datapaths.base import Datapath, Node, Programmed
from labtools.datapaths.ebpf import DEFAULT_CILIUM, EbpfDatapath
from labtools.datapaths.iptables import IptablesDatapath
from labtools.datapaths.nftables import NftablesDatapath
from labtools.model import plan, services
from labtools.model.topology import InterfaceRef, Inventory

NAMES = plan.DATAPATHS


def get(name: str, *, cilium_version: str | None = None, kube_proxy_version: str | None = None) -> Datapath | None:
    """The datapath called `name`; None for "none". `cilium_version`: the Cilium release the ebpf datapath
    models; `kube_proxy_version`: the kube-proxy release whose nftables layout is rendered (both default to
    the newest modelled)."""
    if name == "none":
        return None
    if name == "iptables":
        return IptablesDatapath("nft")
    if name == "iptables-legacy":
        return IptablesDatapath("legacy")
    if name == "nftables":
        return NftablesDatapath(version=kube_proxy_version)
    if name == "ebpf":
        return EbpfDatapath(cilium_version or DEFAULT_CILIUM)
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
            link = inv.link_of(InterfaceRef(m.name, ifname))
            host_side = next((e for e in (link.members if link else []) if e.machine == worker.name), None)
            if host_side:
                pods[str(m.global_v6()[0])] = host_side.interface
    return Node(worker.name, str(ip), uplink, str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR), pods)


from labtools.datapaths.switcher import Switcher, switch  # noqa: E402 - after get(), which it uses

__all__ = ["NAMES", "Datapath", "Node", "Programmed", "Switcher", "all_datapaths", "get", "node_of", "switch"]
