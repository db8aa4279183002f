"""The thesis' SRv6 L3VPN between the router and the worker, on any `Host` (netns or SSH).

The thesis (§11.4 and appendix) builds a one-segment L3VPN: the router encapsulates traffic for the
cluster with ``encap seg6 mode encap segs fc00::2``, the worker the replies with ``segs fc00::1``; each
end decapsulates with ``seg6local action End.DT6 table 254`` found through ``ip -6 rule add to <SID>
lookup localsid`` (table 100), and each has a static route to the peer's SID. ``seg6_enabled=1`` is set
on ``all`` and on every interface. This module renders exactly those commands from the inventory as
data (`plan()`, printed by ``labtools srv6 up --dry-run``), applies them (`up()`) and removes them again
(`down()`), without touching anything else.

Differences from the appendix, and why:

* **Table 100 is used by number.** The appendix appends ``100 localsid`` to ``/etc/iproute2/rt_tables``;
  that file is the host's, shared by every namespace, so we never write it. Output and docs call the
  table "100 (localsid)".
* **The worker has one uplink.** The thesis' worker VM had ``ens3`` and ``ens7`` and put the encap route
  and the End.DT6 SID on different ones (``... dev ens7`` / ``... dev ens3``). The emulated worker (and
  `labtools.datapaths.node_of`) has a single uplink ``ens3`` that carries both the plain and the
  encapsulated traffic, so every worker command says ``dev ens3``; ``seg6_enabled`` is set on ``all``
  and on every interface the worker has (``ens3`` and the pod's veth ``lxc0``).
* **What is encapsulated.** The appendix encapsulates ``2001:db8:1234:5678::/64``, which is also the
  router's *connected* prefix on ``ens7``. In IPv6 both routes coexist (different metrics) and the
  kernel takes the lowest metric of the longest match: the connected route (``proto kernel metric 256``)
  beats the appendix' static route (``ip -6 route add`` default ``metric 1024``), so the router sends
  cluster traffic on-link, unencapsulated (`thesis_prefix_check()` shows it with ``ip -6 route get``).
  Besides, our router has the more specific pod-CIDR route ``2001:db8:1234:5678:8:2::/104`` (native
  routing, as Cilium's auto-direct-node-routes), and a longer prefix always wins over any /64. So the
  router here encapsulates exactly the two destinations the experiment needs, at metric
  `ENCAP_METRIC` (100) so they win over the plain routes without replacing them: the pod CIDR
  (``2001:db8:1234:5678:8:2::/104``: the pod ``…:8:2:1:841``) and the worker's node address
  (``2001:db8:1234:5678::2/128``: its NodePorts). The master stays on the plain path. The worker
  encapsulates the client prefix ``2001:db8:1234:5679::/64`` the same way (its plain static route, at
  metric 1024, stays underneath). `down()` deletes only what `up()` added, so the plain routed path
  comes back exactly.

Ingress modes (how the worker side terminates the tunnel; the router side is always the thesis'):

``end-dt6``
    The thesis: ``seg6local End.DT6 table 254`` for fc00::2 in table 100. The kernel decapsulates in
    ``input_action_end_dt6`` (``net/ipv6/seg6_local.c``), looks the inner destination up in the main
    table only (``seg6_lookup_nexthop`` → ``ip6_pol_route`` on table 254) and hands it to
    ``dst_input()``: the inner packet never passes netfilter PREROUTING nor tc ingress again
    (``nf_hooks_lwtunnel`` adds hooks only to End.DX4/DX6, and we never enable it), so neither
    kube-proxy's DNAT nor a tc-ingress eBPF NodePort sees it. Worse, the node's own address lives in
    table 255 (local), not in table 254: the lookup finds the connected /64 and treats the worker's
    own address as an on-link neighbour on ens3, so NodePort traffic is lost whatever the datapath.
    Pod IPs are in the main table, so the pod is reachable. That is the thesis' observation.
``local-sid``
    fc00::2 is a local address of the worker (on ``lo``) and ``seg6_enabled=1``: the outer packet is
    delivered locally, ``ipv6_rthdr_rcv`` → ``ipv6_srh_rcv`` sees Segments Left 0 and Next Header 41,
    pulls the outer headers and re-injects the inner packet with ``netif_rx()`` on the receiving
    device, so tc ingress and PREROUTING run again for it. ``seg6_enabled`` must be 1 on both ``all``
    and the receiving interface (the kernel takes the minimum); no other sysctl is needed
    (``accept_source_route`` is not consulted for SRH type 4).
``pod-sidecar``
    The SRv6 endpoint moves into the pod's namespace (thesis §11.5 future work): fc00::2 is a local SID
    of the pod (``lo``, ``seg6_enabled=1``), the pod encapsulates its replies itself (``tunsrc
    fc00::2``), and the worker only routes fc00::2 to the pod's veth. (End.DT6 ``table 254`` in the pod
    would not work: the pod's own address is only in its local table.)
``ebpf``
    SRv6 in BPF, as Cilium does it. fc00::2 is a local address (so the outer packet is neither forwarded
    nor answered with an ICMPv6 error) but ``seg6_enabled`` stays 0 and no seg6local route is installed,
    so the kernel does not decapsulate (it drops an SRH packet that reaches it). The eBPF NodePort
    program decapsulates at tc ingress of the uplink (``from_netdev``, as Cilium's ``tail_srv6_decap``):
    ``labtools-bpf-load --srv6-sid ens3 add fc00::2`` writes the SID into its ``srv6_sids`` map (empty
    otherwise: the plain datapath is unchanged), and the inner packet then gets the normal NodePort
    treatment (DNAT, redirect to the pod's veth) or goes to the stack (the pod IP). The replies are
    encapsulated in BPF too (``srv6_egress``, see the next mode), not by a seg6 route. The SID is also kept
    by the encapsulation program (``--decap``), from which a NodePort program loaded later takes it, so
    ``up`` may come before or after the datapath is programmed. Needs the ``ebpf`` datapath: with
    kube-proxy's modes nothing decapsulates.
``local-sid+tc-encap``
    The kernel decapsulates as in ``local-sid`` (PREROUTING sees the inner packet: kube-proxy's DNAT
    happens), and the replies are encapsulated *after* POSTROUTING by a tc egress BPF program on the
    uplink (``srv6_egress`` in ``labtools/bpf/nodeport.c``, pref 6; outer IPv6 fc00::2 → fc00::1 + a
    one-segment SRH, hop limit 64, traffic class and flow label copied, like ``encap seg6 mode encap``):
    the reply is forwarded and tracked as an ordinary ESTABLISHED packet, reverse-NATed in POSTROUTING,
    and netfilter never sees the outer packet. The worker's route to the client prefix is shadowed (metric
    100) by a plain one with ``mtu`` 64 bytes below the link's, so the pod gets Packet Too Big instead of
    frames the link would drop (the kernel's seg6 route does the same through its lwtunnel headroom).
    Works for every datapath but the NodePort of the eBPF one (the stale headers below).

What the kernel does to the packets (measured in the lab, `tests/test_srv6.py`):

* **Hop limits.** For a forwarded packet the seg6 encap route acts in the lwtunnel *input* handler
  (``seg6_input``), before ``ip6_forward``: the encapsulating end does not decrement the inner hop limit;
  the new outer header gets the route's default hop limit (64) and is then forwarded (63 on the wire, as in
  the thesis' router ens7 capture). The decapsulating End.DT6 forwards the inner packet once (64 → 63).
  So the pod sees requests with hop limit 63 and the client replies with 63 — one less decrement than
  the thesis' 62, whose pod sat behind Cilium (its BPF datapath routes to/from the lxc device as an
  extra hop; we have a plain veth route). The outer payload length is 128 for a 64-byte ICMPv6 echo
  (40 inner IPv6 + 24 SRH with one segment + 64), and the outer flow label is copied from the inner
  (``net.ipv6.seg6_flowlabel=0``), both as in the thesis.
* **Conntrack after encapsulation.** The encapsulated packet leaves the seg6 encap without a conntrack
  entry (the inner packet's entry is dropped with the encapsulation), and the outer packet is then
  forwarded: in FORWARD it is "INVALID" (no conntrack). kube-proxy's iptables mode drops exactly that
  (``KUBE-FORWARD -m conntrack --ctstate INVALID -j DROP``), so on an iptables node *every* reply the
  worker encapsulates is lost — even the pod IP is unreachable through the tunnel (End.DT6 and local-SID
  alike), while nftables (no invalid drop) and eBPF nodes pass it. Measured: the SYN-ACK is tracked in
  PREROUTING (``SYN_RECV``) and its outer packet ``fc00::2 → fc00::1`` then matches ``--ctstate INVALID``
  in FORWARD. The request's inner packet after End.DT6 keeps the *outer* packet's entry (``fc00::1 →
  fc00::2``, protocol 41) and is never tracked itself.
* **Local-SID re-injection and tc.** ``ipv6_srh_rcv`` pulls the outer headers but leaves the MAC header
  pointer on the original frame, so whatever looks at the re-injected packet from L2 — tcpdump on the
  uplink (it shows the *outer* packet a second time) and a tc-ingress BPF program (its packet data starts
  at the old Ethernet header, then the outer IPv6 + SRH) — sees the outer headers again. The eBPF NodePort
  program therefore passes it unparsed and the worker's stack answers the NodePort SYN with RST.
  PREROUTING (which starts at the network header) does see the inner packet, so kube-proxy's DNAT
  happens; but the reply is encapsulated before POSTROUTING, so its reverse NAT never applies (the
  SYN-ACK leaves with the pod's address) unless ``nf_hooks_lwtunnel=1``, which we never set.

* **The way around both.** Encapsulating at tc egress (``local-sid+tc-encap``) instead of in the lwt
  input path makes the reply an ordinary forwarded packet for netfilter (conntrack, reverse NAT) and
  gives the NodePort through the tunnel on the iptables and nftables datapaths; decapsulating in the tc
  program itself (``ebpf``) gives it on the eBPF datapath. `matrix()` records why each cell is what it is.

Safety: End.DX6 is never used, and ``net.netfilter.nf_hooks_lwtunnel`` is never touched (it is a global,
one-way switch, and End.DX6 + nf_hooks_lwtunnel + DNAT can crash the shared kernel).
"""

