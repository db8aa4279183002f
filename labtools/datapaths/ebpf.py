"""A tc eBPF NodePort datapath modelled on Cilium's kube-proxy replacement (`labtools/bpf/nodeport.c`).

`render()` turns service ports into Cilium-shaped map entries: per frontend a slot-0 entry (backend
count, rev-NAT index, flags) and one entry per backend slot in `lb6_services`, the backends in
`lb6_backends`, and `lb6_reverse_nat`. NodePorts get one frontend per node address plus the zero-address
surrogate, as Cilium does (`pkg/k8s/service.go` ParseService); with externalTrafficPolicy=Local the
external scope holds only node-local backends and a second, internal scope holds all (SVC_FLAG_TWO_SCOPES).

`apply()` runs `labtools-bpf-load` (libbpf, `labtools/bpf/loader.c`) in the node's namespace: it loads a
fresh copy of the program with its maps, fills each map with one batch update, and only then swaps the
programs onto the interfaces (tc filter replace) — traffic never sees half-filled maps. Nothing is pinned:
the tc filters hold the programs, the programs hold the maps, and the namespace's end frees them.

SRv6 (`labtools.datapaths.srv6`, ingress mode ``ebpf``): ``from_netdev`` decapsulates packets to a SID of its
``srv6_sids`` map before the service lookup (Cilium's ``tail_srv6_decap``). The map is empty unless
``labtools-bpf-load --srv6-sid UPLINK add SID`` (run by ``srv6.up``) fills it, so the plain datapath is
unchanged; re-programming carries the SIDs over from the program being replaced (or from the SRv6
encapsulation program, ``srv6_egress`` at the uplink's egress, which `clear()` leaves alone: it belongs
to the tunnel, and ``srv6.down`` removes it).
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import struct
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from labtools.base import paths
from labtools.base.errors import LabError, PrerequisiteError
from labtools.datapaths.base import Applied, Datapath, Node
from labtools.hosts import Host
from labtools.model import datapaths as registry
from labtools.model.datapaths import Behaviour
from labtools.model.services import ServicePort

SOURCE = paths.BPF / "nodeport.c"
OBJECT = paths.BPF / "nodeport.o"
LOADER = paths.BPF / "labtools-bpf-load"
PROTO = {"tcp": 6, "udp": 17}
# lb6_service flags (bpf/lib/common.h)
SVC_FLAG_NODEPORT = 1 << 1
SVC_FLAG_EXT_LOCAL_SCOPE = 1 << 2
SVC_FLAG_ROUTABLE = 1 << 6
SVC_FLAG_TWO_SCOPES = 1 << 5  # in flags2
SCOPE_EXT, SCOPE_INT = 0, 1


# The C structs the maps hold (labtools/bpf/nodeport.c), as `struct` formats with the C members in order,
# one per format item ("x" items are the C padding members). Every packed key and value goes through
# these; tests/test_bpf_layout.py checks sizes and member offsets against the object's BTF.
LAYOUTS: dict[str, tuple[str, tuple[str, ...]]] = {
    "lb6_key": ("<16s2sHBB2x", ("address", "dport", "backend_slot", "proto", "scope", "pad")),
    "lb6_service": ("<IHHBBH", ("backend_id", "count", "rev_nat_index", "flags", "flags2", "qcount")),
    "lb6_backend": ("<16s2sBBHBB", ("address", "port", "proto", "flags", "cluster_id", "zone", "pad")),
    "lb6_reverse_nat": ("<16s2s", ("address", "port")),
}


def pack(layout: str, *values: object) -> bytes:
    """`values` (the non-padding members, in order) as the C struct `layout`."""
    return struct.pack(LAYOUTS[layout][0], *values)


def _addr(ip: str) -> bytes:
    return ipaddress.IPv6Address(ip).packed


def svc_key(ip: str, port: int, slot: int, proto: int, scope: int) -> bytes:
    return pack("lb6_key", _addr(ip), port.to_bytes(2, "big"), slot, proto, scope)


def svc_value(backend_id: int, count: int, rev_nat: int, flags: int, flags2: int) -> bytes:
    return pack("lb6_service", backend_id, count, rev_nat, flags, flags2, 0)


def backend_value(ip: str, port: int, proto: int) -> bytes:
    return pack("lb6_backend", _addr(ip), port.to_bytes(2, "big"), proto, 0, 0, 0, 0)


@dataclass
class MapEntries:
    """Entries per map, as (key bytes, value bytes)."""

    maps: dict[str, list[tuple[bytes, bytes]]] = field(default_factory=dict)
    frontends: int = 0

    def add(self, name: str, key: bytes, value: bytes) -> None:
        self.maps.setdefault(name, []).append((key, value))

    def count(self) -> int:
        return sum(len(v) for v in self.maps.values())

    def stream(self) -> bytes:
        """The loader's stdin: per map, name[16] key_size value_size count, then all keys, then all values."""
        out = bytearray()
        for name, entries in self.maps.items():
            if not entries:
                continue
            ksz, vsz = len(entries[0][0]), len(entries[0][1])
            out += struct.pack("<16sIII", name.encode(), ksz, vsz, len(entries))
            out += b"".join(k for k, _ in entries)
            out += b"".join(v for _, v in entries)
        return bytes(out)


