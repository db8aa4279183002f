"""Services as Kubernetes objects: one source of truth for the emulated node and a real cluster.

`build()` makes the thesis' workload — N IPv6 SingleStack Services (NodePort, externalTrafficPolicy:
Local, TCP 5201, optionally UDP 5201) each with an EndpointSlice pointing at the iperf3 pod — as
`kubernetes` client models. Cluster IPs and node ports are allocated the way the API server does
(random scan with a reserved static sub-range). A real cluster receives the same objects through the
API (or as YAML from `to_yaml()`); the emulated worker renders them into a datapath via
`service_ports()`, which categorises endpoints as kube-proxy does.
"""

from __future__ import annotations

import ipaddress
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import yaml
from kubernetes import client as k8s

from labtools.base.errors import LabError

SERVICE_CIDR = ipaddress.IPv6Network("2001:db8:1234:5678:8:3::/112")
CLUSTER_CIDR = ipaddress.IPv6Network("2001:db8:1234:5678:8:2::/104")
POD_IP = "2001:db8:1234:5678:8:2:1:841"
IPERF_PORT = 5201
NAMESPACE = "default"
LABEL = "labtools.io/sweep"
DEFAULT_NODE_PORT_RANGE = "30000-32767"  # the API server's default: 2768 ports
# Wide enough for the thesis' 10,000 NodePort Services; carried into kubeadm's
# apiServer.extraArgs.service-node-port-range for a real cluster.
WIDE_NODE_PORT_RANGE = "30000-40999"
MIXES = ("nodeport", "clusterip+1nodeport")


@dataclass(frozen=True)
class PortRange:
    lo: int
    hi: int

    @classmethod
    def parse(cls, text: str) -> PortRange:
        try:
            lo, hi = (int(x) for x in str(text).split("-"))
        except ValueError:
            raise LabError(f"node port range {text!r} is not LO-HI (e.g. {DEFAULT_NODE_PORT_RANGE})") from None
        if not 1 <= lo <= hi <= 65535:
            raise LabError(f"node port range {text!r} must satisfy 1 <= LO <= HI <= 65535")
        return cls(lo, hi)

    @property
    def size(self) -> int:
        return self.hi - self.lo + 1

    def __str__(self) -> str:
        return f"{self.lo}-{self.hi}"


class OffsetAllocator:
    """The API server's bitmap allocator with `RandomScanStrategyWithOffset`.

    Dynamic allocations scan from a random start in the upper band [offset, size) and fall back to
    the lower, "static" band [0, offset), which is kept for users who pick values by hand.
    """

    def __init__(self, size: int, offset: int, rng: random.Random):
        self.size, self.offset, self.rng = size, offset, rng
        self.used: set[int] = set()

    def reserve(self, i: int) -> None:
        self.used.add(i)

    def next(self) -> int:
        for lo, hi in ((self.offset, self.size), (0, self.offset)):
            span = hi - lo
            if span <= 0:
                continue
            start = self.rng.randrange(span)
            for k in range(span):
                at = lo + (start + k) % span
                if at not in self.used:
                    self.used.add(at)
                    return at
        raise LabError(f"allocator full: all {self.size} values are in use")


