"""The rendered rule sets match kube-proxy's own output, in structure and in names (no root needed)."""

from __future__ import annotations

import struct

import pytest

from labtools.base.errors import LabError
from labtools.datapaths import ebpf, iptables, nftables
from labtools.datapaths.base import Node
from labtools.model import services
from labtools.model.services import Backend, ServicePort, _categorize
from tests import kubeproxy_fixtures as fx

NODE = Node("worker", "2001:db8:1234:5678::2", "ens3", "2001:db8:1234:5678:8:2::/104", "2001:db8:1234:5678:8:3::/112")


def port(ns, name, port_name, cip, p, node_port, eps, etp_local=True) -> ServicePort:
    endpoints = sorted((Backend(ip, p_, node, True, True, False) for ip, p_, node in eps), key=str)
    cluster, local = _categorize(endpoints, "worker")
    return ServicePort(ns, name, port_name, "tcp", cip, p, node_port, etp_local, False, tuple(endpoints),
                       cluster, local)  # fmt: skip


EXAMPLE = [
    port("default", "svc-00001", "iperf", "2001:db8:1234:5678:8:3::1", 5201, 30000,
         [(services.POD_IP, 5201, "worker")]),
    port("default", "svc-00002", "iperf", "2001:db8:1234:5678:8:3::2", 5201, 30001, []),
]  # fmt: skip


def structure(text: str) -> dict[str, tuple[set[str], dict[str, list[str]]]]:
    """Per table: the declared chains, and each chain's rules in order (what restore makes of it)."""
    out: dict[str, tuple[set[str], dict[str, list[str]]]] = {}
    table = ""
    for line in text.splitlines():
        if line.startswith("*"):
            table = line[1:]
            out[table] = (set(), {})
        elif line.startswith(":"):
            out[table][0].add(line.split()[0][1:])
        elif line.startswith("-A "):
            out[table][1].setdefault(line.split()[1], []).append(line)
    return out


def test_chain_name_hashes_match_kube_proxy():
    sp = port("ns1", "svc1", "p80", "fd00:ab34::20", 80, 30001, [("ff06::c1", 80, "other")])
    assert iptables.port_proto_hash(sp) == "XPGD46QRK7WJZT7O"
    assert iptables.sep_chain(sp, "[ff06::c1]:80") == "KUBE-SEP-LIGRYQQLSZN4UWQ5"
    assert iptables.sep_chain(sp, "[ff06::c2]:80") == "KUBE-SEP-XJJ5QXWGJG344QDZ"
    assert nftables.chain_base(sp) == "ULMVA6XW-ns1/svc1/tcp/p80"
    other = port("testing", "service", "http", "fd00::1", 80, 0, [])
    assert nftables.endpoint_chain(other, "fd80:abcd:12::a1b2:c3d4:e5f6:9999", 80) == (
        "endpoint-U7E2ET36-testing/service/tcp/http__fd80.abcd.12..a1b2.c3d4.e5f6.9999/80"
    )


def test_iptables_reproduces_kube_proxys_ipv6_unit_test_fixture():
    sp = port("ns1", "svc1", "p80", "fd00:ab34::20", 80, 30001,
              [("ff06::c1", 80, "other-node"), ("ff06::c2", 80, "worker")])  # fmt: skip
    opt = iptables.Options(mark="0x4000", random_fully=False, local_detector=False)
    got = iptables.render_kube_proxy([sp], NODE, opt).text()
    assert structure(got) == structure(fx.IPTABLES_UPSTREAM_IPV6)


def test_iptables_example_is_kube_proxys_restore_input_line_for_line():
    got = iptables.render_kube_proxy(EXAMPLE, NODE).text()
    assert got == fx.IPTABLES_EXAMPLE


def test_iptables_full_file_adds_the_built_in_jumps():
    rules = iptables.render(EXAMPLE, NODE)
    s = structure(rules.full)
    assert s["nat"][1]["PREROUTING"] == [
        '-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES'
    ]
    assert [r.split()[-1] for r in s["filter"][1]["INPUT"]] == [
        "KUBE-FIREWALL", "KUBE-PROXY-FIREWALL", "KUBE-NODEPORTS", "KUBE-EXTERNAL-SERVICES"]  # fmt: skip
    assert structure(rules.kube_proxy)["nat"][1] == {k: v for k, v in s["nat"][1].items() if k.startswith("KUBE")}


def test_iptables_drops_comments_above_1000_endpoints():
    w = services.build(1001, node_port_range=services.WIDE_NODE_PORT_RANGE)
    text = iptables.render_kube_proxy(services.service_ports(w, "worker"), NODE).text()
    sep = next(x for x in text.splitlines() if x.startswith("-A KUBE-SEP-") and "DNAT" in x)
    assert "--comment" not in sep
    svc = next(x for x in text.splitlines() if x.startswith("-A KUBE-SVC-") and "KUBE-SEP" in x)
    assert "--comment" not in svc
    w = services.build(1000)
    text = iptables.render_kube_proxy(services.service_ports(w, "worker"), NODE).text()
    assert "--comment default/svc-00001:iperf3 -m tcp -p tcp -j DNAT" in text