# The Cilium releases the datapath models (the registry's): how its service lookup treats the L4 protocol.
CILIUM_VERSIONS = registry.REGISTRY["ebpf"].versions
DEFAULT_CILIUM = registry.DEFAULT_CILIUM


def lookup(version: str) -> Behaviour:
    """How Cilium `version` looks Services up (`Behaviour.ANY_PROTOCOL` or `PER_PROTOCOL`), as the registry says.

    Cilium v1.13 (read at the v1.13.0 and v1.13.7 release commits): bpf/lib/common.h `struct lb6_key`
    says of `proto` "L4 protocol, currently not used (set to 0)"; bpf/lib/lb.h `lb6_extract_key()` (v1.13.0)
    and `lb6_fill_key()` (v1.13.7) set ``key->proto = 0``; pkg/maps/lbmap/lbmap.go `upsertServiceProto()`
    writes every frontend with ``u8proto.ANY`` (0). So one NodePort answered TCP and UDP alike.
    From v1.17 (PR #33434): `lb6_key_set_protocol()` sets the packet's protocol under
    ENABLE_SERVICE_PROTOCOL_DIFFERENTIATION, which daemon/cmd/daemon_main.go's ``--bpf-lb-proto-diff``
    (default true) turns on, and `lb6_lookup_service()` falls back to a protocol-0 entry when there is no
    entry for the packet's protocol (nodeport.c does the same).
    """
    behaviour = registry.spec("ebpf").behaviour(version)
    assert behaviour in (Behaviour.ANY_PROTOCOL, Behaviour.PER_PROTOCOL), behaviour
    return behaviour


def proto_diff(version: str) -> bool:
    """Deprecated (one release): `lookup(version) is Behaviour.PER_PROTOCOL`."""
    import warnings

    warnings.warn("ebpf.proto_diff() is deprecated: use ebpf.lookup(version)", DeprecationWarning, stacklevel=2)
    return lookup(version) is Behaviour.PER_PROTOCOL


