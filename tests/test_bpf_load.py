"""Every program of nodeport.o, cni.o and transit.o loaded and attached the way the package does it (its loaders,
with the arguments its code builds), in a throw-away pair of namespaces: a map or section a loader forgets, or a
program this kernel's verifier refuses, fails here. `make test` runs this on the host's kernel and on Debian 12's
(in the VM; marker debian_kernel)."""

from __future__ import annotations

import json

import pytest

from labtools.datapaths import ebpf, srv6
from labtools.datapaths.base import Node
from labtools.hosts import NetnsHost, namespaces
from labtools.lab import cni
from labtools.lab.transit import TransitProbe
from labtools.model import services
from tests.conftest import IS_ROOT

pytestmark = [pytest.mark.lab, pytest.mark.debian_kernel,
              pytest.mark.skipif(not IS_ROOT, reason="needs root: network namespaces (run `make test` as root)")]

PREFIX = "bpfload"
NODE_IP, PEER_IP, SID, PEER_SID = "2001:db8:100::2", "2001:db8:100::1", "fc00::2", "fc00::1"


@pytest.fixture(scope="module")
def node_host():
    """A node namespace with an uplink (to a peer namespace) and one pod veth; removed afterwards."""
    namespaces.teardown(PREFIX)
    node, peer, pod = (namespaces.ns_name(PREFIX, n) for n in ("node", "peer", "pod"))
    try:
        for ns in (node, peer, pod):
            namespaces.create(ns)
        namespaces.veth(node, "ens3", peer, "eth0")
        namespaces.veth(node, "lxc0", pod, "eth0")
        for ns, dev, addr in ((node, "ens3", NODE_IP), (peer, "eth0", PEER_IP), (node, "lxc0", None),
                              (pod, "eth0", services.POD_IP)):  # fmt: skip
            if addr:
                namespaces.ip("-n", ns, "addr", "add", f"{addr}/64", "dev", dev, "nodad")
            namespaces.ip("-n", ns, "link", "set", dev, "up")
        yield NetnsHost("worker", node)
    finally:
        namespaces.teardown(PREFIX)
    assert not namespaces.lab_namespaces(PREFIX)


def _filters(host: NetnsHost, dev: str, direction: str) -> set[str]:
    """The names of the BPF programs attached as classic tc filters at `dev`'s `direction`, as the kernel keeps
    them: cut to 15 characters (BPF_OBJ_NAME_LEN)."""
    out = json.loads(host.run(["tc", "-j", "filter", "show", "dev", dev, direction]).stdout or "[]")
    return {f["options"]["bpf_name"].split(":")[0] for f in out if "bpf_name" in f.get("options", {})}


NODE = Node("worker", NODE_IP, "ens3", str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR),
            {services.POD_IP: "lxc0"})  # fmt: skip


@pytest.fixture(scope="module")
def programmed(node_host):
    """The eBPF datapath with two Services on the node: its ports before and after one Service is added."""
    before = services.service_ports(services.build(2), NODE.name)
    dp = ebpf.EbpfDatapath()
    assert dp.apply(node_host, dp.render(before, NODE), NODE) > 0
    return before, services.service_ports(services.build(3), NODE.name)


def test_the_ebpf_datapath_loads_programs_and_changes(node_host, programmed):
    before, after = programmed
    node, dp = NODE, ebpf.EbpfDatapath()
    assert "from_netdev" in _filters(node_host, "ens3", "ingress")
    assert "from_container" in _filters(node_host, "lxc0", "ingress")
    assert dp.apply_change(node_host, dp.render_change(before, after, node), node).objects > 0
    with dp.updater(node_host, node) as apply:  # the agent that stays up, as Cilium's does
        assert apply(dp.render_change(before, after, node)).objects > 0
    assert ebpf.drops(node_host, node) == dict.fromkeys(ebpf.DROP_REASONS, 0)


def test_the_cilium_like_pod_attachment_loads(node_host):
    cni.load(node_host, NODE_IP, ["lxc0"])
    assert "to_container" in _filters(node_host, "lxc0", "egress")
    assert "from_container_cni"[:15] in _filters(node_host, "lxc0", "ingress")


def test_the_srv6_encapsulation_and_decapsulation_load(node_host):
    t = srv6.Tunnel(router="router", worker="worker", pod=None, router_uplink="ens7", router_ifaces=("ens7",),
                    worker_uplink="ens3", worker_mtu=1500, worker_ifaces=("ens3",), pod_iface=None, pod_veth=None,
                    router_ip=PEER_IP, worker_ip=NODE_IP, pod_ip=services.POD_IP, router_sid=PEER_SID,
                    worker_sid=SID, cluster_prefixes=(), client_prefixes=("2001:db8:200::/64",))  # fmt: skip
    # The commands `srv6 up --mode ebpf` runs on the worker for the tc encapsulation and the eBPF SID.
    for argv in [*srv6._tc_encap(t, decap=True), [srv6.LOADER, "--srv6-sid", t.worker_uplink, "add", SID]]:
        node_host.run(srv6.resolve_argv(node_host, argv, check=True))
    assert "srv6_egress" in _filters(node_host, "ens3", "egress")
    node_host.run(srv6.resolve_argv(node_host, [srv6.LOADER, "--srv6-sid", "ens3", "del", SID], check=True))


def _order(host: NetnsHost, dev: str, direction: str) -> list[str]:
    """The BPF programs at `dev`'s `direction` in the order tc runs them (a dump lists them so)."""
    out = json.loads(host.run(["tc", "-j", "filter", "show", "dev", dev, direction]).stdout or "[]")
    return [f["options"]["bpf_name"].split(":")[0] for f in out if "bpf_name" in f.get("options", {})]


def test_the_transit_probe_attaches_before_the_datapath_and_reports(node_host, programmed):
    with TransitProbe(node_host, "ens3", "lxc0") as probe:
        assert _order(node_host, "ens3", "egress")[-1] == "out_reply"  # last on the way out
        if "tcx" not in probe.proc.output():  # before 6.6: classic filters, which must run before the datapath's
            assert _order(node_host, "ens3", "ingress")[:2] == ["in_request", "from_netdev"]
            assert _order(node_host, "lxc0", "ingress")[:2] == ["in_reply", "from_container"]
    assert probe.result is not None and probe.result["ingress_hook"] in ("tcx", "tc pref 1")
    assert "counters" in probe.result
    for dev in ("ens3", "lxc0"):  # detached on exit; the datapath stays
        assert not {"in_request", "in_reply", "out_request", "out_reply"} & _filters(node_host, dev, "ingress")
        assert not {"out_request", "out_reply"} & _filters(node_host, dev, "egress")
    assert "from_netdev" in _filters(node_host, "ens3", "ingress")
