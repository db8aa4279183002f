"""Packet captures at the thesis' five points around a traffic command (thesis §11.4, Figs. 38-42).

The points: ``client`` (the client's ens3), ``router-client`` (router ens3, client side),
``router-cluster`` (router ens7, cluster side), ``worker`` (the worker's uplink ens3) and ``pod`` (the
pod's eth0). They are derived from the inventory, so the same code captures on the real VMs.

`Capture` starts one ``tcpdump`` per point (``-U --immediate-mode``, a full snap length, written to a
temporary file on the host), waits until every one has printed ``listening on`` (the capture socket is
bound: nothing sent afterwards is missed), and on exit stops them with SIGINT, so tcpdump flushes the
file and prints its statistics, then fetches the pcaps. Every tcpdump is stopped in a ``finally`` (and is
tied to its parent by ``Host.start``), so nothing survives a crash.

`run()` captures the standard scenarios — ``icmp`` (ICMPv6 echo of 64 bytes: 56 data + 8 header, as in
the thesis), ``tcp-pod`` (a TCP transaction to the pod IP) and ``tcp-nodeport`` (to the worker's NodePort
of one Service) — under ``data/raw/<run-id>/<scenario>/<point>.pcap`` with ``manifest.json``: points,
interfaces, commands, tcpdump version, kernels, time, SRv6 mode and packet counts.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import struct
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from labtools import datapaths, services
from labtools.errors import LabError, PrerequisiteError
from labtools.hosts import Host, NetnsHost, NetnsProcess, Process, ShellProcess
from labtools.prereqs import require_tools
from labtools.sweep import DATA as sweep_data
from labtools.topology import Inventory, Machine

POINTS = ("client", "router-client", "router-cluster", "worker", "pod")
SCENARIOS = ("icmp", "tcp-pod", "tcp-nodeport")
DATA = sweep_data / "raw"  # honours LABTOOLS_DATA, as the sweeps do
SNAPLEN = 262144  # tcpdump's default maximum: whole jumbo frames (MTU 8950) plus the SRH
ICMP_DATA = 56  # ping -s 56: 8-byte ICMPv6 header + 56 = IPv6 payload length 64, as in the thesis
RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


@dataclass(frozen=True)
class Point:
    name: str
    machine: str
    interface: str


def _iface_toward(m: Machine, other: Machine) -> str:
    """The interface of `m` that shares a subnet with one of `other`'s global addresses."""
    for ip in other.global_v6():
        for i in m.interfaces.values():
            if any(a.version == 6 and not a.ip.is_link_local and ip in a.network for a in i.addresses):
                return i.name
    raise LabError(f"machine {m.name!r} shares no subnet with {other.name!r}: cannot place a capture point")


def points(inv: Inventory, names: Sequence[str] = POINTS) -> dict[str, Point]:
    """The capture points of the inventory, by name (see `POINTS`)."""
    client, router, worker = (inv.by_role(r) for r in ("client", "router", "worker"))
    unknown = [n for n in names if n not in POINTS]
    if unknown:
        raise LabError(f"unknown capture point(s) {', '.join(unknown)}: choose from {', '.join(POINTS)}")
    pod = inv.by_role("pod") if "pod" in names else None  # a real cluster: leave the pod point out
    pod_ip = pod.global_v6()[0] if pod else None
    every = {
        "client": Point("client", client.name, _iface_toward(client, router)),
        "router-client": Point("router-client", router.name, _iface_toward(router, client)),
        "router-cluster": Point("router-cluster", router.name, _iface_toward(router, worker)),
        "worker": Point("worker", worker.name, _iface_toward(worker, router)),
    }
    if pod is not None:
        iface = next(n for n, i in pod.interfaces.items() if any(a.ip == pod_ip for a in i.addresses))
        every["pod"] = Point("pod", pod.name, iface)
    return {n: every[n] for n in names}


def check_run_id(run_id: str) -> str:
    if not RUN_ID_RE.match(run_id or ""):
        raise LabError(f"invalid run id {run_id!r}: letters, digits, '.', '_' and '-' (no '/'), at most 100")
    return run_id


def tcpdump_argv(iface: str, path: str, snaplen: int = SNAPLEN, bpf_filter: str | None = None) -> list[str]:
    argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-s", str(snaplen), "-Z", "root", "-w", path]
    return argv + ([bpf_filter] if bpf_filter else [])


def interrupt(proc: Process) -> None:
    """SIGINT a background process' group (tcpdump then flushes its file and prints its statistics)."""
    if isinstance(proc, NetnsProcess):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.popen.pid, signal.SIGINT)
    elif isinstance(proc, ShellProcess):
        proc.signal("INT")
    else:
        proc.stop()


