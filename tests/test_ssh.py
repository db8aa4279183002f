"""The SSH backend against real sshd processes running inside lab namespaces ("emulated VMs")."""

from __future__ import annotations

import dataclasses
import subprocess

import paramiko
import pytest

from labtools.base.errors import HostKeyError, HostUnreachable, LabError
from labtools.hosts import SSHConfig, SSHHost
from labtools.lab import Lab, reachability, ssh_config
from tests.conftest import POD_IP, emulated_vms_up, lab_fixture


@lab_fixture(scope="module")
def vms(tmp_path_factory):
    yield from emulated_vms_up("pys", tmp_path_factory)


@pytest.fixture(scope="module")
def ssh_lab(vms):
    lab = Lab(vms.ssh_inventory())
    yield lab
    lab.close()


def cfg(vms, machine: str, **kw) -> SSHConfig:
    base = ssh_config(vms.ssh_inventory().machine(machine).ssh or {}, vms.ssh_inventory())
    return dataclasses.replace(base, **kw)


def test_topology_configured_over_ssh_carries_traffic(vms, ssh_lab):
    assert ssh_lab.backend == "ssh"
    # Before: the VMs have no data-path addresses, so the client cannot reach the pod.
    netns_lab = vms.lab
    assert not reachability.ping(netns_lab.host("client"), POD_IP, timeout=0.5).ok
    ssh_lab.up(progress=False)  # the very commands the netns backend runs, now through paramiko
    r = reachability.ping(ssh_lab.host("client"), POD_IP)
    assert r.ok and r.hop_limit == 62, r.error
    assert reachability.ping(ssh_lab.host("client"), POD_IP, packet_bytes=8900, dont_fragment=True).ok
    fwd = ssh_lab.host("router").run(["sysctl", "-n", "net.ipv6.conf.all.forwarding"]).stdout.strip()
    assert fwd == "1"
    rows = {(s.machine, s.interface): s for s in ssh_lab.status()}
    assert rows[("worker", "ens3")].mtu == 8950
    # TCP through the SSH-started iperf3 server in the pod.
    t = reachability.iperf3_tcp(ssh_lab.host("client"), ssh_lab.host("pod"), POD_IP)
    assert t.bytes > 0 and t.seen_source == "2001:db8:1234:5679::1"


def test_ssh_errors_show_host_command_and_stderr(ssh_lab):
    res = ssh_lab.host("worker").run(["sh", "-c", "echo out; echo err >&2; exit 3"], check=False)
    assert (res.returncode, res.stdout, res.stderr) == (3, "out\n", "err\n")
    with pytest.raises(Exception, match=r"\[worker\] `ls /nonexistent` failed \(exit 2\):\n.*No such file"):
        ssh_lab.host("worker").run(["ls", "/nonexistent"])
    with pytest.raises(Exception, match=r"timed out after 0.3 s"):
        ssh_lab.host("worker").run(["sleep", "5"], timeout=0.3)
    env = ssh_lab.host("worker").run(["sh", "-c", "echo $LABVAR"], env={"LABVAR": "x y"})
    assert env.stdout == "x y\n"
    big = ssh_lab.host("worker").run(
        ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' a; head -c 300000 /dev/zero | tr '\\0' b >&2"]
    )
    assert len(big.stdout) == 300000 and len(big.stderr) == 300000


def test_ssh_files_and_background_processes(ssh_lab, tmp_path):
    h = ssh_lab.host("master")
    (tmp_path / "a").write_text("payload")
    h.put(tmp_path / "a", str(tmp_path / "remote"))
    h.get(str(tmp_path / "remote"), tmp_path / "b")
    assert (tmp_path / "b").read_text() == "payload"
    p = h.start(["sh", "-c", "echo hi; exec sleep 60"])
    assert p.running()
    p.stop()
    assert not p.running()
    assert "hi" in p.output()


def test_jump_host(vms):
    jump = cfg(vms, "router")
    with SSHHost("worker", cfg(vms, "worker", netns=None, jump=jump)) as h:
        out = h.run(["ip", "-6", "-br", "addr", "show", "dev", "mgmt0"]).stdout
        assert f" {vms.addresses['worker']}/" in out, out  # the command ran on the worker, through the router


