"""Scale sweeps: datapaths x service counts x metrics x targets x repeats, resumable and interleaved.

Each finished point is written at once (atomically) under `data/raw/<run-id>/points/`, so an
interrupted sweep loses nothing it has measured, and re-running the same run id skips finished points.
Within a repeat every datapath is measured before the next repeat starts, so drift of a noisy machine
spreads over all datapaths instead of masquerading as a datapath effect. Switching is cheap because
`datapaths.Switcher` parks nftables-based datapaths (dormant tables) instead of re-programming them.

Every workload gives the first, middle and last NodePort Service a UDP port as well (`udp_targets`),
so udp-pps has a target while the rule count stays that of N TCP Services.
"""

from __future__ import annotations

import json
import os
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

    def targets_of(self, metric: str) -> list[str]:
        return list(self.targets.get(metric, [])) if isinstance(self.targets, dict) else list(self.targets)

    def points(self) -> list[tuple[int, int, str, str, str]]:
        """(count, repeat, datapath, metric, target) in measuring order; `none` is measured at the pod only."""
        return [
            (c, r, d, m, t)
            for c in self.counts
            for r in range(self.repeats)
            for d in self.datapaths
            for m in self.metrics
            for t in (["pod"] if d == "none" else self.targets_of(m))
        ]


def point_name(c: int, r: int, d: str, m: str, t: str) -> str:
    return f"n{c:05d}-r{r}-{d}-{m}-{t}"


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def run(lab: Lab, plan: Plan, root: Path = DATA, progress: bool = True) -> tuple[Path, int]:
    """Measure every point of `plan` not measured yet. Returns the processed CSV and how many were new."""
    plan.validate()
    raw = root / "raw" / plan.run_id
    points_dir = raw / "points"
    points_dir.mkdir(parents=True, exist_ok=True)
    manifest = raw / "manifest.json"
    if manifest.exists():
        old = json.loads(manifest.read_text())["plan"]
        if old != asdict(plan):
            raise LabError(f"run {plan.run_id} exists with another plan; use a new run id (old plan: {old})")
    prov = measure.provenance(lab)
    if not manifest.exists():
        _write_atomic(manifest, json.dumps({"plan": asdict(plan), "provenance": prov, "started": time.time()},
                                           indent=1))  # fmt: skip
    todo = [p for p in plan.points() if not (points_dir / f"{point_name(*p)}.json").exists()]
    node = datapaths.node_of(lab.inventory)
    switcher = datapaths.Switcher(lab.host(node.name), node)
    bar = tqdm(total=len(plan.points()), initial=len(plan.points()) - len(todo), desc=plan.run_id, unit="point",
               disable=not progress)  # fmt: skip
    programmed: tuple[int, int, str] | None = None
    workload = None
    try:
        for c, r, d, m, t in todo:
            if programmed != (c, r, d):  # switch once per (count, repeat, datapath)
                if workload is None or len(workload) != c:
                    workload = services.build(c, udp_targets=True, seed=plan.seed)
                done = switcher.use(d, services.service_ports(workload, node.name), key=(c, plan.seed))
                programmed = (c, r, d)
                prog = {"render_s": done.render_s, "apply_s": done.apply_s, "objects": done.objects,
                        "resumed_s": done.detail.get("resumed_s"),
                        "parked": ";".join(sorted(n for n in switcher.parked if n != d))}  # fmt: skip
            target = measure.target(lab, workload, t)
            base = {"run_id": plan.run_id, "datapath": d, "services": c, "target": t, "repeat": r}
            raw_out = measure.sample(lab, m, target, transactions=plan.crr_transactions,
                                     seconds=plan.throughput_seconds, packets=plan.udp_packets)  # fmt: skip
            recs = measure.records(m, raw_out, {**base, "conntrack_entries": raw_out.get("conntrack_entries")})
            _write_atomic(
                points_dir / f"{point_name(c, r, d, m, t)}.json",
                json.dumps({"records": recs, "raw": raw_out, "programming": prog, "provenance": prov}),
            )
            bar.update()
    finally:
        bar.close()
        switcher.use("none", [])  # clears parked datapaths too (no key)
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
