"""The datapaths the lab models, in one table: name, family, the releases each models and the behaviour that
differs between them, the tools it needs, and its figure style.

This is pure data, so that every layer can read it (plans, the command line, figures, claims, SRv6 notes,
bench); `labtools.datapaths` attaches a factory to each entry (`labtools.datapaths.FACTORIES`). The order of
`REGISTRY` is the order in which tables and figures list the datapaths. A name that is not in the table is an
error (`spec()`, `ordered()`), never silently dropped.

Adding a datapath: an entry here, a factory in `labtools.datapaths` (see the README, "Adding a datapath").
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from labtools.base.errors import LabError


class Family(StrEnum):
    """Which Kubernetes component a datapath models."""

    KUBE_PROXY = "kube-proxy"
    CILIUM_LIKE = "cilium-like"
    NONE = "none"  # no service datapath: the baseline


class Behaviour(StrEnum):
    """What a modelled release does differently from the others of its datapath."""

    # kube-proxy's nftables layout (kubernetes pkg/proxy/nftables/proxier.go)
    ENDPOINT_CHAINS = "an endpoint chain and a verdict map per Service"  # 1.35
    DNAT_MAP = "DNAT from a map, no endpoint chains"  # 1.36: the masquerading rework
    SINGLE_ENDPOINT_DNAT = "DNAT from a map; a single endpoint without a map"  # 1.37
    # Cilium's service lookup (bpf/lib/lb.h)
    ANY_PROTOCOL = "a NodePort answers every L4 protocol"  # before 1.17: lb6_key.proto is 0
    PER_PROTOCOL = "Services are keyed by their L4 protocol"  # 1.17: --bpf-lb-proto-diff


@dataclass(frozen=True)
class Release:
    version: str  # MAJOR.MINOR of the upstream release
    behaviour: Behaviour


@dataclass(frozen=True)
class Style:
    """How figures draw a datapath: colour (Okabe-Ito, safe for colour-blind readers), marker, line style."""

    color: str
    marker: str
    ls: str = "-"


@dataclass(frozen=True)
class DatapathSpec:
    name: str
    family: Family
    tools: tuple[str, ...]  # on the worker, besides what every switch needs (`SWITCH_TOOLS`)
    style: Style
    releases: tuple[Release, ...] = ()  # oldest first; the newest is the default
    release_param: str | None = None  # the run parameter that picks the release (`RELEASE_PARAMS`)
    later_releases: bool = False  # a release newer than the newest modelled behaves as the newest
    description: str = ""

    @property
    def versions(self) -> tuple[str, ...]:
        return tuple(r.version for r in self.releases)

    @property
    def default_release(self) -> str | None:
        return self.releases[-1].version if self.releases else None

    def release(self, version: str | None) -> Release | None:
        """The modelled release `version` (None: the default) stands for; an error when it is not modelled."""
        if not self.releases:
            if version is not None:
                raise LabError(f"{self.name} models no releases: name it without a release (got {version!r})")
            return None
        if version is None:
            return self.releases[-1]
        for r in self.releases:
            if r.version == version:
                return r
        if self.later_releases:
            return self._later(version)
        raise LabError(f"{self.name}: release {version} is not modelled: choose one of {', '.join(self.versions)}")

    def _later(self, version: str) -> Release:
        try:
            major, minor = (int(x) for x in str(version).split(".")[:2])
        except ValueError:
            raise LabError(f"{self.name}: release {version!r} is not MAJOR.MINOR[.PATCH] (modelled: "
                           f"{', '.join(self.versions)})") from None  # fmt: skip
        known = [(tuple(int(x) for x in r.version.split(".")), r) for r in self.releases]
        older = [r for v, r in known if v[0] == major and v <= (major, minor)]
        if not older:
            raise LabError(f"{self.name}: release {version} is not modelled: the lab models "
                           f"{', '.join(self.versions)} and later {known[0][0][0]}.x")  # fmt: skip
        return older[-1]

    def behaviour(self, version: str | None) -> Behaviour | None:
        r = self.release(version)
        return r.behaviour if r else None


# The run parameters that name releases, and what each is the release of.
KUBE_PROXY_PARAM, CILIUM_PARAM = "kube_proxy_version", "cilium_version"
RELEASE_PARAMS = (KUBE_PROXY_PARAM, CILIUM_PARAM)
# What every switch of the worker needs: both kinds of netfilter tables are cleared, conntrack flushed.
SWITCH_TOOLS = ("nft", "ip6tables-nft-restore", "ip6tables-legacy-restore", "tc", "conntrack")

_NFT_RELEASES = (Release("1.35", Behaviour.ENDPOINT_CHAINS), Release("1.36", Behaviour.DNAT_MAP),
                 Release("1.37", Behaviour.SINGLE_ENDPOINT_DNAT))  # fmt: skip
_CILIUM_RELEASES = (Release("1.13", Behaviour.ANY_PROTOCOL), Release("1.17", Behaviour.PER_PROTOCOL))

_SPECS = (
    DatapathSpec("none", Family.NONE, (), Style("0.45", "s", ":"), description="no service rules (the baseline)"),
    DatapathSpec("iptables", Family.KUBE_PROXY, ("ip6tables-nft-restore",), Style("#D55E00", "o"),
                 description="kube-proxy's iptables mode, iptables-nft backend"),
    DatapathSpec("iptables-legacy", Family.KUBE_PROXY, ("ip6tables-legacy-restore",), Style("#E69F00", "v"),
                 description="kube-proxy's iptables mode, legacy x_tables backend"),
    DatapathSpec("nftables", Family.KUBE_PROXY, ("nft",), Style("#0072B2", "^"), _NFT_RELEASES, KUBE_PROXY_PARAM,
                 description="kube-proxy's nftables mode, in the rule layout of the release"),
    DatapathSpec("ebpf", Family.CILIUM_LIKE, ("tc",), Style("#009E73", "D"), _CILIUM_RELEASES, CILIUM_PARAM,
                 later_releases=True, description="a tc eBPF NodePort datapath modelled on Cilium's"),
)  # fmt: skip
REGISTRY: dict[str, DatapathSpec] = {s.name: s for s in _SPECS}
NAMES: tuple[str, ...] = tuple(REGISTRY)
DEFAULT_KUBE_PROXY = REGISTRY["nftables"].default_release
DEFAULT_CILIUM = REGISTRY["ebpf"].default_release
# A release's line style where two releases of one datapath share a figure (bench: nftables@1.35 beside 1.37).
OLDER_RELEASE_LS = "--"


def spec(name: str) -> DatapathSpec:
    """The registry's entry for `name`, or an error that lists the known datapaths."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise LabError(f"unknown datapath {name!r}: choose one of {', '.join(NAMES)}") from None


