"""How the datapaths write to a node: the commands and their input, in order, recorded by a `RecordingHost`
(no root, no lab). What the rules and programs do in the kernel is tests/test_datapaths.py's."""

from __future__ import annotations

from pathlib import Path

import pytest

from labtools.base.errors import CommandError, LabError
from labtools.datapaths import ebpf, iptables, nftables
from labtools.datapaths.base import Node
from labtools.hosts import RecordingHost, Reply
from labtools.model import services

NODE = Node("worker", "2001:db8:1234:5678::2", "ens3", str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR))
WORKLOAD = services.build(3)
PORTS = services.service_ports(WORKLOAD, "worker")


def change(kind: str = "add", n: int = 3):
    c = services.one_change(services.build(n), kind)
    return services.service_ports(c.before, "worker"), services.service_ports(c.after, "worker")


def rules_in(restore_input: str) -> int:
    return sum(line.startswith("-A ") for line in restore_input.splitlines())


@pytest.mark.parametrize("backend", ["nft", "legacy"])
def test_iptables_replaces_filter_and_nat_with_one_restore(backend):
    h = RecordingHost("worker")
    done = iptables.IptablesDatapath(backend).program(h, PORTS, NODE)
    (call,) = h.calls
    assert call.argv == (f"ip6tables-{backend}-restore", "-w")  # no --noflush: the tables are replaced whole
    tables = [line for line in call.input.splitlines() if line.startswith("*")]
    assert tables == ["*filter", "*nat"] and call.input.count("COMMIT\n") == 2
    assert all(p.cluster_ip in call.input for p in PORTS)
    assert done.objects == rules_in(call.input) > 0 and done.services == 3


def test_iptables_partial_sync_reads_the_nat_table_first_below_the_large_cluster_threshold():
    before, after = change()
    d = iptables.IptablesDatapath("nft")
    h = RecordingHost("worker")
    written = d.apply_change(h, d.render_change(before, after, NODE), NODE).objects
    restore = ["ip6tables-nft-restore", "-w", "--noflush", "--counters"]
    assert h.commands == [["ip6tables-nft-save", "-t", "nat"], restore]
    assert written == rules_in(h.calls[1].input) > 0
    before, after = change(n=iptables.LARGE_CLUSTER_ENDPOINTS_THRESHOLD + 1)  # one endpoint each
    h = RecordingHost("worker")
    d.apply_change(h, d.render_change(before, after, NODE), NODE)
    assert h.commands == [restore]


def test_iptables_clear_removes_what_each_backend_keeps():
    h = RecordingHost("worker", {"nft delete": Reply(1, "", "No such file or directory")})  # absent: no error
    iptables.IptablesDatapath("nft").clear(h, NODE)
    assert h.commands == [["nft", "delete", "table", "ip6", "filter"], ["nft", "delete", "table", "ip6", "nat"]]
    h = RecordingHost("worker", {"ip6_tables_names": "mangle\nnat\n"})
    iptables.IptablesDatapath("legacy").clear(h, NODE)  # x_tables can only be emptied, and only those that exist
    assert h.commands == [["cat", "/proc/net/ip6_tables_names"], ["ip6tables-legacy-restore", "-w"]]
    assert [line for line in h.calls[1].input.splitlines() if line.startswith(("*", "-A"))] == ["*nat"]
    h = RecordingHost("worker")
    iptables.IptablesDatapath("legacy").clear(h, NODE)
    assert h.commands == [["cat", "/proc/net/ip6_tables_names"]]


def test_nftables_replaces_its_table_in_one_transaction():
    h = RecordingHost("worker")
    done = nftables.NftablesDatapath(version="1.37").program(h, PORTS, NODE)
    (call,) = h.calls
    assert call.argv == ("nft", "-f", "-")
    head, rest = call.input.split("\n", 2)[:2], call.input.split("\n", 2)[2]
    assert head == ["add table ip6 kube-proxy", "delete table ip6 kube-proxy"]  # a clean node has none to delete
    assert "delete table" not in rest and all(p.cluster_ip in rest for p in PORTS)
    assert done.objects == len(rest.splitlines())


