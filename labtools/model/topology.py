"""The testbed as data: a YAML inventory of machines, interfaces, addresses, routes and links.

`load()` validates an inventory and reports problems with the file and line they are on.
`configure_commands()` turns one machine's description into the `ip`/`sysctl` commands that
configure it; they are the same on a network namespace and on a real VM.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import pydantic

from labtools.base import paths
from labtools.base.errors import InventoryError, LabError
from labtools.model import yamlsrc
from labtools.model.yamlsrc import LineMap

BACKENDS = ("netns", "ssh")
ROLES = ("client", "router", "master", "worker", "pod")
NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,19}$")
# A lab prefix: namespaces are <prefix>-<machine>, so a prefix never contains the hyphen.
PREFIX_RE = re.compile(r"^[a-z][a-z0-9]{0,9}$")
IFNAME_RE = re.compile(r"^[A-Za-z0-9_.-]{1,15}$")

# A string that must not be empty (an inventory value with a meaning).
NonEmpty = Annotated[str, pydantic.StringConstraints(min_length=1)]
IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class Route:
    to: str  # a prefix, or "default"
    via: IPAddress | None
    dev: str | None
    family: int

    def argv(self) -> list[str]:
        cmd = ["ip", f"-{self.family}", "route", "replace", self.to]
        if self.via is not None:
            cmd += ["via", str(self.via)]
        if self.dev is not None:
            cmd += ["dev", self.dev]
        return cmd


@dataclass
class Interface:
    name: str
    addresses: list[IPInterface]
    mtu: int
    line: int | None = None  # of its addresses in the inventory file


@dataclass
class Machine:
    name: str
    role: str
    interfaces: dict[str, Interface]
    routes: list[Route]
    forwarding: bool
    sysctls: dict[str, str]
    ssh: dict[str, Any] | None = None
    line: int | None = None

    def addresses(self, family: int | None = 6) -> list[IPInterface]:
        return [a for i in self.interfaces.values() for a in i.addresses if family is None or a.version == family]

    def global_v6(self) -> list[ipaddress.IPv6Address]:
        """The machine's global IPv6 addresses, in inventory order."""
        return [a.ip for a in self.addresses(6) if not a.ip.is_link_local]


@dataclass(frozen=True)
class InterfaceRef:
    machine: str
    interface: str

    def __str__(self) -> str:
        return f"{self.machine}:{self.interface}"


@dataclass
class Link:
    """An L2 segment: two endpoints are a veth pair, more share a bridge."""

    name: str
    members: list[InterfaceRef]


@dataclass
class Inventory:
    name: str
    backend: str
    prefix: str | None
    machines: dict[str, Machine]
    links: list[Link]
    path: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False)
    # `cluster:` — the machines run a Kubernetes cluster and the pod is a real one (ssh backend only).
    cluster: dict[str, Any] | None = None
    # `cni:` — how the netns lab attaches the pod: as Cilium does (BPF on its veth ages every routed packet
    # once more, as in both of the thesis' modes) or plainly (a veth and a route). A real cluster has its own.
    cni: str = "cilium"

    def machine(self, name: str) -> Machine:
        try:
            return self.machines[name]
        except KeyError:
            raise InventoryError(f"no machine {name!r} (have: {', '.join(self.machines)})", self.path) from None

    def by_role(self, role: str) -> Machine:
        found = [m for m in self.machines.values() if m.role == role]
        if len(found) != 1:
            raise InventoryError(f"expected exactly one machine with role {role!r}, found {len(found)}", self.path)
        return found[0]

    def link_of(self, ep: InterfaceRef) -> Link | None:
        return next((lk for lk in self.links if ep in lk.members), None)


def check_prefix(prefix: str) -> str:
    """Validate a lab prefix: 1-10 lower-case letters and digits, starting with a letter."""
    if not PREFIX_RE.match(prefix or ""):
        raise LabError(
            f"invalid lab prefix {prefix!r}: use 1-10 lower-case letters or digits, starting with a "
            "letter and without '-' (the hyphen separates prefix and machine name)"
        )
    return prefix



# ----------------------------------------------------------------------------- loading


