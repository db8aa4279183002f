"""One change on top of N Services: each datapath's own update path (kube-proxy's partial sync, Cilium's
map writes) reaches the state a full sync would, writes only what upstream writes, and the client's
probe sees the change."""

from __future__ import annotations

import json
import re
import struct

import pandas as pd
import pytest

from labtools import datapaths
from labtools.base.errors import LabError
from labtools.datapaths import ebpf, iptables, nftables
from labtools.datapaths.base import Node
from labtools.experiments import bench
from labtools.lab import traffic
from labtools.model import services
from tests.conftest import fresh_lab, lab_fixture

NODE = Node("worker", "2001:db8:1234:5678::10", "ens3", str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR))
N = 50


def ports(change: services.Change) -> tuple[list, list]:
    return services.service_ports(change.before, "worker"), services.service_ports(change.after, "worker")


# ----------------------------------------------------------------------------- the model's changes


@pytest.mark.parametrize("kind", services.CHANGES)
def test_a_change_touches_one_service_and_keeps_the_others(kind):
    workload = services.build(N, mix="clusterip+1nodeport")
    change = services.one_change(workload, kind)
    before, after = ports(change)
    assert datapaths.base.changed_services(before, after) == {("default", change.service)}
    np_of = {s.metadata.name: s.spec.ports[0].node_port for s in change.after.services + change.before.services}
    assert np_of[change.service] == change.node_port
    ips = [s.spec.cluster_ip for s in change.after.services]
    assert len(set(ips)) == len(ips)  # an added Service gets an address nobody has
    nps = [s.spec.ports[0].node_port for s in change.after.services if s.spec.ports[0].node_port]
    assert len(set(nps)) == len(nps)


def test_an_unknown_change_is_refused():
    with pytest.raises(LabError, match="change must be one of add, remove, endpoints"):
        services.one_change(services.build(2), "rename")


# ----------------------------------------------------------------------------- what each update path writes


def nat_section(text: str) -> list[str]:
    return text.split("*nat\n")[1].splitlines()


def test_iptables_partial_sync_rewrites_the_top_level_chains_and_only_the_changed_services_chains():
    change = services.one_change(services.build(N), "add")
    before, after = ports(change)
    partial = iptables.render_partial(before, after, NODE)
    nat = nat_section(partial.text)
    declared = [x.split()[0][1:] for x in nat if x.startswith(":")]
    new_chains = iptables.service_chains(iptables.render_kube_proxy(after, NODE)) - iptables.service_chains(
        iptables.render_kube_proxy(before, NODE)
    )
    # upstream: KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING, KUBE-MARK-MASQ always; the changed Service's own
    assert declared[:4] == ["KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"]
    assert set(declared[4:]) == new_chains and len(new_chains) == 4  # EXT, SVC, SVL and one SEP
    # ... and every Service's jumps, written before the skip
    assert sum(x.startswith("-A KUBE-NODEPORTS ") for x in nat) == N + 1
    assert partial.save_first  # 51 endpoints: below largeClusterEndpointsThreshold it reads the table back


def test_iptables_partial_sync_of_a_removal_flushes_and_deletes_the_stale_chains():
    change = services.one_change(services.build(N), "remove")
    before, after = ports(change)
    nat = nat_section(iptables.render_partial(before, after, NODE).text)
    deleted = [x.split()[1] for x in nat if x.startswith("-X ")]
    assert len(deleted) == 4
    assert all(f":{c} - [0:0]" in nat for c in deleted)  # declared first: that flushes them
    assert not any(c in x for c in deleted for x in nat if x.startswith("-A "))
    big = services.one_change(services.build(1200), "remove")
    assert not iptables.render_partial(*ports(big), NODE).save_first  # large-cluster mode: no save per sync


@pytest.mark.parametrize("version", nftables.VERSIONS)
@pytest.mark.parametrize("kind", services.CHANGES)
def test_nftables_partial_sync_touches_nothing_table_wide_and_no_unchanged_service(kind, version):
    change = services.one_change(services.build(N), kind)
    before, after = ports(change)
    lines = nftables.render_partial(before, after, NODE, nftables.Options(version=version)).lines
    assert lines
    assert not [x for x in lines if re.match(r"(add|flush|delete) (table|map|set) ", x)]
    others = {nftables.chain_base(sp) for sp in after if sp.name != change.service}
    assert not [x for x in lines if any(b in x for b in others)]
    if kind == "remove":
        assert all(x.startswith(("flush chain ", "delete element ")) for x in lines)
    anonymous = sum("numgen random" in x for x in lines)
    if kind == "remove" or version == "1.37":  # one endpoint: `dnat to`, no map (PR #140723)
        assert anonymous == 0
    else:
        assert anonymous == 2  # the service chain and the local chain (eTP=Local) each pick an endpoint