def check(names: Iterable[str]) -> list[str]:
    """`names` as a list, or an error naming every unknown one."""
    names = list(names)
    bad = [n for n in names if n not in REGISTRY]
    if bad:
        raise LabError(f"unknown datapath(s) {', '.join(map(repr, bad))}: choose from {', '.join(NAMES)}")
    return names


def ordered(names: Iterable[str]) -> list[str]:
    """The distinct `names` in registry order; an unknown name is an error, never dropped."""
    have = set(check(names))
    return [n for n in NAMES if n in have]


def of_family(*families: Family) -> tuple[str, ...]:
    return tuple(n for n, s in REGISTRY.items() if s.family in families)


def split_release(name: str) -> tuple[DatapathSpec, str | None]:
    """``nftables@1.35`` -> (the nftables entry, "1.35"); a name without ``@`` has no release. Checked."""
    base, at, version = name.partition("@")
    s = spec(base)
    if at:
        if not version:
            raise LabError(f"{name!r}: name a release after @ ({', '.join(s.versions) or 'none modelled'})")
        s.release(version)
    return s, (version or None)


def release_names() -> list[str]:
    """Every datapath with each release it models named: ``nftables@1.35``, ..., ``ebpf@1.17``."""
    return [f"{n}@{v}" for n, s in REGISTRY.items() for v in s.versions]


@dataclass(frozen=True)
class Releases:
    """The model releases a run programs: kube-proxy's (the nftables layout) and Cilium's (the eBPF lookup)."""

    kube_proxy_version: str = DEFAULT_KUBE_PROXY  # type: ignore[assignment]
    cilium_version: str = DEFAULT_CILIUM  # type: ignore[assignment]

    def __post_init__(self) -> None:
        for s in REGISTRY.values():
            if s.release_param:
                s.release(getattr(self, s.release_param))  # refuses an unmodelled release before anything changes

    def of(self, name: str) -> str | None:
        """The release `name` (a datapath, or ``datapath@release``) is programmed as; None if it models none."""
        s, version = split_release(name)
        if version is not None:
            return version
        return getattr(self, s.release_param) if s.release_param else None

    def as_dict(self) -> dict[str, str]:
        return {p: getattr(self, p) for p in RELEASE_PARAMS}