class _Ctx:
    """Carries the file name so every error can name its line."""

    def __init__(self, path: str | None):
        self.path = path

    def fail(self, msg: str, line: int | None) -> InventoryError:
        return InventoryError(msg, self.path, line)

    def mapping(self, value: Any, what: str, line: int | None) -> LineMap:
        if not isinstance(value, dict):
            raise self.fail(f"{what} must be a mapping, got {type(value).__name__}", line)
        if not isinstance(value, LineMap):  # built in code rather than parsed
            m = LineMap(value)
            m.line, m.key_lines = line or 0, {}
            return m
        return value

    def known_keys(self, m: LineMap, allowed: set[str], what: str) -> None:
        for k in m:
            if k not in allowed:
                raise self.fail(
                    f"unknown key {k!r} in {what} (allowed: {', '.join(sorted(allowed))})", m.key_lines.get(k, m.line)
                )


def _line(m: LineMap, key: str) -> int | None:
    return m.key_lines.get(key, getattr(m, "line", None)) or None


def _parse_interface_address(ctx: _Ctx, text: Any, where: str, line: int | None) -> IPInterface:
    try:
        if "/" not in str(text):
            raise ValueError("missing /prefix-length")
        return ipaddress.ip_interface(str(text))
    except ValueError as e:
        raise ctx.fail(f"{where}: {text!r} is not a valid IP address with prefix length ({e})", line) from None


def _parse_ip(ctx: _Ctx, text: Any, where: str, line: int | None) -> IPAddress:
    try:
        return ipaddress.ip_address(str(text))
    except ValueError:
        raise ctx.fail(f"{where}: {text!r} is not a valid IP address", line) from None


def _parse_machine(ctx: _Ctx, name: str, raw: Any, line: int | None, default_mtu: int, backend: str) -> Machine:
    where = f"machine {name!r}"
    if not NAME_RE.match(str(name)):
        raise ctx.fail(f"invalid machine name {name!r}: lower-case letters, digits and '-', at most 20", line)
    m = ctx.mapping(raw, where, line)
    ctx.known_keys(m, {"role", "interfaces", "routes", "forwarding", "sysctls", "ssh"}, where)
    role = m.get("role")
    if role not in ROLES:
        raise ctx.fail(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}", _line(m, "role"))
    ifaces = _parse_interfaces(ctx, m, where, default_mtu)
    raw_routes = m.get("routes", []) or []
    if not isinstance(raw_routes, list):
        raise ctx.fail(f"{where}: routes must be a list", _line(m, "routes"))
    routes = [_parse_route(ctx, r, where, _line(m, "routes"), ifaces) for r in raw_routes]
    forwarding = m.get("forwarding", False)
    if not isinstance(forwarding, bool):
        raise ctx.fail(f"{where}: forwarding must be true or false", _line(m, "forwarding"))
    sysctls_raw = ctx.mapping(m.get("sysctls", {}) or {}, f"{where} sysctls", _line(m, "sysctls"))
    sysctls = {str(k): str(int(v) if isinstance(v, bool) else v) for k, v in sysctls_raw.items()}
    ssh = _parse_ssh(ctx, m, where, line) if backend == "ssh" else m.get("ssh")
    return Machine(str(name), role, ifaces, routes, forwarding, sysctls, ssh, line)


def _parse_interfaces(ctx: _Ctx, m: LineMap, where: str, default_mtu: int) -> dict[str, Interface]:
    """A machine's `interfaces:`, each with its addresses and MTU."""
    ifaces: dict[str, Interface] = {}
    raw_ifaces = ctx.mapping(m.get("interfaces", {}), f"{where} interfaces", _line(m, "interfaces"))
    if not raw_ifaces:
        raise ctx.fail(f"{where} has no interfaces", _line(m, "interfaces"))
    for ifname, iraw in raw_ifaces.items():
        iline = raw_ifaces.key_lines.get(ifname)
        iwhere = f"{where} interface {ifname!r}"
        if not IFNAME_RE.match(str(ifname)):
            raise ctx.fail(f"{iwhere}: invalid interface name (1-15 of A-Z a-z 0-9 _ . -)", iline)
        im = ctx.mapping(iraw or {}, iwhere, iline)
        ctx.known_keys(im, {"addresses", "mtu"}, iwhere)
        addrs_raw = im.get("addresses", [])
        if not isinstance(addrs_raw, list):
            raise ctx.fail(f"{iwhere}: addresses must be a list", _line(im, "addresses"))
        addrs = [_parse_interface_address(ctx, a, iwhere, _line(im, "addresses")) for a in addrs_raw]
        mtu = im.get("mtu", default_mtu)
        if not isinstance(mtu, int) or not 1280 <= mtu <= 65535:
            raise ctx.fail(
                f"{iwhere}: mtu must be an integer 1280..65535 (IPv6 minimum), got {mtu!r}", _line(im, "mtu")
            )
        ifaces[str(ifname)] = Interface(str(ifname), addrs, mtu, _line(im, "addresses") or iline)
    return ifaces


