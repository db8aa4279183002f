"""The transit metric (BPF stamps at the worker's uplink and pod veth) and the handshake metric.

Transit is checked against an independent clock: tcpdump at the same two interfaces, with nanosecond
timestamps, on the same packets (the probe reports each sample's key: client port and TCP sequence). The
two bracket the worker at slightly different places (the packet taps run before tc ingress and after tc
egress), so the capture's bracket is wider on every packet, by about a microsecond whatever the datapath.
No timing claim is made here: the test checks that both clocks see the same packets and tell the same
story.
"""

from __future__ import annotations

import statistics

import numpy as np
import pytest
from scapy.layers.inet import TCP
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


def _syn_times(pcap, flags: str) -> dict[int, int]:
    """The probe's packet key (client port << 32 | sequence) -> capture time in ns, for SYNs ("S") or SYN-ACKs
    ("SA"): the client's port is the SYN's source and the SYN-ACK's destination."""
    out = {}
    with PcapReader(str(pcap)) as reader:
        for p in reader:
            if p.haslayer(TCP) and str(p[TCP].flags) == flags:
                tcp = p[TCP]
                port = tcp.sport if flags == "S" else tcp.dport
                out.setdefault(port << 32 | tcp.seq, int(p.time * 1_000_000_000))
    return out


CASES = [("none", 1, "pod"), ("iptables-legacy", 3000, "last"), ("ebpf", 1000, "last"), ("nftables", 1000, "pod")]


@pytest.fixture(scope="module")
def paired(tlab, tmp_path_factory):
    """Per case: the probe's samples and, packet by packet, the capture's bracket minus the probe's (ns)."""
    node = datapaths.node_of(tlab.inventory)
    out = {}
    for datapath, count, target in CASES:
        workload = services.build(count)
        datapaths.switch(tlab.host(node.name), node, datapath, services.service_ports(workload, node.name))
        ends = traffic.ends(tlab)
        t = traffic.target(ends, workload, target)
        pts = {"uplink": Point("uplink", node.name, node.uplink),
               "veth": Point("veth", node.name, ends.worker_pod_interface)}  # fmt: skip
        server = traffic.start_crr_server(ends.pod, services.IPERF_PORT)
        try:
            with Capture(tlab.hosts, pts, tmp_path_factory.mktemp(datapath), bpf_filter="ip6 and tcp",
                         nano=True) as cap:  # fmt: skip
                raw = traffic.transit(ends, t, connects=300, keys=True)
        finally:
            server.stop()
            datapaths.switch(tlab.host(node.name), node, "none", [])
        up, veth = cap.results["uplink"].local, cap.results["veth"].local
        spans = {"request": (_syn_times(up, "S"), _syn_times(veth, "S")),
                 "reply": (_syn_times(veth, "SA"), _syn_times(up, "SA"))}  # fmt: skip
        offsets = {}
        for name, (into, out_of) in spans.items():
            probe = zip(raw[f"{name}_ns"], raw[f"{name}_keys"], strict=True)
            offsets[name] = np.array([out_of[k] - into[k] - ns for ns, k in probe if k in into and k in out_of])
        out[datapath] = {"raw": raw, "offsets": offsets}
    return out


@pytest.mark.parametrize("datapath", [c[0] for c in CASES])
def test_transit_agrees_with_capture_timestamps_on_the_same_packets(paired, datapath):
    raw, offsets = paired[datapath]["raw"], paired[datapath]["offsets"]
    assert raw["counters"]["matched_request"] == raw["counters"]["in_request"] == 300
    assert raw["counters"]["unmatched_request"] == raw["counters"]["unmatched_reply"] == 0
    for name, d in offsets.items():
        # The same packets, paired by key: tcpdump, which copies every packet to user space, may lose a few on
        # a loaded 2-core machine (its ring buffer), never more than 5%.
        assert len(d) >= 285, (name, len(d))
        p5, p25, p50 = np.percentile(d, [5, 25, 50])
        print(f"{datapath} {name}: probe p50 {statistics.median(raw[f'{name}_ns']) / 1e3:.1f} µs; capture minus "
              f"probe on {len(d)} packets: min {d.min() / 1e3:.2f}, p5 {p5 / 1e3:.2f}, p25 {p25 / 1e3:.2f}, "
              f"p50 {p50 / 1e3:.2f} µs")  # fmt: skip
        # The taps sit outside the tc hooks (the ingress tap's time is taken as the packet is queued for the
        # stack, the egress tap's after tc egress): the capture's bracket is wider on every packet, by a floor
        # of about 1 µs. Some packets also wait in the receive backlog before tc ingress runs, which only
        # the capture's clock sees (+8 to +40 µs, a share that varies from run to run): the floor and the
        # lower quartile, not the median, are the bracket's own width.
        assert d.min() > 0, (name, d.min())
        assert p25 < 3_000, (name, p25)
    if datapath == "iptables-legacy":  # the rule walk dominates the request, and both clocks show it
        assert statistics.median(raw["request_ns"]) > 10 * statistics.median(raw["reply_ns"])


def test_the_capture_brackets_every_datapath_alike(paired):
    """The bracket's width is mostly the taps', not the datapath's: its floor is about the same under each.
    Not exactly: on some bring-ups of the lab the request's floor under eBPF and nftables sits about 1.2 µs
    above none's (1.92 against 0.73 µs, each within 0.05 µs), on others all four agree within 0.2 µs; why is
    not known yet, so the bound is 2 µs, still well under any rule walk this metric is used to show."""
    for name in ("request", "reply"):
        floors = {dp: float(np.percentile(v["offsets"][name], 5)) for dp, v in paired.items()}
        print(name, {dp: f"{f / 1e3:.2f} µs" for dp, f in floors.items()})
        assert max(floors.values()) - min(floors.values()) < 2_000, (name, floors)