from __future__ import annotations

import ipaddress
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field

from labtools.base.errors import CommandError, LabError, PrerequisiteError
from labtools.base.prereqs import require_seg6_lwtunnel
from labtools.hosts import Host
from labtools.lab.state import Srv6State
from labtools.model import datapaths as registry
from labtools.model import services
from labtools.model.topology import InterfaceRef, Inventory, Machine

MODES = ("end-dt6", "local-sid", "pod-sidecar", "ebpf", "local-sid+tc-encap")
DEFAULT_MODE = "end-dt6"
ROUTER_SID = "fc00::1"
WORKER_SID = "fc00::2"
LOCALSID_TABLE = 100  # "localsid" in the thesis' /etc/iproute2/rt_tables; used by number here
MAIN_TABLE = 254
ENCAP_METRIC = 100  # below the kernel's connected (256) and the static routes' (1024) metric
THESIS_PREFIX = "2001:db8:1234:5678::/64"  # what the appendix encapsulates (see the module docstring)
FORBIDDEN_ACTIONS = ("End.DX6",)
# The BPF pieces (labtools/bpf): placeholders in a plan, replaced by the installed paths when it is applied.
LOADER = "labtools-bpf-load"
BPF_OBJECT = "nodeport.o"
TC_PREF = 6  # tc filter pref/handle of srv6_egress on the worker's uplink egress (loader.c SRV6_PREF)
SRV6_OVERHEAD = 40 + 8 + 16  # outer IPv6 header + SRH with one segment