def _parse_route(ctx: _Ctx, r: Any, where: str, routes_line: int | None, ifaces: dict[str, Interface]) -> Route:
    """One of a machine's `routes:`: a valid prefix, through a gateway on one of its subnets or out of one of its
    interfaces."""
    rm = ctx.mapping(r, f"{where} route", routes_line)
    rline = rm.line or routes_line
    ctx.known_keys(rm, {"to", "via", "dev"}, f"{where} route")
    to = rm.get("to")
    if to is None:
        raise ctx.fail(f"{where}: route without 'to'", rline)
    via = _parse_ip(ctx, rm["via"], f"{where} route to {to}", _line(rm, "via")) if "via" in rm else None
    if to == "default":
        family = via.version if via else 6
    else:
        try:
            family = ipaddress.ip_network(str(to), strict=True).version
        except ValueError as e:
            raise ctx.fail(
                f"{where}: route destination {to!r} is not a valid prefix ({e})", _line(rm, "to")
            ) from None
    if via is not None and via.version != family:
        raise ctx.fail(f"{where}: route to {to} is IPv{family} but via {via} is IPv{via.version}", _line(rm, "via"))
    dev = rm.get("dev")
    if dev is not None and dev not in ifaces:
        raise ctx.fail(
            f"{where}: unknown interface {dev!r} in route to {to} (this machine has {', '.join(ifaces)})",
            _line(rm, "dev"),
        )
    if via is None and dev is None:
        raise ctx.fail(f"{where}: route to {to} needs 'via' or 'dev'", rline)
    if via is not None and not via.is_link_local:
        cands = [ifaces[dev]] if dev else list(ifaces.values())
        if not any(via in a.network for i in cands for a in i.addresses):
            raise ctx.fail(
                f"{where}: gateway {via} of route to {to} is not on a subnet of {dev or 'any interface'}",
                _line(rm, "via"),
            )
    return Route(str(to), via, dev, family)


SSH_KEYS = {"host", "port", "user", "key", "password", "known_hosts", "passphrase", "accept_new_host_key", "timeout",
            "jump", "netns"}  # fmt: skip


def _parse_ssh(ctx: _Ctx, m: LineMap, where: str, line: int | None) -> dict[str, Any]:
    """A machine's `ssh:` section, which the ssh backend needs (at least its host)."""
    ssh = m.get("ssh")
    if ssh is None:
        raise ctx.fail(f"{where}: the ssh backend needs an 'ssh:' section (at least host)", line)
    sm = ctx.mapping(ssh, f"{where} ssh", _line(m, "ssh"))
    ctx.known_keys(sm, SSH_KEYS, f"{where} ssh")
    if "host" not in sm:
        raise ctx.fail(f"{where} ssh: 'host' is required", sm.line)
    port = sm.get("port", 22)
    if not isinstance(port, int) or not 0 < port < 65536:
        raise ctx.fail(f"{where} ssh: port must be 1..65535, got {port!r}", _line(sm, "port"))
    return dict(sm)


CNIS = ("cilium", "plain")
DEFAULT_CNI = "cilium"  # the thesis ran Cilium as the CNI in both modes


def parse(data: Any, path: str | None = None) -> Inventory:
    """Validate already-parsed inventory data (as from `yaml`)."""
    ctx = _Ctx(path)
    top = ctx.mapping(data, "the inventory", 1)
    ctx.known_keys(
        top,
        {"name", "description", "backend", "prefix", "mtu", "machines", "links", "ssh_defaults", "cluster", "cni"},
        "the inventory",
    )
    cni = top.get("cni", DEFAULT_CNI)
    if cni not in CNIS:
        raise ctx.fail(f"cni must be one of {', '.join(CNIS)}, got {cni!r}", _line(top, "cni"))
    backend = top.get("backend", "netns")
    if backend not in BACKENDS:
        raise ctx.fail(f"backend must be one of {', '.join(BACKENDS)}, got {backend!r}", _line(top, "backend"))
    prefix = top.get("prefix")
    if backend == "netns" and (prefix is None or not PREFIX_RE.match(str(prefix))):
        raise ctx.fail(
            f"prefix must be 1-10 lower-case letters/digits without '-', got {prefix!r}", _line(top, "prefix")
        )
    mtu = top.get("mtu", 1500)
    if not isinstance(mtu, int) or not 1280 <= mtu <= 65535:
        raise ctx.fail(f"mtu must be an integer 1280..65535, got {mtu!r}", _line(top, "mtu"))

    machines = _parse_machines(ctx, top, backend, mtu)
    links, wired = _parse_links(ctx, top, machines)
    if backend == "netns":
        for m in machines.values():
            for ifname in m.interfaces:
                if InterfaceRef(m.name, ifname) not in wired:
                    raise ctx.fail(
                        f"machine {m.name!r} interface {ifname!r} is not wired to any link "
                        "(the netns backend creates every interface from 'links')",
                        m.line,
                    )
    dup = _duplicate_addresses(machines)
    if dup:
        raise ctx.fail(f"address {dup[0]} is used by both {dup[1]} and {dup[2]}", dup[3])
    cluster = _parse_cluster(ctx, top, backend, machines) if "cluster" in top else None
    return Inventory(
        str(top.get("name", Path(path).stem if path else "lab")),
        backend,
        str(prefix) if prefix else None,
        machines,
        links,
        path,
        dict(top),
        cluster,
        str(cni),
    )


