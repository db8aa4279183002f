"""Each VM's network configuration as files, from the inventory: netplan and sysctl.d.

The thesis configures its OpenStack VMs with netplan (appendix, thesis-hu.txt lines 1170-1230): the
data-path address and a static route on ``ens3``, ``mtu: 8950``, IPv4 by DHCP (the management address)
and no DHCPv6; forwarding is switched on with ``/proc/sys/net/ipv6/conf/all/forwarding`` (line 457).

`netplan()` renders the same document for every machine of an inventory; `sysctl_conf()` makes the
forwarding switch (and the inventory's extra sysctls) persistent in ``/etc/sysctl.d``.

How this maps onto the emulated lab. Network namespaces have no netplan (it drives systemd-networkd
or NetworkManager for the whole machine, and the namespaces share the host's filesystem), so the
emulated "VMs" get the run-time equivalent that `topology.configure_commands()` renders from the very
same inventory entry:

==========================  ================================================
netplan key                  run-time equivalent (netns and real VMs alike)
==========================  ================================================
``addresses``                ``ip -6 addr replace ADDR dev IF``
``routes: [{to, via}]``      ``ip -6 route replace TO via VIA dev IF``
``mtu``                      ``ip link set dev IF mtu MTU up``
``dhcp4`` / ``dhcp6``        nothing: the management network is left as it is
sysctl.d file                ``sysctl -qw KEY=VALUE``
==========================  ================================================

On real VMs `labtools testbed apply` does both: it installs the files (so a reboot keeps the state)
and runs the run-time commands (so nothing has to be restarted and the SSH session never flaps).
`netplan_to_commands()` turns a rendered netplan document back into those commands, which the tests
use to prove the two views agree.
"""

from __future__ import annotations

import ipaddress
from typing import Any

import yaml

from labtools.model.topology import Inventory, Machine

NETPLAN_PATH = "/etc/netplan/60-labtools.yaml"
SYSCTL_PATH = "/etc/sysctl.d/60-labtools.conf"


def vm_machines(inv: Inventory) -> list[Machine]:
    """The machines that are VMs (a pod is not: its network belongs to the CNI)."""
    return [m for m in inv.machines.values() if m.role != "pod"]


def _route_interface(m: Machine, route) -> str | None:
    if route.dev:
        return route.dev
    if route.via is None:
        return None
    for i in m.interfaces.values():
        if any(route.via in a.network for a in i.addresses):
            return i.name
    return next(iter(m.interfaces))  # a link-local gateway: the first interface, as `ip` would need dev


def netplan(m: Machine) -> dict[str, Any]:
    """The machine's netplan document, shaped like the thesis appendix (lines 1174-1230).

    The first interface keeps ``dhcp4: true`` like the thesis' ``ens3`` (OpenStack hands out the
    management IPv4 address by DHCP); other interfaces (the router's ``ens7``) are static only.
    Interfaces without a global address (a pod veth) are the CNI's and are left out. The thesis also
    pinned each NIC by ``match: macaddress`` + ``set-name``; an inventory names interfaces directly,
    so netplan matches them by name.
    """
    ethernets: dict[str, dict[str, Any]] = {}
    first = next(iter(m.interfaces))
    for i in m.interfaces.values():
        globals_ = [a for a in i.addresses if not a.ip.is_link_local]
        if not globals_:
            continue
        ethernets[i.name] = {
            "dhcp4": i.name == first,
            "dhcp6": False,
            "addresses": [str(a) for a in globals_],
        }
    for r in m.routes:
        ifname = _route_interface(m, r)
        if ifname not in ethernets:
            continue
        entry: dict[str, Any] = {"to": r.to}
        if r.via is not None:
            entry["via"] = str(r.via)
        else:
            entry["scope"] = "link"
        ethernets[ifname].setdefault("routes", []).append(entry)
    for name, eth in ethernets.items():
        eth["mtu"] = m.interfaces[name].mtu
    return {"network": {"version": 2, "ethernets": ethernets}}


def netplan_yaml(m: Machine) -> str:
    head = f"# {NETPLAN_PATH} on {m.name}: rendered by labtools from the inventory; do not edit.\n"
    return head + yaml.safe_dump(netplan(m), sort_keys=False)


def sysctls(m: Machine) -> dict[str, str]:
    """The sysctls the machine needs: IPv6 forwarding on forwarders (thesis line 457), plus the inventory's."""
    out = {"net.ipv6.conf.all.forwarding": "1" if m.forwarding else "0"}
    if any(a.version == 4 for a in m.addresses(None)):
        out["net.ipv4.ip_forward"] = "1" if m.forwarding else "0"
    out.update(m.sysctls)
    return out


def sysctl_conf(m: Machine) -> str:
    lines = [f"# {SYSCTL_PATH} on {m.name}: rendered by labtools from the inventory; do not edit."]
    lines += [f"{k} = {v}" for k, v in sysctls(m).items()]
    return "\n".join(lines) + "\n"


def netplan_to_commands(doc: dict[str, Any]) -> list[list[str]]:
    """The run-time `ip` commands equivalent to a netplan document (what the emulated VMs get)."""
    cmds: list[list[str]] = []
    for ifname, eth in doc["network"]["ethernets"].items():
        if "mtu" in eth:
            cmds.append(["ip", "link", "set", "dev", ifname, "mtu", str(eth["mtu"]), "up"])
        for a in eth.get("addresses", []):
            v = ipaddress.ip_interface(a).version
            cmds.append(["ip", f"-{v}", "addr", "replace", a, "dev", ifname, *(["nodad"] if v == 6 else [])])
        for r in eth.get("routes", []):
            v = 6 if r["to"] == "default" else ipaddress.ip_network(r["to"]).version
            via = ["via", r["via"]] if "via" in r else []
            cmds.append(["ip", f"-{v}", "route", "replace", r["to"], *via, "dev", ifname])
    return cmds
