"""The scale sweep on a real cluster: Cilium's two service datapaths, Services through the API.

An inventory with a ``cluster:`` section (see ``labtools/inventories/openstack-example.yml``) describes VMs that run a
kubeadm cluster with Cilium. `ClusterRig` gives the sweep the same two things `sweep.LabRig` gives it
on the emulated lab:

- `use(datapath, workload)` puts the worker on a datapath and programs the workload's Services:
  ``iptables`` is Cilium with kube-proxy (iptables mode), ``ebpf`` is Cilium's kube-proxy replacement.
  A change of mode runs `testbed.switch_mode()` over SSH on the master (helm upgrade, kube-proxy
  deleted or restored, agents restarted). The Services are made exactly the workload's through the
  API (`kube.Kube.scale_services`, the cluster IPs and node ports labtools chose, as in the lab), and
  the call returns once the datapath really has them, with that wait recorded as the programming
  latency (ClusterLoader2's network-programming-latency SLI, per datapath).
- `endpoints()` is where traffic flows: the client and worker VMs over SSH (through ``sudo -n`` when
  the login is not root) and the iperf3 pod through ``kubectl exec`` on the master.

`describe()` is the dry run: every mode switch with its commands and every API change, in order,
without connecting to anything.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import replace

from labtools.base.errors import LabError
from labtools.datapaths import readback
from labtools.hosts import ExecHost, Host, as_root
from labtools.hosts.exec import privileged
from labtools.lab import Lab, traffic
from labtools.model import services
from labtools.model.topology import Inventory
from labtools.rigs import kube, testbed

# The sweep's datapath names on a cluster, and the Cilium mode each is.
MODES = {"iptables": "kube-proxy", "ebpf": "ebpf"}


def _expand(path: str | None) -> str | None:
    return os.path.expanduser(path) if path else None


def is_cluster(inv: Inventory) -> bool:
    return inv.cluster is not None


def check_datapaths(names: Iterable[str]) -> None:
    bad = [d for d in names if d not in MODES]
    if bad:
        raise LabError(
            f"on a cluster the datapaths are {', '.join(MODES)} (Cilium with kube-proxy, Cilium's kube-proxy "
            f"replacement), not {', '.join(bad)}; the pod target measures the path without Service translation"
        )


def pod_host(master: Host, pod: str, spec: dict, sudo: bool) -> ExecHost:
    """The iperf3 pod as a `Host`: ``kubectl exec -i`` on the master with its admin kubeconfig."""
    kubectl = ["kubectl", "--kubeconfig", spec["admin_kubeconfig"], "exec", "-i", "-n", spec["namespace"], pod]
    prefix = privileged([*kubectl, "-c", kube.CONTAINER, "--"], sudo)
    return ExecHost(f"pod/{pod}", master, prefix)


def probe_for(mode: str, lab: Lab):
    """What tells whether `mode`'s datapath has programmed a Service: the worker's iptables, or Cilium."""
    inv, spec = lab.inventory, lab.inventory.cluster or {}
    worker, master = inv.by_role("worker"), inv.by_role("master")
    if mode == "kube-proxy":
        return readback.IptablesReadback(lab.host(worker.name), sudo=testbed.needs_sudo(inv, worker.name))
    return readback.CiliumReadback(
        lab.host(master.name),
        str(worker.global_v6()[0]),
        kubeconfig=spec.get("admin_kubeconfig", kube.ADMIN_KUBECONFIG),
        sudo=testbed.needs_sudo(inv, master.name),
    )


class ClusterRig:
    """Switches a real cluster between Cilium's modes and programs the sweep's Services through the API.

    `kube_client`, `switch` (mode -> None), `probe` (mode -> probe) and `pod` (pod name -> Host) default
    to the real ones: the API, `testbed.switch_mode`, `probe_for` and `pod_host`. They can be given,
    e.g. to drive a cluster whose mode is switched by other means, or stand-ins in tests.
    """

    def __init__(
        self,
        lab: Lab,
        max_services: int,
        *,
        kube_client: kube.Kube | None = None,
        switch: Callable[[str], object] | None = None,
        probe: Callable[[str], object] | None = None,
        pod: Callable[[str], Host] | None = None,
        timeout: float = 900.0,
        progress: bool = True,
    ):
        inv = lab.inventory
        if inv.cluster is None:
            raise LabError(f"inventory {inv.name} has no `cluster:` section: it does not describe a Kubernetes cluster")
        self.lab, self.spec, self.progress, self.timeout = lab, inv.cluster, progress, timeout
        self.opts = testbed.Options(services=max_services, cilium_version=self.spec["cilium_version"])
        self.kube = kube_client or kube.Kube(
            kube.api_client(_expand(self.spec["kubeconfig"]), self.spec["context"]), namespace=self.spec["namespace"]
        )
        self.helm = switch is None  # the switch is testbed.switch_mode: helm on the master
        self.switch = switch or (lambda mode: testbed.switch_mode(lab, mode, self.opts, echo=self._echo))
        self.probe = probe or (lambda mode: probe_for(mode, lab))
        master = inv.by_role("master").name
        self.pod = pod or (lambda name: pod_host(lab.host(master), name, self.spec, testbed.needs_sudo(inv, master)))
        self.mode: str | None = None
        self._state: tuple | None = None  # (mode, Service count, seed) the cluster is known to be in
        self._ends: traffic.TrafficEnds | None = None

    def _echo(self, line: str) -> None:
        if self.progress:
            print(line, flush=True)

    @property
    def port_range(self) -> services.PortRange:
        return services.PortRange.parse(self.opts.port_range)

    def check(self) -> None:
        """Before anything changes: the API answers, and its node port range holds the sweep's NodePorts.

        The cluster's own range is used from then on (Services and Cilium's values alike), whatever
        the largest count of this particular sweep would have chosen.
        """
        self.kube.require_reachable()
        if self.helm and self.opts.cilium_version is None:
            # Pin the switches to the installed chart: an unpinned `helm upgrade` would install the newest
            # Cilium, and the two modes would be measured on different versions.
            installed = self.installed_cilium()
            if installed:
                self.opts = replace(self.opts, cilium_version=installed)
            else:
                self._echo("note: no helm release `cilium` found on the master; a switch installs the newest chart")
        have = self.kube.node_port_range()
        if have is None:
            return
        if have.size < self.opts.services:
            raise LabError(
                f"the API server's service-node-port-range is {have} ({have.size} ports), too few for "
                f"{self.opts.services} NodePort Services: set the cluster up with `labtools testbed apply --services "
                f"{self.opts.services}` (kubeadm's apiServer.extraArgs), or sweep fewer Services"
            )
        self.opts = replace(self.opts, node_port_range=str(have))

    def installed_cilium(self) -> str | None:
        """The chart version of helm's ``cilium`` release (asked on the master), None if there is none."""
        inv, master = self.lab.inventory, self.lab.inventory.by_role("master").name
        argv = ["helm", "list", "-n", "kube-system", "--filter", "^cilium$", "-o", "json",
                "--kubeconfig", self.spec["admin_kubeconfig"]]  # fmt: skip
        res = as_root(self.lab.host(master), testbed.needs_sudo(inv, master)).run(argv, check=False)
        try:
            chart = json.loads(res.stdout)[0]["chart"]  # "cilium-1.16.5"
        except (ValueError, IndexError, KeyError, TypeError):
            return None
        return chart.removeprefix("cilium-")

    def provenance(self) -> dict:
        """What the cluster's samples ran on (the local tool versions come from `traffic.provenance`)."""
        worker = self.lab.host(self.lab.inventory.by_role("worker").name)
        return {
            "rig": "cluster",
            "worker_kernel": worker.run(["uname", "-r"], check=False).stdout.strip() or "unavailable",
            "kubernetes": self.kube.version() or "unavailable",
            "cilium_mode_at_start": self.kube.service_datapath(),
            "cilium_chart": self.opts.cilium_version or "newest at switch time",
        }

    def workload(self, count: int, seed: int) -> services.Workload:
        # One node port range for every count, so a Service keeps its port as N grows.
        return services.build(
            count, udp_targets=True, seed=seed, node_port_range=str(self.port_range), endpoint_node=self.spec["node"]
        )

    def endpoints(self) -> traffic.TrafficEnds:
        """The client and worker VMs and the iperf3 pod (created if missing, pinned to the worker)."""
        if self._ends is None:
            inv, lab = self.lab.inventory, self.lab
            self.kube.ensure_deployment(kube.deployment(image=self.spec["image"], node=self.spec["node"],
                                                        namespace=self.spec["namespace"]))  # fmt: skip
            pod = self.kube.ready_pod()
            ip = next((i.ip for i in (pod.status.pod_ips or []) if ":" in i.ip), pod.status.pod_ip)
            client, worker = inv.by_role("client").name, inv.by_role("worker").name
            self._ends = traffic.TrafficEnds(
                client=as_root(lab.host(client), testbed.needs_sudo(inv, client)),  # raw socket for udp-pps
                pod=self.pod(pod.metadata.name),
                worker=as_root(lab.host(worker), testbed.needs_sudo(inv, worker)),  # conntrack
                node_address=str(inv.by_role("worker").global_v6()[0]),
                pod_address=ip,
                pod_interface=self.spec["pod_interface"],
                client_source=str(inv.by_role("client").global_v6()[0]),
            )
        return self._ends

    def use(self, datapath: str, workload: services.Workload, key: object = None) -> dict:
        """Put the cluster on `datapath` with exactly `workload`'s Services; the programming record.

        Nothing changes when the mode and the Services are already those (the next repeat): the record
        then says ``changed: False`` and carries no latency, so every latency is a real change. The
        first call always switches, whatever the cluster seems to be in. After a switch the latency
        runs from the switch's start (``latency_from: switch``): the new datapath must program every
        Service; otherwise from the first API request (``latency_from: api``).
        """
        check_datapaths([datapath])
        mode = MODES[datapath]
        state = (mode, len(workload.services), workload.params.get("seed"))
        rec: dict = {"mode": mode, "services": len(workload.services), "mode_switch_s": None, "changed": False,
                     "api_s": None, "created": 0, "deleted": 0, "latency_s": None, "latency_from": None,
                     "probe": None, "polls": 0}  # fmt: skip
        if state == self._state:
            return rec
        t0 = time.monotonic()
        if self.mode != mode:  # also the first time: a half-done earlier switch looks like either mode
            self.switch(mode)
            rec["mode_switch_s"] = round(time.monotonic() - t0, 3)
            self.mode = mode
        t_api = time.monotonic()
        done = self.kube.scale_services(workload, allocate="labtools", progress=self.progress)
        want = readback.frontends(workload.services)
        # After a switch the new datapath programs every Service, not only the changed ones: from the switch.
        since = t0 if rec["mode_switch_s"] is not None else t_api
        gone = done["gone"] - want  # deleted, or a port a re-created Service no longer has
        wait = readback.wait_programmed(self.probe(mode), want, absent=gone, since=since, timeout=self.timeout)
        if not wait["ok"]:
            raise LabError(
                f"{datapath} ({mode}) has not programmed the Services after {self.timeout:g} s: "
                f"{wait['programmed']} of {wait['expected']} frontends there, {wait['lingering']} deleted ones "
                f"still there (probe: {wait['probe']})"
            )
        self._state = state
        rec.update({"changed": True, "api_s": done["seconds"], "created": done["created"], "deleted": done["deleted"],
                    "latency_s": wait["latency_s"], "latency_from": "switch" if since == t0 else "api",
                    "probe": wait["probe"], "polls": wait["polls"]})  # fmt: skip
        return rec

    def change(self, datapath: str, workload: services.Workload, ends: traffic.TrafficEnds) -> dict:
        """Not on a real cluster: its Services change through the API and its agents, and the client's and the
        node's clocks differ, so the lab's timing would not be what it claims."""
        raise LabError("the change metric needs the emulated lab (a real cluster's programming latency is "
                       "ClusterLoader2's to measure)")

    def close(self) -> None:
        """Delete the sweep's Services and the iperf3 Deployment (by label); the mode stays as it is."""
        try:
            self.kube.delete_services(progress=self.progress)
            self.kube.delete_deployment()
        finally:
            self.lab.close()