def _parse_machines(ctx: _Ctx, top: LineMap, backend: str, mtu: int) -> dict[str, Machine]:
    """The inventory's `machines:`; under the ssh backend each machine's `ssh:` on top of `ssh_defaults:`."""
    raw_machines = ctx.mapping(top.get("machines"), "machines", _line(top, "machines"))
    ssh_defaults = dict(top.get("ssh_defaults") or {})
    machines: dict[str, Machine] = {}
    for name, raw in raw_machines.items():
        if backend == "ssh" and isinstance(raw, dict) and isinstance(raw.get("ssh"), dict):
            merged = LineMap({**ssh_defaults, **raw["ssh"]})
            # Parsed from a file, the mapping knows its lines; built in code, it does not.
            merged.line, merged.key_lines = getattr(raw["ssh"], "line", 0), getattr(raw["ssh"], "key_lines", {})
            raw["ssh"] = merged
        machines[name] = _parse_machine(ctx, name, raw, raw_machines.key_lines.get(name), mtu, backend)
    return machines


def _parse_links(ctx: _Ctx, top: LineMap, machines: dict[str, Machine]) -> tuple[list[Link], set[InterfaceRef]]:
    """The inventory's `links:`, and every interface they wire (each to one link only)."""
    links: list[Link] = []
    seen: set[InterfaceRef] = set()
    raw_links = top.get("links", []) or []
    if not isinstance(raw_links, list):
        raise ctx.fail("links must be a list", _line(top, "links"))
    for lraw in raw_links:
        lm = ctx.mapping(lraw, "link", _line(top, "links"))
        ctx.known_keys(lm, {"name", "members"}, "link")
        lname = lm.get("name")
        if not lname or not NAME_RE.match(str(lname)):
            raise ctx.fail(f"link name {lname!r} is missing or invalid", lm.line)
        if any(lk.name == lname for lk in links):
            raise ctx.fail(f"duplicate link {lname!r}", lm.line)
        members = lm.get("members")
        if not isinstance(members, list) or len(members) < 2:
            raise ctx.fail(f"link {lname!r}: members must list at least two machine:interface", _line(lm, "members"))
        eps = []
        for mem in members:
            ep = _parse_member(ctx, mem, str(lname), _line(lm, "members"), machines)
            if ep in seen:
                raise ctx.fail(f"link {lname!r}: {ep} is already wired to another link", _line(lm, "members"))
            seen.add(ep)
            eps.append(ep)
        links.append(Link(str(lname), eps))
    return links, seen


def _parse_member(ctx: _Ctx, mem: Any, lname: str, line: int | None, machines: dict[str, Machine]) -> InterfaceRef:
    """One `machine:interface` member of link `lname`, naming an interface the machine has."""
    if not isinstance(mem, str) or mem.count(":") != 1:
        raise ctx.fail(f"link {lname!r}: member {mem!r} must be 'machine:interface'", line)
    mname, ifname = mem.split(":")
    if mname not in machines:
        raise ctx.fail(f"link {lname!r}: unknown machine {mname!r}", line)
    if ifname not in machines[mname].interfaces:
        raise ctx.fail(
            f"link {lname!r}: machine {mname!r} has no interface {ifname!r} "
            f"(it has {', '.join(machines[mname].interfaces)})",
            line,
        )
    return InterfaceRef(mname, ifname)


