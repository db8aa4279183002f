"""How the netns lab attaches its pod: as Cilium does, or plainly (`labtools lab up --cni {cilium,plain}`).

``cilium`` (the default, as the thesis ran it): the BPF programs of ``labtools/bpf/cni.c`` on the host side of
each pod veth age every routed packet once more in each direction and answer a spent one with ICMPv6 time
exceeded, as Cilium's ``bpf_lxc``/``bpf_host`` do with legacy host routing and no endpoint routes (see
``labtools/bpf/lib/cni.h``). So the hop limits on the wire are the thesis' (request 62 at the pod, reply 62 at
the client through the SRv6 tunnel). ``plain``: a veth and a route, nothing else; the kernel alone ages packets.

The programs sit at the veth's egress (pref 1) and ingress (pref 2, after the eBPF datapath's own
``from_container``); the service datapaths never touch those. A real cluster (SSH backend) has its own CNI.
"""

from __future__ import annotations

import json

from labtools.base import paths
from labtools.base.errors import LabError, PrerequisiteError
from labtools.hosts import Host
from labtools.model.topology import CNIS, InterfaceRef, Inventory

OBJECT = paths.BPF / "cni.o"
LOADER = paths.BPF / "labtools-bpf-load"
INGRESS_PREF = 2  # labtools/bpf/loader.c CNI_INGRESS_PREF


def pod_veths(inv: Inventory) -> list[str]:
    """The worker's side of every pod's veth."""
    worker = inv.by_role("worker")
    out = []
    for m in inv.machines.values():
        if m.role != "pod":
            continue
        for ifname in m.interfaces:
            link = inv.link_of(InterfaceRef(m.name, ifname))
            out += [e.interface for e in (link.members if link else []) if e.machine == worker.name]
    return sorted(set(out))


def attach(worker: Host, inv: Inventory, kind: str) -> None:
    """Make the worker's pod attachment `kind`: load and attach the CNI programs, or take them off."""
    if kind not in CNIS:
        raise LabError(f"cni must be one of {', '.join(CNIS)}, got {kind!r}")
    veths = pod_veths(inv)
    detach(worker, veths)
    if kind == "plain" or not veths:
        return
    load(worker, str(inv.by_role("worker").global_v6()[0]), veths)


def load(worker: Host, router: str, veths: list[str]) -> None:
    """Load cni.o and attach its programs to `veths`; `router` is the source of the node's time exceeded."""
    for built, src in ((OBJECT, paths.BPF / "cni.c"), (LOADER, paths.BPF / "loader.c")):
        if not built.exists() or built.stat().st_mtime < src.stat().st_mtime:
            raise PrerequisiteError(f"{built} is missing or older than {src.name}: run `make setup`")
    worker.run([worker.install(LOADER), "--cni", worker.install(OBJECT), router, *veths])


def detach(worker: Host, veths: list[str]) -> None:
    for veth in veths:
        worker.run(["tc", "filter", "del", "dev", veth, "egress", "pref", "1"], check=False)
        worker.run(["tc", "filter", "del", "dev", veth, "ingress", "pref", str(INGRESS_PREF)], check=False)


def attached(worker: Host, inv: Inventory) -> str:
    """What the worker's pod attachment is: ``cilium`` when every pod veth carries the CNI programs."""
    veths = pod_veths(inv)

    def has(veth: str) -> bool:
        res = worker.run(["tc", "-j", "filter", "show", "dev", veth, "egress"], check=False)
        filters = json.loads(res.stdout or "[]") if res.ok else []
        return any(f.get("options", {}).get("bpf_name", "").startswith("to_container") for f in filters)

    return "cilium" if veths and all(has(v) for v in veths) else "plain"
