"""What to measure: a sweep's plan, and the profiles in params/<profile>.yaml that hold them.

The vocabulary of the study lives here too (metrics, targets; the datapaths are `labtools.model.datapaths`'
registry), so that every layer above checks names against one list. The model releases (kube-proxy's nftables
layout, Cilium's lookup) and the pod attachment are parameters of a plan like any other: a resume with other
releases is refused.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pydantic
from pydantic import ConfigDict, Field
from pydantic.dataclasses import dataclass

from labtools.base import paths
from labtools.base.errors import InventoryError, LabError
from labtools.model import datapaths as registry
from labtools.model import yamlsrc
from labtools.model.topology import CNIS

DATAPATHS = registry.NAMES
METRICS = ("throughput", "crr", "udp-pps", "handshake", "transit", "probe-overhead", "change")
TARGETS = ("first", "middle", "last", "pod", "new")  # "new": the Service the `change` metric adds
# "block" (the default): a randomised complete block design. Each repeat is a block that visits every
# (N, datapath, target) cell once; the Ns of a block come in an order drawn from `order_seed`, and at each N
# the datapaths follow one another (in a drawn order) within seconds, so a drift of minutes neither turns
# into a slope in N nor into a difference between datapaths measured at the same N.
# "repeat": count > repeat > datapath, N in time order (the reference runs before 2026-12-07);
# "datapath": datapath > count > repeat, counts up for one datapath and down for the next, so a
# real cluster switches mode once per datapath and changes its Services as little as possible.
ORDERS = ("block", "repeat", "datapath")
SWEEP_NOTEBOOK = "01-scale-sweep"

Point = tuple[int, int, str, str, str]  # (count, repeat, datapath, metric, target)


@dataclass(config=ConfigDict(extra="forbid"))
class Plan:
    """One sweep: datapaths x counts x metrics x targets x repeats, in a stated order."""

    run_id: str
    datapaths: list[str]
    counts: list[int]
    metrics: list[str]
    targets: list[str] | dict[str, list[str]]  # the same for every metric, or per metric
    repeats: int = 3
    crr_transactions: int = 2000
    throughput_seconds: int = 2
    udp_packets: int = 50000
    seed: int = 0
    order: str = "block"
    order_seed: int | None = None  # "block": the seed of the drawn order; None: derived from the run id
    extra: dict[str, Any] = Field(default_factory=dict)
    kube_proxy_version: str = registry.DEFAULT_KUBE_PROXY  # the nftables layout programmed
    cilium_version: str = registry.DEFAULT_CILIUM  # the Cilium release the ebpf datapath models
    cni: str | None = None  # the pod attachment the run needs (None: the lab's, recorded when the run starts)

    def __post_init__(self) -> None:
        if self.order == "block" and self.order_seed is None:  # recorded, so a resume draws the same order
            self.order_seed = seed_of(self.run_id)
        self.validate()

    def validate(self) -> None:
        paths.check_run_id(self.run_id)
        bad = [d for d in self.datapaths if d not in registry.REGISTRY]
        bad += [m for m in self.metrics if m not in METRICS]
        bad += [t for m in self.metrics for t in self.targets_of(m) if t not in TARGETS]
        if isinstance(self.targets, dict):
            bad += [f"{m} (in targets, not in metrics)" for m in self.targets if m not in self.metrics]
        bad += [f"{m} at {t} (the change metric has the target new, and only it)" for m in self.metrics
                for t in self.targets_of(m) if (m == "change") != (t == "new")]  # fmt: skip
        if bad:
            raise LabError(f"unknown datapath/metric/target: {', '.join(bad)}")
        self.releases()  # an unmodelled release is refused
        if self.cni is not None and self.cni not in CNIS:
            raise LabError(f"cni must be one of {', '.join(CNIS)}, got {self.cni!r}")
        if not self.datapaths or not self.metrics:
            raise LabError("a plan needs at least one datapath and one metric")
        if self.repeats < 1 or not self.counts or min(self.counts) < 1:
            raise LabError("repeats and every count must be at least 1")
        for name in ("crr_transactions", "throughput_seconds", "udp_packets"):
            if getattr(self, name) < 1:
                raise LabError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.order not in ORDERS:
            raise LabError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")

    def releases(self) -> registry.Releases:
        return registry.Releases(kube_proxy_version=self.kube_proxy_version, cilium_version=self.cilium_version)

    def targets_of(self, metric: str) -> list[str]:
        return list(self.targets.get(metric, [])) if isinstance(self.targets, dict) else list(self.targets)

    def points(self) -> list[Point]:
        """(count, repeat, datapath, metric, target) in measuring order (see ORDERS); `none` is measured at the
        pod only, and has no Service to change."""
        if self.order == "block":
            outer = block_order(self.counts, self.datapaths, self.repeats, self.order_seed)
        elif self.order == "repeat":
            outer = [(c, r, d) for c in self.counts for r in range(self.repeats) for d in self.datapaths]
        else:
            snake = [(d, self.counts if i % 2 == 0 else self.counts[::-1]) for i, d in enumerate(self.datapaths)]
            outer = [(c, r, d) for d, counts in snake for c in counts for r in range(self.repeats)]
        return [
            (c, r, d, m, t)
            for c, r, d in outer
            for m in self.metrics
            if not (d == "none" and m == "change")
            for t in (["pod"] if d == "none" else self.targets_of(m))
        ]

    def as_dict(self) -> dict[str, Any]:
        """The plan's parameters; `order_seed` only where the order uses it (runs before it had none)."""
        d = pydantic.RootModel[Plan](self).model_dump()
        if d["order_seed"] is None:
            del d["order_seed"]
        return d


