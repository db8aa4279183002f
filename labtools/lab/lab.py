"""The lab: bring a testbed up, tear it down, show its state. Netns and SSH backends alike.

On the netns backend `up` first provisions the "hardware" (one namespace per machine, veth pairs,
bridge namespaces for shared segments), then runs the same per-machine configuration commands that
the SSH backend runs on real VMs. `down` deletes the namespaces with the lab's prefix, which takes
their interfaces and processes with them, so it also cleans up after a crash.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

from labtools.base.errors import HostUnreachable, InventoryError, LabError
from labtools.base.prereqs import require_root, require_tools
from labtools.base.waiting import Timeout, until
from labtools.hosts import Host, NetnsHost, SSHConfig, SSHHost, namespaces
from labtools.lab import cni as pod_cni
from labtools.lab import transit
from labtools.lab.lock import LabLock
from labtools.lab.state import LabState, ServicesState
from labtools.model import topology
from labtools.model.topology import Inventory, Link


@dataclass(frozen=True)
class InterfaceState:
    machine: str
    interface: str
    state: str
    mtu: int
    addresses: tuple[str, ...]
    link: str


PREFIX_ENV = "LABTOOLS_PREFIX"  # the lab's prefix for the CLI, make and the notebooks


class Lab:
    """A testbed described by an inventory. Use as a context manager to tear it down on exit."""

    def __init__(self, inventory: Inventory | str | Path | None = None, prefix: str | None = None):
        self.inventory = inventory if isinstance(inventory, Inventory) else topology.load(inventory)
        self.backend = self.inventory.backend
        if prefix is None:  # unset: $LABTOOLS_PREFIX, then the inventory's ('' is refused, never a fallback)
            prefix = os.environ.get(PREFIX_ENV) or self.inventory.prefix
        self.prefix = namespaces.check_prefix(prefix or "") if self.backend == "netns" else None
        self._hosts: dict[str, Host] = {}

    @property
    def hint(self) -> str:
        """How to name this lab on the command line (so that a hint brings the user back to it)."""
        return f" --prefix {self.prefix}" if self.prefix else f" --inventory {self.inventory.path}"

    # -- hosts

    def ns(self, machine: str) -> str:
        assert self.prefix is not None
        return namespaces.ns_name(self.prefix, machine)

    def host(self, machine: str) -> Host:
        """The `Host` that runs commands on `machine`."""
        if machine not in self._hosts:
            m = self.inventory.machine(machine)
            if self.backend == "netns":  # server logs live with the lab's state: `down` removes them
                self._hosts[machine] = NetnsHost(machine, self.ns(machine), logdir=self.state.dir / "logs")
            else:
                self._hosts[machine] = SSHHost(machine, ssh_config(m.ssh or {}, self.inventory))
        return self._hosts[machine]

    @property
    def hosts(self) -> dict[str, Host]:
        return {name: self.host(name) for name in self.inventory.machines}

    def close(self) -> None:
        for h in self._hosts.values():
            h.close()
        self._hosts.clear()

    # -- lifecycle

    def is_up(self) -> bool:
        if self.backend != "netns":
            return False
        have = set(namespaces.lab_namespaces(self.prefix or ""))
        return all(self.ns(m) in have for m in self.inventory.machines)

    def up(self, progress: bool = True, cni: str | None = None) -> None:
        """Create (netns) and configure every machine. Idempotent; a failed first `up` leaves nothing.

        `cni`: how the netns lab attaches its pod (`labtools.lab.cni`), default the inventory's (``cilium``).
        Holds the lab's lock; a fresh netns lab's worker is recorded as holding no service datapath."""
        if self.backend == "netns":
            require_root("labtools lab up")
            require_tools("ip", "sysctl")
        self.check_roles()
        with self.lock.hold():
            self._up(progress, cni)

    def _up(self, progress: bool, cni: str | None) -> None:
        fresh = self.backend == "netns" and not namespaces.lab_namespaces(self.prefix or "")
        if self.backend == "netns" and not fresh:
            drift = self.drift()
            if drift:
                raise LabError(
                    f"lab {self.prefix} is up with another configuration than {self.inventory.path}:\n  "
                    + "\n  ".join(drift)
                    + f"\nTake it down first (`labtools lab down{self.hint}`), or use another prefix."
                )
        try:
            if self.backend == "netns":
                self.provision()
            for name, m in self.inventory.machines.items():
                h = self.host(name)
                for argv in topology.configure_commands(m):
                    h.run(argv)
            if self.backend == "netns":
                worker = self.inventory.by_role("worker").name
                pod_cni.attach(self.host(worker), self.inventory, cni or self.inventory.cni)
            self.wait_settled()
            if fresh:  # new namespaces: nothing programmed, and the record says so
                self.state.put(ServicesState(datapath="none", services=0, render_s=0.0, apply_s=0.0, objects=0,
                                             workload={}, cni=cni or self.inventory.cni))  # fmt: skip
        except BaseException:
            if fresh:
                self.down()
            raise

    def pod_attachment(self) -> str | None:
        """How the netns lab's pod is attached now (`labtools.lab.cni`: ``cilium`` or ``plain``); None over SSH,
        where the cluster's own CNI attaches it."""
        if self.backend != "netns" or not self.is_up():
            return None
        return pod_cni.attached(self.host(self.inventory.by_role("worker").name), self.inventory)

    def check_roles(self) -> None:
        """The lab's roles: exactly one client, router and worker; at most one pod (the measurements need them)."""
        inv = self.inventory
        for role, allowed in (("client", {1}), ("router", {1}), ("worker", {1}), ("pod", {0, 1})):
            found = [m for m in inv.machines.values() if m.role == role]
            if len(found) not in allowed:
                where = ", ".join(f"{m.name} (line {m.line})" for m in found) or "none"
                raise InventoryError(f"the lab needs {'at most' if 0 in allowed else 'exactly'} one machine with role "
                                     f"{role!r}, found {len(found)}: {where}", inv.path)  # fmt: skip

    def drift(self) -> list[str]:
        """How the running lab differs from the inventory (MTUs, addresses), one line each; [] if it matches.

        What an unfinished `up` left is no difference (completing it is what `up` is for): an absent
        interface, and one that has none of its addresses yet (`up` sets an interface's MTU, then its addresses)."""
        out = []
        for st in self.status():
            want = self.inventory.machines[st.machine].interfaces[st.interface]
            have = {a for a in st.addresses if not a.startswith("fe80:")}
            wanted = {str(a) for a in want.addresses if not a.ip.is_link_local}
            if st.state == "ABSENT" or (wanted and not have):
                continue
            if st.mtu != want.mtu:
                out.append(f"{st.machine}:{st.interface} MTU {st.mtu} -> {want.mtu}")
            if wanted - have:
                out.append(f"{st.machine}:{st.interface} addresses {sorted(have)} -> {sorted(wanted)}")
        return out

    def wait_settled(self, timeout: float = 10.0) -> None:
        """Wait until IPv6 duplicate address detection is over on every machine.

        Until then link-local addresses are tentative and neighbour discovery through them can
        lose the first packets; a measurement must not start before.
        """
        pending = list(self.inventory.machines)

        def settled() -> bool:
            for name in list(pending):
                out = self.host(name).run(["ip", "-6", "addr", "show", "tentative"]).stdout
                if "dadfailed" in out:
                    raise LabError(f"[{name}] duplicate address detection failed:\n{out}")
                if not out.strip():
                    pending.remove(name)
            return not pending

        try:
            until(settled, timeout=timeout, interval=0.1)
        except Timeout:
            raise LabError(f"addresses still tentative after {timeout:g} s on {', '.join(pending)}") from None

    def down(self) -> list[str]:
        """Remove what `up` made. Netns: every namespace with the prefix. SSH: the configured state. Holds the
        lab's lock."""
        if self.backend == "netns":
            require_root("labtools lab down")
        with self.lock.hold():
            return self._down()

    def _down(self) -> list[str]:
        if self.backend == "netns":
            self.close()
            removed = namespaces.teardown(self.prefix or "")  # its processes first: they write into the state
            self.state.clear()
            return removed
        for name, m in self.inventory.machines.items():
            for argv in topology.unconfigure_commands(m):
                self.host(name).run(argv, check=False)
            # what labtools left in the VM's /tmp: server logs (SSHHost.start) and installed tools
            self.host(name).run(["sh", "-c", "rm -f /tmp/labtools-*"], check=False)
        transit.detach_stale(self.host(self.inventory.by_role("worker").name))  # (netns: gone with the namespace)
        self.close()
        self.state.clear()
        return list(self.inventory.machines)

    # -- what the lab is programmed with, between commands (`lab.state`); removed by `down`

    @property
    def state(self) -> LabState:
        return LabState(self.prefix or self.inventory.name)

    @property
    def lock(self) -> LabLock:
        """One command at a time: a command that changes or measures the lab holds this (`LabLock.hold`)."""
        return LabLock(self.state.dir, self.prefix or self.inventory.name)

    def __enter__(self) -> Lab:
        self.up()
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    # -- netns provisioning

    def _switch_ns(self, link: Link) -> str:
        return self.ns(f"sw-{link.name}")

    def provision(self) -> None:
        """Netns only: create the namespaces and wire the links, without configuring addresses."""
        if self.backend != "netns":
            raise LabError("provision() is for the netns backend; real VMs already have their hardware")
        inv = self.inventory
        wanted = [self.ns(m) for m in inv.machines] + [self._switch_ns(lk) for lk in inv.links if len(lk.members) > 2]
        for ns in wanted:
            namespaces.create(ns)
        for lk in inv.links:
            mtu = max(inv.machines[ep.machine].interfaces[ep.interface].mtu for ep in lk.members)
            if len(lk.members) == 2:
                a, b = lk.members
                namespaces.veth(self.ns(a.machine), a.interface, self.ns(b.machine), b.interface, mtu)
                continue
            sw = self._switch_ns(lk)
            namespaces.switch(sw, mtu)
            for k, ep in enumerate(lk.members):
                namespaces.plug(sw, f"p{k}-{ep.machine}"[:15], self.ns(ep.machine), ep.interface, mtu)

    # -- status

    def status(self) -> list[InterfaceState]:
        """One row per machine interface: state, MTU, addresses and the link it is wired to."""
        rows = []
        for name, m in self.inventory.machines.items():
            try:
                res = self.host(name).run(["ip", "-j", "addr", "show"], check=False)
                live = {d["ifname"]: d for d in json.loads(res.stdout or "[]")} if res.ok else {}
            except HostUnreachable:  # its namespace is missing: every interface is absent
                live = {}
            for ifname in m.interfaces:
                d = live.get(ifname)
                lk = self.inventory.link_of(topology.InterfaceRef(name, ifname))
                addrs = tuple(f"{a['local']}/{a['prefixlen']}" for a in d.get("addr_info", [])) if d else ()
                rows.append(
                    InterfaceState(
                        name,
                        ifname,
                        (d or {}).get("operstate", "ABSENT"),
                        int((d or {}).get("mtu", 0)),
                        addrs,
                        lk.name if lk else "",
                    )
                )
        return rows


def ssh_config(raw: dict, inventory: Inventory) -> SSHConfig:
    """Build an `SSHConfig` from an inventory `ssh:` section; `jump` may name another machine."""
    raw = dict(raw)
    jump = raw.pop("jump", None)
    if isinstance(jump, str) and jump in inventory.machines:
        jump_cfg: SSHConfig | None = ssh_config(inventory.machines[jump].ssh or {}, inventory)
    elif isinstance(jump, dict):
        jump_cfg = ssh_config(jump, inventory)
    elif jump is None:
        jump_cfg = None
    else:
        raise LabError(f"ssh jump {jump!r} is neither a machine of the inventory nor an ssh mapping")
    for k in ("key", "known_hosts"):
        if raw.get(k):
            raw[k] = str(Path(str(raw[k])).expanduser())
    return SSHConfig(**{k: v for k, v in raw.items() if k in SSHConfig.__dataclass_fields__}, jump=jump_cfg)
