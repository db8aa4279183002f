"""kube-proxy's nftables mode for an IPv6 node: table `ip6 kube-proxy`, verdict maps, applied with `nft -f`.

Three releases of kubernetes `pkg/proxy/nftables/proxier.go`, one `Layout` each (`LAYOUTS`, keyed by an
ordered `Release`), chosen by `Options.version` (`VERSIONS`):

- **1.35** — `setupNFTables` (base chains, sets and maps, the masquerading chains, the NodePort
  dispatch), `syncProxyRules` (per-service chains and elements), `writeServiceToEndpointRules`: every
  service chain picks an endpoint chain with `numgen random mod N vmap { … : goto endpoint-… }`, and each
  endpoint chain marks hairpin traffic (`jump mark-for-masquerade`) and DNATs. One anonymous verdict map
  per Service: the kernel names each by scanning all sets of the table (`nf_tables_set_alloc_name` in
  net/netfilter/nf_tables_api.c), so a cold start is quadratic in N.
- **1.36** — the masquerading rework (PRs #135800 and #136499): no `mark-for-masquerade` chain (the mark
  is set inline: `ip6 daddr @cluster-ips ip6 saddr != <pod CIDR> mark set mark or …` in `services`), no
  endpoint chains without session affinity; `writeServiceToEndpointDNATs` DNATs from the service chain,
  `dnat ip6 addr . port to numgen random mod N map { 0 : <ep> . <port> , … }`; hairpin traffic is
  masqueraded from the `hairpin-connections` set (`ct status dnat ip6 saddr . ip6 daddr . meta l4proto .
  th dport @hairpin-connections masquerade fully-random` in `masquerading`).
- **1.37** — as 1.36, and a single-endpoint Service DNATs without a map (PR #140723 as fixed by #140960:
  `meta l4proto tcp dnat to [<ep>]:<port>`), so a Service with one endpoint needs no anonymous set.

These were read from upstream's `proxier.go` in a fork carrying those PRs (the single-endpoint rule
from the code, not from upstream's test output) and from a v1.36.2 node's `nft list table`. Chain names
follow `hashAndTruncate`, `servicePortChainNameBase` and `servicePortEndpointChainNameBase`. Session
affinity is not modelled (the workloads have none).

As kube-proxy builds knftables objects into a transaction, the ruleset is built as records
(`labtools.datapaths.rules`: tables, chains, sets, maps, rules, elements; `_setup` for setupNFTables,
`_service` for one Service's part of syncProxyRules, `_pick` for writeServiceToEndpointRules/DNATs), and
written as `nft -f` text once, in knftables' format (`objects.go`). A partial sync compares two full syncs'
records; whether a ruleset can replace the old table in one transaction is read from its records.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field

from labtools.base.errors import LabError
from labtools.datapaths.base import Applied, Datapath, Node, changed_services
from labtools.datapaths.iptables import MASQUERADE_MARK
from labtools.datapaths.rules import (
    Chain,
    Element,
    Item,
    Map,
    NftObject,
    Op,
    RandomMap,
    Rule,
    Set,
    Table,
    nft_input,
    nft_line,
)
from labtools.hosts import Host
from labtools.model.services import Backend, ServicePort

TABLE = "ip6 kube-proxy"
CHAIN_NAME_BASE_MAX = 240  # knftables.NameLengthMax (256) - chainNamePrefixLengthMax (16)

BASE_CHAINS = [  # name, type, hook, priority (v1.34)
    ("filter-prerouting-pre-dnat", "filter", "prerouting", -110),
    ("filter-output-pre-dnat", "filter", "output", -110),
    ("filter-input", "filter", "input", 0),
    ("filter-forward", "filter", "forward", 0),
    ("filter-output", "filter", "output", 0),
    ("nat-prerouting", "nat", "prerouting", -100),
    ("nat-output", "nat", "output", -100),
    ("nat-postrouting", "nat", "postrouting", 100),
]
JUMPS = [  # destination, source base chain, match (nftablesJumpChains)
    ("nodeport-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-input", "ct state new"),
    ("service-endpoints-check", "filter-forward", "ct state new"),
    ("service-endpoints-check", "filter-output", "ct state new"),
    ("firewall-check", "filter-prerouting-pre-dnat", "ct state new"),
    ("firewall-check", "filter-output-pre-dnat", "ct state new"),
    ("services", "nat-output", ""),
    ("services", "nat-prerouting", ""),
    ("masquerading", "nat-postrouting", ""),
    ("cluster-ips-check", "filter-forward", "ct state new"),
    ("cluster-ips-check", "filter-output", "ct state new"),
]


def hash_and_truncate(name: str) -> str:
    h = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    out = f"{h}-{name}"
    return out if len(out) <= CHAIN_NAME_BASE_MAX else out[: CHAIN_NAME_BASE_MAX - 3] + "..."


def chain_base(sp: ServicePort) -> str:
    """servicePortChainNameBase: ns/name/proto/portname (the port name is a path part here)."""
    return hash_and_truncate(f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}")


def endpoint_chain(sp: ServicePort, ip: str, port: int) -> str:
    """endpoint- + servicePortEndpointChainNameBase; ':' in IPv6 addresses becomes '.'."""
    return "endpoint-" + hash_and_truncate(
        f"{sp.namespace}/{sp.name}/{sp.protocol}/{sp.port_name}__{ip.replace(':', '.')}/{port}"
    )


@dataclass(frozen=True, order=True)
class Release:
    """A kube-proxy minor release, ordered as numbers (1.9 < 1.10)."""

    major: int
    minor: int

    @classmethod
    def parse(cls, text: str) -> Release:
        """"1.35" -> Release(1, 35); ValueError for anything else."""
        major, minor = text.split(".")
        return cls(int(major), int(minor))

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"


MASQUERADING_REWORK = Release(1, 36)  # PRs #135800 and #136499
SINGLE_ENDPOINT_DNAT = Release(1, 37)  # PR #140723 as fixed by #140960


@dataclass(frozen=True)
class Layout:
    """What a modelled release's `proxier.go` renders differently (the module docstring has the details)."""

    release: Release
    # Before the masquerading rework: an endpoint chain per endpoint, picked by a verdict map
    # (writeServiceToEndpointRules), and the `mark-for-masquerade` chain; after it, the service chain
    # DNATs itself (writeServiceToEndpointDNATs), the mark is set inline and hairpin traffic has a set.
    endpoint_chains: bool
    single_endpoint_dnat: bool  # a Service with one endpoint DNATs without an anonymous map

    @classmethod
    def of(cls, release: Release) -> Layout:
        """The layout of `release`, from the releases that changed it."""
        return cls(release, release < MASQUERADING_REWORK, release >= SINGLE_ENDPOINT_DNAT)