@dataclass(frozen=True)
class Tunnel:
    """The tunnel's parameters, derived from the inventory by `tunnel()`."""

    router: str  # machine names
    worker: str
    pod: str | None  # None on a real cluster, whose pods are not inventory machines
    router_uplink: str  # the router's cluster-side interface (ens7)
    router_ifaces: tuple[str, ...]
    worker_uplink: str  # ens3
    worker_mtu: int  # of the uplink
    worker_ifaces: tuple[str, ...]
    pod_iface: str | None  # eth0
    pod_veth: str | None  # the worker's side of the pod's veth (lxc0)
    router_ip: str  # router on the cluster segment (the worker's SID next hop)
    worker_ip: str  # the node address (the router's SID next hop; NodePorts)
    pod_ip: str
    router_sid: str
    worker_sid: str
    cluster_prefixes: tuple[str, ...]  # what the router encapsulates toward the worker
    client_prefixes: tuple[str, ...]  # what the worker (or the pod) encapsulates toward the router
    table: int = LOCALSID_TABLE
    metric: int = ENCAP_METRIC
    notes: list[str] = field(default_factory=list, compare=False)


def check_sid(sid: str, what: str = "SID") -> str:
    """A SID must be a global-scope IPv6 unicast address; returns it in canonical form."""
    try:
        ip = ipaddress.ip_address(str(sid).strip())
    except ValueError:
        raise LabError(f"{what} {sid!r} is not an IPv6 address (e.g. {ROUTER_SID})") from None
    if ip.version != 6:
        raise LabError(f"{what} {sid!r} is IPv4: SRv6 SIDs are IPv6 addresses (e.g. {ROUTER_SID})")
    if ip.is_multicast or ip.is_unspecified or ip.is_loopback or ip.is_link_local:
        raise LabError(f"{what} {sid} must be a routable unicast address, not multicast/::/::1/link-local")
    return str(ip)


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise LabError(f"unknown SRv6 ingress mode {mode!r}: choose one of {', '.join(MODES)}")
    return mode


