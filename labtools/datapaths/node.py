"""The worker of an inventory as the datapaths see it (`Node`)."""

from __future__ import annotations

from labtools.datapaths.base import Node
from labtools.model import services
from labtools.model.topology import InterfaceRef, Inventory


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
