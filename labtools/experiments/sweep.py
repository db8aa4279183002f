"""Scale sweeps: datapaths x service counts x metrics x targets x repeats, resumable and interleaved.

Each finished point goes through the run's `Recorder` (``data/raw/<run-id>/points/``), so an
interrupted sweep loses nothing it has measured, and re-running the same run id skips finished points.
Each repeat is a block that visits every cell once, N in a drawn order and the datapaths at one N one after
the other (`Plan.points`, order ``block``), so drift of a noisy machine neither becomes a slope in N nor a
datapath effect; every sample records when it started and ended (``t_start_s``, ``t_end_s``). Switching is cheap because
`datapaths.Switcher` parks nftables-based datapaths (dormant tables) instead of re-programming them.

Every workload gives the first, middle and last NodePort Service a UDP port as well (`udp_targets`),
so udp-pps has a target while the rule count stays that of N TCP Services.

The same loop runs on a real cluster when the inventory has a ``cluster:`` section: the rig is then a
`rigs.cluster.ClusterRig`, which switches Cilium's modes and creates the Services through the API. A
mode switch takes minutes there, so a cluster plan is best measured with ``order: datapath``.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from labtools import datapaths
from labtools.base import progress as bars
from labtools.base.errors import LabError
from labtools.experiments import provenance, releases
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
    """The run's recorder; a run recorded before the releases were parameters is compared with the releases
    it was measured under (`experiments.releases`)."""
    params = plan.as_dict()
    params.pop("run_id")
    return Recorder(plan.run_id, kind="sweep", params=params, root=root, recorded_params=releases.params_of)


def with_attachment(lab: Lab, plan: Plan) -> Plan:
    """`plan` with the pod attachment it runs under: the lab's when the plan names none; refused when the plan
    names another than the lab has (None over SSH and on a cluster, whose own CNI attaches the pod)."""
    have = lab.pod_attachment()
    if plan.cni is None:
        return dataclasses.replace(plan, cni=have)
    if plan.cni != have:
        raise LabError(f"run {plan.run_id} needs the pod attached as {plan.cni!r}, but lab {lab.prefix} has "
                       f"{have!r}: bring the lab up with `lab up --cni {plan.cni}{lab.hint}` (after `lab down`), "
                       "or name the attachment the lab has")  # fmt: skip
    return plan


def _row(rec: dict, point: dict) -> dict:
    return {**rec, **{f"programming_{k}": v for k, v in point.get("programming", {}).items()},
            **point.get("releases", {})}  # fmt: skip


def run(lab: Lab, plan: Plan, root: Path | None = None, progress: bool = True,
        rig: Rig | None = None) -> tuple[Path, int]:  # fmt: skip
    """Measure every point of `plan` not measured yet. Returns the processed CSV and how many were new.

    `rig` defaults to `rigs.rig_for(lab, ...)`: the emulated lab, or a real cluster.
    """
    plan.validate()
    check_fits(lab, plan)
    plan = with_attachment(lab, plan)
    rec = recorder(plan, root)
    rec.check()  # a resume with other parameters (releases too) is refused before the rig changes anything
    points = plan.points()
    todo = [p for p in points if not rec.done(point_key(*p))] if rec.manifest_path.exists() else points
    rig = rig or rig_for(lab, plan.datapaths, max(plan.counts), progress, plan.releases())
    programmed: tuple[int, int, str] | None = None
    workload = None
    bar = bars.bar(plan.run_id, total=len(points), done=len(points) - len(todo), enabled=progress)
    try:
        rig.check()
        rec.open(lambda: {**provenance.collect(lab.backend, lab.pod_attachment()), **rig.provenance()})
        prov = rec.manifest()["provenance"]
        rel = {**plan.releases().as_dict(), "cni": plan.cni}  # every point says what it was measured under
        ends = rig.endpoints() if todo else None
        for c, r, d, m, t in todo:
            if programmed != (c, r, d):  # switch once per (count, repeat, datapath)
                if workload is None or len(workload) != c:
                    workload = rig.workload(c, plan.seed)
                prog = rig.use(d, workload, key=(c, plan.seed))
                programmed = (c, r, d)
            base = {"run_id": plan.run_id, "datapath": d, "services": c, "target": t, "repeat": r,
                    "t_start_s": round(time.time(), 3)}  # when, so that N can be checked against the clock
            if m == "change":  # one Service added by the datapath's own update path, and removed again
                raw_out = rig.change(d, workload, ends)
            else:
                raw_out = traffic.sample(ends, m, traffic.target(ends, workload, t), transactions=plan.crr_transactions,
                                         seconds=plan.throughput_seconds, packets=plan.udp_packets)  # fmt: skip
            base["t_end_s"] = round(time.time(), 3)
            recs = traffic.records(m, raw_out, {**base, "conntrack_entries": raw_out.get("conntrack_entries")})
            rec.write(point_key(c, r, d, m, t), recs, raw=raw_out, programming=prog, provenance=prov, releases=rel)
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
