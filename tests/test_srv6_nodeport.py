"""A NodePort through the SRv6 tunnel, per datapath: captured at the worker uplink and the pod (root)."""

from __future__ import annotations

import pytest
from scapy.layers.inet import TCP
from scapy.layers.inet6 import IPv6, IPv6ExtHdrSegmentRouting
from scapy.utils import rdpcap

from labtools import datapaths
from labtools.datapaths import srv6
from labtools.experiments import captures
from labtools.lab import Lab
from labtools.model import services
from tests.conftest import POD_IP, fresh_lab, lab_fixture, needs_seg6

PREFIX = "psn"
CLIENT_IP = "2001:db8:1234:5679::1"
WORKER_IP = "2001:db8:1234:5678::2"
pytestmark = needs_seg6


@lab_fixture(scope="module")
def nlab():
    yield from fresh_lab(PREFIX)


def tcp(pcap) -> list:
    return [p for p in rdpcap(str(pcap)) if p.haslayer(TCP)]


def egress_filters(lab: Lab) -> str:
    return lab.host("worker").run(["tc", "filter", "show", "dev", "ens3", "egress"], check=False).stdout


@pytest.mark.parametrize(
    ("mode", "datapath"),
    [("ebpf", "ebpf"), ("local-sid+tc-encap", "iptables"), ("local-sid+tc-encap", "nftables")],
)
def test_nodeport_through_the_tunnel(nlab, tmp_path, mode, datapath):
    # capture.run brings the tunnel up *before* it programs the datapath: in mode ebpf the NodePort program
    # takes the SID over from the encapsulation program (labtools-bpf-load --decap).
    try:
        m = captures.run(nlab, "np", scenarios=["tcp-nodeport"], mode=mode, datapath=datapath, count=1, timeout=2.0,
                        point_names=["router-cluster", "worker", "pod"], root=tmp_path)  # fmt: skip
        assert f"pref {srv6.TC_PREF}" in egress_filters(nlab)
    finally:
        srv6.down(nlab)
        node = datapaths.node_of(nlab.inventory)
        datapaths.switch(nlab.host("worker"), node, "none", [])
    (c,) = m["captures"]
    assert c["ok"], c["output"]
    np_port = c["port"]
    run = tmp_path / "raw" / "np" / "tcp-nodeport"
    at_worker = tcp(run / "worker.pcap")
    syn = [p for p in at_worker if p[TCP].flags == "S"]
    synack = [p for p in at_worker if p[TCP].flags == "SA"]
    assert syn and synack
    for p in syn:  # the request arrives encapsulated, to the NodePort
        assert (p[IPv6].src, p[IPv6].dst) == ("fc00::1", "fc00::2") and p.haslayer(IPv6ExtHdrSegmentRouting)
        assert (p.getlayer(IPv6, 2).dst, p[TCP].dport) == (WORKER_IP, np_port)
    for p in synack:  # the reply leaves encapsulated, reverse-NATed before the encapsulation
        srh = p.getlayer(IPv6ExtHdrSegmentRouting)
        assert (p[IPv6].src, p[IPv6].dst, p[IPv6].hlim) == ("fc00::2", "fc00::1", 64)
        assert srh is not None and srh.type == 4 and srh.segleft == 0 and list(srh.addresses) == ["fc00::1"]
        inner = p.getlayer(IPv6, 2)
        assert (inner.src, inner.dst, p[TCP].sport) == (WORKER_IP, CLIENT_IP, np_port)
        assert p[IPv6].plen == inner.plen + 40 + 24
    at_pod = tcp(run / "pod.pcap")  # DNAT to the pod, plain IPv6, the client's address kept
    assert [p for p in at_pod if p[TCP].flags == "S" and p[IPv6].dst == POD_IP and p[TCP].dport == services.IPERF_PORT]
    assert all(not p.haslayer(IPv6ExtHdrSegmentRouting) and CLIENT_IP in (p[IPv6].src, p[IPv6].dst) for p in at_pod)
    # down removed the encapsulation program and the plain path is back
    assert f"pref {srv6.TC_PREF}" not in egress_filters(nlab)
    assert "encap" not in nlab.host("router").run(["ip", "-6", "route", "get", WORKER_IP]).stdout
