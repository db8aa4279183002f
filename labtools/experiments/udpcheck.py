"""The thesis' UDP observation (§11.5) as a recorded run: UDP to the NodePort of a TCP-only Service.

The thesis' Service declared only TCP/5201, yet ``iperf3 -u`` reached the pod under Cilium's eBPF datapath
and not under kube-proxy. Each case programs that one Service into the worker and sends datagrams from
never-used source ports to its node port; the share that reaches the pod's interface is the result.
Cilium before 1.17 looks Services up without the L4 protocol (see `labtools.datapaths.ebpf`), so its
case delivers; kube-proxy (both modes) and Cilium 1.17 do not.
"""

from __future__ import annotations

from pathlib import Path

from labtools.datapaths.worker import Worker
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab, traffic
from labtools.model import services

CASES = (("iptables", None), ("nftables", None), ("ebpf", "1.13"), ("ebpf", "1.17"))  # datapath, Cilium release


def run(lab: Lab, run_id: str, *, repeats: int = 3, packets: int = 2000, root: Path | None = None) -> Path:
    """Every case `repeats` times, interleaved; returns the tidy table (``udp_delivered_ratio`` per sample)."""
    params = {"repeats": repeats, "packets": packets, "cases": [list(c) for c in CASES]}
    rec = Recorder(run_id, kind="udp-to-tcp-service", params=params, root=root)
    rec.open(lambda: provenance.collect(lab.backend, lab.pod_attachment()))
    workload = services.build(1)  # the thesis' Service: TCP/5201 only
    ends = traffic.ends(lab)
    t = traffic.target(ends, workload, "first")
    with Worker(lab) as worker:
        server = traffic.start_crr_server(ends.pod, services.IPERF_PORT, ends.server_cpu)
        try:
            _cases(worker, rec, workload, ends, t, repeats, packets)
        finally:
            server.stop()
            worker.clear()
    return rec.table()


def _cases(worker: Worker, rec: Recorder, workload: services.Workload, ends: traffic.TrafficEnds,
           t: traffic.Target, repeats: int, packets: int) -> None:  # fmt: skip
    for r in range(repeats):
        for datapath, version in CASES:
            key = f"{datapath}-{version or 'kube-proxy'}-r{r}"
            if rec.done(key):
                continue
            worker.use(f"{datapath}@{version}" if version else datapath, workload)
            raw = traffic.udp_pps(ends.client, ends.pod, ends.pod_interface, ends.worker, t, ends.client_source,
                                  packets, ends.client_cpu)  # fmt: skip
            base = {"datapath": datapath, "release": f"Cilium {version}" if version else "kube-proxy",
                    "services": 1, "target": "first", "repeat": r}  # fmt: skip
            rec.write(key, [{**base, "metric": "udp_delivered_ratio", "value": raw["delivered"] / raw["sent"],
                             "unit": "1"}], raw=raw)  # fmt: skip