class ClusterSpec(pydantic.BaseModel):
    """The ``cluster:`` section: the machines run a kubeadm cluster with Cilium (ssh backend only)."""

    model_config = pydantic.ConfigDict(extra="forbid")

    kubeconfig: str | None = None  # for the API, on this machine; default $KUBECONFIG, else ~/.kube/config
    context: str | None = None
    namespace: NonEmpty = "default"
    node: str | None = None  # the worker's Kubernetes node name; default: its machine name
    admin_kubeconfig: NonEmpty = "/etc/kubernetes/admin.conf"  # on the master, for kubectl exec
    image: NonEmpty = "leodotcloud/swiss-army-knife"  # the iperf3 pod's image (thesis line 1433)
    pod_interface: NonEmpty = "eth0"  # the pod's interface inside its container
    cilium_version: str | None = None  # helm --version; default: the chart's latest


CLUSTER_KEYS = {name: f.default for name, f in ClusterSpec.model_fields.items()}


def _parse_cluster(ctx: _Ctx, top: LineMap, backend: str, machines: dict[str, Machine]) -> dict[str, Any]:
    cm = ctx.mapping(top.get("cluster") or {}, "cluster", _line(top, "cluster"))
    try:
        spec = ClusterSpec.model_validate(dict(cm))
    except pydantic.ValidationError as e:
        err = e.errors()[0]
        field = ".".join(str(p) for p in err["loc"])
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {field!r} in cluster (allowed: {', '.join(sorted(CLUSTER_KEYS))})"
        elif err["type"] == "string_too_short":
            msg = f"cluster: {field} must be a non-empty string"
        else:
            msg = f"cluster: {field}: {err['msg']}"
        raise ctx.fail(msg, yamlsrc.line_of(cm, err["loc"]) or cm.line) from None
    if backend != "ssh":
        raise ctx.fail("cluster: needs backend: ssh (the emulated lab has no Kubernetes)", _line(top, "cluster"))
    roles = sorted(m.role for m in machines.values())
    for role in ("client", "master", "worker"):
        if roles.count(role) != 1:
            raise ctx.fail(f"cluster: needs exactly one machine with role {role!r}", _line(top, "cluster"))
    if "pod" in roles:
        raise ctx.fail("cluster: the pod is a Kubernetes pod, not a machine: remove the role 'pod'", cm.line)
    worker = next(m.name for m in machines.values() if m.role == "worker")
    return {**spec.model_dump(), "node": spec.node or worker}


def _duplicate_addresses(machines: dict[str, Machine]) -> tuple[str, str, str, int | None] | None:
    """The first address used twice: (address, first owner, second owner, the second's line)."""
    owner: dict[str, str] = {}
    for m in machines.values():
        for i in m.interfaces.values():
            for a in i.addresses:
                if a.ip.is_link_local:
                    continue
                key, me = str(a.ip), f"{m.name}:{i.name}"
                if key in owner:
                    return key, owner[key], me, i.line or m.line
                owner[key] = me
    return None


def load(path: str | Path | None = None) -> Inventory:
    """Load and validate an inventory file (default: the thesis testbed in namespaces)."""
    path = Path(path) if path else paths.DEFAULT_INVENTORY
    data = yamlsrc.load(path)
    return parse(data, str(path))


# ----------------------------------------------------------------------------- rendering


def configure_commands(m: Machine) -> list[list[str]]:
    """The commands that configure machine `m` from its description; idempotent."""
    cmds: list[list[str]] = [["ip", "link", "set", "dev", "lo", "up"]]
    fwd = "1" if m.forwarding else "0"
    cmds.append(["sysctl", "-qw", f"net.ipv6.conf.all.forwarding={fwd}"])
    if any(a.version == 4 for a in m.addresses(None)):
        cmds.append(["sysctl", "-qw", f"net.ipv4.ip_forward={fwd}"])
    for key, value in m.sysctls.items():
        cmds.append(["sysctl", "-qw", f"{key}={value}"])
    for i in m.interfaces.values():
        cmds.append(["ip", "link", "set", "dev", i.name, "mtu", str(i.mtu), "up"])
        for a in i.addresses:
            # nodad: the addresses are unique by construction; DAD would only delay use by ~2 s.
            extra = ["nodad"] if a.version == 6 else []
            cmds.append(["ip", f"-{a.version}", "addr", "replace", str(a), "dev", i.name, *extra])
    cmds += [r.argv() for r in m.routes]
    return cmds


def unconfigure_commands(m: Machine) -> list[list[str]]:
    """Undo `configure_commands` (for real VMs; namespaces are simply deleted)."""
    cmds = [["ip", f"-{r.family}", "route", "del", r.to] for r in m.routes]
    for i in m.interfaces.values():
        cmds += [["ip", f"-{a.version}", "addr", "del", str(a), "dev", i.name] for a in i.addresses]
    return cmds