def render(ports: Sequence[ServicePort], node: Node, cilium_version: str = DEFAULT_CILIUM) -> MapEntries:
    """Cilium-shaped map entries for `ports`, as the agent of `cilium_version` would write them."""
    diff = lookup(cilium_version) is Behaviour.PER_PROTOCOL
    out = MapEntries()
    out.add("lb_config", struct.pack("<I", 0), struct.pack("<I", int(diff)))
    seen: set[tuple[str, int, int, int]] = set()  # without protocols, a TCP and a UDP port are one frontend
    backend_ids: dict[tuple[str, int, int], int] = {}
    rev_nat = 0

    def backend(ep_ip: str, ep_port: int, proto: int) -> int:
        k = (ep_ip, ep_port, proto)
        if k not in backend_ids:
            backend_ids[k] = len(backend_ids) + 1
            out.add("lb6_backends", struct.pack("<I", backend_ids[k]), backend_value(ep_ip, ep_port, proto))
        return backend_ids[k]

    def frontend(ip: str, port: int, proto: int, scope: int, eps, flags: int, flags2: int, index: int) -> None:
        if (ip, port, proto, scope) in seen:
            return
        seen.add((ip, port, proto, scope))
        ids = [backend(e.ip, e.port, proto) for e in eps]
        out.add("lb6_services", svc_key(ip, port, 0, proto, scope), svc_value(0, len(ids), index, flags, flags2))
        for slot, bid in enumerate(ids, start=1):
            out.add("lb6_services", svc_key(ip, port, slot, proto, scope), svc_value(bid, 0, index, 0, 0))

    for sp in ports:
        proto = PROTO[sp.protocol] if diff else 0  # Cilium < 1.17: u8proto.ANY
        # ClusterIP frontend: reachable from pods only (not routable from outside).
        rev_nat += 1
        out.add("lb6_reverse_nat", struct.pack("<H", rev_nat), pack("lb6_reverse_nat", _addr(sp.cluster_ip),
                                                                           sp.port.to_bytes(2, "big")))  # fmt: skip
        frontend(sp.cluster_ip, sp.port, proto, SCOPE_EXT, sp.cluster_endpoints, 0, 0, rev_nat)
        out.frontends += 1
        if not sp.node_port:
            continue
        ext_eps = sp.local_endpoints if sp.external_local else sp.cluster_endpoints
        two_scopes = sp.external_local != sp.internal_local
        for addr, routable in ((node.ip, True), ("::", False)):  # node address and the surrogate
            rev_nat += 1
            out.add("lb6_reverse_nat", struct.pack("<H", rev_nat),
                    pack("lb6_reverse_nat", _addr(addr), sp.node_port.to_bytes(2, "big")))  # fmt: skip
            flags = SVC_FLAG_NODEPORT | (SVC_FLAG_ROUTABLE if routable else 0)
            flags |= SVC_FLAG_EXT_LOCAL_SCOPE if sp.external_local else 0
            flags2 = SVC_FLAG_TWO_SCOPES if two_scopes else 0
            frontend(addr, sp.node_port, proto, SCOPE_EXT, ext_eps, flags, flags2, rev_nat)
            if two_scopes:
                int_eps = sp.local_endpoints if sp.internal_local else sp.cluster_endpoints
                frontend(addr, sp.node_port, proto, SCOPE_INT, int_eps, flags, flags2, rev_nat)
            out.frontends += 1
    if rev_nat > 0xFFFF:
        raise LabError(f"{rev_nat} frontends exceed the 16-bit rev-NAT index")
    return out


UPDATE, DELETE = 1, 2  # labtools-bpf-load --update's operations


@dataclass
class MapOps:
    """Single-entry map writes in the order Cilium's agent makes them: (map, UPDATE or DELETE, key, value)."""

    ops: list[tuple[str, int, bytes, bytes]] = field(default_factory=list)

    def stream(self) -> bytes:
        """The loader's stdin for --update: per operation name[16] op key_size value_size key value."""
        return b"".join(struct.pack("<16sIII", m.encode(), op, len(k), len(v)) + k + v for m, op, k, v in self.ops)


def _frontend(key: bytes) -> bytes:
    return key[:18] + key[20:]  # lb6_key without backend_slot: address, dport, proto, scope


def _slot(key: bytes) -> int:
    return struct.unpack_from("<H", key, 18)[0]