def test_cilium_map_writes_put_the_master_slot_last_on_upsert_and_first_on_delete():
    added = ebpf.render_change(*ports(services.one_change(services.build(N), "add")), NODE).ops
    slots = [struct.unpack_from("<H", k, 18)[0] for m, op, k, _ in added if m == "lb6_services"]
    assert slots == [1, 0] * 5  # ClusterIP, then node address and :: in two scopes each: slot 1, then master
    removed = ebpf.render_change(*ports(services.one_change(services.build(N), "remove")), NODE).ops
    assert {op for *_, op, _k, _v in [(m, o, k, v) for m, o, k, v in removed]} == {ebpf.DELETE}
    slots = [struct.unpack_from("<H", k, 18)[0] for m, _, k, _ in removed if m == "lb6_services"]
    assert slots == [0, 1] * 5
    moved = ebpf.render_change(*ports(services.one_change(services.build(N), "endpoints")), NODE).ops
    assert moved[-1][:2] == ("lb6_backends", ebpf.DELETE)  # the retired backend goes when nothing uses it


# ----------------------------------------------------------------------------- on the lab


@lab_fixture(scope="module")
def clab():
    yield from fresh_lab("pych")


def save(host, tool: str) -> dict[str, list[str]]:
    """Rules per chain (counters and comments of the dump dropped), from iptables-save."""
    chains: dict[str, list[str]] = {}
    for line in host.run([tool]).stdout.splitlines():
        if line.startswith(":"):
            chains.setdefault(line.split()[0][1:], [])
        elif line.startswith("-A "):
            chains.setdefault(line.split()[1], []).append(line)
    return chains


def nft_state(host) -> tuple[dict[str, list], dict[str, list]]:
    """Rules per chain and elements per set or map of kube-proxy's table (handles dropped)."""
    data = json.loads(host.run(["nft", "-j", "list", "table", *nftables.TABLE.split()]).stdout)["nftables"]
    rules: dict[str, list] = {}
    elements: dict[str, list] = {}
    for obj in data:
        if "chain" in obj:
            rules.setdefault(obj["chain"]["name"], [])
        elif "rule" in obj:
            rules.setdefault(obj["rule"]["chain"], []).append(json.dumps(obj["rule"]["expr"], sort_keys=True))
        for kind in ("set", "map"):
            if kind in obj:
                elements[obj[kind]["name"]] = sorted(json.dumps(e, sort_keys=True) for e in obj[kind].get("elem", []))
    return rules, elements


def bpf_maps(host, node) -> dict[str, set[tuple[str, str]]]:
    """(key, value) hex pairs of the service maps of the programs on the worker's interfaces."""
    out: dict[str, set[tuple[str, str]]] = {}
    for ifname in (node.uplink, *node.pod_interfaces.values()):
        filters = json.loads(host.run(["tc", "-j", "filter", "show", "dev", ifname, "ingress"]).stdout or "[]")
        for prog in [f["options"]["prog"]["id"] for f in filters if "prog" in f.get("options", {})]:
            info = json.loads(host.run(["bpftool", "-j", "prog", "show", "id", str(prog)]).stdout)
            for map_id in info.get("map_ids", []):
                meta = json.loads(host.run(["bpftool", "-j", "map", "show", "id", str(map_id)]).stdout)
                if meta["name"] in ("lb6_services", "lb6_backends", "lb6_reverse_nat"):
                    dump = json.loads(host.run(["bpftool", "-j", "map", "dump", "id", str(map_id)]).stdout)
                    out[meta["name"]] = {(bytes(int(b, 16) for b in e["key"]).hex(),
                                          bytes(int(b, 16) for b in e["value"]).hex()) for e in dump}  # fmt: skip
    return out


@pytest.mark.parametrize("kind", services.CHANGES)
@pytest.mark.parametrize("name", ["iptables", "iptables-legacy", "nftables@1.35", "nftables@1.37", "ebpf"])
def test_a_partial_update_reaches_what_a_full_sync_programs(clab, name, kind):
    node = datapaths.node_of(clab.inventory)
    host = clab.host(node.name)
    change = services.one_change(services.build(N), kind)
    before, after = ports(change)
    base, _, version = name.partition("@")
    dp = datapaths.get(base, kube_proxy_version=version or None)

    def state():
        if base == "ebpf":
            return bpf_maps(host, node)
        if base == "nftables":
            return nft_state(host)
        return {t: save(host, f"{dp.restore.replace('-restore', '-save')}") for t in ("all",)}

    datapaths.switch(host, node, base, after, kube_proxy_version=version or None)
    full = state()
    datapaths.switch(host, node, base, before, kube_proxy_version=version or None)
    assert dp.apply_change(host, dp.render_change(before, after, node), node).objects > 0
    partial = state()
    if base == "nftables":  # stale chains stay, empty, until a later sync deletes them (kube-proxy: >= 1 s on)
        stale = set(partial[0]) - set(full[0])
        assert all(partial[0][c] == [] for c in stale)
        assert bool(stale) == (kind == "remove" or (kind == "endpoints" and version == "1.35"))  # endpoint chains
        partial = ({c: r for c, r in partial[0].items() if c not in stale}, partial[1])
    assert partial == full
    datapaths.switch(host, node, "none", [])


