"""Capture runs: tcpdump at the thesis' five points around standard traffic, as a recorded run.

The scenarios: ``icmp`` (ICMPv6 echo of 64 bytes: 56 data + 8 header, as in the thesis), ``tcp-pod``
(TCP transactions to the pod IP) and ``tcp-nodeport`` (to the worker's NodePort of one Service), or
``custom`` (any command on the client). Each scenario is one point of the run:
``data/raw/<run-id>/<scenario>/<point>.pcap``, and ``manifest.json`` carries the points, interfaces,
commands, tcpdump version, kernels, SRv6 mode, packet counts and the usual provenance. A scenario that
is already there is not captured again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from labtools import datapaths
from labtools.base.errors import LabError
from labtools.datapaths import srv6
from labtools.datapaths.worker import Worker
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.hosts import Host, Process
from labtools.lab import Lab, traffic
from labtools.lab.capture import POINTS, SNAPLEN, Capture, points
from labtools.lab.state import Srv6State
from labtools.model import services

SCENARIOS = ("icmp", "tcp-pod", "tcp-nodeport")
ICMP_DATA = 56  # ping -s 56: 8-byte ICMPv6 header + 56 = IPv6 payload length 64, as in the thesis


def _version(host: Host, argv: list[str]) -> str:
    res = host.run(argv, check=False)
    return " ".join((res.stdout + res.stderr).split("\n")[:2]).strip() or "unavailable"


def traffic_argv(scenario: str, client: Host, dst: str, port: int, count: int, timeout: float) -> list[str]:
    """The client's command for a scenario: ping -s 56, or `count` TCP transactions with labtools-crr."""
    if scenario == "icmp":
        return ["ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-s", str(ICMP_DATA), "-W", f"{timeout:g}", dst]
    return ["timeout", f"{timeout * count + 1:g}", traffic.tool(client), "connect", dst, str(port), str(count)]


def run(lab: Lab, run_id: str, *, scenarios: Sequence[str] = SCENARIOS, mode: str | None = None,
        datapath: str = "nftables", point_names: Sequence[str] = POINTS, count: int = 3, timeout: float = 2.0,
        root: Path | None = None, command: Sequence[str] | None = None) -> dict:  # fmt: skip
    """Capture each scenario at every point; returns the run's manifest.

    `mode`: bring the SRv6 tunnel up in that ingress mode first (None: capture whatever path is there).
    `datapath`: the worker's service datapath for `tcp-nodeport` (programmed with one Service).
    `command`: instead of the scenarios, capture around this command run on the client (scenario `custom`).
    """
    if command:
        scenarios = ("custom",)
    bad = [s for s in scenarios if s not in (*SCENARIOS, "custom")]
    if bad:
        raise LabError(f"unknown scenario(s) {', '.join(bad)}: choose from {', '.join(SCENARIOS)}")
    if count < 1:
        raise LabError(f"count must be at least 1, got {count}")
    datapaths.get(datapath)  # an unknown datapath is refused before anything changes
    inv = lab.inventory
    pts = points(inv, point_names)
    rec = Recorder(run_id, kind="capture", params={"scenarios": list(scenarios), "mode": mode, "datapath": datapath,
                                                   "points": list(point_names), "count": count, "timeout": timeout,
                                                   "command": list(command or [])}, root=root)  # fmt: skip
    rec.open(lambda: provenance.collect(lab.backend, lab.pod_attachment()))
    if mode is not None:
        srv6.up(lab, mode)
    tunnel = lab.state.get(Srv6State)
    client, pod = lab.host(inv.by_role("client").name), lab.host(inv.by_role("pod").name)
    pod_ip = str(inv.by_role("pod").global_v6()[0])
    node = datapaths.node_of(inv)
    workload = services.build(1)
    node_port = workload.target("first").spec.ports[0].node_port
    facts: dict = {
        "backend": lab.backend, "prefix": lab.prefix, "inventory": inv.path,
        "srv6_mode": tunnel.mode if tunnel else "none",
        "srv6_plan": srv6.plan(inv, tunnel.mode) if tunnel else {},
        "tcpdump": _version(client, ["tcpdump", "--version"]),
        "kernel": {m: lab.host(m).run(["uname", "-r"], check=False).stdout.strip()
                   for m in {p.machine for p in pts.values()}},
        "points": {n: {"machine": p.machine, "interface": p.interface} for n, p in pts.items()},
        "snaplen": SNAPLEN,
    }  # fmt: skip
    if "tcp-nodeport" in scenarios:
        with Worker(lab) as worker:  # the capture leaves the datapath programmed, and recorded
            worker.use(datapath, workload)
        facts.update(datapath=datapath, services=1)
    rec.note(**facts)
    server: Process | None = None
    try:
        todo = [s for s in scenarios if not rec.done(s)]
        if any(s.startswith("tcp") for s in todo):
            server = traffic.start_crr_server(pod, services.IPERF_PORT)
        for scenario in todo:
            dst, port = (node.ip, node_port) if scenario == "tcp-nodeport" else (pod_ip, services.IPERF_PORT)
            argv = list(command) if command else traffic_argv(scenario, client, dst, port, count, timeout)
            outdir = rec.path(scenario)
            with Capture(lab.hosts, pts, outdir) as cap:
                res = client.run(argv, check=False, timeout=600 if command else timeout * count + 30)
            rec.write(scenario, [{
                "scenario": scenario,
                "destination": None if command else dst,
                "port": None if scenario in ("icmp", "custom") else port,
                "command": argv,
                "server": server.argv if server and scenario.startswith("tcp") else None,
                "returncode": res.returncode,
                "ok": res.ok,
                "output": (res.stdout + res.stderr)[-2000:],
                "files": {n: {"path": str(Path(r.local).relative_to(rec.dir)) if r.local else None,
                              **asdict(r.point), "tcpdump_command": r.command, "tcpdump_stats": r.stats,
                              "packets": r.packets} for n, r in cap.results.items()},
            }])  # fmt: skip
    finally:
        if server is not None:
            server.stop()
            pod.run(["rm", "-f", server.log], check=False)
    captures = [p["records"][0] for s in scenarios if (p := rec.read(s))]
    rec.note(captures=captures)
    return rec.manifest()