def test_unknown_host_key_is_refused_unless_allowed(vms, tmp_path):
    empty = tmp_path / "known_hosts"
    with pytest.raises(HostKeyError, match=r"unknown host key.*accept_new_host_key"):
        SSHHost("router", cfg(vms, "router", known_hosts=str(empty))).run(["true"])
    with SSHHost("router", cfg(vms, "router", known_hosts=str(empty), accept_new_host_key=True)) as h:
        assert h.run(["true"]).ok
    assert vms.addresses["router"] in empty.read_text()  # recorded for next time
    with SSHHost("router", cfg(vms, "router", known_hosts=str(empty))) as h:  # now known: plain policy works
        assert h.run(["true"]).ok


def test_changed_host_key_is_refused(vms, tmp_path):
    wrong = tmp_path / "known_hosts"
    hk = paramiko.HostKeys()
    other = paramiko.Ed25519Key(filename=str(vms.workdir / "host_worker"))
    hk.add(vms.addresses["router"], other.get_name(), other)
    hk.save(str(wrong))
    with pytest.raises(HostKeyError, match="does NOT match"):
        SSHHost("router", cfg(vms, "router", known_hosts=str(wrong))).run(["true"])


def test_wrong_key_and_closed_port_are_clear_errors(vms, tmp_path):
    stranger = tmp_path / "stranger"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(stranger)], check=True)
    with pytest.raises(HostUnreachable, match=r"authentication failed for root@\[fd00:10:99::3\]:22 with key"):
        SSHHost("router", cfg(vms, "router", key=str(stranger))).run(["true"])
    with pytest.raises(HostUnreachable, match=r"cannot reach root@\[fd00:10:99::3\]:2222.*refused"):
        SSHHost("router", cfg(vms, "router", port=2222)).run(["true"])
    garbage = tmp_path / "garbage"
    garbage.write_text("not a key")
    with pytest.raises(LabError, match=f"cannot load SSH key {garbage}"):
        SSHHost("router", cfg(vms, "router", key=str(garbage))).run(["true"])


def test_exec_host_runs_in_the_pod_through_the_master(vms, ssh_lab, tmp_path):
    """The cluster's path to the iperf3 pod is SSH to the master, then ``kubectl exec -i POD --``.

    Here the "container" is the pod's namespace and the wrapper ``ip netns exec``: the same ExecHost,
    through a real sshd, with stdin, exit codes, file transfer and background servers.
    """
    from labtools.hosts import ExecHost
    from labtools.lab import traffic

    ssh_lab.up(progress=False)
    pod = ExecHost("pod", ssh_lab.host("master"), ["ip", "netns", "exec", vms.lab.ns("pod")])
    res = pod.run(["sh", "-c", "cat; ip -6 -br addr show dev eth0 >&2; exit 3"], input="from stdin", check=False)
    assert res.returncode == 3 and res.stdout == "from stdin" and POD_IP in res.stderr
    with pytest.raises(LabError, match=r"\[pod\] `false` failed"):
        pod.run(["false"])
    blob = bytes(range(256)) * 64
    (tmp_path / "blob").write_bytes(blob)
    pod.put(tmp_path / "blob", "/tmp/labtools-test-blob")
    pod.get("/tmp/labtools-test-blob", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == blob
    pod.run(["rm", "-f", "/tmp/labtools-test-blob"])
    # A server started in the pod this way carries real traffic, and stops.
    for _ in range(2):  # the port is free again after stop()
        srv = traffic.start_crr_server(pod, 5201)
        try:
            raw = traffic.crr(ssh_lab.host("client"), traffic.Target("pod", POD_IP, 5201), transactions=200)
            assert raw["transactions"] == 200 and raw["failed"] == 0
        finally:
            srv.stop()
        assert not srv.running()
    # A transport that fails (kubectl exec refused, sudo asking for a password) is an error, not "gone":
    # otherwise stop() would leave the server running on the port.
    from labtools.base.errors import CommandError
    from labtools.hosts import ShellProcess

    refuse = "echo 'error: unable to upgrade connection' >&2; exit 1"
    broken = ExecHost("pod", ssh_lab.host("master"), ["sh", "-c", refuse])
    with pytest.raises(CommandError, match="unable to upgrade connection"):
        ShellProcess(broken, ["labtools-crr"], 12345, "/tmp/x.log").running()