def test_the_ebpf_agent_stays_up_between_changes_and_writes_what_a_full_sync_would(clab):
    """`updater` starts one map writer (as Cilium's agent): the change and its repetition go through the same
    process, and leave the maps as programming the whole workload would."""
    node = datapaths.node_of(clab.inventory)
    host = clab.host(node.name)
    dp = datapaths.get("ebpf")
    before, after = ports(services.one_change(services.build(N), "add"))
    datapaths.switch(host, node, "ebpf", after)
    full_after = bpf_maps(host, node)
    datapaths.switch(host, node, "ebpf", before)
    with dp.updater(host, node) as apply:
        there = apply(dp.render_change(before, after, node))
        assert bpf_maps(host, node) == full_after and there.measured["map_calls_s"] > 0
        again = apply(dp.render_change(before, after, node))  # the same agent, its map descriptors kept
        assert bpf_maps(host, node) == full_after and again.objects == there.objects  # upserts: idempotent
    datapaths.switch(host, node, "none", [])


def test_the_probe_refuses_a_target_that_already_shows_the_change(clab):
    node = datapaths.node_of(clab.inventory)
    workload = services.build(3)
    datapaths.switch(clab.host(node.name), node, "nftables", services.service_ports(workload, node.name))
    ends = traffic.ends(clab)
    with traffic.start_crr_server(ends.pod, services.IPERF_PORT):
        target = traffic.Target("last", ends.node_address, workload.target("last").spec.ports[0].node_port)
        with pytest.raises(LabError, match="is already up"):
            traffic.watch(ends.client, target, "up")
    datapaths.switch(clab.host(node.name), node, "none", [])


@pytest.mark.parametrize(("kind", "name"), [("add", "ebpf"), ("remove", "nftables"), ("endpoints", "iptables")])
def test_the_bench_sees_one_change_end_to_end(clab, tmp_path, kind, name):
    rows = bench.run_change(clab, f"t-{kind}", kind, [10], [name], 1, root=tmp_path, progress=False)
    (row,) = rows
    assert row["change"] == kind and row["datapath"] == name and row["services"] == 10
    # The flip lies between two probes; the earlier may predate the update call when that takes microseconds
    # (eBPF's agent), so only the later must follow it.
    assert row["change_e2e_lo_s"] < row["change_e2e_s"] and row["change_e2e_s"] > 0
    assert row["probe_hz"] >= 1000 and row["probe_attempts"] >= 2 and row["change_objects"] > 0
    assert (tmp_path / "raw" / f"t-{kind}").is_dir()
    assert not list(tmp_path.rglob("rules.txt"))
    if name == "iptables":
        assert row["bare_restore_s"] > 0


@pytest.mark.lab
def test_the_bench_refuses_a_probe_rate_out_of_range(clab, tmp_path):
    for hz in (100, float("nan"), float("inf"), 1e9):  # coarser than 1 ms, or a pace no client keeps
        with pytest.raises(LabError, match="is not from 1000 to 10000"):
            bench.run_change(clab, "t-slow", "add", [1], ["ebpf"], 1, hz=hz, root=tmp_path, progress=False)
    assert list(tmp_path.iterdir()) == []


def test_the_change_metric_has_the_target_new_and_only_it():
    from labtools.model.plan import Plan

    Plan("t", ["none", "ebpf"], [1], ["change", "crr"], {"change": ["new"], "crr": ["last"]})
    with pytest.raises(LabError, match="the change metric has the target new"):
        Plan("t", ["ebpf"], [1], ["change"], ["last"])
    with pytest.raises(LabError, match="crr at new"):
        Plan("t", ["ebpf"], [1], ["crr"], ["new"])
    points = Plan("t", ["none", "ebpf"], [1], ["change"], ["new"], repeats=1).points()
    assert [p[2] for p in points] == ["ebpf"]  # `none` has no Service to change


def test_a_sweep_times_one_change_and_leaves_the_workload_as_it_was(clab, tmp_path):
    from labtools.experiments import sweep
    from labtools.model.plan import Plan
    from labtools.outputs.benchview import from_sweep

    plan = Plan("t-sweep-change", ["nftables", "ebpf"], [1, 20], ["change", "crr"],
                {"change": ["new"], "crr": ["last"]}, repeats=1, crr_transactions=200)  # fmt: skip
    csv, new = sweep.run(clab, plan, root=tmp_path, progress=False)
    assert new == 8
    df = pd.read_csv(csv)
    ch = from_sweep(df)
    assert len(ch[ch["metric"] == "change_e2e_s"]) == 4
    assert (ch.pivot_table(index=["datapath", "services"], columns="metric", values="value")
            .eval("change_e2e_lo_s < change_e2e_s").all())  # fmt: skip
    assert (df[df["metric"] == "crr_p50"]["value"] > 0).all()  # the Service added and removed again: crr still runs