def test_nftables_1_35_deletes_its_table_in_a_transaction_of_its_own():
    """Its anonymous verdict maps: in one transaction the kernel would walk the old table's sets for each new one."""
    h = RecordingHost("worker", {"nft delete": Reply(1, "", "No such file or directory")})
    done = nftables.NftablesDatapath(version="1.35").program(h, PORTS, NODE)
    assert h.commands == [["nft", "delete", "table", "ip6", "kube-proxy"], ["nft", "-f", "-"]]
    assert "delete table" not in h.calls[1].input and "numgen random" in h.calls[1].input
    assert done.objects == len(h.calls[1].input.splitlines())


@pytest.mark.parametrize("version", nftables.VERSIONS)
def test_nftables_partial_sync_is_one_transaction_on_the_existing_table(version):
    before, after = change("remove")
    d = nftables.NftablesDatapath(version=version)
    h = RecordingHost("worker")
    written = d.apply_change(h, d.render_change(before, after, NODE), NODE).objects
    assert h.commands == [["nft", "-f", "-"]]
    assert "delete table" not in h.calls[0].input  # the table stays: only the changed Service is written
    assert written == len(h.calls[0].input.splitlines())


@pytest.mark.parametrize("datapath", [iptables.IptablesDatapath("nft"), nftables.NftablesDatapath()])
def test_a_refused_apply_raises_naming_the_host(datapath):
    h = RecordingHost("worker", {"-f -": Reply(1, "", "Error: syntax error"), "restore": Reply(2, "", "line 9 failed")})
    with pytest.raises(CommandError, match=r"\[worker\]"):
        datapath.program(h, PORTS, NODE)


def test_ebpf_fills_its_maps_in_one_loader_run_and_checks_what_the_loader_wrote(monkeypatch):
    monkeypatch.setattr(ebpf, "require_built", lambda: (Path("/b/nodeport.o"), Path("/b/labtools-bpf-load")))
    node = Node(NODE.name, NODE.ip, NODE.uplink, NODE.cluster_cidr, NODE.service_cidr, {services.POD_IP: "lxc0"})
    d = ebpf.EbpfDatapath()
    expected = d.render(PORTS, node).count() + 1  # and the pod's veth in lxc6
    h = RecordingHost("worker", {"ip -j link show dev lxc0": '[{"ifindex": 7}]', "bpf-load": str(expected)})
    assert d.program(h, PORTS, node).objects == expected
    loader = ["/tmp/labtools-labtools-bpf-load", "/tmp/labtools-nodeport.o", "ens3", "lxc0"]  # installed, then run
    assert h.commands == [["ip", "-j", "link", "show", "dev", "lxc0"], loader]
    assert isinstance(h.calls[-1].input, bytes) and h.calls[-1].input  # the map entries, binary
    h = RecordingHost("worker", {"ip -j link show dev lxc0": '[{"ifindex": 7}]', "bpf-load": str(expected - 1)})
    with pytest.raises(LabError, match=f"the loader wrote {expected - 1} map entries, expected {expected}"):
        d.program(h, PORTS, node)


def test_the_ebpf_agent_is_one_session_answering_each_change(monkeypatch):
    """eBPF's updater: one `--agent` session for all changes, each a count and the records, each answered by
    "written nanoseconds"; a wrong count is refused."""
    monkeypatch.setattr(ebpf, "require_built", lambda: (Path("/b/nodeport.o"), Path("/b/labtools-bpf-load")))
    d = ebpf.EbpfDatapath()
    before, after = PORTS[:-1], PORTS
    ops = d.render_change(before, after, NODE)
    h = RecordingHost("worker", {"--agent": f"{len(ops.ops)} 2500"})
    with d.updater(h, NODE) as apply:
        first, second = apply(ops), apply(ops)
    assert [c.kind for c in h.calls] == ["install", "session", "request", "request", "close"]
    assert h.calls[1].argv == ("/tmp/labtools-labtools-bpf-load", "--agent", "ens3")  # NODE has no pods
    assert h.calls[2].input[:4] == len(ops.ops).to_bytes(4, "little") and h.calls[2].input[4:] == ops.stream()
    assert first.objects == second.objects == len(ops.ops) and first.measured == {"map_calls_s": 2.5e-6}
    h = RecordingHost("worker", {"--agent": "0 10"})
    with pytest.raises(LabError, match="made 0 map writes"), d.updater(h, NODE) as apply:
        apply(ops)
