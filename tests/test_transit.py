"""The transit metric (BPF stamps at the worker's uplink and pod veth) and the handshake metric.

Transit is checked against an independent clock: tcpdump at the same two interfaces, with nanosecond
timestamps, over the same connections. The two bracket the worker at slightly different places (the
packet taps run before tc ingress and after tc egress), so they agree to within a few microseconds,
far below what separates iptables' rule walk from the rest. No timing claim is made here: the test
checks that both clocks see the same packets and tell the same story.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6
from scapy.utils import PcapReader

from labtools import datapaths, distribution
from labtools.lab import traffic
from labtools.lab.capture import Capture, Point
from labtools.model import services
from tests.conftest import fresh_lab

PREFIX = "pytr"


@pytest.fixture(scope="module")
def tlab():
    yield from fresh_lab(PREFIX)


def test_transit_records_are_tidy_percentiles_and_counts():
    raw = {"request_ns": [100, 200, 300, 400], "reply_ns": [10, 20], "crr": {},
           "counters": {"unmatched_request": 1, "unmatched_reply": 2}}  # fmt: skip
    recs = {r["metric"]: r for r in traffic.records("transit", raw, {"datapath": "none"})}
    assert recs["transit_request_p50"]["value"] == 250 and recs["transit_request_p50"]["unit"] == "ns"
    assert recs["transit_request_p99"]["value"] == pytest.approx(397)
    assert recs["transit_reply_packets"]["value"] == 2 and recs["transit_unmatched"]["value"] == 3
    assert {m for m in recs} == {f"transit_{d}_{k}" for d in ("request", "reply")
                                 for k in ("p50", "p90", "p99", "packets")} | {"transit_unmatched"}  # fmt: skip


def test_modes_find_two_humps_and_their_shares():
    rng = np.random.default_rng(7)
    two = distribution.modes(np.r_[rng.normal(10_000, 400, 600), rng.normal(20_000, 800, 400)])
    assert [round(m["share"], 2) for m in two] == [0.6, 0.4]
    assert 9_000 < two[0]["centre"] < 11_000 and 19_000 < two[1]["centre"] < 21_000
    one = distribution.modes(rng.normal(10_000, 400, 1000))
    assert len(one) == 1 and one[0]["share"] == 1.0
    raw = {"p50_us": 10.0, "p90_us": 20.0, "p99_us": 21.0, "modes": two}
    recs = {r["metric"]: r["value"] for r in traffic.records("handshake", raw, {})}
    assert recs["handshake_modes"] == 2 and recs["handshake_main_mode_share"] == 0.6


def _syn_times(pcap, flags: str) -> dict[tuple, int]:
    """(client address, client port, seq) -> capture time in ns, for SYNs ("S") or SYN-ACKs ("SA")."""
    out = {}
    with PcapReader(str(pcap)) as reader:
        for p in reader:
            if p.haslayer(TCP) and str(p[TCP].flags) == flags:
                ip, tcp = p[IPv6], p[TCP]
                key = (ip.src, tcp.sport, tcp.seq) if flags == "S" else (ip.dst, tcp.dport, tcp.seq)
                out.setdefault(key, int(p.time * 1_000_000_000))
    return out


@pytest.mark.parametrize(("datapath", "count", "target"), [("none", 1, "pod"), ("iptables-legacy", 3000, "last")])
def test_transit_agrees_with_capture_timestamps_at_the_same_points(tlab, tmp_path, datapath, count, target):
    node = datapaths.node_of(tlab.inventory)
    workload = services.build(count)
    datapaths.switch(tlab.host(node.name), node, datapath, services.service_ports(workload, node.name))
    ends = traffic.ends(tlab)
    t = traffic.target(ends, workload, target)
    veth = ends.worker_pod_interface
    pts = {"uplink": Point("uplink", node.name, node.uplink), "veth": Point("veth", node.name, veth)}
    server = traffic.start_crr_server(ends.pod, services.IPERF_PORT)
    try:
        with Capture(tlab.hosts, pts, tmp_path, bpf_filter="ip6 and tcp", nano=True) as cap:
            raw = traffic.transit(ends, t, connects=300)
    finally:
        server.stop()
        datapaths.switch(tlab.host(node.name), node, "none", [])
    assert raw["counters"]["matched_request"] == raw["counters"]["in_request"] == 300
    assert raw["counters"]["unmatched_request"] == raw["counters"]["unmatched_reply"] == 0
    req_in, req_out = _syn_times(cap.results["uplink"].local, "S"), _syn_times(cap.results["veth"].local, "S")
    rep_in, rep_out = _syn_times(cap.results["veth"].local, "SA"), _syn_times(cap.results["uplink"].local, "SA")
    pcap_req = [req_out[k] - req_in[k] for k in req_in if k in req_out]
    pcap_rep = [rep_out[k] - rep_in[k] for k in rep_in if k in rep_out]
    assert len(pcap_req) == len(pcap_rep) == 300  # the same connections, seen by both clocks
    for name, bpf, pcap in (("request", raw["request_ns"], pcap_req), ("reply", raw["reply_ns"], pcap_rep)):
        diff = statistics.median(pcap) - statistics.median(bpf)
        print(f"{datapath} {target} {name}: BPF median {statistics.median(bpf) / 1e3:.1f} µs, capture "
              f"{statistics.median(pcap) / 1e3:.1f} µs, difference {diff / 1e3:+.1f} µs")
        # The taps sit just outside the tc hooks: the capture's bracket is the wider one, by microseconds.
        assert abs(diff) < max(20_000, 0.2 * statistics.median(bpf)), (name, diff)
    if datapath == "iptables-legacy":  # the rule walk dominates the request, and both clocks show it
        assert statistics.median(raw["request_ns"]) > 10 * statistics.median(raw["reply_ns"])
        assert statistics.median(pcap_req) > 10 * statistics.median(pcap_rep)
