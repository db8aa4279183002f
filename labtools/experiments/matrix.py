"""Services over SRv6: which way of ending the tunnel lets which service datapath reach the pod and the
NodePort (`run`), and what each working way costs in connection setup (`crr`). Both write through the
recorder, so they resume and carry provenance like the sweeps.

A matrix cell is one real TCP transaction (connect, 1 byte each way; ``labtools-crr connect ... 1``
under a timeout) from the client to the pod IP (port 5201) and to the worker's NodePort of one Service
(`services.build(1)`, programmed through `datapaths.worker.Worker`), with a ``labtools-crr`` server in the pod.
Mode ``none`` is the plain routed path (no tunnel), the baseline. ``via_tunnel`` says whether the
router's route to the destination really encapsulates. Each row's ``notes`` gives the kernel path
(`srv6.NOTES`, `srv6.explain()`); a cell that disagrees with the expectation says ``UNEXPECTED``.
Afterwards the tunnel is down and the worker has no service datapath.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from labtools import datapaths
from labtools.base import progress as bars
from labtools.base.errors import LabError
from labtools.datapaths import srv6
from labtools.datapaths.worker import Worker
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab, traffic
from labtools.model import services

ALL_MODES = ("none", *srv6.MODES)


def _set_mode(lab: Lab, mode: str) -> None:
    if mode == "none":
        srv6.down(lab)
    else:
        srv6.up(lab, mode)


def run(lab: Lab, run_id: str, modes: Sequence[str] = ALL_MODES,
        datapath_names: Sequence[str] = srv6.MATRIX_DATAPATHS, *, timeout: float = 1.0,
        root: Path | None = None, progress: bool = True) -> Path:  # fmt: skip
    """For each ingress mode x service datapath: is the pod IP, and the NodePort, reachable over the tunnel?

    Returns the tidy table (``data/processed/<run_id>.csv``): one row per (mode, datapath, target).
    """
    for m in modes:
        if m != "none":
            srv6.check_mode(m)
    for d in datapath_names:
        datapaths.get(d)  # an unknown datapath is refused before anything changes
    inv = lab.inventory
    t = srv6.tunnel(inv)
    if t.pod is None:
        raise LabError("the SRv6 matrix needs the pod as a machine of the inventory (role: pod) to run its server")
    rec = Recorder(run_id, kind="srv6-matrix", params={"modes": list(modes), "datapaths": list(datapath_names),
                                                       "timeout": timeout}, root=root)  # fmt: skip
    rec.open(lambda: provenance.collect(lab.backend, lab.pod_attachment()))
    workload = services.build(1)
    node_port = workload.target("first").spec.ports[0].node_port
    client, pod, router = lab.host(inv.by_role("client").name), lab.host(t.pod), lab.host(t.router)
    tool = client.install(traffic.CRR)
    targets = {"pod": (t.pod_ip, services.IPERF_PORT), "nodeport": (t.worker_ip, node_port)}
    cells = [(dp, mode) for dp in datapath_names for mode in modes]
    todo = [c for c in cells if not rec.done(f"{c[1]}-{c[0]}")]

    def probe(dst: str, port: int) -> dict:
        argv = ["timeout", f"{timeout:g}", tool, "connect", dst, str(port), "1"]
        t0 = time.monotonic()
        res = client.run(argv, check=False, timeout=timeout + 10)
        out = {"reachable": res.ok, "seconds": round(time.monotonic() - t0, 3)}
        if res.ok:
            out["connect_us"] = json.loads(res.stdout)["p50_us"]
        else:
            out["error"] = "timeout" if res.returncode == 124 else (res.stderr.strip() or f"exit {res.returncode}")
        return out

    bar = bars.bar(run_id, total=len(cells), done=len(cells) - len(todo), enabled=progress, unit="cell")
    worker = Worker(lab)
    worker.open()
    server = traffic.start_crr_server(pod, services.IPERF_PORT) if todo else None
    current = None
    try:
        with ThreadPoolExecutor(len(targets)) as pool:
            for dp, mode in todo:
                if current != dp:
                    worker.use(dp, workload)
                    current = dp
                _set_mode(lab, mode)
                futures = {name: pool.submit(probe, *addr) for name, addr in targets.items()}
                rows = []
                for name, fut in futures.items():
                    dst, port = targets[name]
                    route = router.run(["ip", "-6", "route", "get", dst], check=False).stdout
                    res = fut.result()
                    rows.append({"mode": mode, "datapath": dp, "target": name, "address": dst, "port": port,
                                 "via_tunnel": "encap seg6" in route, **res,
                                 "notes": srv6.explain(mode, dp, name, res["reachable"])})  # fmt: skip
                rec.write(f"{mode}-{dp}", rows)
                bar.advance()
    finally:
        bar.close()
        if server is not None:
            server.stop()
            pod.run(["rm", "-f", server.log], check=False)
        try:
            srv6.down(lab)
            worker.clear()
        finally:
            worker.close()
    return rec.table()


def crr(lab: Lab, run_id: str, cells: Sequence[tuple[str, str, str]], *, repeats: int = 3,
        transactions: int = 1000, root: Path | None = None, progress: bool = True) -> Path:  # fmt: skip
    """Connection setup through each (mode, datapath, target) cell, interleaved by repeat; the tidy table."""
    cells = sorted(set(cells))
    rec = Recorder(run_id, kind="srv6-crr", params={"cells": [list(c) for c in cells], "repeats": repeats,
                                                    "transactions": transactions}, root=root)  # fmt: skip
    rec.open(lambda: provenance.collect(lab.backend, lab.pod_attachment()))
    for _, dp, _ in cells:
        datapaths.get(dp)
    workload = services.build(1)
    keys = [(r, *c) for r in range(repeats) for c in cells]
    todo = [k for k in keys if not rec.done(f"r{k[0]}-{k[1]}-{k[2]}-{k[3]}")]
    bar = bars.bar(run_id, total=len(keys), done=len(keys) - len(todo), enabled=progress, unit="sample")
    worker = Worker(lab)
    worker.open()
    try:
        for rep, mode, dp, target in todo:
            worker.use(dp, workload)
            _set_mode(lab, mode)
            t = traffic.target(lab, workload, "pod" if target == "pod" else "first")
            raw = traffic.sample(lab, "crr", t, transactions=transactions)
            recs = traffic.records("crr", raw, {"mode": mode, "datapath": dp, "target": target, "repeat": rep})
            rec.write(f"r{rep}-{mode}-{dp}-{target}", recs, raw=raw)
            bar.advance()
    finally:
        bar.close()
        try:
            srv6.down(lab)
            worker.clear()
        finally:
            worker.close()
    return rec.table()
