"""Measurements through the worker's service datapath, one tidy record per value.

Metrics (`METRICS`): `throughput` (iperf3 TCP, as the thesis measured; the iperf3 JSON is kept raw),
`crr` (connection setup: a new TCP connection per transaction, thousands per sample, timed by the C
client `labtools-crr`; p50/p90/p99 and the rate), `handshake` (connect() alone: SYN out, SYN-ACK back,
every sample kept), `udp-pps` (new UDP flows per second: `labtools-udp-flood` sends datagrams each from
a never-used source address and port, so every packet is a new conntrack entry; the rate is what
reaches the pod's interface per second of sending, and the worker's conntrack entries for the target
port are deleted before and counted (deleted) after each sample, to show the packets really were new
flows), `transit` (the worker's own time per SYN and SYN-ACK, stamped in the kernel by the
`TransitProbe` during crr traffic), `probe-overhead` (what that probe costs: handshake p50 without and
with it, and its programs' run time) and `change` (one Service changed through the datapath's own
update path, timed end to end; the rig measures it, `records()` makes its records).

Targets (`TARGETS`): the first, middle or last created NodePort Service (worker address : node port),
`new` (the Service the `change` metric adds), or `pod` (the pod IP directly — the baseline without
service translation, and the collateral cost that iptables' KUBE-SERVICES walk puts on non-service
traffic).

Where the traffic comes from and goes to is a `TrafficEnds`: the lab's namespaces (`ends(lab)`),
or on a real cluster the client and worker VMs over SSH and the iperf3 pod through ``kubectl exec``
(`labtools.rigs.cluster`). The measuring code is the same for both.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from labtools.base import distribution, paths
from labtools.base.errors import LabError, PrerequisiteError
from labtools.base.waiting import Timeout, until
from labtools.hosts import Host, Process
from labtools.lab import Lab
from labtools.lab.transit import TransitProbe
from labtools.model import plan, services
from labtools.model.topology import InterfaceRef

CRR = paths.TOOLS / "labtools-crr"
UDP_FLOOD = paths.TOOLS / "labtools-udp-flood"
METRICS = plan.METRICS
TARGETS = plan.TARGETS


@dataclass(frozen=True)
class Target:
    name: str
    address: str
    port: int


@dataclass
class TrafficEnds:
    """The machines a sample involves and the addresses it uses."""

    client: Host  # runs the load tools
    pod: Host  # runs the servers (iperf3, labtools-crr)
    worker: Host  # the node whose datapath is measured: conntrack is read there
    node_address: str  # the worker's address: NodePort targets
    pod_address: str  # the `pod` target
    pod_interface: str  # the pod's interface, where udp-pps counts what arrived
    client_source: str  # an address of the client's /64 (the udp flood varies the rest)
    worker_uplink: str | None = None  # where the transit probe stamps the request in and the reply out
    worker_pod_interface: str | None = None  # the pod's veth on the worker: the other end of the transit
    # CPUs the load tools and the servers are pinned to (taskset), so that the two do not fight over one
    # core and a sample does not depend on where the scheduler put them; None: not pinned.
    client_cpu: int | None = None
    server_cpu: int | None = None


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """`argv` bound to one CPU with taskset, or as it is."""
    return ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv


def ends(lab: Lab) -> TrafficEnds:
    """The TrafficEnds of a lab whose inventory has client, worker and pod machines."""
    inv = lab.inventory
    pod, worker = inv.by_role("pod"), inv.by_role("worker")
    node_ip = worker.global_v6()[0]
    uplink = next(i.name for i in worker.interfaces.values() if any(a.ip == node_ip for a in i.addresses))
    pod_if = next(i.name for i in pod.interfaces.values() if i.addresses)
    link = inv.link_of(InterfaceRef(pod.name, pod_if))
    veth = next((m.interface for m in (link.members if link else []) if m.machine == worker.name), None)
    return TrafficEnds(
        client=lab.host(inv.by_role("client").name),
        pod=lab.host(pod.name),
        worker=lab.host(inv.by_role("worker").name),
        node_address=str(inv.by_role("worker").global_v6()[0]),
        pod_address=str(pod.global_v6()[0]),
        pod_interface=next(i.name for i in pod.interfaces.values() if i.addresses),
        client_source=str(inv.by_role("client").global_v6()[0]),
        worker_uplink=uplink,
        worker_pod_interface=veth,
        # One machine's two cores: the client on one, the pod's server on the other (the lab shares them).
        client_cpu=0 if (os.cpu_count() or 1) >= 2 else None,
        server_cpu=1 if (os.cpu_count() or 1) >= 2 else None,
    )


def _ends(where: Lab | TrafficEnds) -> TrafficEnds:
    return where if isinstance(where, TrafficEnds) else ends(where)


def target(where: Lab | TrafficEnds, workload: services.Workload | None, name: str) -> Target:
    """Where traffic for target `name` goes: a NodePort of the workload, or the pod itself."""
    ends = _ends(where)
    if name == "pod":
        return Target("pod", ends.pod_address, services.IPERF_PORT)
    if name not in TARGETS:
        raise LabError(f"target must be one of {', '.join(TARGETS)}, got {name!r}")
    if workload is None:
        raise LabError(f"target {name!r} needs programmed Services (`labtools services apply`)")
    svc = workload.target(name)
    return Target(name, ends.node_address, svc.spec.ports[0].node_port)


def tool(host: Host, tool: Path = CRR) -> str:
    if not tool.exists():
        raise PrerequisiteError(f"{tool} is missing: run `make setup` (it compiles labtools/tools/*.c)")
    return host.install(tool)


def start_server(server: Host, argv: list[str], listening: str, timeout: float = 10.0) -> Process:
    """Start `argv` on `server` and return once its output says `listening`; a server that exits or stays
    silent is stopped and its output reported."""
    proc = server.start(argv)
    with contextlib.suppress(Timeout):  # an exited server ends the wait at once (its output says why)
        until(lambda: listening in proc.output() or not proc.running(), timeout=timeout, interval=0.02)
    if listening not in proc.output():
        proc.stop()
        raise LabError(f"[{server.name}] `{' '.join(argv)}` did not start listening:\n{proc.output()}")
    return proc


def start_crr_server(server: Host, port: int, cpu: int | None = None) -> Process:
    return start_server(server, pinned([tool(server), "serve", str(port)], cpu), "listening")


def watch(client: Host, t: Target, want: str, hz: float = 2000.0, timeout: float = 600.0,
          cpu: int | None = None) -> Process:  # fmt: skip
    """Start probing `t` with one handshake every 1/`hz` s until it turns `want` ("up": a connection completes;
    "down": the connection is refused). Returns once the probe has seen the other state; `watched()` then
    waits for the flip. A target already `want` is an error: the change would not be observable."""
    if want not in ("up", "down"):
        raise LabError(f"want must be up or down, got {want!r}")
    argv = pinned([tool(client), "watch", t.address, str(t.port), want, f"{hz:g}", f"{timeout:g}"], cpu)
    return start_server(client, argv, "probing")


def watched(proc: Process, timeout: float = 610.0) -> dict:
    """The flip `watch()` saw: CLOCK_MONOTONIC nanoseconds of the first attempt with the wanted outcome
    (`flip_ns`, when its SYN left) and of the last one without (`last_other_ns`), attempts, lost attempts."""
    try:
        proc.wait(timeout)
    finally:
        proc.stop()
    lines = [x for x in proc.output().splitlines() if x.startswith("{")]
    out = json.loads(lines[-1]) if lines else {}
    if not out.get("flipped"):
        raise LabError(f"[{proc.host.name}] the target did not flip within the probe's time:\n{proc.output()}")
    return out


def handshake(client: Host, t: Target, connects: int = 2000, cpu: int | None = None) -> dict:
    """connect() latency alone (SYN out, SYN-ACK back), every sample kept, and the distribution's modes."""
    res = client.run(pinned([tool(client), "handshake", t.address, str(t.port), str(connects)], cpu), timeout=300)
    out = json.loads(res.stdout)
    out["modes"] = distribution.modes(out["samples_ns"])
    return out


