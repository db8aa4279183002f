"""The kube-proxy models' ruleset records, their text, the release layouts and the partial-sync diff (no root)."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest

from labtools.base.errors import LabError
from labtools.datapaths import iptables, nftables
from labtools.datapaths.base import Node
from labtools.datapaths.rules import (
    Append,
    Chain,
    Declare,
    DeleteChain,
    Element,
    Map,
    Op,
    RandomMap,
    Restore,
    RestoreTable,
    Rule,
    Set,
    Table,
    nft_input,
)
from labtools.model import services
from labtools.model.services import Backend, ServicePort, _categorize

NODE = Node("worker", "2001:db8:1234:5678::10", "ens3", str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR))
T = nftables.TABLE
REMOTE = "2001:db8:1234:5678:8:2:2:17"
OTHER_POD = "2001:db8:1234:5678:8:2:1:842"  # a second local endpoint


def port(name: str, node_port: int, eps: list[tuple[str, str]], etp_local: bool = True) -> ServicePort:
    endpoints = sorted((Backend(ip, 80, node, True, True, False) for ip, node in eps), key=str)
    cluster, local = _categorize(endpoints, "worker")
    return ServicePort("default", name, "http", "tcp", f"2001:db8:1234:5678:8:3::{len(name)}", 80, node_port,
                       etp_local, False, tuple(endpoints), cluster, local)  # fmt: skip


# ----------------------------------------------------------------------------- nft records and their text


def test_nft_records_are_written_as_knftables_writes_them():
    assert Table("rules for kube-proxy").line("add", T) == (
        'add table ip6 kube-proxy { comment "rules for kube-proxy" ; }')  # fmt: skip
    assert Table("ignored").line("delete", T) == "delete table ip6 kube-proxy"
    assert Chain("nat-output", "nat", "output", -100).line("add", T) == (
        "add chain ip6 kube-proxy nat-output { type nat hook output priority -100 ; }")  # fmt: skip
    assert Chain("reject-chain", comment="helper").line("add", T) == (
        'add chain ip6 kube-proxy reject-chain { comment "helper" ; }')  # fmt: skip
    assert Chain("services").line("flush", T) == "flush chain ip6 kube-proxy services"
    assert Set("cluster-ips", "ipv6_addr", "Active ClusterIPs").line("add", T) == (
        'add set ip6 kube-proxy cluster-ips { type ipv6_addr ; comment "Active ClusterIPs" ; }')  # fmt: skip
    assert Map("m", "inet_proto . inet_service : verdict").line("add", T) == (
        "add map ip6 kube-proxy m { type inet_proto . inet_service : verdict ; }")  # fmt: skip
    assert Rule("c", "reject", comment='say "no"').line("add", T) == (
        'add rule ip6 kube-proxy c reject comment "say \\"no\\""')  # fmt: skip  (Go's %q)


def test_an_endpoint_pick_is_an_anonymous_map_in_the_rule():
    vmap = Rule("svc", "", RandomMap(("goto a", "goto b"), verdicts=True))
    assert vmap.line("add", T) == "add rule ip6 kube-proxy svc numgen random mod 2 vmap { 0 : goto a , 1 : goto b }"
    dnat = Rule("svc", "meta l4proto tcp dnat ip6 addr . port to", RandomMap(("::1 . 80",), verdicts=False))
    assert dnat.line("add", T).endswith("dnat ip6 addr . port to numgen random mod 1 map { 0 : ::1 . 80 }")


def test_an_element_is_named_by_set_and_key_and_deleted_by_key_alone():
    el = Element("no-endpoint-services", ("::1", "tcp", "80"), ("drop",), "default/a:http")
    assert el.line("add", T) == ('add element ip6 kube-proxy no-endpoint-services { ::1 . tcp . 80 '
                                 'comment "default/a:http" : drop }')  # fmt: skip
    assert Op("delete", el).line(T) == "delete element ip6 kube-proxy no-endpoint-services { ::1 . tcp . 80 }"
    assert el.ident == dataclasses.replace(el, value=("goto reject-chain",)).ident
    assert el != dataclasses.replace(el, value=("goto reject-chain",))


def test_records_are_frozen_and_typed():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Chain("a").name = "b"  # type: ignore[misc]
    assert Set("s", "ipv6_addr") != Map("s", "ipv6_addr")  # same fields, other kind
    assert len({Chain("a"), Chain("a"), Chain("b")}) == 2


def test_a_transaction_adds_bare_objects_and_wraps_flushes_and_deletes():
    text = nft_input(T, [Chain("a"), Op("flush", Chain("a")), Rule("a", "drop")])
    assert text == "add chain ip6 kube-proxy a\nflush chain ip6 kube-proxy a\nadd rule ip6 kube-proxy a drop\n"


# ----------------------------------------------------------------------------- iptables records


def test_restore_input_from_records():
    nat = RestoreTable("nat", (Declare("POSTROUTING", "ACCEPT"), Declare("KUBE-SEP-X")),
                       (Append("KUBE-SEP-X", "-j KUBE-MARK-MASQ"), DeleteChain("KUBE-SEP-Y")))  # fmt: skip
    restore = Restore((RestoreTable("filter", (), ()), nat))
    assert restore.text() == ("*filter\nCOMMIT\n*nat\n:POSTROUTING ACCEPT [0:0]\n:KUBE-SEP-X - [0:0]\n"
                              "-A KUBE-SEP-X -j KUBE-MARK-MASQ\n-X KUBE-SEP-Y\nCOMMIT\n")  # fmt: skip
    assert restore.commands == 2 and restore.chains() == {"POSTROUTING", "KUBE-SEP-X"}
    assert iptables.service_chains(restore) == {"KUBE-SEP-X"}


def test_the_whole_file_holds_kube_proxys_records_and_the_built_in_jumps():
    rules = iptables.render([port("a", 30000, [(services.POD_IP, "worker")])], NODE)
    for mine, whole in zip(rules.sync.tables, rules.whole.tables, strict=True):
        assert set(mine.chains) <= set(whole.chains) and whole.commands[-len(mine.commands):] == mine.commands
    assert rules.rules == rules.sync.commands + sum(len(v) for v in iptables.jump_rules().values())
    assert rules.full == rules.whole.text()


# ----------------------------------------------------------------------------- releases and layouts


def test_releases_are_ordered_as_numbers_and_each_has_a_layout():
    assert nftables.Release(1, 9) < nftables.Release(1, 10) < nftables.Release(2, 0)
    assert nftables.Release.parse("1.36") == nftables.Release(1, 36) and str(nftables.Release(1, 36)) == "1.36"
    assert nftables.VERSIONS == ("1.35", "1.36", "1.37") and nftables.DEFAULT_VERSION == "1.37"
    flags = {v: (nftables.layout(v).endpoint_chains, nftables.layout(v).single_endpoint_dnat)
             for v in nftables.VERSIONS}  # fmt: skip
    assert flags == {"1.35": (True, False), "1.36": (False, False), "1.37": (False, True)}
    for bad in ("1.30", "1.38", "one.two", "1.35.1"):
        with pytest.raises(LabError, match="not modelled"):
            nftables.layout(bad)


@pytest.mark.parametrize(("version", "eps", "atomic"), [
    ("1.37", [(services.POD_IP, "worker")], True),  # one endpoint: `dnat to`, no anonymous map
    ("1.37", [(services.POD_IP, "worker"), (REMOTE, "master")], False),
    ("1.36", [(services.POD_IP, "worker")], False),
    ("1.35", [(services.POD_IP, "worker")], False),
])  # fmt: skip
def test_atomicity_is_read_from_the_records(version, eps, atomic):
    rendered = nftables.render([port("a", 30000, eps, etp_local=False)], NODE, nftables.Options(version=version))
    assert rendered.atomic is atomic
    assert ("numgen random" in rendered.text) is not atomic  # what the text says agrees


class RecordingHost:
    """A host that records what it is asked to run (a Host's `run`, nothing else)."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str | None]] = []

    def run(self, argv, *, check=True, timeout=60.0, env=None, input=None):
        self.calls.append((list(argv), input))
        return SimpleNamespace(stdout="", stderr="", returncode=0)


def test_an_atomic_ruleset_replaces_the_table_in_one_transaction():
    dp = nftables.NftablesDatapath(version="1.37")
    one, host = dp.render([port("a", 30000, [(services.POD_IP, "worker")])], NODE), RecordingHost()
    assert dp.apply(host, one, NODE) == len(one.ops)
    assert host.calls == [(["nft", "-f", "-"], f"add table {T}\ndelete table {T}\n" + one.text)]
    two, host = dp.render([port("a", 30000, [(services.POD_IP, "worker"), (REMOTE, "master")])], NODE), RecordingHost()
    dp.apply(host, two, NODE)
    assert host.calls == [(["nft", "delete", "table", "ip6", "kube-proxy"], None), (["nft", "-f", "-"], two.text)]


# ----------------------------------------------------------------------------- partial syncs compare records


@pytest.mark.parametrize("version", nftables.VERSIONS)
def test_a_sync_without_a_change_writes_nothing(version):
    ports = services.service_ports(services.build(5, mix="clusterip+1nodeport"), "worker")
    assert nftables.render_partial(ports, ports, NODE, nftables.Options(version=version)).ops == ()
    partial = iptables.render_partial(ports, ports, NODE)
    assert not iptables.service_chains(partial.restore) and not any(
        isinstance(c, DeleteChain) for t in partial.restore.tables for c in t.commands)  # fmt: skip


def test_an_element_that_changed_value_is_deleted_then_added():
    """No endpoints (reject) -> only a remote one under eTP=Local (drop): same key, another verdict."""
    before = [port("a", 30000, [])]
    after = [port("a", 30000, [(REMOTE, "master")])]
    ops = nftables.render_partial(before, after, NODE).ops
    old = Element("no-endpoint-nodeports", ("tcp", "30000"), ("goto reject-chain",), "default/a:http")
    new = dataclasses.replace(old, value=("drop",))
    i = ops.index(Op("delete", new))
    assert ops[i + 1] == new and old not in ops
    key = (after[0].cluster_ip, "tcp", "80")  # reachable now: out of no-endpoint-services, into service-ips
    assert Op("delete", Element("no-endpoint-services", key, ("goto reject-chain",), "default/a:http")) in ops
    assert Element("service-ips", key, (f"goto service-{nftables.chain_base(after[0])}",)) in ops


def test_a_removed_service_is_flushed_and_its_elements_deleted_by_key():
    keep, gone = port("a", 30000, [(services.POD_IP, "worker")]), port("bb", 30001, [(OTHER_POD, "worker")])
    ops = nftables.render_partial([keep, gone], [keep], NODE).ops
    assert all(isinstance(op, Op) for op in ops)
    assert {op.obj.name for op in ops if op.verb == "flush"} == {
        f"{p}-{nftables.chain_base(gone)}" for p in ("service", "local", "external")}  # fmt: skip
    deleted = {op.obj.set for op in ops if op.verb == "delete"}
    assert deleted == {"cluster-ips", "service-ips", "service-nodeports", "hairpin-connections"}
    assert nftables.chain_base(keep) not in "".join(nftables.render_partial([keep, gone], [keep], NODE).lines)


def test_an_iptables_removal_declares_and_deletes_the_stale_chains():
    keep, gone = port("a", 30000, [(services.POD_IP, "worker")]), port("bb", 30001, [(services.POD_IP, "worker")])
    partial = iptables.render_partial([keep, gone], [keep], NODE)
    nat = partial.restore.tables[1]
    stale = {c.chain for c in nat.commands if isinstance(c, DeleteChain)}
    assert stale == iptables.service_chains(iptables.render_kube_proxy([gone], NODE))
    assert stale <= {d.chain for d in nat.chains}  # declared first: that flushes them
    assert partial.rules == partial.restore.commands and partial.text == partial.restore.text()
