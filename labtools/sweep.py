"""Scale sweeps: datapaths x service counts x metrics x targets x repeats, resumable and interleaved.

Each finished point is written at once (atomically) under `data/raw/<run-id>/points/`, so an
interrupted sweep loses nothing it has measured, and re-running the same run id skips finished points.
Within a repeat every datapath is measured before the next repeat starts, so drift of a noisy machine
spreads over all datapaths instead of masquerading as a datapath effect. Switching is cheap because
`datapaths.Switcher` parks nftables-based datapaths (dormant tables) instead of re-programming them.

Every workload gives the first, middle and last NodePort Service a UDP port as well (`udp_targets`),
so udp-pps has a target while the rule count stays that of N TCP Services.

The same loop runs on a real cluster when the inventory has a ``cluster:`` section: `cluster.ClusterRig`
then switches Cilium's modes and creates the Services through the API. A mode switch takes minutes
there, so a cluster plan is best measured with ``order: datapath`` (one switch per datapath).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from tqdm import tqdm

from labtools import datapaths, measure, services
from labtools.errors import LabError
from labtools.lab import Lab

# LABTOOLS_DATA points the sweeps and notebooks at another data folder (tests use a copy).
DATA = Path(os.environ.get("LABTOOLS_DATA") or Path(__file__).resolve().parents[1] / "data")
PARAMS = Path(__file__).resolve().parents[1] / "params"
NOTEBOOK = "01-scale-sweep"


def load_profile(profile: str) -> dict:
    """params/<profile>.yaml: the papermill parameters of every notebook, by notebook."""
    path = PARAMS / f"{profile}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in PARAMS.glob("*.yaml")))
        raise LabError(f"no profile {profile!r}: {path} does not exist (profiles: {known})")
    return yaml.safe_load(path.read_text()) or {}


def profile_params(profile: str, notebook: str = NOTEBOOK) -> dict:
    """The parameters of `notebook` in params/<profile>.yaml."""
    params = load_profile(profile)
    if notebook not in params:
        raise LabError(f"{PARAMS / f'{profile}.yaml'} has no section {notebook!r}")
    return params[notebook]


def plans(sweeps: dict[str, dict], run_id: str) -> list[Plan]:
    """One Plan per named sweep (run id `<run_id>-<name>`), from a profile's `sweeps` section."""
    out = []
    for name, spec in sweeps.items():
        try:
            plan = Plan(f"{run_id}-{name}", **spec)
        except TypeError as e:
            raise LabError(f"sweep {name!r}: {e}") from None
        plan.validate()
        out.append(plan)
    return out


@dataclass
class Plan:
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
    # "repeat": count > repeat > datapath (interleaved: drift spreads over all datapaths);
    # "datapath": datapath > count > repeat, counts up for one datapath and down for the next, so a
    # real cluster switches mode once per datapath and changes its Services as little as possible.
    order: str = "repeat"
    extra: dict = field(default_factory=dict)

    def validate(self) -> None:
        bad = [d for d in self.datapaths if d not in datapaths.NAMES]
        bad += [m for m in self.metrics if m not in measure.METRICS]
        bad += [t for m in self.metrics for t in self.targets_of(m) if t not in measure.TARGETS]
        if isinstance(self.targets, dict):
            bad += [f"{m} (in targets, not in metrics)" for m in self.targets if m not in self.metrics]
        if bad:
            raise LabError(f"unknown datapath/metric/target: {', '.join(bad)}")
        if self.repeats < 1 or not self.counts or min(self.counts) < 1:
            raise LabError("repeats and every count must be at least 1")
        if self.order not in ORDERS:
            raise LabError(f"order must be one of {', '.join(ORDERS)}, got {self.order!r}")

    def targets_of(self, metric: str) -> list[str]:
        return list(self.targets.get(metric, [])) if isinstance(self.targets, dict) else list(self.targets)

    def points(self) -> list[tuple[int, int, str, str, str]]:
        """(count, repeat, datapath, metric, target) in measuring order; `none` is measured at the pod only."""
        if self.order == "repeat":
            outer = [(c, r, d) for c in self.counts for r in range(self.repeats) for d in self.datapaths]
        else:
            snake = [(d, self.counts if i % 2 == 0 else self.counts[::-1]) for i, d in enumerate(self.datapaths)]
            outer = [(c, r, d) for d, counts in snake for c in counts for r in range(self.repeats)]
        return [
            (c, r, d, m, t)
            for c, r, d in outer
            for m in self.metrics
            for t in (["pod"] if d == "none" else self.targets_of(m))
        ]


ORDERS = ("repeat", "datapath")


