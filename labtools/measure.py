"""Measurements through the worker's service datapath, one tidy record per value.

Metrics (so far): `throughput` (iperf3 TCP, as the thesis measured; the iperf3 JSON is kept raw) and
`crr` (connection setup: a new TCP connection per transaction, thousands per sample, timed by the C
client `labtools-crr`; p50/p90/p99 and the rate). Targets: the first, middle or last created NodePort
Service (worker address : node port), or `pod` (the pod IP directly — the baseline without service
translation, and the collateral cost that iptables' KUBE-SERVICES walk puts on non-service traffic).
"""

from __future__ import annotations

import json
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from labtools import services
from labtools.errors import LabError, PrerequisiteError
from labtools.hosts import Host, Process
from labtools.lab import Lab

TOOLS = Path(__file__).resolve().parent / "tools"
CRR = TOOLS / "labtools-crr"
METRICS = ("throughput", "crr")
TARGETS = ("first", "middle", "last", "pod")


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int


def target(lab: Lab, workload: services.Workload | None, name: str) -> Target:
    """Where traffic for target `name` goes: a NodePort of the workload, or the pod itself."""
    if name == "pod":
        return Target("pod", str(lab.inventory.by_role("pod").global_v6()[0]), services.IPERF_PORT)
    if name not in TARGETS:
        raise LabError(f"target must be one of {', '.join(TARGETS)}, got {name!r}")
    if workload is None:
        raise LabError(f"target {name!r} needs programmed Services (`labtools services apply`)")
    svc = workload.target(name)
    node_ip = str(lab.inventory.by_role("worker").global_v6()[0])
    return Target(name, node_ip, svc.spec.ports[0].node_port)


def provenance(lab: Lab) -> dict:
    """Where and with what a sample was taken."""

    def version(argv: list[str]) -> str:
        try:
            out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
            return (out.stdout or out.stderr).strip().splitlines()[0]
        except (OSError, IndexError, subprocess.TimeoutExpired):
            return "unavailable"

    commit = version(["git", "-C", str(Path(__file__).resolve().parents[1]), "rev-parse", "HEAD"])
    return {
        "kernel": platform.release(),
        "iperf3": version(["iperf3", "--version"]),
        "nft": version(["nft", "--version"]),
        "iptables": version(["iptables", "--version"]),
        "python": platform.python_version(),
        "git_commit": commit,
        "backend": lab.backend,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _tool(host: Host) -> str:
    if not CRR.exists():
        raise PrerequisiteError(f"{CRR} is missing: run `make setup` (it compiles labtools/tools/crr.c)")
    return host.install(CRR)


def start_crr_server(server: Host, port: int) -> Process:
    proc = server.start([_tool(server), "serve", str(port)])
    deadline = time.monotonic() + 5
    while "listening" not in proc.output():
        if not proc.running() or time.monotonic() > deadline:
            proc.stop()
            raise LabError(f"[{server.name}] labtools-crr server did not start:\n{proc.output()}")
        time.sleep(0.02)
    return proc


def crr(client: Host, t: Target, transactions: int = 2000) -> dict:
    """Connection setup latency and rate from `client` to `t` (a crr server must be running)."""
    res = client.run([_tool(client), "connect", t.address, str(t.port), str(transactions)], timeout=300)
    return json.loads(res.stdout)


def throughput(client: Host, server: Host, t: Target, seconds: int = 2) -> dict:
    """iperf3 TCP to `t` for `seconds`; returns the full iperf3 JSON (an iperf3 server must be running)."""
    argv = ["iperf3", "-J", "-c", t.address, "-p", str(t.port), "-t", str(seconds)]
    for _ in range(50):  # the server may still be starting
        res = client.run(argv, check=False, timeout=seconds + 30)
        data = json.loads(res.stdout) if res.stdout.strip() else {}
        if res.ok and "sum_received" in data.get("end", {}):
            return data
        time.sleep(0.1)
    raise LabError(f"[{client.name}] iperf3 to [{t.address}]:{t.port} failed: {data.get('error', res.stderr)}")


def sample(client: Host, server: Host, metric: str, t: Target, *, transactions: int = 2000, seconds: int = 2) -> dict:
    """One raw measurement of `metric` to `t`, with the matching server started on `server` and stopped after."""
    if metric not in METRICS:
        raise LabError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    if metric == "crr":
        srv = start_crr_server(server, services.IPERF_PORT)
    else:
        srv = server.start(["iperf3", "-s", "-p", str(services.IPERF_PORT)])
    try:
        return crr(client, t, transactions) if metric == "crr" else throughput(client, server, t, seconds)
    finally:
        srv.stop()


def records(metric: str, raw: dict, base: dict) -> list[dict]:
    """Tidy records (one value each) from a raw measurement; `base` carries the sample's coordinates."""
    if metric == "crr":
        fields = [("crr_p50", "p50_us", "us"), ("crr_p90", "p90_us", "us"), ("crr_p99", "p99_us", "us"),
                  ("crr_rate", "rate_per_s", "1/s")]  # fmt: skip
        return [{**base, "metric": m, "value": raw[k], "unit": u} for m, k, u in fields]
    if metric == "throughput":
        bps = raw["end"]["sum_received"]["bits_per_second"]
        return [{**base, "metric": "throughput", "value": bps / 1e9, "unit": "Gbit/s"}]
    raise LabError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")


def tools_present() -> bool:
    return CRR.exists() and shutil.which("iperf3") is not None