def transit(e: TrafficEnds, t: Target, connects: int = 2000, established: bool = False, keys: bool = False) -> dict:
    """The worker's transit time of each new connection's SYN and SYN-ACK, stamped in the kernel.

    The traffic is `connects` crr transactions from the client to `t` (a crr server must be running). With
    `keys`, each sample's packet key too (``request_keys``, ``reply_keys``: client port << 32 | sequence).
    """
    if not (e.worker_uplink and e.worker_pod_interface):
        raise LabError("transit needs the worker's uplink and the pod's veth on it: the emulated lab has both; "
                       "a real cluster's pod veth is Cilium's")  # fmt: skip
    with TransitProbe(e.worker, e.worker_uplink, e.worker_pod_interface, established, keys=keys) as probe:
        traffic = crr(e.client, t, connects, e.client_cpu)
    return {**probe.result, "crr": traffic}


def probe_overhead(e: TrafficEnds, t: Target, connects: int = 1000, pairs: int = 3) -> dict:
    """What the transit probe costs: handshake p50 without and with the probe attached, alternated `pairs`
    times (the difference within each pair), then the probe programs' own run time per run from the
    kernel's BPF statistics (a last leg of its own: the statistics time the datapath's programs too)."""
    if not (e.worker_uplink and e.worker_pod_interface):
        raise LabError("probe-overhead needs the worker's uplink and the pod's veth on it (the emulated lab)")
    legs: list[dict] = []
    for _ in range(pairs):
        without = handshake(e.client, t, connects, e.client_cpu)
        with TransitProbe(e.worker, e.worker_uplink, e.worker_pod_interface):
            attached = handshake(e.client, t, connects, e.client_cpu)
        legs.append({"without_p50_us": without["p50_us"], "with_p50_us": attached["p50_us"]})
    with TransitProbe(e.worker, e.worker_uplink, e.worker_pod_interface, stats=True) as probe:
        crr(e.client, t, connects, e.client_cpu)
    programs = probe.result["programs"]
    return {"pairs": legs, "programs": programs,
            "run_ns": {name: p["run_time_ns"] / p["runs"] if p["runs"] else float("nan")
                       for name, p in programs.items()}}  # fmt: skip


