"""kube-proxy's iptables mode for an IPv6 node, rendered from `ServicePort`s and applied atomically.

Reference: kubernetes `pkg/proxy/iptables/proxier.go` — `syncProxyRules` (restore-input layout, the
per-service rules, the trailing KUBE-NODEPORTS jump with `! -d ::1/128`), `writeServiceToEndpointRules`,
`portProtoHash` / `servicePortEndpointChainName` (chain names), `iptablesJumpChains` (the jumps from the
built-in chains), `largeClusterEndpointsThreshold` (comments dropped above 1000 endpoints) and
`isServiceChainName` (the stale chains of a partial sync).

The restore input is built as records (`labtools.datapaths.rules`: per table, the declared chains and the
appended rules and deleted chains, as upstream's `filterChains`/`filterRules`/`natChains`/`natRules` line
buffers hold them; `_service_jumps` and `_service_chains` for one Service's part) and written as text once.

Two backends: `iptables` (ip6tables-nft, Debian's default) and `iptables-legacy` (x_tables).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from labtools.datapaths.base import Applied, Datapath, Node, changed_services
from labtools.datapaths.rules import Append, Declare, DeleteChain, Restore, RestoreTable
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


SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")  # isServiceChainName


def service_chains(restore: Restore) -> set[str]:
    """The per-service chains a restore input declares (isServiceChainName)."""
    return {c for c in restore.chains() if c.startswith(SERVICE_CHAIN_PREFIXES)}


@dataclass(frozen=True)
class Rules:
    """A full sync: the restore input kube-proxy would write, and the file that also sets the built-in jumps."""

    sync: Restore  # kube-proxy's own (`--noflush`) input
    whole: Restore  # with the built-in chains and their jumps: replaces filter and nat whole
    # The whole file as text, written once, as the rules are made (so that applying them times the restore).
    full: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "full", self.whole.text())  # frozen: the one assignment

    @property
    def kube_proxy(self) -> str:
        """kube-proxy's restore input as text."""
        return self.sync.text()

    @property
    def rules(self) -> int:
        """The rules the whole file writes: kube-proxy's and the built-in chains' jumps."""
        return self.whole.commands


@dataclass
class Options:
    """How kube-proxy is configured on the node (the flags and kernel features its rules depend on)."""

    mark: str = MASQUERADE_MARK
    random_fully: bool = True  # ip6tables >= 1.6.2 has it
    nfacct: bool = False  # kube-proxy adds `-m nfacct` only where nfacct objects exist; the lab has none
    local_detector: bool = True  # --detect-local-mode=ClusterCIDR (kubeadm sets the cluster CIDR)
    invalid_drop: bool = True  # off when nf_conntrack_tcp_be_liberal is set


Command = Append | DeleteChain


def render_kube_proxy(
    ports: Sequence[ServicePort],
    node: Node,
    opt: Options | None = None,
    *,
    changed: set[tuple[str, str]] | None = None,
    stale: Sequence[str] = (),
) -> Restore:
    """The exact `ip6tables-restore --noflush` input of kube-proxy's sync (syncProxyRules), as records.

    A full sync by default. A partial sync (`changed`: the (namespace, name) of the Services whose Service or
    endpoints changed since the last sync) writes, as upstream's `!doFullSync` path does: the filter table
    and the nat table's KUBE-SERVICES, KUBE-NODEPORTS, KUBE-POSTROUTING and KUBE-MARK-MASQ whole (every
    Service's jumps), but the KUBE-SVC/SVL/EXT/SEP chains only of the changed Services (the others are
    written to upstream's discard buffer, `skippedNatChains`), and each `stale` chain declared (which
    flushes it) and deleted with `-X`.
    """
    opt = opt or Options()
    m = opt.mark
    filter_chains = [Declare(c) for c in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-FORWARD",
                                          "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL")]  # fmt: skip
    nat_chains = [Declare(c) for c in ("KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ")]
    filter_rules: list[Command] = []
    nat: list[Command] = [
        Append("KUBE-POSTROUTING", f"-m mark ! --mark {m}/{m} -j RETURN"),
        Append("KUBE-POSTROUTING", f"-j MARK --xor-mark {m}"),
        Append("KUBE-POSTROUTING", '-m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
               + (" --random-fully" if opt.random_fully else "")),
        Append("KUBE-MARK-MASQ", f"-j MARK --or-mark {m}"),
    ]  # fmt: skip
    large = sum(len(p.endpoints) for p in ports) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    for sp in ports:
        h = port_proto_hash(sp)
        to_nat, to_filter = _service_jumps(sp, h)
        nat += to_nat
        filter_rules += to_filter
        if changed is None or (sp.namespace, sp.name) in changed:  # else its chains stay as they are
            chains, rules = _service_chains(sp, h, node, opt, large)
            nat_chains += chains
            nat += rules
    nat_chains += [Declare(c) for c in stale]  # the declaration flushes it; then it can go
    nat += [DeleteChain(c) for c in stale]
    nat.append(Append("KUBE-SERVICES", '-m comment --comment "kubernetes service nodeports; NOTE: this must be '
                      'the last rule in this chain" -m addrtype --dst-type LOCAL ! -d ::1/128 -j KUBE-NODEPORTS'))
    nfacct = " -m nfacct --nfacct-name ct_state_invalid_dropped_pkts" if opt.nfacct else ""
    if opt.invalid_drop:
        filter_rules.append(Append("KUBE-FORWARD", f"-m conntrack --ctstate INVALID{nfacct} -j DROP"))
    filter_rules += [
        Append("KUBE-FORWARD", f'-m comment --comment "kubernetes forwarding rules" -m mark --mark {m}/{m} -j ACCEPT'),
        Append("KUBE-FORWARD", '-m comment --comment "kubernetes forwarding conntrack rule" -m conntrack --ctstate '
                               "RELATED,ESTABLISHED -j ACCEPT"),
    ]  # fmt: skip
    return Restore((RestoreTable("filter", tuple(filter_chains), tuple(filter_rules)),
                    RestoreTable("nat", tuple(nat_chains), tuple(nat))))  # fmt: skip


