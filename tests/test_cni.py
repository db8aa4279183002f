"""The pod's attachment: as Cilium does (one more hop on the worker each way, ICMPv6 time exceeded from the
node when a packet is spent) or plainly, under every service datapath."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from labtools import datapaths
from labtools.base import paths
from labtools.base.errors import InventoryError
from labtools.lab import Lab, cni, reachability
from labtools.model import services, topology
from tests.conftest import ROOT, fresh_lab, lab_fixture

CLIENT = "2001:db8:1234:5679::1"
POD = services.POD_IP


@lab_fixture(scope="module")
def nlab():
    yield from fresh_lab("pycn")


@pytest.fixture(scope="module")
def echo(nlab):
    with reachability.EchoServer(nlab.ns("pod"), services.IPERF_PORT) as server:
        yield server


def ping(lab: Lab, src: str, dst: str, hops: int = 64) -> str:
    res = lab.host(src).run(["ping", "-6", "-n", "-c", "1", "-W", "2", "-t", str(hops), dst], check=False)
    return res.stdout + res.stderr


def reply_hops(out: str) -> int:
    m = re.search(r"ttl=(\d+)", out)
    assert m, out
    return int(m.group(1))


def node_ip(lab: Lab) -> str:
    return str(lab.inventory.by_role("worker").global_v6()[0])


def test_the_inventory_takes_a_cni_and_refuses_an_unknown_one(tmp_path):
    inv = topology.load(None)
    assert inv.cni == topology.DEFAULT_CNI == "cilium"
    assert cni.pod_veths(inv) == ["lxc0"]  # the worker's side of the pod's veth
    bad = tmp_path / "bad.yml"
    bad.write_text(paths.DEFAULT_INVENTORY.read_text().replace("cni: cilium", "cni: calico"))
    with pytest.raises(InventoryError, match="cni must be one of cilium, plain"):
        topology.load(str(bad))


def test_by_default_the_pod_is_attached_as_cilium_does(nlab):
    assert nlab.pod_attachment() == "cilium"
    res = subprocess.run([sys.executable, "-m", "labtools", "lab", "status", "-p", "pycn"], capture_output=True,
                         text=True, cwd=ROOT)  # fmt: skip
    assert res.returncode == 0 and "pod attachment (cni): cilium" in res.stdout, res.stdout + res.stderr


@pytest.mark.parametrize("kind", ["plain", "cilium"])
def test_each_attachment_ages_the_packets_it_should(nlab, kind):
    nlab.up(progress=False, cni=kind)
    assert nlab.pod_attachment() == kind
    extra = 1 if kind == "cilium" else 0
    # The pod answers with hop limit 64; the worker and the router forward it, and Cilium ages it once more.
    assert reply_hops(ping(nlab, "client", POD)) == 64 - 2 - extra
    # Client -> pod: the router and the worker forward (64 -> 62); with the CNI the pod then sees 61. A packet
    # sent with 2 + extra + 1 hops arrives; one hop fewer is spent on the worker.
    assert "ttl=" in ping(nlab, "client", POD, hops=3 + extra)
    spent = ping(nlab, "client", POD, hops=2 + extra)
    assert "Time exceeded" in spent, spent
    if kind == "cilium":  # answered by the CNI program, from the node's router address, with a valid checksum
        assert f"From {node_ip(nlab)}" in spent, spent
    # Pod -> client with one hop: spent at once; the CNI answers from the node's address.
    out = ping(nlab, "pod", CLIENT, hops=1)
    assert "Time exceeded" in out, out
    if kind == "cilium":
        assert f"From {node_ip(nlab)}" in out, out


@pytest.mark.parametrize("datapath", ["iptables", "nftables", "ebpf"])
def test_every_datapath_carries_nodeport_traffic_through_the_cni(nlab, echo, datapath):
    nlab.up(progress=False, cni="cilium")
    node = datapaths.node_of(nlab.inventory)
    workload = services.build(3)
    datapaths.switch(nlab.host("worker"), node, datapath, services.service_ports(workload, node.name))
    port = workload.target("last").spec.ports[0].node_port
    assert reachability.tcp_echo(nlab.ns("client"), node.ip, port, b"x" * 20000) == b"x" * 20000
    # the datapath's own programs leave the CNI's in place, and clearing them too
    datapaths.switch(nlab.host("worker"), node, "none", [])
    assert nlab.pod_attachment() == "cilium"
    assert reply_hops(ping(nlab, "client", POD)) == 61
