"""The datapath registry: one table, every entry with a factory and a figure style, and an unknown name an error
wherever a list of datapaths is read (plans, figures, bench, SRv6 notes)."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from labtools import datapaths
from labtools.base.errors import LabError
from labtools.datapaths import srv6
from labtools.model import datapaths as registry
from labtools.model import plan as plan_
from labtools.model.datapaths import Behaviour, Family, Releases
from labtools.outputs import benchview, verdicts

COLOUR = re.compile(r"^(#[0-9A-Fa-f]{6}|0\.\d+)$")  # a hex colour, or a grey level


def test_every_entry_has_a_family_style_factory_and_its_tools():
    assert registry.NAMES[:5] == ("none", "iptables", "iptables-legacy", "nftables", "ebpf")
    assert set(datapaths.FACTORIES) == set(registry.REGISTRY)
    for name, spec in registry.REGISTRY.items():
        assert isinstance(spec.family, Family)
        assert COLOUR.match(spec.style.color) and spec.style.marker and spec.style.ls, name
        dp = datapaths.get(name)
        if spec.family is Family.NONE:
            assert dp is None
            continue
        assert dp.name == name and tuple(dp.tools) == spec.tools, name  # `Datapath.tools` says what the table says
    styles = [(s.style.color, s.style.marker) for s in registry.REGISTRY.values()]
    assert len(set(styles)) == len(styles)  # no two datapaths drawn alike
    assert {n: s.style.color for n, s in registry.REGISTRY.items()} == verdicts.PALETTE


def test_releases_are_records_of_behaviour_not_booleans():
    nft, cilium = registry.spec("nftables"), registry.spec("ebpf")
    assert nft.versions == ("1.35", "1.36", "1.37") and nft.default_release == "1.37"
    assert nft.behaviour("1.35") is Behaviour.ENDPOINT_CHAINS
    assert nft.behaviour("1.37") is Behaviour.SINGLE_ENDPOINT_DNAT
    assert cilium.behaviour("1.13") is Behaviour.ANY_PROTOCOL and cilium.behaviour("1.18.2") is Behaviour.PER_PROTOCOL
    from labtools.datapaths import nftables

    assert nft.versions == nftables.VERSIONS and nft.default_release == nftables.DEFAULT_VERSION
    with pytest.raises(LabError, match="not modelled"):
        nft.release("1.34")  # nftables does not extrapolate
    with pytest.raises(LabError, match="models no releases"):
        registry.split_release("iptables@1.30")
    with pytest.raises(LabError, match="not modelled"):
        Releases(cilium_version="1.12")
    assert Releases().of("nftables") == "1.37" and Releases().of("nftables@1.35") == "1.35"
    assert Releases().of("iptables") is None
    assert datapaths.get("nftables@1.35").options.version == "1.35"
    assert datapaths.get("ebpf", releases=Releases(cilium_version="1.13")).cilium_version == "1.13"


def test_an_unknown_datapath_is_an_error_everywhere():
    with pytest.raises(LabError, match="ipvs"):
        plan_.Plan("r", ["iptables", "ipvs"], [1], ["crr"], ["pod"])
    with pytest.raises(LabError, match="ipvs"):
        datapaths.get("ipvs")
    df = pd.DataFrame({"datapath": ["ebpf", "none", "ipvs"]})
    with pytest.raises(LabError, match="unknown datapath"):  # not silently left out of a figure
        verdicts.order(df)
    assert verdicts.order(df[df.datapath != "ipvs"]) == ["none", "ebpf"]
    with pytest.raises(LabError, match="ipvs"):
        benchview.present(pd.DataFrame({"datapath": ["nftables@1.35", "ipvs"]}))
    assert benchview.present(pd.DataFrame({"datapath": ["ebpf", "nftables", "nftables@1.35"]})) == [
        "nftables@1.35", "nftables", "ebpf"]  # fmt: skip
    with pytest.raises(LabError, match="ipvs"):
        srv6.explain("none", "ipvs", "pod", True)
    assert "kube-proxy" in registry.Family.KUBE_PROXY and srv6.explain("local-sid", "iptables-legacy", "pod", True)


def test_plans_carry_the_releases_and_refuse_unmodelled_ones():
    p = plan_.Plan("r", ["nftables"], [1], ["crr"], ["pod"])
    assert (p.kube_proxy_version, p.cilium_version, p.cni) == ("1.37", "1.17", None)
    assert {"kube_proxy_version", "cilium_version", "cni"} <= set(p.as_dict())
    with pytest.raises(LabError, match="not modelled"):
        plan_.Plan("r", ["nftables"], [1], ["crr"], ["pod"], kube_proxy_version="1.99")
    with pytest.raises(LabError, match="cni"):
        plan_.Plan("r", ["nftables"], [1], ["crr"], ["pod"], cni="calico")


def test_the_switch_cycle_is_gone():
    import labtools.datapaths.switcher as switcher

    assert "labtools.datapaths.registry" in {v.__name__ for v in vars(switcher).values() if hasattr(v, "__name__")
                                             and getattr(v, "__name__", "").startswith("labtools")}  # fmt: skip
    assert "from labtools import datapaths" not in Path(switcher.__file__).read_text()