def _service_jumps(sp: ServicePort, h: str) -> tuple[list[Command], list[Command]]:
    """A Service's rules in the top-level chains (nat, filter), written on every sync; `h`: its port_proto_hash."""
    spn, l4 = sp.name_string, f"-m {sp.protocol} -p {sp.protocol}"
    cip = f"-d {sp.cluster_ip} --dport {sp.port}"
    # No endpoints at all: rejected; endpoints, but none for this traffic policy: dropped.
    target, comment = ("DROP", f'"{spn} has no local endpoints"') if sp.has_endpoints else (
        "REJECT", f'"{spn} has no endpoints"')  # fmt: skip
    nat: list[Command] = []
    filter_rules: list[Command] = []
    if sp.has_internal_endpoints:
        internal_chain = f"KUBE-SVL-{h}" if sp.internal_local else f"KUBE-SVC-{h}"
        nat.append(Append("KUBE-SERVICES", f'-m comment --comment "{spn} cluster IP" {l4} {cip} -j {internal_chain}'))
    else:
        filter_rules.append(Append("KUBE-SERVICES", f"-m comment --comment {comment} {l4} {cip} -j {target}"))
    if sp.node_port:
        if sp.has_endpoints:
            nat.append(Append("KUBE-NODEPORTS", f"-m comment --comment {spn} {l4} --dport {sp.node_port} "
                                                f"-j KUBE-EXT-{h}"))  # fmt: skip
        if not sp.has_external_endpoints:
            filter_rules.append(Append("KUBE-EXTERNAL-SERVICES", f"-m comment --comment {comment} -m addrtype "
                                       f"--dst-type LOCAL {l4} --dport {sp.node_port} -j {target}"))  # fmt: skip
    return nat, filter_rules