def pcap_count(path: str | Path) -> int:
    """Packets in a classic pcap file (what tcpdump -w writes), counted from the record headers."""
    data = Path(path).read_bytes()
    if len(data) < 24:
        return 0
    magic = data[:4]
    endian = {b"\xd4\xc3\xb2\xa1": "<", b"\x4d\x3c\xb2\xa1": "<", b"\xa1\xb2\xc3\xd4": ">", b"\xa1\xb2\x3c\x4d": ">"}
    if magic not in endian:
        raise LabError(f"{path} is not a pcap file")
    n, off = 0, 24
    while off + 16 <= len(data):
        (incl,) = struct.unpack_from(endian[magic] + "I", data, off + 8)
        off += 16 + incl
        n += 1
    return n


_STATS = re.compile(r"(\d+) packets? (captured|received by filter|dropped by kernel)")


@dataclass
class PointCapture:
    point: Point
    command: list[str]
    remote: str
    local: str = ""
    stats: dict[str, int] = field(default_factory=dict)
    packets: int = 0
    log: str = ""


class Capture:
    """tcpdump on several points at once; a context manager that stops and collects them on exit."""

    def __init__(
        self,
        hosts: Mapping[str, Host],
        pts: Mapping[str, Point],
        outdir: str | Path,
        *,
        snaplen: int = SNAPLEN,
        bpf_filter: str | None = None,
        ready_timeout: float = 10.0,
    ):
        self.hosts, self.points, self.outdir = hosts, dict(pts), Path(outdir)
        self.snaplen, self.filter, self.ready_timeout = snaplen, bpf_filter, ready_timeout
        self.procs: dict[str, Process] = {}
        self.results: dict[str, PointCapture] = {}

    def start(self) -> Capture:
        for p in self.points.values():
            h = self.hosts[p.machine]
            if isinstance(h, NetnsHost):
                require_tools("tcpdump")
            elif not h.run(["sh", "-c", "command -v tcpdump"], check=False).ok:
                raise PrerequisiteError(f"[{p.machine}] tcpdump is missing: apt-get install tcpdump")
        self.outdir.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns()
        try:
            for name, p in self.points.items():
                remote = f"/tmp/labtools-capture-{stamp}-{name}.pcap"
                argv = tcpdump_argv(p.interface, remote, self.snaplen, self.filter)
                self.results[name] = PointCapture(p, argv, remote)
                self.procs[name] = self.hosts[p.machine].start(argv)
            deadline = time.monotonic() + self.ready_timeout
            waiting = set(self.procs)
            while waiting:
                for name in list(waiting):
                    proc = self.procs[name]
                    out = proc.output()
                    if "listening on" in out:
                        waiting.discard(name)
                    elif not proc.running():
                        raise LabError(f"[{proc.host.name}] tcpdump on {self.points[name].interface} exited:\n{out}")
                if waiting and time.monotonic() > deadline:
                    raise LabError(f"tcpdump not listening after {self.ready_timeout:g} s at {', '.join(waiting)}")
                if waiting:
                    time.sleep(0.02)
        except BaseException:
            self.stop(collect=False)
            raise
        return self

    def stop(self, collect: bool = True, settle: float = 0.2) -> dict[str, PointCapture]:
        """SIGINT every tcpdump, wait for it to exit (SIGKILL as a last resort), then fetch the pcaps."""
        if not self.procs:
            return self.results
        time.sleep(settle)  # let the last packets of the traffic reach every point
        try:
            for proc in self.procs.values():
                interrupt(proc)
            for name, proc in self.procs.items():
                try:
                    proc.wait(5.0)
                except LabError:
                    proc.stop()
                r = self.results[name]
                r.log = proc.output()
                r.stats = {k.replace(" ", "_"): int(n) for n, k in _STATS.findall(r.log)}
        finally:
            for proc in self.procs.values():
                proc.stop()
        try:
            for name, r in self.results.items():
                h = self.hosts[r.point.machine]
                if collect:
                    r.local = str(self.outdir / f"{name}.pcap")
                    h.get(r.remote, r.local)
                    r.packets = pcap_count(r.local)
        finally:
            for r in self.results.values():
                self.hosts[r.point.machine].run(["rm", "-f", r.remote], check=False)
                self.hosts[r.point.machine].run(["rm", "-f", self.procs[r.point.name].log], check=False)
            self.procs.clear()
        return self.results

    def __enter__(self) -> Capture:
        return self.start()

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.stop(collect=exc_type is None)


# ----------------------------------------------------------------------------- scenarios


def _version(host: Host, argv: list[str]) -> str:
    res = host.run(argv, check=False)
    return " ".join((res.stdout + res.stderr).split("\n")[:2]).strip() or "unavailable"


def _client_tool(client: Host) -> str:
    from labtools import measure

    if not measure.CRR.exists():
        raise PrerequisiteError(f"{measure.CRR} is missing: run `make setup` (it compiles labtools/tools/crr.c)")
    return client.install(measure.CRR)


