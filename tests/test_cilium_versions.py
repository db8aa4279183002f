"""The thesis' UDP observation (§11.5): UDP to the NodePort of a TCP-only Service reached the pod under
Cilium's eBPF datapath and not under kube-proxy. Cilium before 1.17 looked Services up without the L4
protocol (bpf/lib/lb.h lb6_fill_key(): proto 0; the agent inserted frontends as protocol ANY); 1.17
keys them by protocol (PR #33434, --bpf-lb-proto-diff, default on). kube-proxy matches the protocol in
both its modes."""

from __future__ import annotations

import pandas as pd
import pytest

from labtools import datapaths
from labtools.base.errors import LabError
from labtools.datapaths import ebpf
from labtools.lab import traffic
from labtools.model import services
from labtools.model.datapaths import Behaviour
from tests.conftest import fresh_lab, lab_fixture

PREFIX = "pyu"


@lab_fixture(scope="module")
def ulab():
    yield from fresh_lab(PREFIX)


def test_versions_are_parsed_and_unmodelled_ones_refused():
    any_protocol, per_protocol = Behaviour.ANY_PROTOCOL, Behaviour.PER_PROTOCOL  # was proto_diff False, True
    assert ebpf.lookup("1.13") is any_protocol and ebpf.lookup("1.16.5") is any_protocol
    assert ebpf.lookup("1.17") is per_protocol and ebpf.lookup("1.18.2") is per_protocol
    for bad in ("1.12", "2.0", "latest"):
        with pytest.raises(LabError):
            ebpf.lookup(bad)
    with pytest.deprecated_call():  # the old name, for one release
        assert ebpf.proto_diff("1.17")


def test_before_1_17_one_frontend_answers_both_protocols():
    node = datapaths.Node("worker", "2001:db8:1234:5678::2", "ens3", str(services.CLUSTER_CIDR),
                          str(services.SERVICE_CIDR))  # fmt: skip
    ports = services.service_ports(services.build(3, udp_targets=True), "worker")  # TCP + UDP on one node port
    old, new = ebpf.render(ports, node, "1.13"), ebpf.render(ports, node, "1.17")
    protos = {k[20] for k, _ in old.maps["lb6_services"]}  # lb6_key.proto
    assert protos == {0}
    assert {k[20] for k, _ in new.maps["lb6_services"]} == {6, 17}
    assert len(old.maps["lb6_services"]) < len(new.maps["lb6_services"])  # TCP and UDP share their frontends
    assert old.maps["lb_config"] == [(b"\0\0\0\0", b"\0\0\0\0")] and new.maps["lb_config"][0][1] == b"\1\0\0\0"


@pytest.mark.parametrize(
    ("datapath", "version", "delivered"),
    [("ebpf", "1.13", True), ("ebpf", "1.17", False), ("iptables", None, False), ("nftables", None, False)],
)
def test_udp_to_a_tcp_only_nodeport(ulab, datapath, version, delivered):
    node = datapaths.node_of(ulab.inventory)
    workload = services.build(1)  # the thesis' Service: TCP/5201 only
    assert [p.protocol for p in workload.services[0].spec.ports] == ["TCP"]
    datapaths.switch(ulab.host(node.name), node, datapath, services.service_ports(workload, node.name),
                     cilium_version=version)  # fmt: skip
    ends = traffic.ends(ulab)
    t = traffic.target(ends, workload, "first")
    server = traffic.start_crr_server(ends.pod, services.IPERF_PORT)
    try:
        raw = traffic.udp_pps(ends.client, ends.pod, ends.pod_interface, ends.worker, t, ends.client_source, 500)
    finally:
        server.stop()
        datapaths.switch(ulab.host(node.name), node, "none", [])
    assert raw["sent"] == 500
    if delivered:  # DNATed to the pod like the Service's TCP
        assert raw["delivered"] >= 490, raw
    else:  # no rule for UDP: the node itself answers (port unreachable), the pod sees none of it
        assert raw["delivered"] <= 5, raw


def test_udp_check_records_the_thesis_observation(ulab, tmp_path):
    from labtools.experiments import udpcheck

    csv = udpcheck.run(ulab, "udp", repeats=1, packets=300, root=tmp_path)
    got = pd.read_csv(csv).set_index("release")["value"].groupby(level=0).min()
    assert got["Cilium 1.13"] > 0.95 and got["Cilium 1.17"] < 0.02 and got["kube-proxy"] < 0.02, got
    assert (tmp_path / "raw" / "udp" / "manifest.json").exists()  # recorded like every run, with provenance