def test_iptables_no_local_endpoint_is_dropped_like_kube_proxy():
    sp = port("default", "svc-00002", "iperf", "2001:db8:1234:5678:8:3::2", 5201, 30001,
              [("2001:db8:1234:5678:8:2:2:17", 5201, "master")])  # fmt: skip
    text = iptables.render_kube_proxy([sp], NODE).text()
    assert ('-A KUBE-EXTERNAL-SERVICES -m comment --comment "default/svc-00002:iperf has no local endpoints" '
            "-m addrtype --dst-type LOCAL -m tcp -p tcp --dport 30001 -j DROP") in text  # fmt: skip
    assert "KUBE-SVL-" not in text  # no local policy chain, and no EXT -> SVL jump


def sort_like_kube_proxy_tests(text: str) -> list[str]:
    """pkg/proxy/nftables/helpers_test.go sortNFTablesTransaction, in Python."""
    order = {"table": 10, "chain": 9, "rule": 8, "set": 7, "map": 6, "element": 5}
    lines = [x for x in text.splitlines() if x and not x.startswith("#")]
    import functools

    def cmp(a: str, b: str) -> int:
        wa, wb = a.split(" "), b.split(" ")
        if wa[1] != wb[1]:
            return -1 if order[wa[1]] > order[wb[1]] else 1
        if wa[4] != wb[4]:
            return -1 if wa[4] < wb[4] else 1
        if wa[1] == "rule":
            return 0
        return -1 if a < b else (1 if a > b else 0)

    return sorted(lines, key=functools.cmp_to_key(cmp))


def test_nftables_example_matches_kube_proxys_final_state():
    got = nftables.render(EXAMPLE, NODE, nftables.Options(version="1.35", nodeport_addresses="primary"))
    assert sort_like_kube_proxy_tests("\n".join(got.lines)) == sort_like_kube_proxy_tests(fx.NFTABLES_EXAMPLE)


TWO = port("default", "svc-00003", "iperf", "2001:db8:1234:5678:8:3::3", 5201, 30002,
           [(services.POD_IP, 5201, "worker"), ("2001:db8:1234:5678:8:2:2:17", 5201, "master")], etp_local=False)


def test_nftables_current_layout_dnats_from_the_service_chain():
    """1.36+ (writeServiceToEndpointDNATs, the masquerading rework): no endpoint chains without affinity, the
    mark set inline, hairpin connections from a set; 1.37: one endpoint, no map (#140723 as fixed by #140960)."""
    got = nftables.render([*EXAMPLE, TWO], NODE, nftables.Options(version="1.37")).lines
    svc1 = next(ln.split()[4] for ln in got if ln.startswith("add chain") and "svc-00001" in ln)
    svc3 = next(ln.split()[4] for ln in got if ln.startswith("add chain") and "service-" in ln and "svc-00003" in ln)
    assert f"add rule ip6 kube-proxy {svc1} meta l4proto tcp dnat to [{services.POD_IP}]:5201" in got
    assert (f"add rule ip6 kube-proxy {svc3} meta l4proto tcp dnat ip6 addr . port to numgen random mod 2 map "
            f"{{ 0 : {services.POD_IP} . 5201 , 1 : 2001:db8:1234:5678:8:2:2:17 . 5201 }}") in got  # sorted by str()
    ext3 = [ln for ln in got if ln.startswith("add rule") and "external-" in ln and "svc-00003" in ln]
    assert [ln.split(" ", 5)[5] for ln in ext3] == ['mark set mark or 0x00004000 comment "masquerade"',
                                                    f"goto {svc3}"]  # eTP=Cluster: masquerade, then fall through
    assert not [ln for ln in got if " endpoint-" in ln or "mark-for-masquerade" in ln]  # no endpoint chains
    assert ("add rule ip6 kube-proxy masquerading ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport "
            "@hairpin-connections masquerade fully-random") in got  # fmt: skip
    hairpin = [ln for ln in got if ln.startswith("add element ip6 kube-proxy hairpin-connections")]
    assert hairpin == [f"add element ip6 kube-proxy hairpin-connections {{ {services.POD_IP} . {services.POD_IP} . "
                       "tcp . 5201 }"] * 2  # the local endpoint of svc-00001 and of svc-00003
    masq = [ln for ln in got if ln.startswith("add rule ip6 kube-proxy services ip6 daddr @cluster-ips")]
    assert masq and got.index(masq[0]) < next(i for i, ln in enumerate(got) if "vmap @service-ips" in ln)
    v136 = nftables.render(EXAMPLE, NODE, nftables.Options(version="1.36")).lines
    assert f"numgen random mod 1 map {{ 0 : {services.POD_IP} . 5201 }}" in "\n".join(v136)  # 1.36: always a map


