"""The emulated lab as a rig: the worker namespace's datapaths (through its owner, `datapaths.worker.Worker`)
and the lab's machines."""

from __future__ import annotations

import time
from collections.abc import Sequence

from labtools import datapaths
from labtools.datapaths import Datapath, Node
from labtools.datapaths.worker import Worker
from labtools.hosts import Host
from labtools.lab import Lab, traffic
from labtools.model import services
from labtools.model.datapaths import Releases

PROBE_HZ = 2000.0  # the client's handshakes per second while it watches for a change


def timed_change(host: Host, node: Node, dp: Datapath, before: Sequence[services.ServicePort],
                 after: Sequence[services.ServicePort], ends: traffic.TrafficEnds | None, target: traffic.Target,
                 want: str, hz: float = PROBE_HZ) -> tuple[dict, object]:  # fmt: skip
    """Apply one change with `dp`'s own update path onto a node programmed with `before`, while the client
    watches `target` turn `want` (without `ends`, e.g. over SSH where the clocks differ, nobody watches).

    Returns the record and what was rendered (the partial restore input, the transaction, the map writes).
    The record: `change_render_s` (the lab rendering the update), `change_apply_s` (the update call: for
    kube-proxy a restore process, for eBPF one request to the map writer that stays up, as Cilium's agent does),
    `spawn_s` (the floor of running any command on the node), `change_objects`, and with a watcher
    `change_e2e_s` (from the update call's start to the SYN of the first handshake that shows the change),
    `change_e2e_lo_s` (the handshake before it), `probe_hz`, `probe_attempts`, `probe_lost`; for eBPF
    `map_calls_s` (the bpf() calls alone).
    """
    t0 = time.perf_counter()
    rendered = dp.render_change(before, after, node)
    render_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    host.run(["true"])
    spawn_s = time.perf_counter() - t0
    with dp.updater(host, node) as apply:  # an agent's start-up (eBPF) happens here, before the clock starts
        probe = traffic.watch(ends.client, target, want, hz, cpu=ends.client_cpu) if ends else None
        start = time.monotonic_ns()
        applied = apply(rendered)
        end = time.monotonic_ns()
    out = {"change_render_s": render_s, "change_apply_s": (end - start) / 1e9, "change_objects": applied.objects,
           "spawn_s": spawn_s, **applied.measured}  # fmt: skip
    if probe is not None:
        flip = traffic.watched(probe)
        out |= {"change_e2e_s": (flip["flip_ns"] - start) / 1e9,
                "change_e2e_lo_s": (flip["last_other_ns"] - start) / 1e9,
                "probe_hz": flip["hz"], "probe_attempts": flip["attempts"], "probe_lost": flip["lost"]}  # fmt: skip
    return out, rendered


class LabRig:
    """The emulated lab: switches the worker between datapaths (parking where that is cheap), as the run's
    `releases` model them, through the worker's owner (which holds the lab's lock until `close`)."""

    def __init__(self, lab: Lab, releases: Releases | None = None):
        self.lab = lab
        self.worker = Worker(lab, releases=releases)
        self.node = self.worker.node

    def check(self) -> None:
        """Take the lab's lock before the run starts (refused at once if another command holds the lab); `Lab`
        and the datapaths name what is missing themselves."""
        self.worker.open()

    def provenance(self) -> dict:
        return {"rig": "lab"}

    def workload(self, count: int, seed: int) -> services.Workload:
        return services.build(count, udp_targets=True, seed=seed)

    def endpoints(self) -> traffic.TrafficEnds:
        return traffic.ends(self.lab)

    def use(self, datapath: str, workload: services.Workload, key: object = None) -> dict:
        done = self.worker.use(datapath, workload, key=key)
        return {"render_s": done.render_s, "apply_s": done.apply_s, "objects": done.objects,
                "resumed_s": done.detail.get("resumed_s"),
                "parked": ";".join(sorted(n for n in self.worker.switcher.parked if n != datapath))}  # fmt: skip

    def change(self, datapath: str, workload: services.Workload, ends: traffic.TrafficEnds) -> dict:
        """The `change` metric: one Service added on top of `workload` (programmed on `datapath`) by the
        datapath's own update path, timed as `timed_change` does, then removed again the same way (untimed),
        so the node holds `workload` again for the points after."""
        dp = datapaths.get(datapath, releases=self.worker.releases)
        ch = services.one_change(workload, "add")
        before = services.service_ports(ch.before, self.node.name)
        after = services.service_ports(ch.after, self.node.name)
        host = self.lab.host(self.node.name)
        target = traffic.Target("new", ends.node_address, ch.node_port)
        with self.worker.changing(undone=True):
            server = traffic.start_crr_server(ends.pod, services.IPERF_PORT, ends.server_cpu)
            try:
                out, _ = timed_change(host, self.node, dp, before, after, ends, target, ch.want)
            finally:
                server.stop()
            dp.apply_change(host, dp.render_change(after, before, self.node), self.node)
        return out

    def close(self) -> None:
        try:
            self.worker.clear()  # clears parked datapaths too (no key)
        finally:
            self.worker.close()
