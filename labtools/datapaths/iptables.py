"""kube-proxy's iptables mode for an IPv6 node, rendered from `ServicePort`s and applied atomically.

Reference: kubernetes `pkg/proxy/iptables/proxier.go` — `syncProxyRules` (restore-input layout, the
per-service rules, the trailing KUBE-NODEPORTS jump with `! -d ::1/128`), `writeServiceToEndpointRules`,
`portProtoHash` / `servicePortEndpointChainName` (chain names), `iptablesJumpChains` (the jumps from the
built-in chains) and `largeClusterEndpointsThreshold` (comments dropped above 1000 endpoints).

Two backends: `iptables` (ip6tables-nft, Debian's default) and `iptables-legacy` (x_tables).
"""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from labtools.datapaths.base import Applied, Datapath, Node, changed_services
from labtools.hosts import Host
from labtools.model.services import ServicePort

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000
MASQUERADE_MARK = "0x%08x" % (1 << 14)  # Go's "%#08x" of the default masquerade bit 14: 0x00004000

# (table, chain, built-in chain, comment, extra args) — kube-proxy's iptablesJumpChains plus the two
# kubelet duplicates. Each is prepended (-I) in list order, so on a fresh node they end up reversed.
JUMP_CHAINS = [
    ("filter", "KUBE-EXTERNAL-SERVICES", "INPUT", "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-EXTERNAL-SERVICES", "FORWARD", "kubernetes externally-visible service portals",
     "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-NODEPORTS", "INPUT", "kubernetes health check service ports", ""),
    ("filter", "KUBE-SERVICES", "FORWARD", "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-FORWARD", "FORWARD", "kubernetes forwarding rules", ""),
    ("filter", "KUBE-PROXY-FIREWALL", "INPUT", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-PROXY-FIREWALL", "OUTPUT", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("filter", "KUBE-PROXY-FIREWALL", "FORWARD", "kubernetes load balancer firewall", "-m conntrack --ctstate NEW"),
    ("nat", "KUBE-SERVICES", "OUTPUT", "kubernetes service portals", ""),
    ("nat", "KUBE-SERVICES", "PREROUTING", "kubernetes service portals", ""),
    ("nat", "KUBE-POSTROUTING", "POSTROUTING", "kubernetes postrouting rules", ""),
    ("filter", "KUBE-FIREWALL", "INPUT", "", ""),
    ("filter", "KUBE-FIREWALL", "OUTPUT", "", ""),
]  # fmt: skip
BUILTIN = {"filter": ("INPUT", "FORWARD", "OUTPUT"), "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING")}


def _hash16(text: str) -> str:
    return base64.b32encode(hashlib.sha256(text.encode()).digest()).decode()[:16]


def port_proto_hash(sp: ServicePort) -> str:
    """portProtoHash(servicePortName.String(), protocol)."""
    return _hash16(sp.name_string + sp.protocol)


def sep_chain(sp: ServicePort, endpoint: str) -> str:
    """servicePortEndpointChainName: KUBE-SEP- + hash of name, protocol and [ip]:port."""
    return "KUBE-SEP-" + _hash16(sp.name_string + sp.protocol + endpoint)


def _comment(text: str) -> str:
    # kube-proxy quotes comments that contain spaces itself (the quotes are part of the Go string).
    return f'"{text}"' if " " in text else text


@dataclass
class Rules:
    """The restore input kube-proxy would write, and the full file that also sets the built-in jumps."""

    kube_proxy: str
    full: str
    rules: int


@dataclass
class Options:
    mark: str = MASQUERADE_MARK
    random_fully: bool = True  # ip6tables >= 1.6.2 has it
    nfacct: bool = False  # kube-proxy adds `-m nfacct` only where nfacct objects exist; the lab has none
    local_detector: bool = True  # --detect-local-mode=ClusterCIDR (kubeadm sets the cluster CIDR)
    invalid_drop: bool = True  # off when nf_conntrack_tcp_be_liberal is set


