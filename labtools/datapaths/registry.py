"""The registry's factories: how each datapath of `labtools.model.datapaths.REGISTRY` is built.

The table itself (names, families, releases, tools, figure styles) is pure data in the model layer, so that
outputs can read it; this module attaches what builds a datapath object, and is the only place that does.
"""

from __future__ import annotations

from collections.abc import Callable

from labtools.datapaths.base import Datapath
from labtools.datapaths.ebpf import EbpfDatapath
from labtools.datapaths.iptables import IptablesDatapath
from labtools.datapaths.nftables import NftablesDatapath
from labtools.model import datapaths as registry
from labtools.model.datapaths import Releases

# name -> factory(release or None) -> the datapath (None: no service datapath)
Factory = Callable[[str | None], Datapath | None]
FACTORIES: dict[str, Factory] = {
    "none": lambda release: None,
    "iptables": lambda release: IptablesDatapath("nft"),
    "iptables-legacy": lambda release: IptablesDatapath("legacy"),
    "nftables": lambda release: NftablesDatapath(version=release),
    "ebpf": lambda release: EbpfDatapath(release or registry.DEFAULT_CILIUM),
}


def get(name: str, *, cilium_version: str | None = None, kube_proxy_version: str | None = None,
        releases: Releases | None = None) -> Datapath | None:  # fmt: skip
    """The datapath called `name` (``nftables@1.35`` names the release too); None for "none".

    The release comes from the name, else from `releases`, else from `cilium_version` / `kube_proxy_version`,
    else the newest modelled. An unknown name or release is an error."""
    spec, version = registry.split_release(name)
    if version is None and spec.release_param:
        given = {registry.CILIUM_PARAM: cilium_version, registry.KUBE_PROXY_PARAM: kube_proxy_version}
        version = getattr(releases, spec.release_param) if releases else given[spec.release_param]
    spec.release(version)  # refuses what is not modelled
    try:
        factory = FACTORIES[spec.name]
    except KeyError:
        raise NotImplementedError(f"datapath {spec.name!r} is in the registry but has no factory") from None
    return factory(version)


def all_datapaths() -> list[Datapath]:
    """One object of every datapath that programs anything (to clear them all)."""
    return [d for d in (get(n) for n in registry.NAMES) if d is not None]
