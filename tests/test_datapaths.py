"""Every datapath carries real NodePort traffic from the client to the pod, at 1 to 10,000 Services."""

from __future__ import annotations

import pytest

from labtools import datapaths
from labtools.datapaths import ebpf
from labtools.lab import Lab, reachability
from labtools.model import services
from tests.conftest import fresh_lab, lab_fixture

CLIENT_IP = "2001:db8:1234:5679::1"
PROGRAMMED = ("iptables", "iptables-legacy", "nftables", "ebpf")


@lab_fixture(scope="module")
def dlab_up():
    yield from fresh_lab("pyd")


@pytest.fixture(scope="module")
def dlab(dlab_up):
    """The lab, its worker as a `Node`, and an echo server in the pod."""
    with reachability.EchoServer(dlab_up.ns("pod"), services.IPERF_PORT) as echo:
        yield dlab_up, datapaths.node_of(dlab_up.inventory), echo


def outcome(lab: Lab, node, port: int, timeout: float = 2.5) -> str:
    # > 1 s: an ICMP error that races the connect() call is only a soft error (TcpExtLockDroppedIcmps);
    # the SYN retransmitted after 1 s then gets the hard error.
    try:
        got = reachability.tcp_echo(lab.ns("client"), node.ip, port, b"ping", timeout=timeout)
    except ConnectionRefusedError:
        return "refused"
    except TimeoutError:
        return "dropped"
    return "echoed" if got == b"ping" else f"garbled {got!r}"


@pytest.mark.parametrize("count", [1, 1000, 10000])
@pytest.mark.parametrize("datapath", PROGRAMMED)
def test_nodeport_reaches_the_pod_and_keeps_the_client_address(dlab, datapath, count):
    lab, node, echo = dlab
    workload = services.build(count)
    done = datapaths.switch(lab.host("worker"), node, datapath, services.service_ports(workload, node.name))
    assert done.datapath == datapath and done.services == count and done.objects > 0
    for which in ("first", "middle", "last"):
        node_port = workload.target(which).spec.ports[0].node_port
        payload = f"{datapath}/{count}/{which}".encode() * 100  # several segments: checksums must hold
        assert reachability.tcp_echo(lab.ns("client"), node.ip, node_port, payload) == payload
        assert echo.peers[-1] == CLIENT_IP  # eTP=Local: no SNAT


def test_without_a_datapath_the_nodeport_is_closed(dlab):
    lab, node, _ = dlab
    workload = services.build(1)
    datapaths.switch(lab.host("worker"), node, "none", services.service_ports(workload, node.name))
    assert outcome(lab, node, workload.target("first").spec.ports[0].node_port) == "refused"
    # and nothing of any datapath is left on the worker
    worker = lab.host("worker")
    assert worker.run(["nft", "list", "tables"]).stdout.strip() == ""
    assert "pref 1" not in worker.run(["tc", "filter", "show", "dev", "ens3", "ingress"]).stdout


# What kube-proxy / Cilium do with a NodePort whose Service has endpoints elsewhere but none here
# (eTP=Local: DROP) and with a Service that has no endpoints at all (kube-proxy: REJECT; Cilium with
# service-no-backend-response=drop, which our program models: drop).
EXPECTED = {
    "iptables": ("dropped", "refused"),
    "iptables-legacy": ("dropped", "refused"),
    "nftables": ("dropped", "refused"),
    "ebpf": ("dropped", "dropped"),
}


@pytest.mark.parametrize("datapath", PROGRAMMED)
def test_no_local_endpoint_and_no_endpoint(dlab, datapath):
    lab, node, _ = dlab
    workload = services.build(3)
    workload.slices[1].endpoints[0].node_name = "master"  # its only endpoint lives on another node
    workload.slices[2].endpoints = []
    datapaths.switch(lab.host("worker"), node, datapath, services.service_ports(workload, node.name))
    ports = [s.spec.ports[0].node_port for s in workload.services]
    got = (outcome(lab, node, ports[1]), outcome(lab, node, ports[2]))
    assert outcome(lab, node, ports[0]) == "echoed"
    assert got == EXPECTED[datapath]
    if datapath == "ebpf":  # both drops are counted, by reason (the SYN and its retransmissions)
        counts = ebpf.drops(lab.host("worker"), node)
        assert counts["no_service"] >= 2 and counts["is_cluster_ip"] == 0 and counts["csum_l4"] == 0, counts


@pytest.mark.parametrize("datapath", PROGRAMMED)
def test_nodeport_and_direct_connections_reusing_client_ports(dlab, datapath):
    """Thousands of short connections, alternating NodePort and straight-to-pod, reuse client ports.

    A stale reverse-NAT entry of an old NodePort connection must not hijack the replies of a new
    direct one (this once broke the eBPF datapath's conntrack).
    """
    from labtools.lab import traffic

    lab, node, _ = dlab
    workload = services.build(3)
    datapaths.switch(lab.host("worker"), node, datapath, services.service_ports(workload, node.name))
    client = lab.host("client")
    # The module's echo server answers on the pod's port 5201, so it serves both paths.
    for _ in range(2):
        for name in ("last", "pod"):
            raw = traffic.crr(client, traffic.target(lab, workload, name), transactions=1500)
            assert raw["failed"] == 0, (name, raw)


def test_switcher_parks_nftables_based_datapaths_and_resumes_them(dlab):
    """A sweep switches by parking: a dormant table carries no traffic, and comes back unchanged."""
    lab, node, _ = dlab
    worker = lab.host("worker")
    workload = services.build(5)
    ports = services.service_ports(workload, node.name)
    node_port = workload.target("last").spec.ports[0].node_port
    sw = datapaths.Switcher(worker, node)
    first = sw.use("nftables", ports, key=5)
    assert "resumed_s" not in first.detail and outcome(lab, node, node_port) == "echoed"
    sw.use("iptables", ports, key=5)  # parks nftables
    assert "flags dormant" in worker.run(["nft", "list", "table", "ip6", "kube-proxy"]).stdout
    sw.use("none", ports, key=5)  # parks iptables-nft's tables too: nothing translates the NodePort
    assert outcome(lab, node, node_port) == "refused"
    again = sw.use("nftables", ports, key=5)
    assert again.detail["resumed_s"] < 1 and again.apply_s == first.apply_s  # the original programming
    assert "dormant" not in worker.run(["nft", "list", "table", "ip6", "kube-proxy"]).stdout
    assert outcome(lab, node, node_port) == "echoed"
    assert "flags dormant" in worker.run(["nft", "list", "table", "ip6", "nat"]).stdout
    other = sw.use("nftables", ports, key=6)  # another workload: programmed afresh, not resumed
    assert "resumed_s" not in other.detail
    sw.use("none", [])  # without a key: everything parked is cleared
    assert worker.run(["nft", "list", "tables"]).stdout.strip() == ""