def describe(inv: Inventory, points: Iterable[tuple[int, int, str, str, str]], max_services: int,
             cilium_version: str | None = None) -> list[str]:  # fmt: skip
    """The dry run of a cluster sweep: what changes on the machines and in the API, in order."""
    points = list(points)
    check_datapaths(dict.fromkeys(p[2] for p in points))
    spec = inv.cluster or {}
    opts = testbed.Options(services=max_services, cilium_version=cilium_version or spec.get("cilium_version"))
    lines, mode, last_count = [], None, 0
    for c, r, d, m, t in points:
        if MODES[d] != mode or c != last_count:
            if MODES[d] != mode:
                mode = MODES[d]
                steps = testbed.plan(inv, replace(opts, stages=("cilium",), cilium_mode=mode))
                lines.append(f"# switch the cluster to Cilium {mode} mode ({d}):")
                lines += ["  " + ln for ln in testbed.script(inv, steps).rstrip("\n").splitlines()]
            if c != last_count:
                verb = "create" if c > last_count else "delete"
                lines.append(f"# API: {verb} Services until exactly {c} are there in namespace "
                             f"{spec.get('namespace')} (labtools allocation; node ports from the API server's "
                             f"service-node-port-range, which must hold {opts.services:,})")  # fmt: skip
                last_count = c
            probe = "ip6tables-save -t nat on the worker" if mode == "kube-proxy" else "cilium-dbg service list"
            lines.append(f"# wait until {probe} shows every frontend of the {c} Services and none deleted "
                         "(programming latency)")  # fmt: skip
        lines.append(f"measure {m} at {t} (n={c}, repeat {r}, {d})")
    return lines