class LabRig:
    """The emulated lab: the worker namespace's datapaths (`datapaths.Switcher`) and the lab's machines."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.node = datapaths.node_of(lab.inventory)
        self.switcher = datapaths.Switcher(lab.host(self.node.name), self.node)

    def check(self) -> None:
        pass

    def provenance(self) -> dict:
        return {"rig": "lab"}

    def workload(self, count: int, seed: int) -> services.Workload:
        return services.build(count, udp_targets=True, seed=seed)

    def endpoints(self) -> measure.Endpoints:
        return measure.endpoints(self.lab)

    def use(self, datapath: str, workload: services.Workload, key: object = None) -> dict:
        done = self.switcher.use(datapath, services.service_ports(workload, self.node.name), key=key)
        return {"render_s": done.render_s, "apply_s": done.apply_s, "objects": done.objects,
                "resumed_s": done.detail.get("resumed_s"),
                "parked": ";".join(sorted(n for n in self.switcher.parked if n != datapath))}  # fmt: skip

    def close(self) -> None:
        self.switcher.use("none", [])  # clears parked datapaths too (no key)


def rig_for(lab: Lab, plan: Plan, progress: bool = True):
    """The LabRig, or on an inventory with ``cluster:`` a `cluster.ClusterRig` (Cilium modes, the API)."""
    from labtools import cluster

    if not cluster.is_cluster(lab.inventory):
        return LabRig(lab)
    cluster.check_datapaths(plan.datapaths)
    return cluster.ClusterRig(lab, max(plan.counts), progress=progress)


def describe(lab: Lab, plan: Plan) -> list[str]:
    """The dry run: what the sweep would do, in order, without touching anything."""
    from labtools import cluster

    plan.validate()
    if cluster.is_cluster(lab.inventory):
        return cluster.describe(lab.inventory, plan.points(), max(plan.counts))
    lines, current = [], None
    for c, r, d, m, t in plan.points():
        if current != (c, r, d):
            current = (c, r, d)
            lines.append(f"# program {d} on {datapaths.node_of(lab.inventory).name} with {c} Services")
        lines.append(f"measure {m} at {t} (n={c}, repeat {r}, {d})")
    return lines


def point_name(c: int, r: int, d: str, m: str, t: str) -> str:
    return f"n{c:05d}-r{r}-{d}-{m}-{t}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(lab: Lab, plan: Plan, root: Path = DATA, progress: bool = True, rig=None) -> tuple[Path, int]:
    """Measure every point of `plan` not measured yet. Returns the processed CSV and how many were new.

    `rig` defaults to `rig_for(lab, plan)`: the emulated lab, or a real cluster.
    """
    plan.validate()
    raw = root / "raw" / plan.run_id
    points_dir = raw / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    manifest = raw / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())["plan"]
        if asdict(Plan(**old)) != asdict(plan):  # through Plan: fields added since have their defaults
            raise LabError(f"run {plan.run_id} exists with another plan; use a new run id (old plan: {old})")
    todo = [p for p in plan.points() if not (points_dir / f"{point_name(*p)}.json").exists()]
    rig = rig or rig_for(lab, plan, progress)
    bar = tqdm(total=len(plan.points()), initial=len(plan.points()) - len(todo), desc=plan.run_id, unit="point",
               disable=not progress)  # fmt: skip
    programmed: tuple[int, int, str] | None = None
    workload = None
    try:
        rig.check()
        prov = {**measure.provenance(lab), **rig.provenance()}
        if not manifest.exists():
            _write_atomic(manifest, json.dumps({"plan": asdict(plan), "provenance": prov, "started": time.time()},
                                               indent=1))  # fmt: skip
        ends = rig.endpoints() if todo else None
        for c, r, d, m, t in todo:
            if programmed != (c, r, d):  # switch once per (count, repeat, datapath)
                if workload is None or len(workload) != c:
                    workload = rig.workload(c, plan.seed)
                prog = rig.use(d, workload, key=(c, plan.seed))
                programmed = (c, r, d)
            target = measure.target(ends, workload, t)
            base = {"run_id": plan.run_id, "datapath": d, "services": c, "target": t, "repeat": r}
            raw_out = measure.sample(ends, m, target, transactions=plan.crr_transactions,
                                     seconds=plan.throughput_seconds, packets=plan.udp_packets)  # fmt: skip
            recs = measure.records(m, raw_out, {**base, "conntrack_entries": raw_out.get("conntrack_entries")})
            _write_atomic(
                points_dir / f"{point_name(c, r, d, m, t)}.json",
                json.dumps({"records": recs, "raw": raw_out, "programming": prog, "provenance": prov}),
            )
            bar.update()
    except BaseException:
        bar.close()
        try:  # leave nothing behind, but never hide why the sweep stopped
            rig.close()
        except Exception as e:
            print(f"labtools: cleaning up after the failure failed as well: {e}", file=sys.stderr)
        raise
    bar.close()
    rig.close()
    return collect(plan.run_id, root), len(todo)


def collect(run_id: str, root: Path = DATA) -> Path:
    """All finished points of a run as one tidy table: data/processed/<run-id>.csv."""
    rows = []
    for path in sorted((root / "raw" / run_id / "points").glob("*.json")):
        point = json.loads(path.read_text())
        rows += [{**rec, **{f"programming_{k}": v for k, v in point["programming"].items()}}
                 for rec in point["records"]]  # fmt: skip
    out = root / "processed" / f"{run_id}.csv"
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows).to_csv(out, index=False)
    return out