LAYOUTS = {r: Layout.of(r) for r in (Release(1, 35), Release(1, 36), Release(1, 37))}
VERSIONS = tuple(str(r) for r in LAYOUTS)  # as the CLI and the lab's records spell them
DEFAULT_VERSION = str(max(LAYOUTS))  # current upstream


def layout(version: str) -> Layout:
    """The layout of the release called `version` ("1.35"); a LabError if it is not modelled."""
    try:
        return LAYOUTS[Release.parse(version)]
    except (ValueError, KeyError):
        raise LabError(f"kube-proxy {version} is not modelled: choose one of {', '.join(VERSIONS)}") from None


@dataclass
class Options:
    """How kube-proxy is configured on the node, and which release's layout it renders."""

    version: str = DEFAULT_VERSION  # the kube-proxy release whose layout is rendered (VERSIONS; see `layout`)
    mark: str = MASQUERADE_MARK
    local_detector: bool = True  # --detect-local-mode=ClusterCIDR
    # "all": --nodeport-addresses ::/0, dispatch with `fib daddr type local` (like iptables' addrtype LOCAL).
    # "primary": kube-proxy's nftables default since v1.31: only the node IP, via the nodeport-ips set.
    nodeport_addresses: str = "all"


@dataclass(frozen=True)
class Ruleset:
    """A transaction on kube-proxy's table as records: a full sync's objects (each added), or a partial
    sync's adds, flushes and deletes; and its `nft -f` input, written once, as the ruleset is made (so
    that applying it times nft, not the writing)."""

    ops: tuple[Item, ...]
    text: str = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "text", nft_input(TABLE, self.ops))  # frozen: the one assignment

    @property
    def lines(self) -> list[str]:
        """The operations, a line each, as knftables writes them (what kube-proxy's unit tests compare)."""
        return [nft_line(TABLE, x) for x in self.ops]

    @property
    def atomic(self) -> bool:
        """Whether it can replace the old table in the same transaction: only without anonymous maps (the
        kernel would walk the old table's sets to name each new one; `NftablesDatapath`)."""
        return not any(isinstance(x, Rule) and x.pick is not None for x in self.ops)


