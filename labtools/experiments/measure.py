"""Single measurements (`labtools measure`) through the programmed datapath, recorded like any run.

The worker's datapath and Services are what its owner last programmed (`datapaths.worker.Worker`: `services
apply`, or a sweep, bench, udp-check, matrix or capture, which leave `none`), as the lab's record says; without
a record (an apply was interrupted) the measurement is refused (`WorkerStateUnknown`), never labelled with a
guess. It holds the lab's lock, so nothing reprograms the worker while it measures. Each repeat is one point of
the run ``data/raw/<run-id>/``, so a measurement is resumable, carries provenance and has a tidy table, as the
sweeps do.
"""

from __future__ import annotations

import time
from pathlib import Path

from labtools.base.errors import LabError
from labtools.datapaths import worker
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab, traffic, transit
from labtools.model import services


def default_run_id(metric: str) -> str:
    return f"measure-{metric}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"


def run(lab: Lab, metric: str, target: str, *, repeats: int = 1, run_id: str | None = None,
        root: Path | None = None) -> tuple[Recorder, list[dict], traffic.Target]:  # fmt: skip
    """Measure `metric` at `target` `repeats` times; returns the run, its records and where traffic went."""
    if lab.backend == "netns" and not lab.is_up():
        raise LabError(f"the lab {lab.prefix} is down: run `labtools lab up{lab.hint}` first")
    with lab.lock.hold():
        return _run(lab, metric, target, repeats, run_id, root)


def _run(lab: Lab, metric: str, target: str, repeats: int, run_id: str | None,
         root: Path | None) -> tuple[Recorder, list[dict], traffic.Target]:  # fmt: skip
    state = worker.holds(lab)  # refuses when nothing says what the worker holds
    if state.datapath == "none" and target != "pod":
        raise LabError("the datapath is `none`, so there is no NodePort: use --target pod")
    transit.detach_stale(lab.host(lab.inventory.by_role("worker").name))  # what a killed probe left in the path
    workload = services.build(**state.workload) if state.datapath != "none" else None
    t = traffic.target(lab, workload, target)
    if metric == "udp-pps" and workload and not (workload.params.get("udp_targets") or target == "pod"
                                                 or "UDP" in workload.params["protocols"]):  # fmt: skip
        raise LabError("udp-pps to a NodePort needs UDP ports: `labtools services apply --udp-targets` (or --udp)")
    base = {"datapath": state.datapath, "services": state.services, "target": target}
    held = {"kube_proxy_version": state.kube_proxy_version, "cilium_version": state.cilium_version, "cni": state.cni}
    rec = Recorder(run_id or default_run_id(metric), kind="measure",
                   params={**base, "metric": metric, "repeats": repeats, "address": t.address, "port": t.port,
                           **{k: v for k, v in held.items() if v is not None}},
                   root=root).open(lambda: provenance.collect(lab.backend, lab.pod_attachment()))  # fmt: skip
    for r in range(repeats):
        key = f"{metric}-{target}-r{r}"
        if rec.done(key):
            continue
        raw = traffic.sample(lab, metric, t)
        rec.write(key, traffic.records(metric, raw, {**base, "repeat": r}), raw=raw)
    rec.table()
    records = [x for p in rec.all_points().values() for x in p["records"]]
    return rec, records, t