def _service_ip_offset(size: int) -> int:
    # pkg/registry/core/service/ipallocator: calculateRangeOffset (min 16, max 256, step 16)
    return 0 if size < 16 else min(max(16, size // 16), 256)


def _node_port_offset(size: int) -> int:
    # pkg/registry/core/service/portallocator: calculateRangeOffset (min 16, max 128, step 32)
    return 0 if size <= 16 else min(max(16, size // 32), 128)


@dataclass
class Workload:
    """N Services and their EndpointSlices, in creation order."""

    services: list[k8s.V1Service]
    slices: list[k8s.V1EndpointSlice]
    node_port_range: PortRange
    params: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.services)

    def target(self, which: str) -> k8s.V1Service:
        """The first, middle or last created NodePort Service (the thesis' scenario 2 uses 'last')."""
        nodeports = [s for s in self.services if s.spec.type == "NodePort"]
        if not nodeports:
            raise LabError("the workload has no NodePort Service")
        index = {"first": 0, "middle": len(nodeports) // 2, "last": len(nodeports) - 1}.get(which)
        if index is None:
            raise LabError(f"target must be first, middle or last, got {which!r}")
        return nodeports[index]


def build(
    count: int,
    *,
    protocols: Sequence[str] = ("TCP",),
    mix: str = "nodeport",
    node_port_range: str | None = None,
    endpoint_ip: str = POD_IP,
    endpoint_node: str = "worker",
    udp_targets: bool = False,
    seed: int = 0,
) -> Workload:
    """Make `count` Services like the thesis' iperf3 one, with API-server-style allocation.

    mix="nodeport": all NodePort. mix="clusterip+1nodeport": N-1 ClusterIP and the last one NodePort.
    udp_targets: the first, middle and last NodePort Service (the measurement targets) also get a UDP
    port on the same node port, for the udp-pps metric, so that the number of rules stays ~N.
    """
    if count < 1:
        raise LabError(f"count must be at least 1, got {count}")
    if mix not in MIXES:
        raise LabError(f"mix must be one of {', '.join(MIXES)}, got {mix!r}")
    protocols = [p.upper() for p in protocols]
    if not protocols or set(protocols) - {"TCP", "UDP"}:
        raise LabError(f"protocols must be TCP and/or UDP, got {protocols}")
    n_nodeport = count if mix == "nodeport" else 1
    if node_port_range is None:  # the default range, widened only when it cannot hold the NodePorts
        default = PortRange.parse(DEFAULT_NODE_PORT_RANGE)
        node_port_range = DEFAULT_NODE_PORT_RANGE if n_nodeport <= default.size else WIDE_NODE_PORT_RANGE
    ports = PortRange.parse(node_port_range)
    if n_nodeport > ports.size:
        if n_nodeport > 65535 - 1024 + 1:
            hint = ("no port range holds that many (ports above 1023 number 64,512): use --mix clusterip+1nodeport, "
                    "N-1 ClusterIP Services and one NodePort")  # fmt: skip
        else:
            lo = 30000 if n_nodeport <= 65536 - 30000 else 65536 - n_nodeport
            hint = (f"give a range of at least {n_nodeport} ports, e.g. --node-port-range {lo}-{lo + n_nodeport - 1} "
                    "(the API server's service-node-port-range)")  # fmt: skip
        raise LabError(f"{n_nodeport} NodePort Services do not fit the node port range {ports} ({ports.size} ports): "
                       f"{hint}")
    ip_size = SERVICE_CIDR.num_addresses - 1  # the subnet-router anycast address (::) is never handed out
    if count + 2 > ip_size:
        raise LabError(f"{count} Services do not fit the service CIDR {SERVICE_CIDR}")
    rng = random.Random(seed)
    ips = OffsetAllocator(ip_size, _service_ip_offset(ip_size), rng)
    ips.reserve(0)  # ::1, the `kubernetes` Service
    ips.reserve(9)  # ::a, cluster DNS (kubeadm clusterDNS)
    nps = OffsetAllocator(ports.size, _node_port_offset(ports.size), rng)
    first_np = count - n_nodeport + 1  # Service numbers of the NodePorts are first_np..count
    udp_on = {first_np + i for i in (0, n_nodeport // 2, n_nodeport - 1)} if udp_targets else set()

    services, slices = [], []
    for i in range(1, count + 1):
        ip = str(SERVICE_CIDR.network_address + 1 + ips.next())  # before the node port: one rng serves both
        is_np = mix == "nodeport" or i == count
        node_port = ports.lo + nps.next() if is_np else None  # TCP and UDP of one port share it
        protos = [*protocols, "UDP"] if i in udp_on and "UDP" not in protocols else protocols
        svc = _service(f"svc-{i:05d}", ip, node_port, protos)
        services.append(svc)
        slices.append(_slice(svc.metadata.name, protos, endpoint_ip, endpoint_node))
    params = {"count": count, "protocols": protocols, "udp_targets": udp_targets, "mix": mix,
              "node_port_range": str(ports),
              "endpoint_ip": endpoint_ip, "endpoint_node": endpoint_node, "seed": seed}  # fmt: skip
    return Workload(services, slices, ports, params)


def _service(name: str, ip: str, node_port: int | None, protocols: Sequence[str]) -> k8s.V1Service:
    """One Service like the thesis' iperf3 one: NodePort (eTP Local) when it has a node port, else ClusterIP."""
    labels = {LABEL: "true", "app.kubernetes.io/name": "iperf3"}
    svc_ports = [
        k8s.V1ServicePort(name=_port_name(p), protocol=p, port=IPERF_PORT, target_port=IPERF_PORT, node_port=node_port)
        for p in protocols
    ]
    spec = k8s.V1ServiceSpec(
        type="NodePort" if node_port else "ClusterIP",
        selector={"app.kubernetes.io/name": "iperf3"},
        ip_families=["IPv6"],
        ip_family_policy="SingleStack",
        cluster_ip=ip,
        cluster_ips=[ip],
        ports=svc_ports,
        external_traffic_policy="Local" if node_port else None,
        internal_traffic_policy="Cluster",
    )
    meta = k8s.V1ObjectMeta(name=name, namespace=NAMESPACE, labels=labels)
    return k8s.V1Service(api_version="v1", kind="Service", metadata=meta, spec=spec)


def _port_name(protocol: str) -> str:
    return "iperf3" if protocol == "TCP" else f"iperf3-{protocol.lower()}"


def _slice(service: str, protocols: Sequence[str], ip: str, node: str | None,
           port: int = IPERF_PORT) -> k8s.V1EndpointSlice:  # fmt: skip
    endpoints = [] if ip is None else [
        k8s.V1Endpoint(
            addresses=[ip],
            conditions=k8s.V1EndpointConditions(ready=True, serving=True, terminating=False),
            node_name=node,
        )
    ]  # fmt: skip
    return k8s.V1EndpointSlice(
        api_version="discovery.k8s.io/v1",
        kind="EndpointSlice",
        metadata=k8s.V1ObjectMeta(
            name=f"{service}-lab",
            namespace=NAMESPACE,
            labels={"kubernetes.io/service-name": service, LABEL: "true"},
        ),
        address_type="IPv6",
        endpoints=endpoints,
        ports=[k8s.DiscoveryV1EndpointPort(name=_port_name(p), port=port, protocol=p) for p in protocols],
    )


# ----------------------------------------------------------------------------- one change

CHANGES = ("add", "remove", "endpoints")
# The endpoint port before an `endpoints` change: nothing in the pod listens there, so a client of the
# Service is refused by the pod until its endpoint is the iperf3 port again.
RETIRED_PORT = IPERF_PORT + 98


@dataclass(frozen=True)
class Change:
    """One Service changed on top of a workload, as kube-proxy's change trackers would see it."""

    kind: str  # one of CHANGES
    before: Workload
    after: Workload
    service: str  # the changed Service
    node_port: int  # where a client sees the change
    want: str  # what that client sees once the change is in: "up" (connects) or "down" (refused)


def one_change(workload: Workload, kind: str) -> Change:
    """`workload` with one Service added (a new NodePort one), removed (the last NodePort one) or with its
    endpoints changed (the last NodePort one's endpoint moves from RETIRED_PORT to the iperf3 port: a pod
    replaced by a ready one). Every change touches one Service and leaves the others as they are."""
    if kind not in CHANGES:
        raise LabError(f"change must be one of {', '.join(CHANGES)}, got {kind!r}")
    p = workload.params
    if kind == "add":
        rng = random.Random(p.get("seed", 0) + 1)
        size = SERVICE_CIDR.num_addresses - 1
        ips = OffsetAllocator(size, _service_ip_offset(size), rng)
        for s in workload.services:
            ips.reserve(int(ipaddress.IPv6Address(s.spec.cluster_ip)) - int(SERVICE_CIDR.network_address) - 1)
        for reserved in (0, 9):
            ips.reserve(reserved)
        nps = OffsetAllocator(workload.node_port_range.size, _node_port_offset(workload.node_port_range.size), rng)
        for s in workload.services:
            for sp in s.spec.ports:
                if sp.node_port:
                    nps.reserve(sp.node_port - workload.node_port_range.lo)
        node_port = workload.node_port_range.lo + nps.next()
        new = _service(f"svc-{len(workload) + 1:05d}", str(SERVICE_CIDR.network_address + 1 + ips.next()), node_port,
                       p.get("protocols", ["TCP"]))  # fmt: skip
        after = Workload([*workload.services, new],
                         [*workload.slices, _slice(new.metadata.name, p.get("protocols", ["TCP"]),
                                                   p["endpoint_ip"], p["endpoint_node"])],
                         workload.node_port_range, {**p, "count": len(workload) + 1})  # fmt: skip
        return Change(kind, workload, after, new.metadata.name, node_port, "up")
    target = workload.target("last")
    name, node_port = target.metadata.name, target.spec.ports[0].node_port
    if kind == "remove":
        after = Workload([s for s in workload.services if s.metadata.name != name],
                         [s for s in workload.slices if s.metadata.labels["kubernetes.io/service-name"] != name],
                         workload.node_port_range, {**p, "count": len(workload) - 1})  # fmt: skip
        return Change(kind, workload, after, name, node_port, "down")
    protos = [sp.protocol for sp in target.spec.ports]
    retired = _slice(name, protos, p["endpoint_ip"], p["endpoint_node"], RETIRED_PORT)
    before = Workload(workload.services,
                      [retired if s.metadata.labels["kubernetes.io/service-name"] == name else s
                       for s in workload.slices], workload.node_port_range, p)  # fmt: skip
    return Change(kind, before, workload, name, node_port, "up")


# ----------------------------------------------------------------------------- serialisation


def to_dicts(objs: Iterable[object]) -> list[dict]:
    """Plain API dictionaries (camelCase keys, no nulls), as `kubectl apply` takes them."""
    return [o.model_dump(by_alias=True, exclude_none=True, mode="json") for o in objs]


def to_yaml(workload: Workload) -> str:
    """Manifests for a real cluster: every Service (the EndpointSlices come from its controller)."""
    return yaml.safe_dump_all(to_dicts(workload.services), sort_keys=False)


def from_yaml(text: str) -> list[k8s.V1Service]:
    """Parse manifests back into `V1Service` models; schema errors raise `LabError`."""
    out = []
    for doc in yaml.safe_load_all(text):
        if doc is None:
            continue
        if doc.get("kind") != "Service":
            raise LabError(f"expected kind Service, got {doc.get('kind')!r}")
        try:
            out.append(k8s.V1Service.model_validate(doc))
        except ValueError as e:
            raise LabError(f"invalid Service manifest: {e}") from None
    return out


# ----------------------------------------------------------------------------- kube-proxy's view


@dataclass(frozen=True)
class Backend:
    """One endpoint of a Service port, as kube-proxy sees it (address, port, node, conditions)."""

    ip: str
    port: int
    node: str | None
    ready: bool
    serving: bool
    terminating: bool

    def __str__(self) -> str:  # kube-proxy's endpoint string: [ip]:port for IPv6
        return f"[{self.ip}]:{self.port}"


@dataclass(frozen=True)
class ServicePort:
    """One (Service, port) as kube-proxy's serviceInfo sees it, with its endpoints categorised."""

    namespace: str
    name: str
    port_name: str
    protocol: str  # lower case, as kube-proxy hashes it
    cluster_ip: str
    port: int
    node_port: int  # 0 if none
    external_local: bool
    internal_local: bool
    endpoints: tuple[Backend, ...]  # sorted by str(), as kube-proxy sorts them
    cluster_endpoints: tuple[Backend, ...]
    local_endpoints: tuple[Backend, ...]

    @property
    def name_string(self) -> str:
        """ServicePortName.String(): ns/name[:port]."""
        return f"{self.namespace}/{self.name}" + (f":{self.port_name}" if self.port_name else "")

    @property
    def has_endpoints(self) -> bool:
        return bool(self.cluster_endpoints or self.local_endpoints) or any(
            e.ready or (e.serving and e.terminating) for e in self.endpoints
        )

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0

    @property
    def has_internal_endpoints(self) -> bool:
        return self.has_endpoints and (not self.internal_local or bool(self.local_endpoints))

    @property
    def has_external_endpoints(self) -> bool:
        return self.has_endpoints and (not self.external_local or bool(self.local_endpoints))

    # Which chains kube-proxy builds (syncProxyRules): the same decisions in iptables and nftables mode.

    @property
    def uses_cluster_policy(self) -> bool:
        # UsesClusterEndpoints() holds for iTP=Cluster and for every externally accessible service.
        return bool(self.cluster_endpoints)

    @property
    def uses_local_policy(self) -> bool:
        uses_local = self.internal_local or (self.external_local and self.externally_accessible)
        return bool(self.local_endpoints) and uses_local

    @property
    def uses_external_chain(self) -> bool:
        return self.has_endpoints and self.externally_accessible

    @property
    def reachable_endpoints(self) -> list[Backend]:
        """allLocallyReachableEndpoints: those of the policy chains in use, each once, sorted."""
        eps: dict[str, Backend] = {}
        if self.uses_cluster_policy:
            eps.update((str(e), e) for e in self.cluster_endpoints)
        if self.uses_local_policy:
            eps.update((str(e), e) for e in self.local_endpoints)
        return [eps[k] for k in sorted(eps)]


def _categorize(eps: list[Backend], node: str) -> tuple[tuple[Backend, ...], tuple[Backend, ...]]:
    # pkg/proxy/topology.go CategorizeEndpoints: ready ones, else serving+terminating as a fallback.
    def pick(cands: list[Backend]) -> tuple[Backend, ...]:
        ready = [e for e in cands if e.ready]
        return tuple(ready or [e for e in cands if e.serving and e.terminating])

    return pick(eps), pick([e for e in eps if e.node == node])


def service_ports(workload: Workload, node: str) -> list[ServicePort]:
    """Every (Service, port) of the workload as kube-proxy on `node` sees it, in creation order."""
    by_service: dict[tuple[str, str], list[k8s.V1EndpointSlice]] = {}
    for sl in workload.slices:
        key = (sl.metadata.namespace, sl.metadata.labels["kubernetes.io/service-name"])
        by_service.setdefault(key, []).append(sl)
    out = []
    for svc in workload.services:
        ns, name = svc.metadata.namespace, svc.metadata.name
        for p in svc.spec.ports:
            eps: list[Backend] = []
            for sl in by_service.get((ns, name), []):
                sp = next((x for x in sl.ports or [] if x.name == p.name and x.protocol == p.protocol), None)
                if sp is None:
                    continue
                for e in sl.endpoints or []:
                    c = e.conditions
                    ready = c is None or c.ready is None or bool(c.ready)
                    for ip in e.addresses:
                        eps.append(Backend(str(ipaddress.ip_address(ip)), sp.port, e.node_name, ready,
                                            bool(c and c.serving), bool(c and c.terminating)))  # fmt: skip
            eps.sort(key=str)
            cluster, local = _categorize(eps, node)
            out.append(ServicePort(
                ns, name, p.name or "", p.protocol.lower(), svc.spec.cluster_ip, p.port, p.node_port or 0,
                svc.spec.external_traffic_policy == "Local", svc.spec.internal_traffic_policy == "Local",
                tuple(eps), cluster, local,
            ))  # fmt: skip
    return out