def _setup(lay: Layout, opt: Options, node: Node) -> list[NftObject]:
    """setupNFTables: the table, its sets, maps and chains, and the rules that do not depend on a Service."""
    m, match_all = opt.mark, opt.nodeport_addresses == "all"
    out: list[NftObject] = [Table("rules for kube-proxy"), Set("cluster-ips", "ipv6_addr", "Active ClusterIPs")]
    if not lay.endpoint_chains:
        out.append(Set("hairpin-connections", "ipv6_addr . ipv6_addr . inet_proto . inet_service",
                       "service hairpin connections"))  # fmt: skip
    if not match_all:
        out.append(Set("nodeport-ips", "ipv6_addr", "IPs that accept NodePort traffic"))
    vmap3, vmap2 = "ipv6_addr . inet_proto . inet_service : verdict", "inet_proto . inet_service : verdict"
    out += [
        Map("firewall-ips", vmap3, "destinations that are subject to LoadBalancerSourceRanges"),
        Map("no-endpoint-nodeports", vmap2, "vmap to drop or reject packets to service nodeports with no endpoints"),
        Map("no-endpoint-services", vmap3, "vmap to drop or reject packets to services with no endpoints"),
        Map("service-ips", vmap3, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        Map("service-nodeports", vmap2, "NodePort traffic"),
    ]
    out += [Chain(name, typ, hook, prio) for name, typ, hook, prio in BASE_CHAINS]
    out += [Chain(name) for name in ("cluster-ips-check", "firewall-check",
                                     *(["mark-for-masquerade"] if lay.endpoint_chains else []), "masquerading",
                                     "nodeport-endpoints-check", "services", "service-endpoints-check")]  # fmt: skip
    out.append(Chain("reject-chain", comment="helper for @no-endpoint-services / @no-endpoint-nodeports"))
    out += [Rule(src, f"{match + ' ' if match else ''}jump {dst}") for dst, src, match in JUMPS]
    out += [
        Rule("cluster-ips-check", "ip6 daddr @cluster-ips reject",
             comment="Reject traffic to invalid ports of ClusterIPs"),
        Rule("cluster-ips-check", f"ip6 daddr {{ {node.service_cidr} }} drop",
             comment="Drop traffic to unallocated ClusterIPs"),
        Rule("firewall-check", "ip6 daddr . meta l4proto . th dport vmap @firewall-ips"),
    ]  # fmt: skip
    if lay.endpoint_chains:
        out += [
            Rule("mark-for-masquerade", f"mark set mark or {m}"),
            Rule("masquerading", f"mark and {m} == 0 return"),
            Rule("masquerading", f"mark set mark xor {m}"),
            Rule("masquerading", "masquerade fully-random"),
        ]
    else:  # the mark set inline, hairpin connections from their set (1.36+)
        out += [
            Rule("masquerading", f"mark and {m} != 0 mark set mark xor {m} masquerade fully-random"),
            Rule("masquerading", "ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport "
                                 "@hairpin-connections masquerade fully-random"),
        ]  # fmt: skip
        if opt.local_detector:
            out.append(Rule("services", f"ip6 daddr @cluster-ips ip6 saddr != {node.cluster_cidr} mark set mark or {m}",
                            comment="masquerade clusterIP traffic from outside cluster"))  # fmt: skip
    out += [
        Rule("reject-chain", "reject"),
        Rule("services", "ip6 daddr . meta l4proto . th dport vmap @service-ips"),
        Rule("service-endpoints-check", "ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services"),
    ]
    nodeports = "ip6 daddr != ::1" if match_all else "ip6 daddr @nodeport-ips"
    out += [
        Rule("services", f"{'fib daddr type local ' if match_all else ''}{nodeports} meta l4proto . th dport vmap "
                         "@service-nodeports"),
        Rule("nodeport-endpoints-check", f"{nodeports} meta l4proto . th dport vmap @no-endpoint-nodeports"),
    ]  # fmt: skip
    return out if match_all else [*out, Element("nodeport-ips", (node.ip,))]


def _service(sp: ServicePort, lay: Layout, opt: Options, node: Node) -> list[NftObject]:
    """syncProxyRules for one service port: its chains, its elements in the shared maps, its rules."""
    base = chain_base(sp)
    svc, loc, ext = f"service-{base}", f"local-{base}", f"external-{base}"
    spn, proto, pod, chains = sp.name_string, sp.protocol, node.cluster_cidr, lay.endpoint_chains
    verdict = ("drop",) if sp.has_endpoints else ("goto reject-chain",)
    out: list[NftObject] = [Chain(endpoint_chain(sp, ep.ip, ep.port)) for ep in sp.reachable_endpoints if chains]
    out += [Chain(c) for c, used in ((svc, sp.uses_cluster_policy), (loc, sp.uses_local_policy),
                                     (ext, sp.uses_external_chain)) if used]  # fmt: skip
    out.append(Element("cluster-ips", (sp.cluster_ip,)))
    key = (sp.cluster_ip, proto, str(sp.port))
    if sp.has_internal_endpoints:
        out.append(Element("service-ips", key, (f"goto {loc if sp.internal_local else svc}",)))
    else:
        out.append(Element("no-endpoint-services", key, verdict, spn))
    if sp.node_port:
        if sp.has_endpoints:
            out.append(Element("service-nodeports", (proto, str(sp.node_port)), (f"goto {ext}",)))
        if not sp.has_external_endpoints:
            out.append(Element("no-endpoint-nodeports", (proto, str(sp.node_port)), verdict, spn))
    if sp.has_internal_endpoints and opt.local_detector and chains:
        out.append(Rule(loc if sp.internal_local else svc,
                        f"ip6 daddr {sp.cluster_ip} ip6 saddr != {pod} jump mark-for-masquerade"))  # fmt: skip
    masq = "jump mark-for-masquerade" if chains else f"mark set mark or {opt.mark}"
    if sp.uses_external_chain:
        if not sp.external_local:  # then "anything else falls thru" to the policy chain, once, below
            out.append(Rule(ext, masq, comment=None if chains else "masquerade"))
        else:
            if opt.local_detector:
                out.append(Rule(ext, f"ip6 saddr {pod} goto {svc}", comment="short-circuit pod traffic"))
            out.append(Rule(ext, f"fib saddr type local {masq}", comment="masquerade local traffic"))
            out.append(Rule(ext, f"fib saddr type local goto {svc}", comment="short-circuit local traffic"))
        if sp.has_external_endpoints:
            out.append(Rule(ext, f"goto {loc if sp.external_local else svc}"))
    for chain, eps, used in ((svc, sp.cluster_endpoints, sp.uses_cluster_policy),
                             (loc, sp.local_endpoints, sp.uses_local_policy)):  # fmt: skip
        if used:
            out.append(_pick(sp, chain, eps, lay))
    for ep in sp.reachable_endpoints:
        if chains:
            ech = endpoint_chain(sp, ep.ip, ep.port)
            out += [Rule(ech, f"ip6 saddr {ep.ip} jump mark-for-masquerade"),
                    Rule(ech, f"meta l4proto {proto} dnat to {ep}")]  # fmt: skip
        elif ep in sp.local_endpoints:  # an endpoint that reaches its own Service is masqueraded (1.36+)
            out.append(Element("hairpin-connections", (ep.ip, ep.ip, proto, str(ep.port))))
    return out


def _pick(sp: ServicePort, chain: str, eps: Sequence[Backend], lay: Layout) -> Rule:
    """The rule of a policy chain (service-, local-) that sends a connection to one of `eps`."""
    if lay.endpoint_chains:  # writeServiceToEndpointRules (1.35)
        return Rule(chain, "", RandomMap(tuple(f"goto {endpoint_chain(sp, e.ip, e.port)}" for e in eps), True))
    if len(eps) == 1 and lay.single_endpoint_dnat:  # writeServiceToEndpointDNATs, one endpoint (1.37)
        return Rule(chain, f"meta l4proto {sp.protocol} dnat to {eps[0]}")
    return Rule(chain, f"meta l4proto {sp.protocol} dnat ip6 addr . port to",  # writeServiceToEndpointDNATs (1.36+)
                RandomMap(tuple(f"{e.ip} . {e.port}" for e in eps), False))  # fmt: skip


def objects(ports: Sequence[ServicePort], node: Node, opt: Options | None = None) -> list[NftObject]:
    """Every object of kube-proxy's table after a full sync, in the order kube-proxy adds them."""
    opt = opt or Options()
    if opt.nodeport_addresses not in ("all", "primary"):
        raise ValueError(f"nodeport_addresses must be all or primary, got {opt.nodeport_addresses!r}")
    lay = layout(opt.version)
    return [*_setup(lay, opt, node), *(o for sp in ports for o in _service(sp, lay, opt, node))]


def render(ports: Sequence[ServicePort], node: Node, opt: Options | None = None) -> Ruleset:
    """A full sync: every object added."""
    return Ruleset(tuple(objects(ports, node, opt)))


def _chain_owners(ports: Sequence[ServicePort], lay: Layout) -> dict[str, tuple[str, str]]:
    """Every per-service chain name (whether the layout uses it or not) -> its Service's (namespace, name).
    Upstream tells them by the "/" in their names (isServiceChainName)."""
    out: dict[str, tuple[str, str]] = {}
    for sp in ports:
        base = chain_base(sp)
        for prefix in ("service-", "local-", "external-"):
            out[prefix + base] = (sp.namespace, sp.name)
        for ep in sp.endpoints if lay.endpoint_chains else ():
            out[endpoint_chain(sp, ep.ip, ep.port)] = (sp.namespace, sp.name)
    return out


def render_partial(before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node,
                   opt: Options | None = None) -> Ruleset:  # fmt: skip
    """kube-proxy's transaction for the sync after one change (syncProxyRules, `skipServiceUpdate` false only
    for the changed Services): each chain of a changed Service added, flushed and its rules written again
    (`ensureChain`); map and set elements written only where they differ from the kernel's (`ensureElem`:
    an element that changed value is deleted and added); the chains of a removed Service or endpoint
    flushed (`staleChains`: deleted in a later sync's transaction, at least a second on, which is not part
    of the change); elements that are left over deleted by key. Nothing is flushed or re-added for the
    unchanged Services, and nothing table-wide: that happens only on a full sync (`setupNFTables`).

    The two full syncs are compared as records: chains by name, elements by set and key, then by value."""
    opt = opt or Options()
    changed, lay = changed_services(before, after), layout(opt.version)
    old, new = objects(before, node, opt), objects(after, node, opt)
    owners = {**_chain_owners(before, lay), **_chain_owners(after, lay)}

    def declared(objs: list[NftObject]) -> list[str]:
        return [o.name for o in objs if isinstance(o, Chain) and o.name in owners]

    def elements(objs: list[NftObject]) -> dict[tuple[str, tuple[str, ...]], Element]:
        return {o.ident: o for o in objs if isinstance(o, Element)}

    now = declared(new)
    live, rewrite = set(now), [c for c in now if owners[c] in changed]
    ops: list[Item] = [x for c in rewrite for x in (Chain(c), Op("flush", Chain(c)))]
    old_el, new_el = elements(old), elements(new)
    for ident, el in new_el.items():
        was = old_el.get(ident)
        if was is not None and was != el:
            ops.append(Op("delete", el))
        if was != el:
            ops.append(el)
    rewritten = set(rewrite)
    ops += [o for o in new if isinstance(o, Rule) and o.chain in rewritten]
    ops += [Op("flush", Chain(c)) for c in declared(old) if c not in live]
    ops += [Op("delete", el) for ident, el in old_el.items() if ident not in new_el]
    return Ruleset(tuple(ops))


class NftablesDatapath(Datapath):
    """kube-proxy nftables mode.

    What is atomic, exactly: a ruleset without anonymous maps (1.37's single-endpoint Services;
    `Ruleset.atomic`) replaces the old table in one `nft -f` transaction (``add table``, ``delete
    table``, the new table), as kube-proxy syncs in one transaction, so no packet sees a node without
    rules or with half of them. A ruleset with anonymous maps (1.35, 1.36, or Services with several
    endpoints) is applied in two: the old table is deleted first, in a transaction of its own, and for
    the milliseconds between the two the node has no service rules; in one transaction the kernel would
    walk the old table's thousands of sets for every new one (``nf_tables_set_alloc_name``).
    """

    name = "nftables"
    tools = ("nft",)
    nft_tables = ("ip6 kube-proxy",)

    def __init__(self, options: Options | None = None, version: str | None = None):
        self.options = options or Options(version=version or DEFAULT_VERSION)

    def render(self, ports: Sequence[ServicePort], node: Node) -> Ruleset:
        return render(ports, node, self.options)

    def apply(self, host: Host, rendered: object, node: Node) -> int:
        assert isinstance(rendered, Ruleset)
        if rendered.atomic:  # one transaction; `add table` first, so that the delete finds a table on a clean node
            replace = nft_input(TABLE, (Table(), Op("delete", Table())))
            host.run(["nft", "-f", "-"], input=replace + rendered.text, timeout=600)
        else:  # anonymous maps: the old table goes in a transaction of its own
            self.clear(host, node)
            host.run(["nft", "-f", "-"], input=rendered.text, timeout=600)
        return len(rendered.ops)

    def render_change(self, before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node) -> Ruleset:
        return render_partial(before, after, node, self.options)

    def apply_change(self, host: Host, rendered: object, node: Node) -> Applied:
        """The partial sync's one transaction (`proxier.nftables.Run(ctx, tx)`: knftables runs `nft -f -`)."""
        assert isinstance(rendered, Ruleset)
        host.run(["nft", "-f", "-"], input=rendered.text, timeout=600)
        return Applied(len(rendered.ops))

    def clear(self, host: Host, node: Node) -> None:
        host.run(["nft", "delete", "table", *self.nft_tables[0].split()], check=False)