def _iface_on(m: Machine, ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv6Interface]:
    for i in m.interfaces.values():
        for a in i.addresses:
            if a.version == 6 and not a.ip.is_link_local and ip in a.network:
                return i.name, a
    raise LabError(f"machine {m.name!r} has no interface on the subnet of {ip}: cannot build the SRv6 tunnel")


def tunnel(inv: Inventory, router_sid: str = ROUTER_SID, worker_sid: str = WORKER_SID) -> Tunnel:
    """Derive the tunnel from the inventory: who the ends are, their uplinks, next hops and prefixes."""
    rsid, wsid = check_sid(router_sid, "router SID"), check_sid(worker_sid, "worker SID")
    if rsid == wsid:
        raise LabError(f"router and worker SIDs must differ, both are {rsid}")
    router, worker, client = (inv.by_role(r) for r in ("router", "worker", "client"))
    pods = [m for m in inv.machines.values() if m.role == "pod"]
    pod = pods[0] if len(pods) == 1 else None
    owned = {str(a.ip) for m in inv.machines.values() for a in m.addresses(6)}
    for sid in (rsid, wsid):
        if sid in owned:
            raise LabError(f"SID {sid} is already an address of a machine in the inventory; pick an unused one")
    worker_ip = worker.global_v6()[0]
    worker_uplink, _ = _iface_on(worker, worker_ip)
    router_uplink, router_addr = _iface_on(router, worker_ip)
    pod_iface = veth = None
    pod_ip = ipaddress.IPv6Address(services.POD_IP)
    if pod is not None:
        pod_ip = pod.global_v6()[0]
        pod_iface = next(n for n, i in pod.interfaces.items() if any(a.ip == pod_ip for a in i.addresses))
        link = inv.link_of(InterfaceRef(pod.name, pod_iface))
        veth = next((e.interface for e in (link.members if link else []) if e.machine == worker.name), None)
    cluster_cidr = services.CLUSTER_CIDR
    if pod_ip not in cluster_cidr:
        cluster_cidr = ipaddress.IPv6Network(f"{pod_ip}/128")
    client_prefixes = tuple(
        dict.fromkeys(str(a.network) for a in client.addresses(6) if not a.ip.is_link_local and a.version == 6)
    )
    return Tunnel(
        router=router.name,
        worker=worker.name,
        pod=pod.name if pod else None,
        router_uplink=router_uplink,
        router_ifaces=tuple(router.interfaces),
        worker_uplink=worker_uplink,
        worker_mtu=worker.interfaces[worker_uplink].mtu,
        worker_ifaces=tuple(worker.interfaces),
        pod_iface=pod_iface,
        pod_veth=veth,
        router_ip=str(router_addr.ip),
        worker_ip=str(worker_ip),
        pod_ip=str(pod_ip),
        router_sid=rsid,
        worker_sid=wsid,
        cluster_prefixes=(str(cluster_cidr), f"{worker_ip}/128"),
        client_prefixes=client_prefixes,
    )


# ----------------------------------------------------------------------------- rendering


def _seg6_sysctls(ifaces: tuple[str, ...], value: int) -> list[list[str]]:
    return [["sysctl", "-qw", f"net.ipv6.conf.{i}.seg6_enabled={value}"] for i in ("all", *ifaces)]


def _encap(prefix: str, sid: str, dev: str, metric: int) -> list[str]:
    return ["ip", "-6", "route", "add", prefix, "encap", "seg6", "mode", "encap", "segs", sid, "dev", dev,
            "metric", str(metric)]  # fmt: skip


def _end_dt6(sid: str, dev: str, table: int) -> list[list[str]]:
    return [
        ["ip", "-6", "rule", "add", "to", f"{sid}/128", "lookup", str(table)],
        ["ip", "-6", "route", "add", f"{sid}/128", "encap", "seg6local", "action", "End.DT6", "table",
         str(MAIN_TABLE), "dev", dev, "table", str(table)],
    ]  # fmt: skip


def _tc_encap(t: Tunnel, decap: bool = False) -> list[list[str]]:
    """Reply encapsulation in BPF at tc egress of the uplink, after POSTROUTING (nodeport.c `srv6_egress`).

    The plain route to the client prefix is shadowed by one with the MTU lowered by the 64 bytes the
    encapsulation adds (as the kernel's seg6 encap route does through its lwtunnel headroom): the pod then
    gets Packet Too Big instead of frames the link would drop.
    """
    mtu = t.worker_mtu - SRV6_OVERHEAD
    routes = [["ip", "-6", "route", "add", p, "via", t.router_ip, "dev", t.worker_uplink, "mtu", str(mtu),
               "metric", str(t.metric)] for p in t.client_prefixes]  # fmt: skip
    attach = [LOADER, "--srv6-encap", BPF_OBJECT, t.worker_uplink, t.worker_sid, t.router_sid]
    if decap:  # the SID for a NodePort program loaded after `up` (the loader carries it over)
        attach += ["--decap", t.worker_sid]
    return [*routes, [*attach, *t.client_prefixes]]


