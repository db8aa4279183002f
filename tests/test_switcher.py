"""The `Switcher`'s sequence of commands on the worker, recorded by a `RecordingHost` (no root, no lab): what
it clears, parks, resumes and programs. That the traffic then takes the chosen datapath is tests/test_datapaths.py's."""

from __future__ import annotations

from labtools import datapaths
from labtools.datapaths.base import Node
from labtools.hosts import RecordingHost
from labtools.model import services

NODE = Node("worker", "2001:db8:1234:5678::2", "ens3", str(services.CLUSTER_CIDR), str(services.SERVICE_CIDR),
            {services.POD_IP: "lxc0"})  # fmt: skip
PORTS = services.service_ports(services.build(3), "worker")


def commands(h: RecordingHost) -> list[str]:
    """The commands since the last call, as text (without the `command -v` probe), and forget them."""
    out = [" ".join(c.argv) for c in h.calls if c.kind == "run" and c.argv[:2] != ("sh", "-c")]
    h.calls.clear()
    return out


def test_the_first_use_clears_every_datapath_then_programs_the_chosen_one():
    h = RecordingHost("worker")
    done = datapaths.Switcher(h, NODE).use("iptables-legacy", PORTS)
    ran = commands(h)
    clears = {"nft delete table ip6 filter", "nft delete table ip6 nat", "nft delete table ip6 kube-proxy",
              "cat /proc/net/ip6_tables_names", "tc filter del dev ens3 ingress pref 1",
              "tc filter del dev lxc0 ingress pref 1",
              "ip -br link show"}  # fmt: skip (the last: where a killed transit probe may have left filters)
    assert set(ran[: len(clears)]) == clears  # the node's state is unknown: everything off first
    assert ran[len(clears):] == ["conntrack -F", "ip6tables-legacy-restore -w"]  # fmt: skip
    assert done.datapath == "iptables-legacy" and done.services == 3


def test_a_sweep_parks_and_resumes_nftables_tables_instead_of_reprogramming_them():
    h = RecordingHost("worker")
    sw = datapaths.Switcher(h, NODE)
    first = sw.use("nftables", PORTS, key="N=3")
    commands(h)
    sw.use("none", PORTS, key="N=3")
    assert [(c.argv, c.input) for c in h.calls] == [
        (("nft", "-f", "-"), "add table ip6 kube-proxy { flags dormant; }\n"),  # rules kept, hooks gone
        (("conntrack", "-F"), None),
    ]
    commands(h)
    again = sw.use("nftables", PORTS, key="N=3")
    assert [(c.argv, c.input) for c in h.calls] == [(("conntrack", "-F"), None),
                                                    (("nft", "-f", "-"), "add table ip6 kube-proxy\n")]  # fmt: skip
    assert again.objects == first.objects and "resumed_s" in again.detail
    commands(h)
    sw.use("nftables", PORTS, key="N=4")  # another workload: programmed from nothing
    ran = commands(h)
    assert "nft delete table ip6 kube-proxy" in ran and ran[-1] == "nft -f -" and "conntrack -F" not in ran


def test_without_a_key_the_previous_datapath_is_cleared_not_parked():
    h = RecordingHost("worker")
    sw = datapaths.Switcher(h, NODE)
    sw.use("iptables", PORTS)
    commands(h)
    sw.use("iptables-legacy", PORTS)
    ran = commands(h)
    assert ran == ["nft delete table ip6 filter", "nft delete table ip6 nat", "conntrack -F",
                   "ip6tables-legacy-restore -w"]  # fmt: skip
    assert not any("dormant" in (c.input or "") for c in h.calls)