def crr(client: Host, t: Target, transactions: int = 2000, cpu: int | None = None) -> dict:
    """Connection setup latency and rate from `client` to `t` (a crr server must be running)."""
    res = client.run(pinned([tool(client), "connect", t.address, str(t.port), str(transactions)], cpu), timeout=300)
    return json.loads(res.stdout)


def start_iperf3_server(server: Host, port: int, cpu: int | None = None) -> Process:
    """``iperf3 -s`` on `port`, once it listens; --forceflush puts its log lines there at once."""
    return start_server(server, pinned(["iperf3", "-s", "--forceflush", "-p", str(port)], cpu), "Server listening")


def throughput(client: Host, t: Target, seconds: int = 2, retry_for: float = 10.0, cpu: int | None = None) -> dict:
    """iperf3 TCP to `t` for `seconds`; the full iperf3 JSON (an iperf3 server must be running).

    Retried for `retry_for` seconds while the server may still be starting."""
    argv = pinned(["iperf3", "-J", "-c", t.address, "-p", str(t.port), "-t", str(seconds)], cpu)
    last: dict = {}

    def attempt() -> dict | None:
        res = client.run(argv, check=False, timeout=seconds + 30)
        data = json.loads(res.stdout) if res.stdout.strip() else {}
        last.update(error=data.get("error", res.stderr))
        return data if res.ok and "sum_received" in data.get("end", {}) else None

    try:  # the server may still be starting
        return until(attempt, timeout=retry_for + seconds, interval=0.1)
    except Timeout:
        raise LabError(f"[{client.name}] iperf3 to [{t.address}]:{t.port} failed: {last.get('error')}") from None