def plan(
    inv: Inventory, mode: str = DEFAULT_MODE, *, router_sid: str = ROUTER_SID, worker_sid: str = WORKER_SID
) -> dict[str, list[list[str]]]:
    """Every command `up()` runs, per machine, in order: the thesis' appendix adapted as documented above."""
    check_mode(mode)
    t = tunnel(inv, router_sid, worker_sid)
    router: list[list[str]] = _seg6_sysctls(t.router_ifaces, 1)
    router += [_encap(p, t.worker_sid, t.router_uplink, t.metric) for p in t.cluster_prefixes]
    router.append(["ip", "-6", "sr", "tunsrc", "set", t.router_sid])
    router += _end_dt6(t.router_sid, t.router_uplink, t.table)
    router.append(["ip", "-6", "route", "add", f"{t.worker_sid}/128", "via", t.worker_ip, "dev", t.router_uplink])

    worker: list[list[str]] = []
    pod: list[list[str]] = []
    reply_encap = [_encap(p, t.router_sid, t.worker_uplink, t.metric) for p in t.client_prefixes]
    to_router_sid = ["ip", "-6", "route", "add", f"{t.router_sid}/128", "via", t.router_ip, "dev", t.worker_uplink]
    local_sid = ["ip", "-6", "addr", "add", f"{t.worker_sid}/128", "dev", "lo", "nodad"]
    if mode == "end-dt6":
        worker += _seg6_sysctls(t.worker_ifaces, 1) + reply_encap
        worker.append(["ip", "-6", "sr", "tunsrc", "set", t.worker_sid])
        worker += _end_dt6(t.worker_sid, t.worker_uplink, t.table)
        worker.append(to_router_sid)
    elif mode == "local-sid":
        worker += _seg6_sysctls(t.worker_ifaces, 1) + reply_encap
        worker.append(["ip", "-6", "sr", "tunsrc", "set", t.worker_sid])
        worker += [local_sid, to_router_sid]
    elif mode == "ebpf":
        # No seg6local route and seg6_enabled left at 0: the kernel must not decapsulate; tc-ingress eBPF
        # does (the SID goes into the NodePort program's srv6_sids), and tc-egress eBPF encapsulates.
        worker += [local_sid, to_router_sid, *_tc_encap(t, decap=True)]
        worker.append([LOADER, "--srv6-sid", t.worker_uplink, "add", t.worker_sid])
    elif mode == "local-sid+tc-encap":
        # The kernel decapsulates (local SID, re-injected through PREROUTING); BPF encapsulates after POSTROUTING.
        worker += _seg6_sysctls(t.worker_ifaces, 1)
        worker += [local_sid, to_router_sid]
        worker += _tc_encap(t)
    else:  # pod-sidecar
        if t.pod is None or t.pod_veth is None or t.pod_iface is None:
            raise LabError(
                "ingress mode pod-sidecar needs the pod as a machine of the inventory, wired to the worker "
                "(role: pod); on a real cluster the sidecar is configured in the pod itself"
            )
        worker.append(["ip", "-6", "route", "add", f"{t.worker_sid}/128", "via", t.pod_ip, "dev", t.pod_veth])
        worker.append(to_router_sid)
        pod += _seg6_sysctls(("lo", t.pod_iface), 1)
        pod += [_encap(p, t.router_sid, t.pod_iface, t.metric) for p in t.client_prefixes]
        pod.append(["ip", "-6", "sr", "tunsrc", "set", t.worker_sid])
        pod.append(local_sid)
    out = {t.router: router, t.worker: worker}
    if pod and t.pod:
        out[t.pod] = pod
    for cmds in out.values():
        for argv in cmds:
            if any(a in FORBIDDEN_ACTIONS for a in argv) or any("nf_hooks_lwtunnel" in a for a in argv):
                raise AssertionError(f"refusing to render a forbidden SRv6 command: {shlex.join(argv)}")
    return out


