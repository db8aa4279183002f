"""The thesis' SRv6 L3VPN: rendering, bring-up/tear-down, captures at the five points, reachability matrix."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import ICMPv6EchoReply, ICMPv6EchoRequest, IPv6, IPv6ExtHdrSegmentRouting
from scapy.utils import rdpcap

from labtools import cli
from labtools.base import paths, prereqs
from labtools.base.errors import LabError, PrerequisiteError
from labtools.datapaths import ebpf, srv6
from labtools.experiments import captures, matrix
from labtools.hosts import Call, NetnsHost, RecordingHost, Reply, namespaces
from labtools.lab import Lab, capture
from labtools.lab.state import Srv6State
from labtools.model import topology
from tests.conftest import HAS_SEG6, POD_IP, fresh_lab, lab_fixture, needs_seg6

PREFIX = "psr"
CLIENT_IP = "2001:db8:1234:5679::1"
WORKER_IP = "2001:db8:1234:5678::2"


# ----------------------------------------------------------------------------- rendering (no root)


@pytest.fixture(scope="module")
def inv():
    return topology.load()


def test_plan_is_the_thesis_appendix_adapted(inv):
    p = srv6.plan(inv, "end-dt6")
    text = srv6.render(p)
    assert list(p) == ["router", "worker"]
    router = [" ".join(c) for c in p["router"]]
    worker = [" ".join(c) for c in p["worker"]]
    for conf in ("all", "ens3", "ens7"):
        assert f"sysctl -qw net.ipv6.conf.{conf}.seg6_enabled=1" in router
    assert "ip -6 sr tunsrc set fc00::1" in router and "ip -6 sr tunsrc set fc00::2" in worker
    assert "ip -6 rule add to fc00::1/128 lookup 100" in router
    assert ("ip -6 route add fc00::1/128 encap seg6local action End.DT6 table 254 dev ens7 table 100") in router
    assert "ip -6 route add fc00::2/128 via 2001:db8:1234:5678::2 dev ens7" in router
    assert (
        "ip -6 route add 2001:db8:1234:5678:8:2::/104 encap seg6 mode encap segs fc00::2 dev ens7 metric 100"
    ) in router
    assert f"ip -6 route add {WORKER_IP}/128 encap seg6 mode encap segs fc00::2 dev ens7 metric 100" in router
    assert "ip -6 route add 2001:db8:1234:5679::/64 encap seg6 mode encap segs fc00::1 dev ens3 metric 100" in worker
    assert "ip -6 route add fc00::2/128 encap seg6local action End.DT6 table 254 dev ens3 table 100" in worker
    assert "ip -6 route add fc00::1/128 via 2001:db8:1234:5678::3 dev ens3" in worker
    assert "# localsid" in text and "rt_tables" not in text


@pytest.mark.parametrize("mode", srv6.MODES)
def test_no_mode_renders_anything_dangerous(inv, mode):
    for cmds in srv6.plan(inv, mode).values():
        for argv in cmds:
            assert "End.DX6" not in argv
            assert not any("nf_hooks_lwtunnel" in a for a in argv)
    for cmds in srv6.plan_down(inv).values():
        assert not any("nf_hooks_lwtunnel" in a for argv in cmds for a in argv)


def test_modes_differ_only_where_documented(inv):
    worker = {m: [" ".join(c) for c in srv6.plan(inv, m)["worker"]] for m in srv6.MODES}
    assert not any("seg6local" in c for c in worker["ebpf"])  # the BPF program decapsulates
    assert not any("seg6_enabled=1" in c for c in worker["ebpf"])
    assert "ip -6 addr add fc00::2/128 dev lo nodad" in worker["local-sid"]
    assert not any("seg6local" in c for c in worker["local-sid"])
    assert worker["pod-sidecar"][0] == f"ip -6 route add fc00::2/128 via {POD_IP} dev lxc0"
    # BPF modes: no lwt encap on the worker; the reply encapsulation is srv6_egress at tc egress, under a
    # route whose MTU leaves room for the 64 bytes of outer IPv6 + SRH.
    mtu_route = "ip -6 route add 2001:db8:1234:5679::/64 via 2001:db8:1234:5678::3 dev ens3 mtu 8886 metric 100"
    encap = "labtools-bpf-load --srv6-encap nodeport.o ens3 fc00::2 fc00::1"
    for mode in ("ebpf", "local-sid+tc-encap"):
        assert not any("encap seg6" in c for c in worker[mode]) and mtu_route in worker[mode]
    assert f"{encap} --decap fc00::2 2001:db8:1234:5679::/64" in worker["ebpf"]
    assert "labtools-bpf-load --srv6-sid ens3 add fc00::2" in worker["ebpf"]
    assert f"{encap} 2001:db8:1234:5679::/64" in worker["local-sid+tc-encap"]
    assert "sysctl -qw net.ipv6.conf.ens3.seg6_enabled=1" in worker["local-sid+tc-encap"]
    assert "ip -6 addr add fc00::2/128 dev lo nodad" in worker["local-sid+tc-encap"]
    down = [" ".join(c) for c in srv6.plan_down(inv)["worker"]]
    assert "tc filter del dev ens3 egress pref 6" in down and "labtools-bpf-load --srv6-sid ens3 del fc00::2" in down
    pod = [" ".join(c) for c in srv6.plan(inv, "pod-sidecar")["pod"]]
    assert "ip -6 addr add fc00::2/128 dev lo nodad" in pod and "ip -6 sr tunsrc set fc00::2" in pod


@pytest.mark.parametrize(
    ("sid", "message"),
    [("fc00::zz", "not an IPv6 address"), ("10.0.0.1", "IPv4"), ("ff02::1", "multicast"), ("fe80::1", "link-local"),
     ("2001:db8:1234:5678::2", "already an address")],
)  # fmt: skip
def test_bad_sids_are_refused(inv, sid, message):
    with pytest.raises(LabError, match=message):
        srv6.plan(inv, worker_sid=sid)


def test_bad_mode_and_equal_sids_are_refused(inv):
    with pytest.raises(LabError, match="unknown SRv6 ingress mode 'end-dx6'"):
        srv6.plan(inv, "end-dx6")
    with pytest.raises(LabError, match="must differ"):
        srv6.plan(inv, router_sid="fc00::9", worker_sid="fc00::9")
    with pytest.raises(LabError, match="unknown capture point"):
        capture.points(inv, ["client", "switch"])
    with pytest.raises(LabError, match="invalid run id"):
        paths.check_run_id("../x")


def test_missing_tools_are_named(monkeypatch):
    monkeypatch.setattr(prereqs, "which", lambda tool: None)
    with pytest.raises(PrerequisiteError, match=r"missing tool.*ip.*iproute2"):
        srv6.require({"router": NetnsHost("router", "nowhere")}, ["router"])


@pytest.fixture
def recorded(inv, monkeypatch):
    """A recording host per machine, one log for all; the BPF loader and object as if built."""
    monkeypatch.setattr(ebpf, "require_built", lambda: (Path("/b/nodeport.o"), Path("/b/labtools-bpf-load")))
    log: list[Call] = []
    return {m: RecordingHost(m, log=log) for m in inv.machines}, log


def ran(log: list[Call]) -> list[tuple[str, list[str]]]:
    """The commands that change something, in order: without the `command -v` probes and installs."""
    return [(c.host, list(c.argv)) for c in log if c.kind == "run" and c.argv[:2] != ("sh", "-c")]


def as_run(plan: dict[str, list[list[str]]]) -> list[tuple[str, list[str]]]:
    """A plan flattened as it runs: machine after machine, the BPF placeholders where a remote host installs them."""
    installed = {srv6.LOADER: "/tmp/labtools-labtools-bpf-load", srv6.BPF_OBJECT: "/tmp/labtools-nodeport.o"}
    return [(m, [installed.get(a, a) for a in argv]) for m, cmds in plan.items() for argv in cmds]


@pytest.mark.parametrize("mode", srv6.MODES)
def test_up_removes_any_earlier_tunnel_then_runs_the_plan_in_order(inv, recorded, mode):
    hosts, log = recorded
    assert srv6.up(hosts, mode, inventory=inv) == srv6.plan(inv, mode)
    assert ran(log) == as_run(srv6.plan_down(inv)) + as_run(srv6.plan(inv, mode))


def test_down_runs_every_undo_even_where_there_is_nothing_to_undo(inv, recorded):
    hosts, log = recorded
    for h in hosts.values():
        h.answers = {"ip": Reply(2, "", "RTNETLINK answers: No such process")}
    assert srv6.down(hosts, inventory=inv, worker_sid="fc00::7") == srv6.plan_down(inv, worker_sid="fc00::7")
    assert ran(log) == as_run(srv6.plan_down(inv, worker_sid="fc00::7"))


def test_a_failed_up_takes_back_what_it_did(inv, recorded):
    hosts, log = recorded
    hosts["worker"].answers = {"seg6local": Reply(2, "", "Error: seg6local: unknown action")}
    with pytest.raises(LabError, match=r"(?s)srv6: .*seg6local.*CONFIG_IPV6_SEG6_LWTUNNEL"):
        srv6.up(hosts, "end-dt6", inventory=inv)
    undo, plan = as_run(srv6.plan_down(inv)), as_run(srv6.plan(inv, "end-dt6"))
    failed = next(i for i, (m, argv) in enumerate(plan) if m == "worker" and "seg6local" in argv)
    assert ran(log) == undo + plan[: failed + 1] + undo


def test_a_refused_up_runs_nothing(inv, recorded):
    hosts, log = recorded
    with pytest.raises(LabError, match="unknown SRv6 ingress mode"):
        srv6.up(hosts, "end-dx6", inventory=inv)
    assert log == []
    hosts["router"].answers = {"command -v": "tc\n"}  # a remote machine without tc
    with pytest.raises(PrerequisiteError, match=r"\[router\] missing tool\(s\): tc"):
        srv6.up(hosts, "end-dt6", inventory=inv)
    assert ran(log) == []  # only the probes for tools


def test_dry_run_prints_every_command_per_host(capsys):
    assert cli.main(["srv6", "up", "--dry-run", "--mode", "local-sid"]) == 0
    out = capsys.readouterr().out
    assert "# router" in out and "# worker" in out
    assert "ip -6 addr add fc00::2/128 dev lo nodad" in out
    assert cli.main(["srv6", "down", "--dry-run"]) == 0
    assert "ip -6 sr tunsrc set ::" in capsys.readouterr().out
    assert cli.main(["srv6", "up", "--dry-run", "--worker-sid", "nope"]) == 2


# ----------------------------------------------------------------------------- in the lab (root)


@lab_fixture(scope="module")
def slab():
    yield from fresh_lab(PREFIX)


def snapshot(lab: Lab) -> dict[str, str]:
    out = {}
    for m in ("router", "worker", "pod"):
        h = lab.host(m)
        out[m] = "\n".join(
            h.run(argv).stdout
            for argv in (["ip", "-6", "route", "show", "table", "all"], ["ip", "-6", "rule", "show"],
                         ["ip", "-6", "addr", "show"], ["ip", "-6", "sr", "tunsrc", "show"],
                         ["sysctl", "-a", "--pattern", "seg6_enabled"])
        )  # fmt: skip
    # the BPF modes' tc filters (srv6_egress on the uplink's egress) must go with `down`
    out["worker-tc"] = lab.host("worker").run(["tc", "filter", "show", "dev", "ens3", "egress"]).stdout
    return out


@needs_seg6
def test_the_thesis_prefix_would_lose_to_the_connected_route(slab):
    got = srv6.thesis_prefix_check(slab.host("router"), WORKER_IP)
    assert "encap seg6" in got["routes"] and "metric 1024" in got["routes"]
    assert "encap" not in got["with_thesis_route"] and "proto kernel" in got["with_thesis_route"]
    assert "metric 256" in got["with_thesis_route"]


@needs_seg6
def test_down_restores_the_plain_routed_path_exactly(slab):
    before = snapshot(slab)
    for mode in srv6.MODES:
        srv6.up(slab, mode)
        srv6.up(slab, mode)  # idempotent
        assert snapshot(slab) != before
        assert "encap seg6" in slab.host("router").run(["ip", "-6", "route", "get", POD_IP]).stdout
        srv6.down(slab)
        assert snapshot(slab) == before, mode
    srv6.down(slab)  # idempotent
    assert snapshot(slab) == before
    hooks = Path("/proc/sys/net/netfilter/nf_hooks_lwtunnel")
    assert not hooks.exists() or hooks.read_text().strip() == "0"  # never switched on


def layers(pkt) -> tuple:
    """(outer IPv6, SRH or None, inner IPv6 or None) of a captured frame."""
    ip = pkt.getlayer(IPv6)
    srh = pkt.getlayer(IPv6ExtHdrSegmentRouting)
    inner = pkt.getlayer(IPv6, 2) if srh is not None else None
    return ip, srh, inner


def echo(pcap, kind):
    return [p for p in rdpcap(str(pcap)) if p.haslayer(kind)]


@needs_seg6
def test_ping_through_the_tunnel_looks_like_the_thesis_figures(slab, tmp_path):
    srv6.up(slab, "end-dt6")
    try:
        m = captures.run(slab, "srv6-icmp", scenarios=["icmp"], count=3, root=tmp_path)
    finally:
        srv6.down(slab)
    (c,) = m["captures"]
    assert c["ok"], c["output"]
    assert c["command"][:2] == ["ping", "-6"] and "-s" in c["command"]
    run = tmp_path / "raw" / "srv6-icmp"
    on_disk = json.loads((run / "manifest.json").read_text())
    assert on_disk["srv6_mode"] == "end-dt6" and on_disk["snaplen"] >= 9000
    assert set(on_disk["points"]) == set(capture.POINTS)
    assert on_disk["points"]["router-cluster"] == {"machine": "router", "interface": "ens7"}
    assert "tcpdump version" in on_disk["tcpdump"] and on_disk["kernel"]["router"] == os.uname().release
    files = {p: run / "icmp" / f"{p}.pcap" for p in capture.POINTS}
    for p, f in files.items():
        assert c["files"][p]["packets"] == c["files"][p]["tcpdump_stats"]["captured"] == capture.pcap_count(f) > 0

    # Plain IPv6 at the client and the pod, 64-byte ICMPv6 (payload length 64).
    for p in ("client", "router-client", "pod"):
        for kind in (ICMPv6EchoRequest, ICMPv6EchoReply):
            pkts = echo(files[p], kind)
            assert len(pkts) == 3, (p, kind)  # all three: tcpdump was listening before the first ping
            for pkt in pkts:
                ip, srh, _ = layers(pkt)
                assert srh is None and ip.plen == 64 and ip.nh == 58
    assert [p[ICMPv6EchoRequest].seq for p in echo(files["client"], ICMPv6EchoRequest)] == [1, 2, 3]

    # Encapsulated on the router's cluster leg and the worker uplink: fc00::1 <-> fc00::2, one-segment SRH.
    # The outer header is made with the inner hop limit (seg6_do_srh_encap copies it), then forwarded once: 63
    # for the request (64 from the client); for the reply, the pod's Cilium-like attachment has already aged
    # the inner packet to 63, so 62 leaves the worker (the thesis' Figs. 40-41); 63 with a plain veth.
    outer_hl = {ICMPv6EchoRequest: 63, ICMPv6EchoReply: 62 if slab.pod_attachment() == "cilium" else 63}
    for p in ("router-cluster", "worker"):
        for kind, src, dst in ((ICMPv6EchoRequest, "fc00::1", "fc00::2"), (ICMPv6EchoReply, "fc00::2", "fc00::1")):
            pkts = echo(files[p], kind)
            assert len(pkts) == 3, (p, kind)
            for pkt in pkts:
                ip, srh, inner = layers(pkt)
                assert (ip.src, ip.dst, ip.nh, ip.plen) == (src, dst, 43, 128)
                assert srh is not None and srh.type == 4 and srh.segleft == 0 and srh.lastentry == 0
                assert list(srh.addresses) == [dst] and srh.nh == 41
                assert inner.plen == 64 and ip.fl == inner.fl  # flow label copied from the inner header
                assert ip.hlim == outer_hl[kind], (p, kind.__name__)

    # Hop limits (thesis: 64 at the client and 62 at the pod for requests, 64 / 62 the other way). The
    # encapsulating end does not decrement the inner header (seg6 encap runs in the lwtunnel input handler,
    # before ip6_forward); End.DT6 forwards the inner packet once; the pod's Cilium-like attachment (the lab's
    # default, labtools.lab.cni) ages it once more on the worker, each way: 62, as the thesis shows.
    hl = {(p, k.__name__): {x[IPv6].hlim for x in echo(files[p], k)} for p in ("client", "pod")
          for k in (ICMPv6EchoRequest, ICMPv6EchoReply)}  # fmt: skip
    assert hl[("client", "ICMPv6EchoRequest")] == {64} and hl[("pod", "ICMPv6EchoReply")] == {64}
    assert hl[("pod", "ICMPv6EchoRequest")] == {62} and hl[("client", "ICMPv6EchoReply")] == {62}
    # nothing left behind: no tcpdump, no temporary pcaps
    for ns in namespaces.lab_namespaces(PREFIX):
        assert not [p for p in namespaces.pids(ns) if "tcpdump" in Path(f"/proc/{p}/comm").read_text()]
    assert not [f for f in os.listdir("/tmp") if f.startswith("labtools-capture-")]


@needs_seg6
def test_tcp_to_the_pod_passes_the_tunnel_the_nodeport_does_not(slab, tmp_path):
    srv6.up(slab, "end-dt6")
    try:
        m = captures.run(slab, "srv6-tcp", scenarios=["tcp-pod", "tcp-nodeport"], datapath="nftables", count=1,
                        timeout=1.0, root=tmp_path)  # fmt: skip
    finally:
        srv6.down(slab)
    pod_run, np_run = m["captures"]
    assert pod_run["ok"] and not np_run["ok"]
    run = tmp_path / "raw" / "srv6-tcp"
    syn_at_worker = [p for p in rdpcap(str(run / "tcp-pod" / "worker.pcap")) if p.haslayer(TCP) and p[TCP].flags == "S"]
    assert syn_at_worker and all(layers(p)[1] is not None for p in syn_at_worker)
    syn_at_pod = [p for p in rdpcap(str(run / "tcp-pod" / "pod.pcap")) if p.haslayer(TCP) and p[TCP].flags == "S"]
    assert syn_at_pod and all(layers(p)[1] is None and p[IPv6].src == CLIENT_IP for p in syn_at_pod)
    # The NodePort SYN is encapsulated to the worker and never reaches the pod (End.DT6 looks the node's
    # own address up in the main table only).
    np_port = np_run["port"]
    enc = [p for p in rdpcap(str(run / "tcp-nodeport" / "router-cluster.pcap")) if p.haslayer(IPv6ExtHdrSegmentRouting)]
    assert any(p.haslayer(TCP) and p[TCP].dport == np_port for p in enc)
    assert not [p for p in rdpcap(str(run / "tcp-nodeport" / "pod.pcap")) if p.haslayer(TCP)]


@needs_seg6
def test_reachability_matrix(slab, tmp_path):
    rows = pd.read_csv(matrix.run(slab, "m", root=tmp_path, progress=False)).to_dict("records")
    got = {(r["mode"], r["datapath"], r["target"]): r["reachable"] for r in rows}
    print("\n" + "\n".join(f"{k}: {v}" for k, v in got.items()))
    assert len(rows) == (1 + len(srv6.MODES)) * 3 * 2
    assert all(r["notes"] and not r["notes"].startswith(("UNEXPECTED", "no explanation")) for r in rows), [
        (r["mode"], r["datapath"], r["target"], r["notes"])
        for r in rows
        if r["notes"].startswith(("UNEXPECTED", "no "))
    ]
    assert all(r["via_tunnel"] == (r["mode"] != "none") for r in rows)
    for dp in srv6.MATRIX_DATAPATHS:
        assert got[("none", dp, "pod")] and got[("none", dp, "nodeport")]  # the baseline works
        for mode in ("end-dt6", "local-sid", "pod-sidecar"):  # the thesis finding; none fixes it without nf_hooks
            assert not got[(mode, dp, "nodeport")], (mode, dp)
        assert got[("pod-sidecar", dp, "pod")]
    # The pod through the worker-terminated tunnel: kube-proxy's iptables mode drops the encapsulated replies
    # (forwarded without conntrack: KUBE-FORWARD --ctstate INVALID -j DROP); nftables and eBPF pass them.
    for mode in ("end-dt6", "local-sid"):
        assert not got[(mode, "iptables", "pod")]
        assert got[(mode, "nftables", "pod")] and got[(mode, "ebpf", "pod")]
    # The NodePort through the tunnel, one way per datapath: eBPF decapsulates in from_netdev (mode `ebpf`);
    # kube-proxy's modes with the kernel decapsulating (local SID) and BPF encapsulating after POSTROUTING.
    assert got[("ebpf", "ebpf", "pod")] and got[("ebpf", "ebpf", "nodeport")]
    for dp in ("iptables", "nftables"):
        assert got[("local-sid+tc-encap", dp, "pod")] and got[("local-sid+tc-encap", dp, "nodeport")], dp
        assert not got[("ebpf", dp, "pod")] and not got[("ebpf", dp, "nodeport")]  # nothing decapsulates
    # eBPF with the kernel's local-SID decapsulation: tc sees the stale outer headers, the stack sends RST.
    assert got[("local-sid+tc-encap", "ebpf", "pod")] and not got[("local-sid+tc-encap", "ebpf", "nodeport")]
    assert slab.state.get(Srv6State) is None  # the matrix took its tunnels down


@pytest.mark.skipif(HAS_SEG6, reason="this kernel has SRv6 routes: the tunnel comes up")
def test_a_kernel_without_srv6_routes_is_named(slab):
    with pytest.raises(PrerequisiteError, match="CONFIG_IPV6_SEG6_LWTUNNEL"):
        srv6.up(slab, "end-dt6")
    assert cli.main(["srv6", "up", "--prefix", PREFIX]) == 2
    # nothing was left half-configured
    assert "encap" not in slab.host("router").run(["ip", "-6", "route", "show"]).stdout
