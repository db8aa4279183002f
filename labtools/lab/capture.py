"""Packet captures at the thesis' five points around a traffic command (thesis §11.4, Figs. 38-42).

The points: ``client`` (the client's ens3), ``router-client`` (router ens3, client side),
``router-cluster`` (router ens7, cluster side), ``worker`` (the worker's uplink ens3) and ``pod`` (the
pod's eth0). They are derived from the inventory, so the same code captures on the real VMs.

`Capture` starts one ``tcpdump`` per point (``-U --immediate-mode``, a full snap length, written to a
temporary file on the host), waits until every one has printed ``listening on`` (the capture socket is
bound: nothing sent afterwards is missed), and on exit stops them with SIGINT, so tcpdump flushes the
file and prints its statistics, then fetches the pcaps. Every tcpdump is stopped in a ``finally`` (and is
tied to its parent by ``Host.start``), so nothing survives a crash.

`experiments.captures.run()` captures the standard scenarios around it, as a recorded run.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from scapy.error import Scapy_Exception
from scapy.utils import PcapReader

from labtools.base.errors import LabError
from labtools.base.waiting import Timeout, until
from labtools.hosts import Host, Process
from labtools.model.topology import Inventory, Machine

POINTS = ("client", "router-client", "router-cluster", "worker", "pod")
SNAPLEN = 262144  # tcpdump's default maximum: whole jumbo frames (MTU 8950) plus the SRH


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


def tcpdump_argv(iface: str, path: str, snaplen: int = SNAPLEN, bpf_filter: str | None = None,
                 nano: bool = False) -> list[str]:  # fmt: skip
    """tcpdump writing `path`; `nano`: nanosecond timestamps (a timing cross-check needs them)."""
    # -B: a kernel buffer of 16 MiB (2 MiB by default), so a burst is not dropped while tcpdump writes the file
    argv = ["tcpdump", "-i", iface, "-n", "-U", "--immediate-mode", "-B", "16384", "-s", str(snaplen), "-Z", "root",
            "-w", path]  # fmt: skip
    argv += ["--time-stamp-precision", "nano"] if nano else []
    return argv + ([bpf_filter] if bpf_filter else [])


def pcap_count(path: str | Path) -> int:
    """Packets in a capture file, read with scapy (pcap or pcapng)."""
    try:
        with PcapReader(str(path)) as reader:
            return sum(1 for _ in reader)
    except Scapy_Exception as e:
        raise LabError(f"{path} is not a pcap file: {e}") from None


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
        nano: bool = False,
    ):
        self.hosts, self.points, self.outdir = hosts, dict(pts), Path(outdir)
        self.snaplen, self.filter, self.ready_timeout, self.nano = snaplen, bpf_filter, ready_timeout, nano
        self.procs: dict[str, Process] = {}
        self.results: dict[str, PointCapture] = {}

    def start(self) -> Capture:
        for p in self.points.values():
            self.hosts[p.machine].require_tools("tcpdump")
        self.outdir.mkdir(parents=True, exist_ok=True)
        stamp = time.time_ns()
        try:
            for name, p in self.points.items():
                # In a namespace (this filesystem) tcpdump writes into the run folder itself, so a killed run
                # leaves nothing in /tmp; a VM writes to its own /tmp, removed after the copy.
                if self.hosts[p.machine].is_local:
                    remote = str(self.outdir / f".{name}.pcap.part")
                else:
                    remote = f"/tmp/labtools-capture-{stamp}-{name}.pcap"
                argv = tcpdump_argv(p.interface, remote, self.snaplen, self.filter, self.nano)
                self.results[name] = PointCapture(p, argv, remote)
                self.procs[name] = self.hosts[p.machine].start(argv)
            waiting = set(self.procs)

            def listening() -> bool:
                for name in list(waiting):
                    proc = self.procs[name]
                    out = proc.output()
                    if "listening on" in out:
                        waiting.discard(name)
                    elif not proc.running():
                        raise LabError(f"[{proc.host.name}] tcpdump on {self.points[name].interface} exited:\n{out}")
                return not waiting

            try:
                until(listening, timeout=self.ready_timeout, interval=0.02)
            except Timeout:
                late = ", ".join(waiting)
                raise LabError(f"tcpdump not listening after {self.ready_timeout:g} s at {late}") from None
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
                proc.interrupt()
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