def plan_down(
    inv: Inventory, *, router_sid: str = ROUTER_SID, worker_sid: str = WORKER_SID
) -> dict[str, list[list[str]]]:
    """Commands that remove what `up()` added in *any* mode (each may fail harmlessly when absent).

    ``seg6_enabled`` goes back to 0, the kernel default (what the lab's namespaces start with).
    """
    t = tunnel(inv, router_sid, worker_sid)

    def undo_end_dt6(sid: str) -> list[list[str]]:
        return [
            ["ip", "-6", "route", "del", f"{sid}/128", "table", str(t.table)],
            ["ip", "-6", "rule", "del", "to", f"{sid}/128", "lookup", str(t.table)],
        ]

    def undo_encap(prefixes: tuple[str, ...]) -> list[list[str]]:
        return [["ip", "-6", "route", "del", p, "metric", str(t.metric)] for p in prefixes]

    router = undo_encap(t.cluster_prefixes) + undo_end_dt6(t.router_sid)
    router += [["ip", "-6", "route", "del", f"{t.worker_sid}/128"], ["ip", "-6", "sr", "tunsrc", "set", "::"]]
    router += _seg6_sysctls(t.router_ifaces, 0)
    worker = undo_encap(t.client_prefixes) + undo_end_dt6(t.worker_sid)
    worker += [
        [LOADER, "--srv6-sid", t.worker_uplink, "del", t.worker_sid],
        ["tc", "filter", "del", "dev", t.worker_uplink, "egress", "pref", str(TC_PREF)],
        ["ip", "-6", "addr", "del", f"{t.worker_sid}/128", "dev", "lo"],
        ["ip", "-6", "route", "del", f"{t.worker_sid}/128"],
        ["ip", "-6", "route", "del", f"{t.router_sid}/128"],
        ["ip", "-6", "sr", "tunsrc", "set", "::"],
    ]
    worker += _seg6_sysctls(t.worker_ifaces, 0)
    pod = [
        *undo_encap(t.client_prefixes),
        ["ip", "-6", "addr", "del", f"{t.worker_sid}/128", "dev", "lo"],
        ["ip", "-6", "sr", "tunsrc", "set", "::"],
    ]
    out = {t.router: router, t.worker: worker}
    if t.pod is not None and t.pod_iface is not None:
        out[t.pod] = [*pod, *_seg6_sysctls(("lo", t.pod_iface), 0)]
    return out


def render(plan_: Mapping[str, list[list[str]]]) -> str:
    """A plan as text: one `# machine` header per host, then its commands, shell-quoted."""
    lines = []
    for machine, cmds in plan_.items():
        lines.append(f"# {machine}")
        lines += [shlex.join(c) for c in cmds]
        lines.append("")
    return "\n".join(lines).replace(f"lookup {LOCALSID_TABLE}", f"lookup {LOCALSID_TABLE}  # localsid")


def thesis_prefix_check(router: Host, dst: str, dev: str = "ens7") -> dict:
    """Add the appendix' own encap route (``THESIS_PREFIX``, default metric) and ask the kernel how it routes `dst`.

    Returns the `ip -6 route get` output with and without it; the route is removed again.
    """
    before = router.run(["ip", "-6", "route", "get", dst]).stdout.strip()
    add = ["ip", "-6", "route", "add", THESIS_PREFIX, "encap", "seg6", "mode", "encap", "segs", WORKER_SID, "dev", dev]
    router.run(add)
    try:
        during = router.run(["ip", "-6", "route", "get", dst]).stdout.strip()
        table = router.run(["ip", "-6", "route", "show", THESIS_PREFIX]).stdout.strip()
    finally:
        router.run(["ip", "-6", "route", "del", THESIS_PREFIX, "metric", "1024"], check=False)
    return {"dst": dst, "before": before, "with_thesis_route": during, "routes": table}


# ----------------------------------------------------------------------------- applying


def _hosts_and_inventory(target: object, inventory: Inventory | None) -> tuple[Mapping[str, Host], Inventory, object]:
    from labtools.lab import Lab

    if isinstance(target, Lab):
        return target.hosts, target.inventory, target
    if isinstance(target, Mapping):
        if inventory is None:
            raise LabError("srv6: give the inventory together with a mapping of hosts")
        return target, inventory, None
    raise LabError(f"srv6: expected a Lab or a {{machine: Host}} mapping, got {type(target).__name__}")


def require(hosts: Mapping[str, Host], machines: list[str]) -> None:
    """`ip` and `sysctl` on every machine the plan touches (local PATH for netns, remote for SSH)."""
    for name in machines:
        h = hosts.get(name)
        if h is None:
            raise LabError(f"srv6: no host for machine {name!r}")
        h.require_tools("ip", "sysctl", "tc")


def resolve_argv(host: Host, argv: list[str], check: bool) -> list[str] | None:
    """Replace the BPF placeholders by the installed loader and object; None to skip (not built, undo only)."""
    if argv[0] != LOADER:
        return argv
    from labtools.datapaths import ebpf

    try:
        obj, loader = ebpf.require_built()
    except PrerequisiteError:
        if not check:
            return None  # nothing was ever loaded with it
        raise
    installed = {LOADER: host.install(loader), BPF_OBJECT: host.install(obj)}
    return [installed.get(a, a) for a in argv]