def render_change(before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node,
                  cilium_version: str = DEFAULT_CILIUM) -> MapOps:  # fmt: skip
    """The map writes of Cilium's agent for the change from `before` to `after`, one bpf() call each.

    As pkg/service/service.go `upsertServiceIntoLBMaps` and pkg/maps/lbmap/lbmap.go (v1.13 and v1.17 alike;
    read at skmatti/cilium 5f7ac91 and b095517): new backends first (`AddBackend`); then per frontend whose
    entries changed, `upsertServiceProto`: every backend slot 1..N, the rev-NAT entry, the master slot 0
    (with the backend count) last, then slots beyond the new count deleted; per removed frontend,
    `deleteServiceProto`: the master first, then the slots in ascending order, then its rev-NAT entry;
    backends no Service uses any more last (`DeleteBackendByID`).
    """
    b, a = render(before, node, cilium_version), render(after, node, cilium_version)
    old = {m: dict(b.maps.get(m, [])) for m in ("lb6_services", "lb6_backends", "lb6_reverse_nat")}
    new = {m: dict(a.maps.get(m, [])) for m in ("lb6_services", "lb6_backends", "lb6_reverse_nat")}

    def frontends(entries: dict[bytes, bytes]) -> dict[bytes, dict[int, tuple[bytes, bytes]]]:
        out: dict[bytes, dict[int, tuple[bytes, bytes]]] = {}
        for k, v in entries.items():
            out.setdefault(_frontend(k), {})[_slot(k)] = (k, v)
        return out

    def rev_nat_key(master_value: bytes) -> bytes:
        return struct.pack("<H", struct.unpack("<IHHBBH", master_value)[2])

    ofe, nfe = frontends(old["lb6_services"]), frontends(new["lb6_services"])
    out = MapOps()
    out.ops += [("lb6_backends", UPDATE, k, v) for k, v in new["lb6_backends"].items()
                if old["lb6_backends"].get(k) != v]  # fmt: skip
    for fe, slots in nfe.items():
        rk = rev_nat_key(slots[0][1])
        if ofe.get(fe) == slots and old["lb6_reverse_nat"].get(rk) == new["lb6_reverse_nat"][rk]:
            continue  # an unchanged frontend: the agent does not touch it
        out.ops += [("lb6_services", UPDATE, *slots[i]) for i in sorted(slots) if i > 0]
        out.ops.append(("lb6_reverse_nat", UPDATE, rk, new["lb6_reverse_nat"][rk]))
        out.ops.append(("lb6_services", UPDATE, *slots[0]))
        out.ops += [("lb6_services", DELETE, k, b"") for i, (k, _) in sorted(ofe.get(fe, {}).items()) if i not in slots]
    for fe, slots in ofe.items():
        if fe in nfe:
            continue
        out.ops += [("lb6_services", DELETE, slots[i][0], b"") for i in sorted(slots)]  # the master (0) first
        rk = rev_nat_key(slots[0][1])
        if rk not in new["lb6_reverse_nat"] and ("lb6_reverse_nat", DELETE, rk, b"") not in out.ops:
            out.ops.append(("lb6_reverse_nat", DELETE, rk, b""))  # two scopes of a NodePort share it
    out.ops += [("lb6_backends", DELETE, k, b"") for k in old["lb6_backends"] if k not in new["lb6_backends"]]
    return out


def require_built() -> tuple[Path, Path]:
    """The compiled program and loader; `make setup` builds them with clang and gcc (libbpf)."""
    for built, src in ((OBJECT, SOURCE), (LOADER, paths.BPF / "loader.c")):
        if not built.exists() or built.stat().st_mtime < src.stat().st_mtime:
            raise PrerequisiteError(f"{built} is missing or older than {src.name}: run `make setup`")
    return OBJECT, LOADER


