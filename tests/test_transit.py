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

from labtools import datapaths
from labtools.base import distribution
from labtools.lab import traffic
from labtools.lab.capture import Capture, Point
from labtools.model import services
from tests.conftest import fresh_lab, lab_fixture

PREFIX = "pytr"


@lab_fixture(scope="module")
def tlab():
    yield from fresh_lab(PREFIX)


def test_transit_records_are_tidy_percentiles_and_counts():
    raw = {"request_ns": [100, 200, 300, 400], "reply_ns": [10, 20], "crr": {},
           "counters": {"unmatched_request": 1, "unmatched_reply": 2}}  # fmt: skip
    recs = {r["metric"]: r for r in traffic.records("transit", raw, {"datapath": "none"})}
    assert recs["transit_request_p50"]["value"] == 250 and recs["transit_request_p50"]["unit"] == "ns"
    assert recs["transit_request_p99"]["value"] == pytest.approx(397)
    assert recs["transit_reply_packets"]["value"] == 2 and recs["transit_unmatched"]["value"] == 3
    kinds = ("p50", "p90", "p99", "packets", "modes", "main_mode_share", "drift", "drifting")
    assert set(recs) == {f"transit_{d}_{k}" for d in ("request", "reply") for k in kinds} | {"transit_unmatched"}


def test_modes_find_two_humps_and_their_shares():
    rng = np.random.default_rng(7)
    two = distribution.modes(np.r_[rng.normal(10_000, 400, 600), rng.normal(20_000, 800, 400)])
    assert [round(m["share"], 2) for m in two] == [0.6, 0.4]
    assert 9_000 < two[0]["centre"] < 11_000 and 19_000 < two[1]["centre"] < 21_000
    one = distribution.modes(rng.normal(10_000, 400, 1000))
    assert len(one) == 1 and one[0]["share"] == 1.0
    samples = np.r_[rng.normal(10_000, 400, 600), rng.normal(20_000, 800, 400)]
    raw = {"p50_us": 10.0, "p90_us": 20.0, "p99_us": 21.0, "samples_ns": list(rng.permutation(samples))}
    recs = {r["metric"]: r["value"] for r in traffic.records("handshake", raw, {})}
    assert recs["handshake_modes"] == 2 and recs["handshake_main_mode_share"] == pytest.approx(0.6, abs=0.02)
    assert recs["handshake_drifting"] == 0  # shuffled: both humps throughout


def test_drift_is_flagged_only_when_the_samples_move_and_the_move_is_significant():
    rng = np.random.default_rng(3)
    steady = rng.normal(10_000, 500, 900)
    rising = steady + np.linspace(0, 3_000, 900)  # +30% from the first third to the last
    assert distribution.flags(steady)["drifting"] == 0
    change, p = distribution.drift(rising)
    assert change > 0.15 and p < distribution.DRIFT_ALPHA and distribution.flags(rising)["drifting"] == 1
    tiny = steady + np.linspace(0, 200, 900)  # significant with this many samples, but within ±5%
    assert distribution.flags(tiny)["drifting"] == 0
    recs = {r["metric"]: r["value"] for r in traffic.records("crr", {"p50_us": 1, "p90_us": 2, "p99_us": 3,
                                                                     "rate_per_s": 4, "samples_ns": rising}, {})}
    assert recs["crr_drifting"] == 1 and recs["crr_drift"] > 0.15


def test_probe_overhead_records_the_paired_difference_and_each_program():
    raw = {"pairs": [{"without_p50_us": 10.0, "with_p50_us": 10.5}, {"without_p50_us": 12.0, "with_p50_us": 11.9},
                     {"without_p50_us": 11.0, "with_p50_us": 11.3}],
           "run_ns": {"in_request": 300.0, "out_request": 200.0, "in_reply": 250.0, "out_reply": 180.0}}
    recs = {r["metric"]: r["value"] for r in traffic.records("probe-overhead", raw, {})}
    assert recs["probe_handshake_delta"] == pytest.approx(300)  # the median of +500, -100, +300 ns
    assert recs["probe_in_request_run"] == 300.0 and recs["probe_out_reply_run"] == 180.0


def test_probe_statistics_count_every_program_run(tlab):
    ends = traffic.ends(tlab)
    t = traffic.target(ends, None, "pod")
    server = traffic.start_crr_server(ends.pod, services.IPERF_PORT)
    try:
        raw = traffic.probe_overhead(ends, t, connects=200, pairs=1)
    finally:
        server.stop()
    runs = {k: v["runs"] for k, v in raw["programs"].items()}
    # Every packet of 200 crr transactions crosses each hook once (a SYN alone would be 200); the uplink's
    # ingress also sees what is not forwarded to the pod (neighbour discovery, for one).
    assert min(runs.values()) >= 200 and runs["in_request"] >= runs["out_request"], runs
    assert all(0 < ns < 100_000 for ns in raw["run_ns"].values()), raw["run_ns"]


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


@pytest.mark.parametrize(("datapath", "count", "target"), [("none", 1, "pod"), ("iptables-legacy", 3000, "last"),
                                                           ("ebpf", 1000, "last"), ("nftables", 1000, "pod")])
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
    # The same connections, seen by both clocks: the probe matched all 300; tcpdump, which copies every packet
    # to user space, may lose a few on a loaded 2-core machine (its ring buffer), never more than 5%.
    assert min(len(pcap_req), len(pcap_rep)) >= 285, (len(pcap_req), len(pcap_rep))
    for name, bpf, pcap in (("request", raw["request_ns"], pcap_req), ("reply", raw["reply_ns"], pcap_rep)):
        diff = statistics.median(pcap) - statistics.median(bpf)
        q1, _, q3 = statistics.quantiles(bpf, n=4)
        print(f"{datapath} {target} {name}: BPF median {statistics.median(bpf) / 1e3:.1f} µs (IQR "
              f"{(q3 - q1) / 1e3:.1f}), capture {statistics.median(pcap) / 1e3:.1f} µs, "
              f"difference {diff / 1e3:+.1f} µs")  # fmt: skip
        # The taps sit just outside the tc hooks: the capture's bracket is the wider one. By how much is not yet
        # resolved to a few µs for every datapath: the two medians come from the same connections but not from
        # paired packets (the probe records no key to pair them by), and under eBPF the difference has been seen
        # from +1 to +7 µs between runs on this machine.
        assert 0 < diff < max(20_000, 0.2 * statistics.median(bpf)), (name, diff)
    if datapath == "iptables-legacy":  # the rule walk dominates the request, and both clocks show it
        assert statistics.median(raw["request_ns"]) > 10 * statistics.median(raw["reply_ns"])
        assert statistics.median(pcap_req) > 10 * statistics.median(pcap_rep)