def _service_chains(sp: ServicePort, h: str, node: Node, opt: Options,
                    large: bool) -> tuple[list[Declare], list[Command]]:  # fmt: skip
    """A Service's own nat chains and their rules (upstream's natChains and natRules for it;
    writeServiceToEndpointRules for the policy chains). `large`: no comments (largeClusterEndpointsThreshold)."""
    spn, l4 = sp.name_string, f"-m {sp.protocol} -p {sp.protocol}"
    svc, svl, ext = f"KUBE-SVC-{h}", f"KUBE-SVL-{h}", f"KUBE-EXT-{h}"
    pod = node.cluster_cidr
    chains: list[Declare] = []
    rules: list[Command] = []
    if sp.has_internal_endpoints and opt.local_detector:
        rules.append(Append(svl if sp.internal_local else svc, f'-m comment --comment "{spn} cluster IP" {l4} '
                            f"-d {sp.cluster_ip} --dport {sp.port} ! -s {pod} -j KUBE-MARK-MASQ"))  # fmt: skip
    if sp.uses_external_chain:
        chains.append(Declare(ext))
        if not sp.external_local:
            rules.append(Append(ext, f'-m comment --comment "masquerade traffic for {spn} external destinations" '
                                     "-j KUBE-MARK-MASQ"))  # fmt: skip
        else:
            if opt.local_detector:
                rules.append(Append(ext, f'-m comment --comment "pod traffic for {spn} external destinations" '
                                         f"-s {pod} -j {svc}"))  # fmt: skip
            rules.append(Append(ext, f'-m comment --comment "masquerade LOCAL traffic for {spn} external '
                                     'destinations" -m addrtype --src-type LOCAL -j KUBE-MARK-MASQ'))  # fmt: skip
            rules.append(Append(ext, f'-m comment --comment "route LOCAL traffic for {spn} external '
                                     f'destinations" -m addrtype --src-type LOCAL -j {svc}'))  # fmt: skip
        if sp.has_external_endpoints:
            rules.append(Append(ext, f"-j {svl if sp.external_local else svc}"))
    for chain, eps, used in ((svc, sp.cluster_endpoints, sp.uses_cluster_policy),
                             (svl, sp.local_endpoints, sp.uses_local_policy)):  # fmt: skip
        if not used:
            continue
        chains.append(Declare(chain))
        n = len(eps)
        for i, ep in enumerate(eps):
            cmt = "" if large else f'-m comment --comment "{spn} -> {ep}" '
            stat = f"-m statistic --mode random --probability {1.0 / (n - i):0.10f} " if i < n - 1 else ""
            rules.append(Append(chain, f"{cmt}{stat}-j {sep_chain(sp, str(ep))}"))
    for ep in sp.reachable_endpoints:
        sep = sep_chain(sp, str(ep))
        chains.append(Declare(sep))
        cmt = "" if large else f"-m comment --comment {spn} "
        rules.append(Append(sep, f"{cmt}-s {ep.ip} -j KUBE-MARK-MASQ"))
        rules.append(Append(sep, f"{cmt}{l4} -j DNAT --to-destination {ep}"))
    return chains, rules


def jump_rules() -> dict[str, list[Append]]:
    """The built-in chains' jumps in the order a fresh node ends up with (each was prepended)."""
    out: dict[str, list[Append]] = {"filter": [], "nat": []}
    for table, chain, builtin, comment, extra in reversed(JUMP_CHAINS):
        args = [extra] if extra else []
        if comment:
            args.append(f'-m comment --comment "{comment}"')
        out[table].append(Append(builtin, " ".join([*args, f"-j {chain}"])))
    # Within one built-in chain the reversed list order is the final order; group by chain for reading.
    for table, rules in out.items():
        rules.sort(key=lambda r: BUILTIN[table].index(r.chain))
    return out


def _builtins(table: str) -> tuple[Declare, ...]:
    return tuple(Declare(c, "ACCEPT") for c in BUILTIN[table])


def render(ports: Sequence[ServicePort], node: Node, opt: Options | None = None) -> Rules:
    """kube-proxy's restore input, wrapped into one file that replaces the filter and nat tables whole."""
    sync = render_kube_proxy(ports, node, opt)
    jumps = jump_rules()
    whole = Restore(tuple(
        RestoreTable(t.name, (*_builtins(t.name), *([Declare("KUBE-FIREWALL")] if t.name == "filter" else []),
                              *t.chains), (*jumps[t.name], *t.commands))
        for t in sync.tables
    ))  # fmt: skip
    return Rules(sync, whole)


@dataclass(frozen=True)
class Partial:
    """kube-proxy's restore input for a partial sync, and whether it reads the nat table first."""

    restore: Restore
    # Below largeClusterEndpointsThreshold kube-proxy runs `iptables-save -t nat` on every sync to find stale
    # chains; above it, at most once per sync period (syncProxyRules: `!proxier.largeClusterMode || ...`).
    save_first: bool
    text: str = field(init=False, repr=False, compare=False)  # the restore input, written once (as `Rules.full`)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", self.restore.text())

    @property
    def rules(self) -> int:
        """The rules (and chain deletions) it writes."""
        return self.restore.commands


def render_partial(before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node,
                   opt: Options | None = None) -> Partial:  # fmt: skip
    """The restore input of the sync after one change: `render_kube_proxy` with the changed Services and the
    service chains that no longer exist (upstream: the chains `iptables-save` lists minus `activeNATChains`),
    found by comparing the two full syncs' declared chains."""
    old = service_chains(render_kube_proxy(before, node, opt))
    new = service_chains(render_kube_proxy(after, node, opt))
    restore = render_kube_proxy(after, node, opt, changed=changed_services(before, after), stale=sorted(old - new))
    large = sum(len(p.endpoints) for p in before) > LARGE_CLUSTER_ENDPOINTS_THRESHOLD
    return Partial(restore, save_first=not large)


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
            empty = Restore(tuple(RestoreTable(t, _builtins(t), ()) for t in tables))
            host.run([self.restore, "-w"], input=empty.text(), timeout=120)