def _apply(hosts: Mapping[str, Host], cmds: Mapping[str, list[list[str]]], check: bool) -> None:
    for machine, argvs in cmds.items():
        for argv in argvs:
            argv = resolve_argv(hosts[machine], argv, check)
            if argv is None:
                continue
            try:
                hosts[machine].run(argv, check=check)
            except CommandError as e:
                hint = ""
                if "seg6" in e.stderr or "encap" in " ".join(argv):
                    hint = " (does the kernel have CONFIG_IPV6_SEG6_LWTUNNEL / seg6local?)"
                raise LabError(f"srv6: {e}{hint}") from None


def up(
    target: object,
    mode: str = DEFAULT_MODE,
    *,
    inventory: Inventory | None = None,
    router_sid: str = ROUTER_SID,
    worker_sid: str = WORKER_SID,
) -> dict[str, list[list[str]]]:
    """Bring the tunnel up in ingress `mode` on a `Lab` (or a {machine: Host} mapping plus `inventory`).

    Idempotent: whatever an earlier `up` (of any mode) left is removed first. On failure the partial state
    is removed too. Returns the plan it applied.
    """
    check_mode(mode)
    hosts, inv, lab = _hosts_and_inventory(target, inventory)
    p = plan(inv, mode, router_sid=router_sid, worker_sid=worker_sid)
    undo = plan_down(inv, router_sid=router_sid, worker_sid=worker_sid)
    require(hosts, list(dict.fromkeys([*p, *undo])))
    if lab is not None:
        lab.state.forget(Srv6State)  # from here until success the tunnel is in no known mode
    if any(hosts[m].is_local for m in p):  # this machine's kernel; a VM's says so itself
        require_seg6_lwtunnel()
    _apply(hosts, undo, check=False)
    try:
        _apply(hosts, p, check=True)
    except BaseException:
        _apply(hosts, undo, check=False)
        raise
    if lab is not None:
        lab.state.put(Srv6State(mode=mode, router_sid=router_sid, worker_sid=worker_sid))
    return p


def down(
    target: object,
    *,
    inventory: Inventory | None = None,
    router_sid: str | None = None,
    worker_sid: str | None = None,
) -> dict[str, list[list[str]]]:
    """Remove the tunnel (whatever mode it was in), restoring the plain routed path. Idempotent."""
    hosts, inv, lab = _hosts_and_inventory(target, inventory)
    state = lab.state.get(Srv6State) if lab is not None else None
    rsid = router_sid or (state.router_sid if state else ROUTER_SID)
    wsid = worker_sid or (state.worker_sid if state else WORKER_SID)
    undo = plan_down(inv, router_sid=rsid, worker_sid=wsid)
    require(hosts, list(undo))
    _apply(hosts, undo, check=False)
    if lab is not None:
        lab.state.forget(Srv6State)
    return undo


def status(target: object, *, inventory: Inventory | None = None) -> dict[str, dict[str, str]]:
    """What the kernel holds per machine: routes with encap, table 100, rules, tunsrc."""
    hosts, inv, lab = _hosts_and_inventory(target, inventory)
    t = tunnel(inv)
    out = {}
    for name in (t.router, t.worker, *([t.pod] if t.pod else [])):
        h = hosts[name]
        out[name] = {
            "routes": h.run(["ip", "-6", "route", "show"]).stdout,
            f"table {t.table} (localsid)": h.run(
                ["ip", "-6", "route", "show", "table", str(t.table)], check=False
            ).stdout,
            "rules": h.run(["ip", "-6", "rule", "show"]).stdout,
            "tunsrc": h.run(["ip", "-6", "sr", "tunsrc", "show"], check=False).stdout.strip(),
        }
    if lab is not None:
        st = lab.state.get(Srv6State)
        out["state"] = st.model_dump() if st else {}
    return out


# ----------------------------------------------------------------------------- reachability matrix

MATRIX_DATAPATHS = ("iptables", "nftables", "ebpf")  # the matrix's default: one of each kind of datapath