def seed_of(run_id: str) -> int:
    """The order seed a run takes when none is given: fixed by its id, so a resume draws the same order."""
    return zlib.crc32(run_id.encode())


def block_order(counts: Sequence[int], datapaths: Sequence[str], repeats: int, seed: int) -> list[tuple[int, int, str]]:
    """(count, repeat, datapath) as randomised complete blocks: each repeat visits every count once in an order
    drawn from (`seed`, repeat), and at each count every datapath, one after the other, in a drawn order."""
    out = []
    for r in range(repeats):
        rng = np.random.default_rng([seed, r])
        for c in rng.permutation(list(counts)):
            out += [(int(c), r, str(d)) for d in rng.permutation(list(datapaths))]
    return out


def point_key(c: int, r: int, d: str, m: str, t: str) -> str:
    return f"n{c:05d}-r{r}-{d}-{m}-{t}"


def profile_path(profile: str) -> Path:
    path = paths.params_dir() / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in paths.params_dir().glob("*.yaml")))
        raise LabError(f"no profile {profile!r}: {path} does not exist (profiles: {known})")
    return path


def load_profile(profile: str) -> dict:
    """params/<profile>.yaml: the papermill parameters of every notebook, by notebook."""
    return yamlsrc.load(profile_path(profile), "profile") or {}


def profile_params(profile: str, notebook: str = SWEEP_NOTEBOOK) -> dict:
    """The parameters of `notebook` in params/<profile>.yaml."""
    params = load_profile(profile)
    if notebook not in params:
        raise LabError(f"{profile_path(profile)} has no section {notebook!r}")
    return params[notebook]


def plans(sweeps: dict[str, dict], run_id: str, source: str | None = None) -> list[Plan]:
    """One Plan per named sweep (run id `<run_id>-<name>`), from a profile's `sweeps` section.

    Errors name the sweep, the field and, when the sweeps came from a file (`source`), its line.
    """
    out = []
    for name, spec in sweeps.items():
        try:
            out.append(Plan(run_id=f"{run_id}-{name}", **spec))
        except pydantic.ValidationError as e:
            err = e.errors()[0]
            field = ".".join(str(p) for p in err["loc"])
            line = yamlsrc.line_of(spec, err["loc"])
            raise InventoryError(f"sweep {name!r}: {field}: {err['msg']}", source, line) from None
        except LabError as e:
            raise InventoryError(f"sweep {name!r}: {e}", source, getattr(spec, "line", None)) from None
    return out
