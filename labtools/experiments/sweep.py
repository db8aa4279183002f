"""Scale sweeps: datapaths x service counts x metrics x targets x repeats, resumable and interleaved.

Each finished point goes through the run's `Recorder` (``data/raw/<run-id>/points/``), so an
interrupted sweep loses nothing it has measured, and re-running the same run id skips finished points.
Within a repeat every datapath is measured before the next repeat starts, so drift of a noisy machine
spreads over all datapaths instead of masquerading as a datapath effect. Switching is cheap because
`datapaths.Switcher` parks nftables-based datapaths (dormant tables) instead of re-programming them.

Every workload gives the first, middle and last NodePort Service a UDP port as well (`udp_targets`),
so udp-pps has a target while the rule count stays that of N TCP Services.

The same loop runs on a real cluster when the inventory has a ``cluster:`` section: the rig is then a
`rigs.cluster.ClusterRig`, which switches Cilium's modes and creates the Services through the API. A
mode switch takes minutes there, so a cluster plan is best measured with ``order: datapath``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from labtools import datapaths
from labtools.base import progress as bars
from labtools.base.errors import LabError
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab, traffic
from labtools.model import services
from labtools.model.plan import Plan, point_key
from labtools.rigs import Rig, rig_for


def describe(lab: Lab, plan: Plan) -> list[str]:
    """The dry run: what the sweep would do, in order, without touching anything."""
    from labtools.rigs import cluster

    plan.validate()
    check_fits(lab, plan)
    if cluster.is_cluster(lab.inventory):
        return cluster.describe(lab.inventory, plan.points(), max(plan.counts))
    lines, current = [], None
    for c, r, d, m, t in plan.points():
        if current != (c, r, d):
            current = (c, r, d)
            lines.append(f"# program {d} on {datapaths.node_of(lab.inventory).name} with {c} Services")
        lines.append(f"measure {m} at {t} (n={c}, repeat {r}, {d})")
    return lines


def check_fits(lab: Lab, plan: Plan) -> None:
    """The lab's sweep makes every Service a NodePort, in the default range or else the wide one, and no flag
    widens it further: a larger count is refused before anything is programmed or recorded."""
    from labtools.rigs import cluster

    wide = services.PortRange.parse(services.WIDE_NODE_PORT_RANGE)
    if not cluster.is_cluster(lab.inventory) and max(plan.counts) > wide.size:
        raise LabError(f"{max(plan.counts)} NodePort Services do not fit the node port range a sweep uses, {wide} "
                       f"({wide.size} ports): sweep counts up to {wide.size} (`labtools services bench --mix "
                       "clusterip+1nodeport` programs more)")


def recorder(plan: Plan, root: Path | None = None) -> Recorder:
    params = plan.as_dict()
    params.pop("run_id")
    return Recorder(plan.run_id, kind="sweep", params=params, root=root)


def _row(rec: dict, point: dict) -> dict:
    return {**rec, **{f"programming_{k}": v for k, v in point.get("programming", {}).items()}}


def run(lab: Lab, plan: Plan, root: Path | None = None, progress: bool = True,
        rig: Rig | None = None) -> tuple[Path, int]:  # fmt: skip
    """Measure every point of `plan` not measured yet. Returns the processed CSV and how many were new.

    `rig` defaults to `rigs.rig_for(lab, ...)`: the emulated lab, or a real cluster.
    """
    plan.validate()
    check_fits(lab, plan)
    rec = recorder(plan, root)
    points = plan.points()
    todo = [p for p in points if not rec.done(point_key(*p))] if rec.manifest_path.exists() else points
    rig = rig or rig_for(lab, plan.datapaths, max(plan.counts), progress)
    programmed: tuple[int, int, str] | None = None
    workload = None
    bar = bars.bar(plan.run_id, total=len(points), done=len(points) - len(todo), enabled=progress)
    try:
        rig.check()
        rec.open(lambda: {**provenance.collect(lab.backend, lab.pod_attachment()), **rig.provenance()})
        prov = rec.manifest()["provenance"]
        ends = rig.endpoints() if todo else None
        for c, r, d, m, t in todo:
            if programmed != (c, r, d):  # switch once per (count, repeat, datapath)
                if workload is None or len(workload) != c:
                    workload = rig.workload(c, plan.seed)
                prog = rig.use(d, workload, key=(c, plan.seed))
                programmed = (c, r, d)
            base = {"run_id": plan.run_id, "datapath": d, "services": c, "target": t, "repeat": r}
            if m == "change":  # one Service added by the datapath's own update path, and removed again
                raw_out = rig.change(d, workload, ends)
            else:
                raw_out = traffic.sample(ends, m, traffic.target(ends, workload, t), transactions=plan.crr_transactions,
                                         seconds=plan.throughput_seconds, packets=plan.udp_packets)  # fmt: skip
            recs = traffic.records(m, raw_out, {**base, "conntrack_entries": raw_out.get("conntrack_entries")})
            rec.write(point_key(c, r, d, m, t), recs, raw=raw_out, programming=prog, provenance=prov)
            bar.advance()
    except BaseException:
        bar.close()
        try:  # leave nothing behind, but never hide why the sweep stopped
            rig.close()
        except Exception as e:
            print(f"labtools: cleaning up after the failure failed as well: {e}", file=sys.stderr)
        raise
    bar.close()
    rig.close()
    return rec.table(_row), len(todo)


def collect(run_id: str, root: Path | None = None) -> Path:
    """All finished points of a run as one tidy table: data/processed/<run-id>.csv."""
    return Recorder(run_id, kind="sweep", params={}, root=root).table(_row)