def render_kube_proxy(
    ports: Sequence[ServicePort],
    node: Node,
    opt: Options | None = None,
    *,
    changed: set[tuple[str, str]] | None = None,
    stale: Sequence[str] = (),
) -> tuple[str, int]:
    """The exact `ip6tables-restore --noflush` input of kube-proxy's sync (syncProxyRules).

    A full sync by default. A partial sync (`changed`: the (namespace, name) of the Services whose Service or
    endpoints changed since the last sync) writes, as upstream's `!doFullSync` path does: the filter table
    and the nat table's KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING and KUBE-MARK-MASQ whole (every
    Service's jumps), but the KUBE-SVC/SVL/EXT/SEP chains only of the changed Services (the others are
    written to upstream's discard buffer, `skippedNatChains`), and each `stale` chain declared (which
    flushes it) and deleted with `-X`.
    """
    opt = opt or Options()
    m = opt.mark
    filter_chains = [":KUBE-SERVICES - [0:0]", ":KUBE-EXTERNAL-SERVICES - [0:0]", ":KUBE-FORWARD - [0:0]",
                     ":KUBE-NODEPORTS - [0:0]", ":KUBE-PROXY-FIREWALL - [0:0]"]  # fmt: skip
    nat_chains = [":KUBE-SERVICES - [0:0]", ":KUBE-NODEPORTS - [0:0]", ":KUBE-POSTROUTING - [0:0]",
                  ":KUBE-MARK-MASQ - [0:0]"]  # fmt: skip
    filter_rules: list[str] = []
    nat = [
        f"-A KUBE-POSTROUTING -m mark ! --mark {m}/{m} -j RETURN",
        f"-A KUBE-POSTROUTING -j MARK --xor-mark {m}",
        '-A KUBE-POSTROUTING -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if opt.random_fully else ""),
        f"-A KUBE-MARK-MASQ -j MARK --or-mark {m}",
    ]
    large = sum(len(p.endpoints) for p in ports) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    pod_cidr = node.cluster_cidr
    for sp in ports:
        spn, proto = sp.name_string, sp.protocol
        h = port_proto_hash(sp)
        svc, svl, ext = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}", f"KUBE-EXT-{h}"
        has_eps, has_internal, has_external = sp.has_endpoints, sp.has_internal_endpoints, sp.has_external_endpoints
        internal_chain = svl if sp.internal_local else svc
        external_policy_chain = svl if sp.external_local else svc
        int_target = ext_target = "REJECT"
        int_comment = ext_comment = f'"{spn} has no endpoints"'
        if has_eps:
            int_target = ext_target = "DROP"
            int_comment = ext_comment = f'"{spn} has no local endpoints"'
        l4 = f"-m {proto} -p {proto}"
        cip = f"-d {sp.cluster_ip} --dport {sp.port}"
        own_chains, own = nat_chains, nat  # where this Service's chains go: upstream's natChains / natRules

        if has_internal:
            nat.append(f'-A KUBE-SERVICES -m comment --comment "{spn} cluster IP" {l4} {cip} -j {internal_chain}')
        else:
            filter_rules.append(f"-A KUBE-SERVICES -m comment --comment {int_comment} {l4} {cip} -j {int_target}")
        if sp.node_port:
            if has_eps:
                nat.append(f"-A KUBE-NODEPORTS -m comment --comment {spn} {l4} --dport {sp.node_port} -j {ext}")
            if not has_external:
                filter_rules.append(
                    f"-A KUBE-EXTERNAL-SERVICES -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL "
                    f"{l4} --dport {sp.node_port} -j {ext_target}"
                )
        if changed is not None and (sp.namespace, sp.name) not in changed:
            own_chains, own = [], []  # unchanged in a partial sync: its chains stay as they are
        if has_internal and opt.local_detector:
            own.append(
                f'-A {internal_chain} -m comment --comment "{spn} cluster IP" {l4} {cip} ! -s {pod_cidr} '
                "-j KUBE-MARK-MASQ"
            )
        if sp.uses_external_chain:
            own_chains.append(f":{ext} - [0:0]")
            if not sp.external_local:
                own.append(f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" '
                           "-j KUBE-MARK-MASQ")  # fmt: skip
            else:
                if opt.local_detector:
                    own.append(f'-A {ext} -m comment --comment "pod traffic for {spn} external destinations" '
                               f"-s {pod_cidr} -j {svc}")  # fmt: skip
                own.append(f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {spn} external '
                           'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ')  # fmt: skip
                own.append(f'-A {ext} -m comment --comment "route LOCAL traffic for {spn} external '
                           f'destinations" -m addrtype --src-type LOCAL -j {svc}')  # fmt: skip
            if has_external:
                own.append(f"-A {ext} -j {external_policy_chain}")
        for chain, eps, used in ((svc, sp.cluster_endpoints, sp.uses_cluster_policy),
                                 (svl, sp.local_endpoints, sp.uses_local_policy)):  # fmt: skip
            if not used:
                continue
            own_chains.append(f":{chain} - [0:0]")
            n = len(eps)
            for i, ep in enumerate(eps):
                cmt = "" if large else f'-m comment --comment "{spn} -> {ep}" '
                stat = f"-m statistic --mode random --probability {1.0 / (n - i):0.10f} " if i < n - 1 else ""
                own.append(f"-A {chain} {cmt}{stat}-j {sep_chain(sp, str(ep))}")
        for ep in sp.reachable_endpoints:
            key = str(ep)
            sep = sep_chain(sp, key)
            own_chains.append(f":{sep} - [0:0]")
            cmt = "" if large else f"-m comment --comment {spn} "
            own.append(f"-A {sep} {cmt}-s {ep.ip} -j KUBE-MARK-MASQ")
            own.append(f"-A {sep} {cmt}{l4} -j DNAT --to-destination {ep}")
    nat_chains += [f":{c} - [0:0]" for c in stale]  # the declaration flushes it; then it can go
    nat += [f"-X {c}" for c in stale]
    nat.append(
        '-A KUBE-SERVICES -m comment --comment "kubernetes service nodeports; NOTE: this must be the last rule '
        'in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS'
    )
    nfacct = " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts" if opt.nfacct else ""
    if opt.invalid_drop:
        filter_rules.append(f"-A KUBE-FORWARD -m conntrack --ctstate INVALID{nfacct} -j DROP")
    filter_rules += [
        f'-A KUBE-FORWARD -m comment --comment "kubernetes forwarding rules" -m mark --mark {m}/{m} -j ACCEPT',
        '-A KUBE-FORWARD -m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
        "RELATED,ESTABLISHED -j ACCEPT",
    ]
    text = "\n".join(["*filter", *filter_chains, *filter_rules, "COMMIT", "*nat", *nat_chains, *nat, "COMMIT", ""])
    return text, len(filter_rules) + len(nat)