def _rx_packets(host: Host, ifname: str) -> int:
    return int(host.run(["cat", f"/sys/class/net/{ifname}/statistics/rx_packets"]).stdout)


_DELETED = re.compile(r"(\d+) flow entries have been deleted")


def delete_udp_flows(worker: Host, port: int) -> int | None:
    """Delete the worker's conntrack entries of UDP flows to `port`; how many there were.

    Only the flood's own flows (by original destination port) go, never the whole table: on a real
    node that would also drop the NAT state of the cluster's own connections.
    """
    res = worker.run(["conntrack", "-D", "-p", "udp", "--orig-port-dst", str(port)], check=False)  # rc 1: none
    m = _DELETED.search(res.stderr + res.stdout)
    return int(m.group(1)) if m else None


def udp_pps(client: Host, pod: Host, pod_if: str, worker: Host, t: Target, source: str, packets: int = 50000,
            cpu: int | None = None) -> dict:  # fmt: skip
    """New UDP flows per second from `client` to `t`, counted on the pod's interface `pod_if`.

    `source` is any address of the client's /64 (the flood varies the rest). The worker's conntrack
    entries for `t` are deleted before and after; the count deleted after is the flows the sample created.
    """
    delete_udp_flows(worker, t.port)
    before = _rx_packets(pod, pod_if)
    res = client.run(pinned([tool(client, UDP_FLOOD), source, t.address, str(t.port), str(packets)], cpu),
                     timeout=300)  # fmt: skip
    out = json.loads(res.stdout)
    time.sleep(0.05)  # the last batch may still be in a softirq backlog
    out["delivered"] = _rx_packets(pod, pod_if) - before
    out["pps"] = out["delivered"] / out["elapsed_s"]
    out["conntrack_entries"] = delete_udp_flows(worker, t.port)
    return out


def conntrack_entries(worker: Host) -> int | None:
    """Entries in the worker's conntrack table (0 also when conntrack is not hooked in at all)."""
    ct = worker.run(["conntrack", "-C"], check=False).stdout.strip()
    return int(ct) if ct.isdigit() else None


def sample(where: Lab | TrafficEnds, metric: str, t: Target, *, transactions: int = 2000, seconds: int = 2,
           packets: int = 50000) -> dict:  # fmt: skip
    """One raw measurement of `metric` from the client to `t`, with the matching server started in the pod."""
    if metric not in METRICS:
        raise LabError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
    e = _ends(where)
    cpus = {"client_cpu": e.client_cpu, "server_cpu": e.server_cpu}  # kept with every sample
    if metric == "throughput":
        srv = start_iperf3_server(e.pod, services.IPERF_PORT, e.server_cpu)
    else:  # the crr server also sinks udp-pps datagrams
        srv = start_crr_server(e.pod, services.IPERF_PORT, e.server_cpu)
    try:
        if metric == "udp-pps":
            raw = udp_pps(e.client, e.pod, e.pod_interface, e.worker, t, e.client_source, packets, e.client_cpu)
            return {**raw, **cpus}
        if metric == "transit":
            return {**transit(e, t, transactions), **cpus}
        if metric == "probe-overhead":
            return {**probe_overhead(e, t, transactions), **cpus}
        if metric == "handshake":
            raw = handshake(e.client, t, transactions, e.client_cpu)
        elif metric == "crr":
            raw = crr(e.client, t, transactions, e.client_cpu)
        else:
            raw = throughput(e.client, t, seconds, cpu=e.client_cpu)
        # Whether the worker tracked these connections (kube-proxy needs conntrack; eBPF bypasses it).
        return {**raw, **cpus, "conntrack_entries": conntrack_entries(e.worker)}
    finally:
        srv.stop()