def test_nftables_versions_are_checked():
    with pytest.raises(LabError, match="not modelled"):
        nftables.render(EXAMPLE, NODE, nftables.Options(version="1.30"))


def test_nftables_all_addresses_dispatches_with_fib():
    got = "\n".join(nftables.render(EXAMPLE, NODE).lines)
    assert ("add rule ip6 kube-proxy services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport "
            "vmap @service-nodeports") in got  # fmt: skip
    assert "nodeport-ips" not in got


def test_nftables_no_local_endpoint_is_dropped_like_kube_proxy():
    sp = port("default", "svc-00002", "iperf", "2001:db8:1234:5678:8:3::2", 5201, 30001,
              [("2001:db8:1234:5678:8:2:2:17", 5201, "master")])  # fmt: skip
    got = "\n".join(nftables.render([sp], NODE).lines)
    want = 'no-endpoint-nodeports { tcp . 30001 comment "default/svc-00002:iperf" : drop }'
    assert f"add element ip6 kube-proxy {want}" in got
    assert "local-" not in got


def test_ebpf_maps_are_cilium_shaped():
    m = ebpf.render(EXAMPLE, NODE)
    svc = dict(m.maps["lb6_services"])
    key = ebpf.svc_key(NODE.ip, 30000, 0, 6, ebpf.SCOPE_EXT)
    assert len(key) == 24 and key[16:18] == (30000).to_bytes(2, "big")
    _, count, rev, flags, flags2, _ = struct.unpack("<IHHBBH", svc[key])
    assert count == 1 and flags & ebpf.SVC_FLAG_ROUTABLE and flags & ebpf.SVC_FLAG_EXT_LOCAL_SCOPE
    assert flags2 & ebpf.SVC_FLAG_TWO_SCOPES
    slot1 = struct.unpack("<IHHBBH", svc[ebpf.svc_key(NODE.ip, 30000, 1, 6, ebpf.SCOPE_EXT)])
    assert slot1[0] == 1  # backend id
    surrogate = struct.unpack("<IHHBBH", svc[ebpf.svc_key("::", 30000, 0, 6, ebpf.SCOPE_EXT)])
    assert not surrogate[3] & ebpf.SVC_FLAG_ROUTABLE
    # svc-00002 has no endpoints: its frontend exists with count 0, so the program drops (DROP_NO_SERVICE).
    assert struct.unpack("<IHHBBH", svc[ebpf.svc_key(NODE.ip, 30001, 0, 6, ebpf.SCOPE_EXT)])[1] == 0
    assert dict(m.maps["lb6_reverse_nat"])[struct.pack("<H", rev)] == (
        bytes.fromhex("20010db8123456780000000000000002") + (30000).to_bytes(2, "big"))  # fmt: skip
    assert len(m.maps["lb6_backends"]) == 1


def test_node_port_range_must_hold_every_node_port():
    with pytest.raises(Exception, match="give a range of at least"):
        services.build(3000, node_port_range=services.DEFAULT_NODE_PORT_RANGE)
    w = services.build(3000)  # widened automatically, and recorded
    assert w.params["node_port_range"] == services.WIDE_NODE_PORT_RANGE
    nps = [s.spec.ports[0].node_port for s in w.services]
    assert len(set(nps)) == 3000 and all(30000 <= p <= 40999 for p in nps)
    ips = [s.spec.cluster_ip for s in w.services]
    assert len(set(ips)) == 3000 and "2001:db8:1234:5678:8:3::1" not in ips and "2001:db8:1234:5678:8:3::a" not in ips


def test_allocation_prefers_the_upper_band_like_the_api_server():
    w = services.build(100, seed=1)
    nps = [s.spec.ports[0].node_port for s in w.services]
    offset = 30000 + min(max(16, 2768 // 32), 128)  # portallocator's static band: the first 86 ports
    assert all(p >= offset for p in nps)
    assert w.target("first").metadata.name == "svc-00001"
    assert w.target("middle").metadata.name == "svc-00051"
    assert w.target("last").metadata.name == "svc-00100"


def test_manifests_round_trip_and_mix():
    w = services.build(5, protocols=["TCP", "UDP"], mix="clusterip+1nodeport")
    back = services.from_yaml(services.to_yaml(w))
    assert [s.spec.type for s in back] == ["ClusterIP"] * 4 + ["NodePort"]
    assert back[-1].spec.external_traffic_policy == "Local" and back[-1].spec.ip_families == ["IPv6"]
    assert {p.protocol for p in back[-1].spec.ports} == {"TCP", "UDP"}
    assert len({p.node_port for p in back[-1].spec.ports}) == 1  # TCP and UDP share the NodePort
    with pytest.raises(Exception, match="invalid Service manifest"):
        services.from_yaml("kind: Service\napiVersion: v1\nspec: {ports: 7}\n")
