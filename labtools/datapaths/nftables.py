"""kube-proxy's nftables mode for an IPv6 node: table `ip6 kube-proxy`, verdict maps, applied with `nft -f`.

Two layouts of kubernetes `pkg/proxy/nftables/proxier.go`, chosen by `Options.version` (`VERSIONS`):

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
follow `hashAndTruncate`, `servicePortChainNameBase` and `servicePortEndpointChainNameBase`; the text format
is that of sigs.k8s.io/knftables (`objects.go`). Session affinity is not modelled (the workloads have none).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from labtools.base.errors import LabError
from labtools.datapaths.base import Applied, Datapath, Node, changed_services
from labtools.datapaths.iptables import MASQUERADE_MARK
from labtools.hosts import Host
from labtools.model.services import ServicePort

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


VERSIONS = ("1.35", "1.36", "1.37")
DEFAULT_VERSION = "1.37"  # current upstream


@dataclass
class Options:
    version: str = DEFAULT_VERSION  # the kube-proxy release whose layout is rendered (VERSIONS)
    mark: str = MASQUERADE_MARK
    local_detector: bool = True  # --detect-local-mode=ClusterCIDR
    # "all": --nodeport-addresses ::/0, dispatch with `fib daddr type local` (like iptables' addrtype LOCAL).
    # "primary": kube-proxy's nftables default since v1.31: only the node IP, via the nodeport-ips set.
    nodeport_addresses: str = "all"


@dataclass
class Ruleset:
    """knftables-style lines of the final state (what kube-proxy's unit tests compare)."""

    lines: list[str]

    def transaction(self) -> str:
        return "\n".join(self.lines) + "\n"


def render(ports: Sequence[ServicePort], node: Node, opt: Options | None = None) -> Ruleset:
    opt = opt or Options()
    t, m = TABLE, opt.mark
    if opt.nodeport_addresses not in ("all", "primary"):
        raise ValueError(f"nodeport_addresses must be all or primary, got {opt.nodeport_addresses!r}")
    if opt.version not in VERSIONS:
        raise LabError(f"kube-proxy {opt.version} is not modelled: choose one of {', '.join(VERSIONS)}")
    chains = opt.version == "1.35"  # endpoint chains and mark-for-masquerade (before the 1.36 rework)
    match_all = opt.nodeport_addresses == "all"
    out = [f'add table {t} {{ comment "rules for kube-proxy" ; }}']
    out.append(f'add set {t} cluster-ips {{ type ipv6_addr ; comment "Active ClusterIPs" ; }}')
    if not chains:
        out.append(f"add set {t} hairpin-connections {{ type ipv6_addr . ipv6_addr . inet_proto . inet_service ; "
                   'comment "service hairpin connections" ; }')  # fmt: skip
    if not match_all:
        out.append(f'add set {t} nodeport-ips {{ type ipv6_addr ; comment "IPs that accept NodePort traffic" ; }}')
    vmap3, vmap2 = "ipv6_addr . inet_proto . inet_service : verdict", "inet_proto . inet_service : verdict"
    for name, typ, comment in (
        ("firewall-ips", vmap3, "destinations that are subject to LoadBalancerSourceRanges"),
        ("no-endpoint-nodeports", vmap2, "vmap to drop or reject packets to service nodeports with no endpoints"),
        ("no-endpoint-services", vmap3, "vmap to drop or reject packets to services with no endpoints"),
        ("service-ips", vmap3, "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
        ("service-nodeports", vmap2, "NodePort traffic"),
    ):
        out.append(f'add map {t} {name} {{ type {typ} ; comment "{comment}" ; }}')
    for name, typ, hook, prio in BASE_CHAINS:
        out.append(f"add chain {t} {name} {{ type {typ} hook {hook} priority {prio} ; }}")
    for name in ("cluster-ips-check", "firewall-check", *(["mark-for-masquerade"] if chains else []), "masquerading",
                 "nodeport-endpoints-check", "services", "service-endpoints-check"):  # fmt: skip
        out.append(f"add chain {t} {name}")
    out.append(
        f'add chain {t} reject-chain {{ comment "helper for @no-endpoint-services / @no-endpoint-nodeports" ; }}'
    )
    for dst, src, match in JUMPS:
        out.append(f"add rule {t} {src} {match + ' ' if match else ''}jump {dst}")
    out += [
        f'add rule {t} cluster-ips-check ip6 daddr @cluster-ips reject comment "Reject traffic to invalid ports of '
        'ClusterIPs"',
        f"add rule {t} cluster-ips-check ip6 daddr {{ {node.service_cidr} }} drop comment "
        '"Drop traffic to unallocated ClusterIPs"',
        f"add rule {t} firewall-check ip6 daddr . meta l4proto . th dport vmap @firewall-ips",
    ]
    if chains:
        out += [
            f"add rule {t} mark-for-masquerade mark set mark or {m}",
            f"add rule {t} masquerading mark and {m} == 0 return",
            f"add rule {t} masquerading mark set mark xor {m}",
            f"add rule {t} masquerading masquerade fully-random",
        ]
    else:  # the mark set inline, hairpin connections from their set (setupNFTables, 1.36+)
        out += [
            f"add rule {t} masquerading mark and {m} != 0 mark set mark xor {m} masquerade fully-random",
            f"add rule {t} masquerading ct status dnat ip6 saddr . ip6 daddr . meta l4proto . th dport "
            "@hairpin-connections masquerade fully-random",
        ]
        if opt.local_detector:
            out.append(f"add rule {t} services ip6 daddr @cluster-ips ip6 saddr != {node.cluster_cidr} mark set mark "
                       f'or {m} comment "masquerade clusterIP traffic from outside cluster"')  # fmt: skip
    out += [
        f"add rule {t} reject-chain reject",
        f"add rule {t} services ip6 daddr . meta l4proto . th dport vmap @service-ips",
        f"add rule {t} service-endpoints-check ip6 daddr . meta l4proto . th dport vmap @no-endpoint-services",
    ]
    if match_all:
        out += [
            f"add rule {t} services fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap "
            "@service-nodeports",
            f"add rule {t} nodeport-endpoints-check ip6 daddr != ::1 meta l4proto . th dport vmap "
            "@no-endpoint-nodeports",
        ]
    else:
        out += [
            f"add rule {t} services ip6 daddr @nodeport-ips meta l4proto . th dport vmap @service-nodeports",
            f"add rule {t} nodeport-endpoints-check ip6 daddr @nodeport-ips meta l4proto . th dport vmap "
            "@no-endpoint-nodeports",
            f"add element {t} nodeport-ips {{ {node.ip} }}",
        ]
    pod = node.cluster_cidr
    for sp in ports:
        base = chain_base(sp)
        svc, loc, ext = f"service-{base}", f"local-{base}", f"external-{base}"
        spn, proto = sp.name_string, sp.protocol
        has_eps, has_internal, has_external = sp.has_endpoints, sp.has_internal_endpoints, sp.has_external_endpoints
        uses_ext = sp.uses_external_chain
        verdict = "drop" if has_eps else "goto reject-chain"
        for ep in sp.reachable_endpoints if chains else ():
            out.append(f"add chain {t} {endpoint_chain(sp, ep.ip, ep.port)}")
        if sp.uses_cluster_policy:
            out.append(f"add chain {t} {svc}")
        if sp.uses_local_policy:
            out.append(f"add chain {t} {loc}")
        if uses_ext:
            out.append(f"add chain {t} {ext}")
        out.append(f"add element {t} cluster-ips {{ {sp.cluster_ip} }}")
        key = f"{sp.cluster_ip} . {proto} . {sp.port}"
        if has_internal:
            out.append(f"add element {t} service-ips {{ {key} : goto {loc if sp.internal_local else svc} }}")
        else:
            out.append(f'add element {t} no-endpoint-services {{ {key} comment "{spn}" : {verdict} }}')
        if sp.node_port:
            if has_eps:
                out.append(f"add element {t} service-nodeports {{ {proto} . {sp.node_port} : goto {ext} }}")
            if not has_external:
                out.append(f'add element {t} no-endpoint-nodeports {{ {proto} . {sp.node_port} comment "{spn}" : '
                           f"{verdict} }}")  # fmt: skip
        if has_internal and opt.local_detector and chains:
            out.append(f"add rule {t} {loc if sp.internal_local else svc} ip6 daddr {sp.cluster_ip} "
                       f"ip6 saddr != {pod} jump mark-for-masquerade")  # fmt: skip
        masq = "jump mark-for-masquerade" if chains else f"mark set mark or {m}"
        if uses_ext:
            if not sp.external_local:  # then "anything else falls thru" to the policy chain, once, below
                out.append(f"add rule {t} {ext} {masq}" + ("" if chains else ' comment "masquerade"'))
            else:
                if opt.local_detector:
                    out.append(f'add rule {t} {ext} ip6 saddr {pod} goto {svc} comment "short-circuit pod traffic"')
                out.append(f'add rule {t} {ext} fib saddr type local {masq} comment "masquerade local traffic"')
                out.append(f'add rule {t} {ext} fib saddr type local goto {svc} comment "short-circuit local traffic"')
            if has_external:
                out.append(f"add rule {t} {ext} goto {loc if sp.external_local else svc}")
        for chain, eps, used in ((svc, sp.cluster_endpoints, sp.uses_cluster_policy),
                                 (loc, sp.local_endpoints, sp.uses_local_policy)):  # fmt: skip
            if not used:
                continue
            if chains:  # writeServiceToEndpointRules (1.35)
                vmap = " , ".join(f"{i} : goto {endpoint_chain(sp, e.ip, e.port)}" for i, e in enumerate(eps))
                out.append(f"add rule {t} {chain} numgen random mod {len(eps)} vmap {{ {vmap} }}")
            elif len(eps) == 1 and opt.version != "1.36":  # writeServiceToEndpointDNATs, one endpoint (1.37)
                out.append(f"add rule {t} {chain} meta l4proto {proto} dnat to {eps[0]}")
            else:  # writeServiceToEndpointDNATs (1.36+)
                pairs = " , ".join(f"{i} : {e.ip} . {e.port}" for i, e in enumerate(eps))
                out.append(f"add rule {t} {chain} meta l4proto {proto} dnat ip6 addr . port to numgen random mod "
                           f"{len(eps)} map {{ {pairs} }}")  # fmt: skip
        for ep in sp.reachable_endpoints:
            if chains:
                ech = endpoint_chain(sp, ep.ip, ep.port)
                out.append(f"add rule {t} {ech} ip6 saddr {ep.ip} jump mark-for-masquerade")
                out.append(f"add rule {t} {ech} meta l4proto {proto} dnat to {ep}")
            elif ep in sp.local_endpoints:  # an endpoint that reaches its own Service is masqueraded (1.36+)
                out.append(f"add element {t} hairpin-connections {{ {ep.ip} . {ep.ip} . {proto} . {ep.port} }}")
    return Ruleset(out)


SERVICE_CHAIN_PREFIXES = ("service-", "local-", "external-", "endpoint-", "firewall-")  # isServiceChainName


def _chain_owners(ports: Sequence[ServicePort], opt: Options) -> dict[str, tuple[str, str]]:
    """Every per-service chain name (whether the layout uses it or not) -> its Service's (namespace, name)."""
    out: dict[str, tuple[str, str]] = {}
    for sp in ports:
        base = chain_base(sp)
        for prefix in ("service-", "local-", "external-"):
            out[prefix + base] = (sp.namespace, sp.name)
        for ep in sp.endpoints if opt.version == "1.35" else ():
            out[endpoint_chain(sp, ep.ip, ep.port)] = (sp.namespace, sp.name)
    return out


def _element(line: str) -> tuple[str, str]:
    """(set, key) of an `add element T SET { KEY [comment "…"] [: VALUE] }` line."""
    head, _, body = line.partition(" { ")
    body = body.removesuffix(" }")
    key = body.split(" comment ")[0].split(" : ")[0]
    return head.split()[-1], key


def render_partial(before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node,
                   opt: Options | None = None) -> Ruleset:  # fmt: skip
    """kube-proxy's transaction for the sync after one change (syncProxyRules, `skipServiceUpdate` false only
    for the changed Services): each chain of a changed Service added, flushed and its rules written again
    (`ensureChain`); map and set elements written only where they differ from the kernel's (`ensureElem`:
    an element that changed value is deleted and added); the chains of a removed Service or endpoint
    flushed (`staleChains`: deleted in a later sync's transaction, at least a second on, which is not part
    of the change); elements that are left over deleted by key. Nothing is flushed or re-added for the
    unchanged Services, and nothing table-wide: that happens only on a full sync (`setupNFTables`)."""
    opt = opt or Options()
    t = TABLE
    changed = changed_services(before, after)
    old, new = render(before, node, opt).lines, render(after, node, opt).lines
    owners = {**_chain_owners(before, opt), **_chain_owners(after, opt)}

    def declared(lines: list[str]) -> list[str]:
        return [x.split()[4] for x in lines if x.startswith(f"add chain {t} ") and x.split()[4] in owners]

    def elements(lines: list[str]) -> dict[tuple[str, str], str]:
        return {_element(x): x for x in lines if x.startswith(f"add element {t} ")}

    now = declared(new)
    live = set(now)
    rewrite = [c for c in now if owners[c] in changed]
    out = [line for c in rewrite for line in (f"add chain {t} {c}", f"flush chain {t} {c}")]
    old_el, new_el = elements(old), elements(new)
    for key, line in new_el.items():
        if key in old_el and old_el[key] != line:
            out.append(f"delete element {t} {key[0]} {{ {key[1]} }}")
        if old_el.get(key) != line:
            out.append(line)
    rewritten = set(rewrite)
    out += [x for x in new if x.startswith(f"add rule {t} ") and x.split()[4] in rewritten]
    out += [f"flush chain {t} {c}" for c in declared(old) if c not in live]
    out += [f"delete element {t} {s} {{ {k} }}" for s, k in old_el if (s, k) not in new_el]
    return Ruleset(out)


class NftablesDatapath(Datapath):
    """kube-proxy nftables mode.

    What is atomic, exactly: a ruleset without anonymous sets (1.37's single-endpoint Services) replaces
    the old table in one `nft -f` transaction (``add table``, ``delete table``, the new table), as
    kube-proxy syncs in one transaction, so no packet sees a node without rules or with half of them. A
    ruleset with anonymous sets (1.35, 1.36, or Services with several endpoints) is applied in two: the
    old table is deleted first, in a transaction of its own, and for the milliseconds between the two the
    node has no service rules; in one transaction the kernel would walk the old table's thousands of
    sets for every new one (``nf_tables_set_alloc_name``).
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
        text = rendered.transaction()
        if "numgen random" in text:  # anonymous sets: the old table goes in a transaction of its own
            self.clear(host, node)
            host.run(["nft", "-f", "-"], input=text, timeout=600)
        else:  # one transaction; `add table` first, so that the delete finds a table even on a clean node
            host.run(["nft", "-f", "-"], input=f"add table {TABLE}\ndelete table {TABLE}\n{text}", timeout=600)
        return len(rendered.lines)

    def render_change(self, before: Sequence[ServicePort], after: Sequence[ServicePort], node: Node) -> Ruleset:
        return render_partial(before, after, node, self.options)

    def apply_change(self, host: Host, rendered: object, node: Node) -> Applied:
        """The partial sync's one transaction (`proxier.nftables.Run(ctx, tx)`: knftables runs `nft -f -`)."""
        assert isinstance(rendered, Ruleset)
        host.run(["nft", "-f", "-"], input=rendered.transaction(), timeout=600)
        return Applied(len(rendered.lines))

    def clear(self, host: Host, node: Node) -> None:
        host.run(["nft", "delete", "table", *self.nft_tables[0].split()], check=False)
