"""The emulated thesis testbed, with real traffic through real kernel datapaths."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from labtools.base.errors import HostUnreachable, LabError, PrerequisiteError
from labtools.base.prereqs import require_tools
from labtools.hosts import namespaces
from labtools.lab import Lab, reachability
from tests.conftest import POD_IP, ROOT

CLI = [sys.executable, "-m", "labtools"]


def test_client_pings_pod_through_router_and_worker(lab):
    r = reachability.ping(lab.host("client"), POD_IP)
    assert r.ok, r.error
    # two forwarders (router, worker) and the Cilium-like attachment's own hop on the worker (labtools.lab.cni)
    assert r.hop_limit == 61


def test_tcp_client_to_pod_and_pod_sees_client(lab):
    r = reachability.iperf3_tcp(lab.host("client"), lab.host("pod"), POD_IP, seconds=1)
    assert r.bytes > 0
    assert r.seen_source == "2001:db8:1234:5679::1"


def test_jumbo_packet_with_dont_fragment_passes(lab):
    ok = reachability.ping(lab.host("client"), POD_IP, packet_bytes=8900, dont_fragment=True)
    assert ok.ok and ok.packet_bytes == 8900, ok.error
    # 8950 is the largest packet every link passes; one byte more cannot leave the client.
    assert reachability.ping(lab.host("client"), POD_IP, packet_bytes=8950, dont_fragment=True).ok
    too_big = reachability.ping(lab.host("client"), POD_IP, packet_bytes=8951, dont_fragment=True)
    assert not too_big.ok and "mtu: 8950" in too_big.error


def test_forwarding_where_the_thesis_has_it(lab):
    got = {
        name: lab.host(name).run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip()
        for name in lab.inventory.machines
    }
    assert got == {"client": "0", "router": "1", "master": "1", "worker": "1", "pod": "0"}


def test_status_reports_every_interface(lab):
    rows = {(s.machine, s.interface): s for s in lab.status()}
    assert rows[("router", "ens7")].state == "UP"
    assert rows[("router", "ens7")].mtu == 8950
    assert "2001:db8:1234:5678::3/64" in rows[("router", "ens7")].addresses
    assert rows[("worker", "ens3")].link == "clusternet"


def test_up_is_idempotent(lab):
    before = sorted(namespaces.lab_namespaces("pyt"))
    lab.up(progress=False)
    assert sorted(namespaces.lab_namespaces("pyt")) == before
    assert reachability.ping(lab.host("client"), POD_IP).ok


def test_host_errors_name_host_command_and_stderr(lab):
    with pytest.raises(LabError) as e:
        lab.host("router").run(["ip", "-6", "route", "add", "2001:db8:1234:5678:8:2::/104", "dev", "ens7"])
    msg = str(e.value)
    assert msg.startswith("[router] `ip -6 route add 2001:db8:1234:5678:8:2::/104 dev ens7` failed (exit 2)")
    assert "File exists" in msg
    with pytest.raises(LabError, match=r"\[client\] `sleep 5` timed out after 0.2 s"):
        lab.host("client").run(["sleep", "5"], timeout=0.2)


def test_background_process_and_files(lab, tmp_path):
    h = lab.host("worker")
    p = h.start(["sh", "-c", "echo started; exec sleep 30"])
    time.sleep(0.2)
    assert p.running() and "started" in p.output()
    p.stop()
    assert not p.running()
    src = tmp_path / "a.txt"
    src.write_text("hello")
    h.put(src, str(tmp_path / "b.txt"))
    h.get(str(tmp_path / "b.txt"), tmp_path / "c.txt")
    assert (tmp_path / "c.txt").read_text() == "hello"


@pytest.mark.lab
def test_two_labs_with_different_prefixes_coexist(lab):
    other = Lab(prefix="pyt2")
    try:
        other.up(progress=False)
        assert reachability.ping(other.host("client"), POD_IP).ok
        assert reachability.ping(lab.host("client"), POD_IP).ok
    finally:
        removed = other.down()
    assert all(n.startswith("pyt2-") for n in removed)
    assert not namespaces.lab_namespaces("pyt2")
    assert len(namespaces.lab_namespaces("pyt")) == 6


@pytest.mark.lab
def test_down_leaves_nothing_even_after_up_is_killed_halfway():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for attempt in range(20):
        up = subprocess.Popen([*CLI, "lab", "up", "-q", "--prefix", "pyk"], env=env, cwd=ROOT)
        # Kill it hard as soon as it has made something, so that nothing of its own can clean up.
        deadline = time.monotonic() + 10
        while not namespaces.lab_namespaces("pyk") and up.poll() is None and time.monotonic() < deadline:
            time.sleep(0.002)
        time.sleep(0.01 * attempt)
        up.send_signal(signal.SIGKILL)
        up.wait()
        if up.returncode == -signal.SIGKILL and namespaces.lab_namespaces("pyk"):
            break
    assert namespaces.lab_namespaces("pyk"), "could not catch `lab up` halfway"
    # A process of the half-made lab, to prove `down` ends those too.
    sleeper = subprocess.Popen(["ip", "netns", "exec", namespaces.lab_namespaces("pyk")[0], "sleep", "60"])
    time.sleep(0.1)
    res = subprocess.run([*CLI, "lab", "down", "--prefix", "pyk"], env=env, cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert sleeper.wait(5) == -signal.SIGTERM
    assert not namespaces.lab_namespaces("pyk")
    assert not [n for n in namespaces.list_namespaces() if n.startswith("pyk")]


@pytest.mark.lab
def test_sigterm_during_up_cleans_up():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    up = subprocess.Popen([*CLI, "lab", "up", "-q", "--prefix", "pyk"], env=env, cwd=ROOT, stderr=subprocess.PIPE)
    while not namespaces.lab_namespaces("pyk") and up.poll() is None:
        time.sleep(0.002)
    up.send_signal(signal.SIGTERM)
    _, err = up.communicate(timeout=30)
    if up.returncode == 0:  # it finished before the signal: nothing to prove this time
        Lab(prefix="pyk").down()
        pytest.skip("lab up finished before SIGTERM arrived")
    assert up.returncode == 143 and "terminated" in err.decode(), err  # 128 + SIGTERM, not SIGINT's 130
    assert not namespaces.lab_namespaces("pyk")


@pytest.mark.lab
def test_not_root_is_a_clear_error(capsys):
    from labtools.cli import main

    os.seteuid(65534)  # really not root for the check; the saved uid lets us come back
    try:
        rc = main(["lab", "up", "--prefix", "pyn"])
    finally:
        os.seteuid(0)
    assert rc == 2
    err = capsys.readouterr().err
    assert "labtools lab up needs root" in err and "run it as root" in err
    assert not namespaces.lab_namespaces("pyn")


def test_missing_tool_names_the_package():
    with pytest.raises(PrerequisiteError, match=r"missing tool\(s\): no-such-tool, tshark2.*apt-get install"):
        require_tools("ip", "no-such-tool", "tshark2")


def test_host_in_missing_namespace_is_unreachable():
    from labtools.hosts import NetnsHost

    with pytest.raises(HostUnreachable, match="does not exist: is the lab up"):
        NetnsHost("ghost", "nosuchlab-ghost").run(["true"])


def test_status_of_a_lab_that_is_down():
    res = subprocess.run([*CLI, "lab", "status", "--prefix", "pydown"], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 1
    assert "is not up" in res.stdout
