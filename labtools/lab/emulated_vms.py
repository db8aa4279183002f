"""Emulated VMs: a netns lab whose machines run a real sshd on a management network.

This lets the SSH backend (paramiko, host keys, jump hosts) drive the same configuration as on
the real OpenStack testbed, on this one machine. The management network is a bridge in its own
namespace ``<prefix>-mgmt``; the SSH client opens its TCP connections from inside it, so nothing
touches the root namespace.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import paramiko
import yaml

from labtools.base.errors import LabError
from labtools.base.prereqs import require_tools
from labtools.base.waiting import Timeout, until
from labtools.hosts import NetnsHost, Process, namespaces
from labtools.lab import Lab
from labtools.model import topology

MGMT_NET = ipaddress.IPv6Network("fd00:10:99::/64")  # ULA, only ever inside the lab's namespaces
SSHD_CONFIG = """\
ListenAddress {addr}
Port {port}
HostKey {host_key}
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
PidFile none
AllowTcpForwarding yes
Subsystem sftp internal-sftp
"""


@dataclass
class EmulatedVMs:
    lab: Lab
    workdir: Path
    mgmt_ns: str
    addresses: dict[str, str]
    client_key: Path
    known_hosts: Path
    sshd: dict[str, Process]

    def ssh_inventory(self, **overrides: object) -> topology.Inventory:
        """The lab's machines as an ssh-backend inventory pointing at their sshds."""
        plain = json.loads(json.dumps(self.lab.inventory.raw))  # the loader's line-tracking dicts -> plain
        raw = {k: v for k, v in plain.items() if k not in ("prefix", "links")}
        raw["backend"] = "ssh"
        raw["machines"] = {}
        for name, m in plain["machines"].items():
            ssh = {
                "host": self.addresses[name],
                "user": "root",
                "key": str(self.client_key),
                "known_hosts": str(self.known_hosts),
                "netns": self.mgmt_ns,
                **overrides,
            }
            raw["machines"][name] = {**m, "ssh": ssh}
        path = self.workdir / "ssh-inventory.yml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        return topology.load(path)

    def stop(self) -> None:
        for p in self.sshd.values():
            p.stop()


def start(lab: Lab, workdir: str | Path, port: int = 22) -> EmulatedVMs:
    """Provision `lab` (netns), add a management network and start sshd on every machine."""
    require_tools("sshd", "ssh-keygen")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lab.provision()
    mgmt = namespaces.ns_name(lab.prefix or "", "mgmt")
    namespaces.switch(mgmt)
    namespaces.ip("-n", mgmt, "addr", "replace", f"{MGMT_NET[1]}/64", "dev", "br0", "nodad")

    client_key = workdir / "id_ed25519"
    if not client_key.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(client_key))
    (workdir / "authorized_keys").write_text(Path(f"{client_key}.pub").read_text())
    Path("/run/sshd").mkdir(exist_ok=True)  # sshd's privilege-separation directory

    known = paramiko.HostKeys()
    addresses, sshd = {}, {}
    for k, name in enumerate(lab.inventory.machines, start=2):
        ns, addr = lab.ns(name), str(MGMT_NET[k])
        namespaces.plug(mgmt, f"m{k}", ns, "mgmt0")
        namespaces.ip("-n", ns, "addr", "replace", f"{addr}/64", "dev", "mgmt0", "nodad")
        namespaces.ip("-n", ns, "link", "set", "mgmt0", "up")
        host_key = workdir / f"host_{name}"
        if not host_key.exists():
            _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(host_key))
        cfg = workdir / f"sshd_{name}.conf"
        cfg.write_text(
            SSHD_CONFIG.format(addr=addr, port=port, host_key=host_key, authorized_keys=workdir / "authorized_keys")
        )
        sshd[name] = NetnsHost(name, ns).start(
            ["/usr/sbin/sshd", "-D", "-e", "-f", str(cfg)], log=str(workdir / f"sshd_{name}.log")
        )
        pub = paramiko.Ed25519Key(filename=str(host_key))
        known.add(addr if port == 22 else f"[{addr}]:{port}", pub.get_name(), pub)
        addresses[name] = addr
    known_hosts = workdir / "known_hosts"
    known.save(str(known_hosts))
    for name, proc in sshd.items():
        _wait_listening(lab.ns(name), addresses[name], port, proc)
    return EmulatedVMs(lab, workdir, mgmt, addresses, client_key, known_hosts, sshd)


def _wait_listening(ns: str, addr: str, port: int, proc: Process, timeout: float = 10.0) -> None:
    def listening() -> bool:
        try:
            namespaces.connect_in(ns, (addr, port), timeout=1).close()
            return True
        except OSError:
            if not proc.running():
                raise LabError(f"sshd in {ns} exited before listening on [{addr}]:{port}:\n{proc.output()}") from None
            return False

    try:
        until(listening, timeout=timeout)
    except Timeout:
        raise LabError(f"sshd in {ns} did not start listening on [{addr}]:{port}:\n{proc.output()}") from None


def _run(*argv: str) -> None:
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode:
        raise LabError(f"`{' '.join(argv)}` failed: {p.stderr.strip()}")