def shape(name: str, samples, base: dict) -> list[dict]:
    """`distribution.flags` of one sample's values as records: ``<name>_modes``, ``_main_mode_share``,
    ``_drift`` (relative) and ``_drifting`` (0 or 1), so that multimodal or drifting samples are in the data."""
    if not len(samples):
        return []
    return [{**base, "metric": f"{name}_{k}", "value": v, "unit": "1"} for k, v in distribution.flags(samples).items()]


CHANGE_FIELDS = ("change_apply_s", "change_e2e_s", "change_e2e_lo_s")  # the `change` metric's, in seconds


def records(metric: str, raw: dict, base: dict) -> list[dict]:
    """Tidy records (one value each) from a raw measurement; `base` carries the sample's coordinates."""
    if metric == "change":
        out = [{**base, "metric": m, "value": raw[m], "unit": "s"} for m in CHANGE_FIELDS if m in raw]
        if "probe_hz" in raw:  # the resolution the times above have
            out.append({**base, "metric": "probe_hz", "value": raw["probe_hz"], "unit": "1/s"})
        return out
    if metric == "crr":
        fields = [("crr_p50", "p50_us", "us"), ("crr_p90", "p90_us", "us"), ("crr_p99", "p99_us", "us"),
                  ("crr_rate", "rate_per_s", "1/s")]  # fmt: skip
        out = [{**base, "metric": m, "value": raw[k], "unit": u} for m, k, u in fields]
        return out + shape("crr", raw.get("samples_ns", []), base)
    if metric == "throughput":
        bps = raw["end"]["sum_received"]["bits_per_second"]
        return [{**base, "metric": "throughput", "value": bps / 1e9, "unit": "Gbit/s"}]
    if metric == "handshake":
        fields = [("handshake_p50", "p50_us", "us"), ("handshake_p90", "p90_us", "us"),
                  ("handshake_p99", "p99_us", "us")]  # fmt: skip
        out = [{**base, "metric": m, "value": raw[k], "unit": u} for m, k, u in fields]
        return out + shape("handshake", raw["samples_ns"], base)
    if metric == "transit":
        out = []
        for direction in ("request", "reply"):
            ns = np.asarray(raw[f"{direction}_ns"], dtype=float)
            for q in (50, 90, 99):
                value = float(np.percentile(ns, q)) if len(ns) else float("nan")
                out.append({**base, "metric": f"transit_{direction}_p{q}", "value": value, "unit": "ns"})
            out.append({**base, "metric": f"transit_{direction}_packets", "value": len(ns), "unit": "packets"})
            out += shape(f"transit_{direction}", ns, base)
        c = raw["counters"]
        out.append({**base, "metric": "transit_unmatched", "value": c["unmatched_request"] + c["unmatched_reply"],
                    "unit": "packets"})  # fmt: skip
        return out
    if metric == "probe-overhead":
        deltas = [(p["with_p50_us"] - p["without_p50_us"]) * 1e3 for p in raw["pairs"]]
        out = [{**base, "metric": "probe_handshake_delta", "value": float(np.median(deltas)), "unit": "ns"}]
        return out + [{**base, "metric": f"probe_{name}_run", "value": ns, "unit": "ns"}
                      for name, ns in raw["run_ns"].items()]  # fmt: skip
    if metric == "udp-pps":
        delivered = raw["delivered"] / raw["sent"]
        return [{**base, "metric": "udp_pps", "value": raw["pps"], "unit": "1/s"},
                {**base, "metric": "udp_delivered_ratio", "value": delivered, "unit": "1"}]  # fmt: skip
    raise LabError(f"unknown metric {metric!r}: choose one of {', '.join(METRICS)}")