def traffic_argv(scenario: str, client: Host, dst: str, port: int, count: int, timeout: float) -> list[str]:
    """The client's command for a scenario: ping -s 56, or `count` TCP transactions with labtools-crr."""
    if scenario == "icmp":
        return ["ping", "-6", "-n", "-c", str(count), "-i", "0.2", "-s", str(ICMP_DATA), "-W", f"{timeout:g}", dst]
    return ["timeout", f"{timeout * count + 1:g}", _client_tool(client), "connect", dst, str(port), str(count)]


def run(
    lab: object,
    run_id: str,
    *,
    scenarios: Sequence[str] = SCENARIOS,
    mode: str | None = None,
    datapath: str = "iptables",
    point_names: Sequence[str] = POINTS,
    count: int = 3,
    timeout: float = 2.0,
    root: str | Path = DATA,
    command: Sequence[str] | None = None,
) -> dict:
    """Capture each scenario at every point; returns (and writes) the manifest of `data/raw/<run_id>/`.

    `mode`: bring the SRv6 tunnel up in that ingress mode first (None: capture whatever path is there).
    `datapath`: the worker's service datapath for `tcp-nodeport` (programmed with one Service).
    `command`: instead of the scenarios, capture around this command run on the client (scenario `custom`).
    """
    from labtools import measure, srv6
    from labtools.lab import Lab

    if not isinstance(lab, Lab):
        raise LabError("capture.run needs a Lab")
    check_run_id(run_id)
    if command:
        scenarios = ("custom",)
    bad = [s for s in scenarios if s not in (*SCENARIOS, "custom")]
    if bad:
        raise LabError(f"unknown scenario(s) {', '.join(bad)}: choose from {', '.join(SCENARIOS)}")
    if count < 1:
        raise LabError(f"count must be at least 1, got {count}")
    inv = lab.inventory
    pts = points(inv, point_names)
    outdir = Path(root) / run_id
    if mode is not None:
        srv6.up(lab, mode)
    srv6_state = lab.load_state("srv6") or {}
    client, pod = lab.host(inv.by_role("client").name), lab.host(inv.by_role("pod").name)
    pod_ip = str(inv.by_role("pod").global_v6()[0])
    node = datapaths.node_of(inv)
    workload = services.build(1)
    node_port = workload.target("first").spec.ports[0].node_port
    manifest: dict = {
        "run_id": run_id,
        "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "backend": lab.backend,
        "prefix": lab.prefix,
        "inventory": inv.path,
        "srv6_mode": srv6_state.get("mode", "none"),
        "srv6_plan": srv6.plan(inv, srv6_state["mode"]) if srv6_state else {},
        "tcpdump": _version(client, ["tcpdump", "--version"]),
        "kernel": {
            m: lab.host(m).run(["uname", "-r"], check=False).stdout.strip() for m in {p.machine for p in pts.values()}
        },
        "points": {n: {"machine": p.machine, "interface": p.interface} for n, p in pts.items()},
        "snaplen": SNAPLEN,
        "captures": [],
    }
    if "tcp-nodeport" in scenarios:
        done = datapaths.switch(lab.host(node.name), node, datapath, services.service_ports(workload, node.name))
        lab.save_state("services", {"datapath": done.datapath, "services": done.services,
                                    "render_s": round(done.render_s, 4), "apply_s": round(done.apply_s, 4),
                                    "objects": done.objects, "workload": workload.params})  # fmt: skip
        manifest["datapath"] = datapath
        manifest["services"] = 1
    server: Process | None = None
    try:
        if any(s.startswith("tcp") for s in scenarios):
            server = measure.start_crr_server(pod, services.IPERF_PORT)
        for scenario in scenarios:
            dst, port = (node.ip, node_port) if scenario == "tcp-nodeport" else (pod_ip, services.IPERF_PORT)
            argv = list(command) if command else traffic_argv(scenario, client, dst, port, count, timeout)
            with Capture(lab.hosts, pts, outdir / scenario) as cap:
                res = client.run(argv, check=False, timeout=600 if command else timeout * count + 30)
            manifest["captures"].append({
                "scenario": scenario,
                "destination": None if command else dst,
                "port": None if scenario in ("icmp", "custom") else port,
                "command": argv,
                "server": server.argv if server and scenario.startswith("tcp") else None,
                "returncode": res.returncode,
                "ok": res.ok,
                "output": (res.stdout + res.stderr)[-2000:],
                "files": {
                    n: {
                        "path": str(Path(r.local).relative_to(outdir)) if r.local else None,
                        **asdict(r.point),
                        "tcpdump_command": r.command,
                        "tcpdump_stats": r.stats,
                        "packets": r.packets,
                    }
                    for n, r in cap.results.items()
                },
            })  # fmt: skip
    finally:
        if server is not None:
            server.stop()
            pod.run(["rm", "-f", server.log], check=False)
    (outdir / "manifest.json").write_text(json.dumps(manifest, indent=1, default=str))
    return manifest