# Why each cell of the matrix comes out as it does on this kernel: (mode, datapath or its registry family
# ("kube-proxy") or "*", target) -> (expected reachable, the kernel path). Checked against the measurement by
# `explain()`.
_INVALID_DROP = (
    "the worker's lwt seg6 encap route encapsulates the reply in the input path (seg6_input, before "
    "ip6_forward), the outer packet is forwarded without a conntrack entry and KUBE-FORWARD's "
    "'-m conntrack --ctstate INVALID -j DROP' drops it"
)
_DT6_NODEPORT = (
    "End.DT6 (input_action_end_dt6) looks the inner destination up in table 254 only and calls "
    "dst_input(): no PREROUTING, no tc ingress for the inner packet, and the node address (table 255) "
    "is taken for an on-link neighbour on ens3"
)
_STALE_TC = (
    "the kernel decapsulates (ipv6_srh_rcv, netif_rx) but leaves the MAC header pointer on the old frame: "
    "tc ingress sees the stale outer IPv6+SRH, from_netdev passes it, and the node's stack answers the "
    "NodePort SYN with RST"
)
_TC_ENCAP = (
    "srv6_egress (tc egress of ens3) encapsulates the reply after POSTROUTING, so netfilter never sees the outer packet"
)
_NO_DECAP = (
    "nothing decapsulates: seg6_enabled=0 (ipv6_srh_rcv drops the SRH packet to the local SID) and there "
    "is no eBPF NodePort program to do it"
)
NOTES: dict[tuple[str, str, str], tuple[bool, str]] = {
    ("none", "*", "pod"): (True, "plain routed path (no tunnel)"),
    ("none", "*", "nodeport"): (True, "plain routed path (no tunnel)"),
    ("end-dt6", "iptables", "pod"): (False, f"End.DT6 delivers the request to the pod, but {_INVALID_DROP}"),
    ("end-dt6", "*", "pod"): (True, "End.DT6 -> table 254 -> pod; the reply is lwt-encapsulated (no INVALID drop)"),
    ("end-dt6", "*", "nodeport"): (False, _DT6_NODEPORT),
    ("local-sid", "iptables", "pod"): (False, f"the kernel decapsulates (local SID), but {_INVALID_DROP}"),
    ("local-sid", "iptables", "nodeport"): (
        False,
        f"the re-injected inner packet is DNATed in PREROUTING, but {_INVALID_DROP} (and no reverse NAT)",
    ),
    ("local-sid", "*", "pod"): (True, "kernel decapsulation (ipv6_srh_rcv) -> pod; lwt-encapsulated reply"),
    ("local-sid", "nftables", "nodeport"): (
        False,
        "DNAT in PREROUTING happens, but the lwt route encapsulates the reply in the input path, before "
        "POSTROUTING: it leaves with the pod's address (no reverse NAT) and the client drops it",
    ),
    ("local-sid", "ebpf", "nodeport"): (False, _STALE_TC),
    ("pod-sidecar", "*", "pod"): (True, "the pod decapsulates and encapsulates itself; the worker only routes"),
    ("pod-sidecar", "*", "nodeport"): (
        False,
        "fc00::2 is routed to the pod, which decapsulates the NodePort SYN for the node's address and "
        "cannot deliver it (the service datapath on the worker never sees the inner packet)",
    ),
    ("ebpf", "ebpf", "pod"): (
        True,
        f"from_netdev decapsulates (SID in srv6_sids) and passes the inner packet to the stack -> pod; {_TC_ENCAP}",
    ),
    ("ebpf", "ebpf", "nodeport"): (
        True,
        "from_netdev decapsulates, then DNATs and redirects to the pod's veth; from_container reverse-NATs; "
        + _TC_ENCAP,
    ),
    ("ebpf", "*", "pod"): (False, _NO_DECAP),
    ("ebpf", "*", "nodeport"): (False, _NO_DECAP),
    ("local-sid+tc-encap", "*", "pod"): (
        True,
        f"kernel decapsulation (local SID) -> pod; the reply is forwarded as tracked (ESTABLISHED) and {_TC_ENCAP}",
    ),
    ("local-sid+tc-encap", "kube-proxy", "nodeport"): (
        True,
        "the kernel decapsulates and re-injects the inner packet (netif_rx): PREROUTING DNATs it; the reply "
        f"is reverse-NATed in POSTROUTING and then {_TC_ENCAP}",
    ),
    ("local-sid+tc-encap", "ebpf", "nodeport"): (False, _STALE_TC),
}


def explain(mode: str, datapath: str, target: str, reachable: bool) -> str:
    """The kernel path behind one matrix cell; flags a measurement that disagrees with the expectation."""
    group = registry.spec(datapath).family.value  # an unknown datapath is an error
    for dp in (datapath, group, "*"):
        if (mode, dp, target) in NOTES:
            expected, why = NOTES[(mode, dp, target)]
            return (
                why if expected == reachable else f"UNEXPECTED ({'reachable' if reachable else 'unreachable'}): {why}"
            )
    return "no explanation recorded for this cell"