class EbpfDatapath(Datapath):
    """tc (clsact) eBPF NodePort datapath on the node's uplink and its pods' veths."""

    name = "ebpf"
    tools = ("tc",)

    def __init__(self, cilium_version: str = DEFAULT_CILIUM):
        lookup(cilium_version)  # refuses what is not modelled
        self.cilium_version = cilium_version

    def render(self, ports: Sequence[ServicePort], node: Node) -> MapEntries:
        return render(ports, node, self.cilium_version)

    def _ifindex(self, host: Host, ifname: str) -> int:
        res = host.run(["ip", "-j", "link", "show", "dev", ifname])
        return int(json.loads(res.stdout)[0]["ifindex"])

    def apply(self, host: Host, rendered: object, node: Node) -> int:
        assert isinstance(rendered, MapEntries)
        obj, loader = require_built()
        remote_obj, remote_loader = host.install(obj), host.install(loader)
        entries = MapEntries(dict(rendered.maps), rendered.frontends)
        entries.maps["lxc6"] = [
            (_addr(ip), struct.pack("<I", self._ifindex(host, ifname))) for ip, ifname in node.pod_interfaces.items()
        ]
        pods = sorted(set(node.pod_interfaces.values()))
        res = host.run([remote_loader, remote_obj, node.uplink, *pods], input=entries.stream(), timeout=120)
        written = int(res.stdout.strip() or 0)
        if written != entries.count():
            raise LabError(f"[{host.name}] the loader wrote {written} map entries, expected {entries.count()}")
        return written

    def render_change(self, before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node) -> MapOps:
        return render_change(before, after, node, self.cilium_version)

    def apply_change(self, host: Host, rendered: object, node: Node) -> Applied:
        """One `labtools-bpf-load --update` on the running program's maps (nothing reloaded or re-attached), a
        process of its own; returns the writes and the time inside the map calls alone (`map_calls_s`)."""
        assert isinstance(rendered, MapOps)
        _, loader = require_built()
        res = host.run([host.install(loader), "--update", *self._map_owners(node)], input=rendered.stream(),
                       timeout=120)  # fmt: skip
        return self._applied(host, rendered, res.stdout)

    @contextlib.contextmanager
    def updater(self, host: Host, node: Node) -> Iterator[Callable[[object], Applied]]:
        """A map writer that stays up between changes, as Cilium's agent does: `labtools-bpf-load --agent` finds
        the maps once and keeps their descriptors, so a change costs its bpf() calls and one round trip to the
        agent, not a process start. Each call returns the writes and `map_calls_s`."""
        _, loader = require_built()
        with host.session([host.install(loader), "--agent", *self._map_owners(node)]) as agent:

            def apply(rendered: object) -> Applied:
                assert isinstance(rendered, MapOps)
                answer = agent.request(struct.pack("<I", len(rendered.ops)) + rendered.stream(), timeout=120)
                return self._applied(host, rendered, answer)

            yield apply

    @staticmethod
    def _map_owners(node: Node) -> list[str]:
        return [node.uplink, *sorted(set(node.pod_interfaces.values()))]  # rev-NAT lives in the pods' program

    @staticmethod
    def _applied(host: Host, rendered: MapOps, answer: str) -> Applied:
        written, ns = (int(x) for x in answer.split())
        if written != len(rendered.ops):
            raise LabError(f"[{host.name}] the loader made {written} map writes, expected {len(rendered.ops)}")
        return Applied(written, {"map_calls_s": ns / 1e9})

    def clear(self, host: Host, node: Node) -> None:
        for ifname in (node.uplink, *sorted(set(node.pod_interfaces.values()))):
            host.run(["tc", "filter", "del", "dev", ifname, "ingress", "pref", "1"], check=False)


# The program's counted drop reasons (labtools/bpf/lib/drop.h, enum drop_reason from 1), in enum order;
# tests/test_bpf_layout.py checks them against the object's BTF.
DROP_REASONS = ("invalid", "is_cluster_ip", "no_service", "no_backend", "csum_l4", "srv6_encap", "unknown_l4")


def drops(host: Host, node: Node) -> dict[str, int]:
    """The NodePort program's drop counters on `node` (summed over CPUs), by reason; empty without the program.

    The program is found through the uplink's tc ingress filter (maps are not per namespace, so a name
    lookup could find another lab's), its ``drops`` map through the program's map ids."""
    filters = json.loads(host.run(["tc", "-j", "filter", "show", "dev", node.uplink, "ingress"]).stdout or "[]")
    progs = [f["options"]["prog"]["id"] for f in filters if "prog" in f.get("options", {})]
    for prog in progs:
        info = json.loads(host.run(["bpftool", "-j", "prog", "show", "id", str(prog)]).stdout)
        for map_id in info.get("map_ids", []):
            meta = json.loads(host.run(["bpftool", "-j", "map", "show", "id", str(map_id)]).stdout)
            if meta.get("name") != "drops":
                continue
            rows = [e.get("formatted") for e in json.loads(host.run(["bpftool", "-j", "map", "dump", "id",
                                                                      str(map_id)]).stdout)]  # fmt: skip
            if any(r is None for r in rows):
                raise LabError("bpftool printed the drops map without its BTF: rebuild labtools/bpf (make setup)")
            names = dict(enumerate(DROP_REASONS, 1))  # the key is the enum's value (lib/drop.h)
            return {names[r["key"]]: sum(v["value"] for v in r["values"]) for r in rows if r["key"] in names}
    return {}