def jump_rules() -> dict[str, list[str]]:
    """The built-in chains' jumps in the order a fresh node ends up with (each was prepended)."""
    out: dict[str, list[str]] = {"filter": [], "nat": []}
    for table, chain, builtin, comment, extra in reversed(JUMP_CHAINS):
        parts = ["-A", builtin]
        if extra:
            parts.append(extra)
        if comment:
            parts.append(f'-m comment --comment "{comment}"')
        parts.append(f"-j {chain}")
        out[table].append(" ".join(parts))
    # Within one built-in chain the reversed list order is the final order; group by chain for reading.
    for table in out:
        order = BUILTIN[table]
        out[table].sort(key=lambda r: order.index(r.split()[1]))
    return out


def render(ports: Sequence[ServicePort], node: Node, opt: Options | None = None) -> Rules:
    """kube-proxy's restore input, wrapped into one file that replaces the filter and nat tables whole."""
    kp, n = render_kube_proxy(ports, node, opt)
    jumps = jump_rules()
    head, _, rest = kp.partition("*nat\n")
    filter_body = head.removeprefix("*filter\n").removesuffix("COMMIT\n")
    nat_body = rest.removesuffix("COMMIT\n")

    def table(name: str, body: str) -> list[str]:
        lines = body.splitlines()
        decls = [x for x in lines if x.startswith(":")]
        rules = [x for x in lines if not x.startswith(":")]
        extra = [":KUBE-FIREWALL - [0:0]"] if name == "filter" else []
        return [f"*{name}", *(f":{c} ACCEPT [0:0]" for c in BUILTIN[name]), *extra, *decls, *jumps[name],
                *rules, "COMMIT"]  # fmt: skip

    full = "\n".join([*table("filter", filter_body), *table("nat", nat_body), ""])
    return Rules(kp, full, n + sum(len(v) for v in jumps.values()))


