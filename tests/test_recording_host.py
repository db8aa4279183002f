"""`labtools.hosts.RecordingHost`: the `Host` that unit tests run code against without root or a lab."""

from __future__ import annotations

import pytest

from labtools.base.errors import CommandError, PrerequisiteError
from labtools.hosts import Call, RecordingHost, Reply


def test_records_commands_and_stdin_in_order_and_answers_from_the_script():
    h = RecordingHost("worker", {"nft list": "table ip6 x\n", "conntrack -F": Reply(1, "", "0 flow entries")})
    assert h.run(["nft", "list", "tables"]).stdout == "table ip6 x\n"
    assert h.run(["conntrack", "-F"], check=False).returncode == 1
    assert h.run(["ip", "-6", "route"]).stdout == ""  # not scripted: exit 0, no output
    h.run(["nft", "-f", "-"], input="add table ip6 x\n")
    assert h.commands == [["nft", "list", "tables"], ["conntrack", "-F"], ["ip", "-6", "route"], ["nft", "-f", "-"]]
    assert h.calls[-1] == Call("worker", "run", ("nft", "-f", "-"), "add table ip6 x\n")
    h.run(["labtools-bpf-load", "--update"], input=b"\xff\x00")
    assert h.calls[-1].input == b"\xff\x00"  # a binary stream stays bytes


def test_a_scripted_failure_raises_as_a_real_host_would():
    h = RecordingHost("worker", {"restore": Reply(2, "", "line 3 failed")})
    with pytest.raises(CommandError, match="line 3 failed"):
        h.run(["ip6tables-nft-restore", "-w"])
    assert h.commands == [["ip6tables-nft-restore", "-w"]]


def test_answers_may_be_functions_of_the_argv_and_strict_hosts_refuse_the_unscripted():
    h = RecordingHost("pod", {"echo": lambda argv: argv[-1].upper()}, strict=True)
    assert h.run(["echo", "hi"]).stdout == "HI"
    with pytest.raises(AssertionError, match=r"\[pod\] unscripted command: rm -rf /"):
        h.run(["rm", "-rf", "/"])


def test_a_shared_log_keeps_the_order_across_hosts():
    log: list[Call] = []
    a, b = RecordingHost("router", log=log), RecordingHost("worker", log=log)
    a.run(["ip", "-6", "sr", "tunsrc", "set", "fc00::1"])
    b.put("/tmp/x", "/tmp/y")
    path = b.install("/usr/lib/labtools-crr")
    a.start(["tcpdump", "-i", "ens3"]).stop()
    assert [str(c) for c in log] == ["[router] run ip -6 sr tunsrc set fc00::1", "[worker] put /tmp/x /tmp/y",
                                     "[worker] install /usr/lib/labtools-crr",
                                     "[router] start tcpdump -i ens3"]  # fmt: skip
    assert path == "/tmp/labtools-labtools-crr" and a.commands == [["ip", "-6", "sr", "tunsrc", "set", "fc00::1"]]


def test_plays_a_remote_host_at_the_seam_by_default():
    remote = RecordingHost("vm", {"command -v": "tcpdump\n"})
    with pytest.raises(PrerequisiteError, match=r"\[vm\] missing tool\(s\): tcpdump: apt-get install tcpdump"):
        remote.require_tools("ip", "tcpdump")
    assert remote.commands[0][:2] == ["sh", "-c"] and "command -v tcpdump" in remote.commands[0][2]
    assert RecordingHost("ns", is_local=True).install("x").startswith("/")  # this filesystem, as NetnsHost