SERVICE_CHAIN = re.compile(r"^:(KUBE-(?:SVC|SVL|EXT|FW|SEP)-[A-Z2-7]{16}) ", re.M)  # isServiceChainName


@dataclass
class Partial:
    """kube-proxy's restore input for a partial sync, and whether it reads the nat table first."""

    text: str
    rules: int
    # Below largeClusterEndpointsThreshold kube-proxy runs `iptables-save -t nat` on every sync to find stale
    # chains; above it, at most once per sync period (syncProxyRules: `!proxier.largeClusterMode || ...`).
    save_first: bool


def render_partial(before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node,
                   opt: Options | None = None) -> Partial:  # fmt: skip
    """The restore input of the sync after one change: `render_kube_proxy` with the changed Services and the
    service chains that no longer exist (upstream: the chains `iptables-save` lists minus `activeNATChains`)."""
    old = set(SERVICE_CHAIN.findall(render_kube_proxy(before, node, opt)[0]))
    new = set(SERVICE_CHAIN.findall(render_kube_proxy(after, node, opt)[0]))
    text, n = render_kube_proxy(after, node, opt, changed=changed_services(before, after), stale=sorted(old - new))
    large = sum(len(p.endpoints) for p in before) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    return Partial(text, n, save_first=not large)


class IptablesDatapath(Datapath):
    """kube-proxy iptables mode. Applied with one ip6tables-restore that replaces filter and nat whole."""

    def __init__(self, backend: str = "nft", options: Options | None = None):
        if backend not in ("nft", "legacy"):
            raise ValueError(f"iptables backend must be nft or legacy, got {backend!r}")
        self.backend = backend
        self.name = "iptables" if backend == "nft" else "iptables-legacy"
        self.restore = f"ip6tables-{backend}-restore"
        self.tools = (self.restore,)
        self.options = options or Options()
        # iptables-nft keeps its tables as nftables tables; legacy x_tables cannot be parked.
        self.nft_tables = ("ip6 filter", "ip6 nat") if backend == "nft" else ()

    def render(self, ports: Sequence[ServicePort], node: Node) -> Rules:
        return render(ports, node, self.options)

    def apply(self, host: Host, rendered: object, node: Node) -> int:
        assert isinstance(rendered, Rules)
        host.run([self.restore, "-w"], input=rendered.full, timeout=300)
        return rendered.rules

    def render_change(self, before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node) -> Partial:
        return render_partial(before, after, node, self.options)

    def apply_change(self, host: Host, rendered: object, node: Node) -> Applied:
        """As kube-proxy's partial sync: `iptables-save -t nat` where it reads it, then one
        `iptables-restore --noflush --counters` (RestoreAll with NoFlushTables, RestoreCounters)."""
        assert isinstance(rendered, Partial)
        if rendered.save_first:
            host.run([self.restore.replace("-restore", "-save"), "-t", "nat"])
        host.run([self.restore, "-w", "--noflush", "--counters"], input=rendered.text, timeout=300)
        return Applied(rendered.rules)

    def clear(self, host: Host, node: Node) -> None:
        if self.backend == "nft":
            # iptables-nft keeps its tables as nftables tables; deleting them also removes their hooks.
            for table in self.nft_tables:
                host.run(["nft", "delete", "table", *table.split()], check=False)
            return
        # x_tables tables cannot be unregistered from a namespace, only emptied (hooks stay until it goes).
        names = host.run(["cat", "/proc/net/ip6_tables_names"], check=False).stdout.split()
        tables = [t for t in ("filter", "nat") if t in names]
        if tables:
            empty = "".join(f"*{t}\n" + "".join(f":{c} ACCEPT [0:0]\n" for c in BUILTIN[t]) + "COMMIT\n"
                            for t in tables)  # fmt: skip
            host.run([self.restore, "-w"], input=empty, timeout=120)
