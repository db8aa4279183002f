"""The sweep on a real cluster (labtools.rigs.cluster): inventory, ordering, dry run, bookkeeping, and end to end.

Kubernetes itself cannot run here, so three parts have stand-ins, each named as such: the API server
(the in-memory one of test_kube, which answers like the real one), the Cilium mode switch (recorded),
and kube-proxy/Cilium on the node (`EmulatedNode`: programs the emulated worker with the lab's own
datapaths from the Services in that API). Everything else is real in the end-to-end test: sshd on
emulated VMs, the load tools over SSH, the servers in the pod through an exec wrapper on the master
(``ip netns exec`` where the cluster uses ``kubectl exec``), the worker's kernel datapath. The sweep
against a real cluster runs only when KUBECONFIG and LABTOOLS_TESTBED point at one.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from kubernetes import client as k8s

from labtools import datapaths
from labtools.base.errors import InventoryError, LabError
from labtools.datapaths import readback
from labtools.experiments import sweep
from labtools.hosts import ExecHost
from labtools.lab import Lab
from labtools.model import plan as plan_
from labtools.model import services, topology
from labtools.rigs import cluster, kube
from tests.conftest import POD_IP, ROOT, emulated_vms_up, lab_fixture
from tests.test_kube import FakeApps, FakeCore

OPENSTACK = ROOT / "labtools" / "inventories" / "openstack-example.yml"


# ----------------------------------------------------------------------------- inventory


def test_the_example_inventory_describes_a_cluster():
    inv = topology.load(OPENSTACK)
    assert cluster.is_cluster(inv) and not cluster.is_cluster(topology.load(None))
    assert inv.cluster["namespace"] == "default" and inv.cluster["node"] == "worker"
    assert inv.cluster["admin_kubeconfig"] == "/etc/kubernetes/admin.conf" and inv.cluster["pod_interface"] == "eth0"


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda d: d["cluster"].update(speed=1), r"unknown key 'speed' in cluster"),
        (
            lambda d: d.update(
                yaml.safe_load((ROOT / "labtools" / "inventories" / "thesis-netns.yml").read_text()), cluster={}
            ),
            r"cluster: needs backend: ssh",
        ),
        (lambda d: d["machines"].pop("master"), r"exactly one machine with role 'master'"),
        (lambda d: d["cluster"].update(namespace=""), r"namespace must be a non-empty string"),
    ],
)
def test_bad_cluster_sections_are_refused(edit, message):
    data = yaml.safe_load(OPENSTACK.read_text())
    edit(data)
    with pytest.raises(InventoryError, match=message):
        topology.parse(data, "x.yml")


# ----------------------------------------------------------------------------- order and dry run


def test_datapath_order_switches_once_per_datapath_and_snakes_the_counts():
    plan = plan_.Plan("x", ["iptables", "ebpf"], [1, 10, 100], ["crr"], ["last"], repeats=2, order="datapath")
    outer = list(dict.fromkeys((d, c, r) for c, r, d, _, _ in plan.points()))
    assert outer == [("iptables", c, r) for c in (1, 10, 100) for r in (0, 1)] + [
        ("ebpf", c, r) for c in (100, 10, 1) for r in (0, 1)
    ]
    assert len(plan.points()) == len(plan_.Plan("x", ["iptables", "ebpf"], [1, 10, 100], ["crr"], ["last"],
                                                repeats=2).points())  # fmt: skip
    with pytest.raises(LabError, match="order must be one of"):
        plan_.Plan("x", ["ebpf"], [1], ["crr"], ["last"], order="random").validate()


def test_cluster_dry_run_shows_every_switch_and_api_change():
    res = subprocess.run(
        [sys.executable, "-m", "labtools", "sweep", "--profile", "testbed", "--run-id", "tb", "-i", str(OPENSTACK),
         "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    params = plan_.profile_params("testbed")["sweeps"]
    for name, spec in params.items():
        plan = plan_.plans({name: spec}, "tb")[0]
        section = out.split(f"# ==== tb-{name}:")[1].split("# ==== ")[0]
        assert section.count("\nmeasure ") == len(plan.points())
        switches = [ln for ln in section.splitlines() if ln.startswith("# switch the cluster")]
        assert switches == ["# switch the cluster to Cilium kube-proxy mode (iptables):",
                            "# switch the cluster to Cilium ebpf mode (ebpf):"]  # fmt: skip
        ebpf = section.split("Cilium ebpf mode")[1]
        # The thesis' order (lines 1293-1296 and 1373-1388): helm with kube-proxy replacement, then
        # kube-proxy's DaemonSet and ConfigMap go, then its rules, then the agents restart.
        order = ["helm upgrade --install cilium", "delete ds kube-proxy", "delete cm kube-proxy",
                 "grep -v KUBE", "rollout restart ds/cilium"]  # fmt: skip
        where = [ebpf.index(x) for x in order]
        assert where == sorted(where)
        assert "sudo -n" in ebpf  # the example logs in as ubuntu
        assert "kubeadm init phase addon kube-proxy" in section.split("Cilium ebpf mode")[0]
    # s2 reaches 10,000 NodePorts: the Cilium values carry the widened range.
    assert f"range: {services.WIDE_NODE_PORT_RANGE.replace('-', ',')}" in out.split("# ==== tb-s2:")[1]


def test_emulated_datapaths_are_refused_on_a_cluster():
    res = subprocess.run(
        [sys.executable, "-m", "labtools", "sweep", "--run-id", "x", "-i", str(OPENSTACK), "--datapaths",
         "none,nftables,ebpf", "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode != 0
    assert "on a cluster the datapaths are iptables, ebpf" in res.stderr and "not none, nftables" in res.stderr


# ----------------------------------------------------------------------------- the rig's bookkeeping


class ClusterCore(FakeCore):
    """The fake API server of test_kube, plus the iperf3 pod, Cilium's ConfigMap and the API server pod."""

    def __init__(self, state, node_port_range, pod_ip="2001:db8:1234:5678:8:2:0:7"):
        super().__init__()
        self.state, self.node_port_range, self.pod_ip = state, node_port_range, pod_ip

    def list_namespaced_pod(self, namespace, label_selector=None):
        if label_selector == kube.POD_SELECTOR:
            status = k8s.V1PodStatus(
                phase="Running",
                pod_ip=self.pod_ip,
                conditions=[k8s.V1PodCondition(type="Ready", status="True")],
            )
            pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="iperf3-deployment-abc"), status=status)
            return k8s.V1PodList(items=[pod])
        cmd = ["kube-apiserver", f"--service-node-port-range={self.node_port_range}"]
        spec = k8s.V1PodSpec(containers=[k8s.V1Container(name="kube-apiserver", command=cmd)])
        return k8s.V1PodList(items=[k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="kube-apiserver-master"), spec=spec)])

    def read_namespaced_config_map(self, name, namespace):
        kpr = "true" if self.state.mode == "ebpf" else "false"
        return k8s.V1ConfigMap(data={"kube-proxy-replacement": kpr})


class ClusterApps(FakeApps):
    def __init__(self, state):
        super().__init__()
        self.state = state

    def read_namespaced_daemon_set(self, name, namespace):
        if self.state.mode == "ebpf":
            raise k8s.exceptions.ApiException(status=404, reason="Not Found")
        return k8s.V1DaemonSet(metadata=k8s.V1ObjectMeta(name=name))


class StandInCluster:
    """Mode switches and a datapath that programs, a few polls late, the Services the API holds."""

    def __init__(self, mode="ebpf", lag=3):
        self.mode, self.lag, self.switches = mode, lag, []
        self.core: ClusterCore | None = None

    def switch(self, mode):
        self.switches.append(mode)
        self.mode = mode

    def probe(self, mode):
        outer = self

        class Probe:
            name = f"stand-in {mode}"
            polls = 0

            def programmed(self):
                assert outer.mode == mode, "probed a datapath the cluster is not on"
                self.polls += 1
                if self.polls <= outer.lag:
                    return set()
                return readback.frontends(k8s.V1Service.model_validate(d) for d in outer.core.store.values())

        return Probe()


def stand_in_rig(max_services, node_port_range="30000-40999", mode="ebpf"):
    c = StandInCluster(mode)
    c.core = ClusterCore(c, node_port_range)
    k = kube.Kube(core=c.core, apps=ClusterApps(c), qps=1e6, burst=1000)
    lab = Lab(OPENSTACK)
    rig = cluster.ClusterRig(lab, max_services, kube_client=k, switch=c.switch, probe=c.probe, progress=False)
    return rig, c


def test_rig_switches_modes_only_when_needed_and_records_programming():
    rig, c = stand_in_rig(3000)
    rig.check()
    assert str(rig.port_range) == "30000-40999"  # the cluster's own range, not one derived from 3000
    w1, w2 = rig.workload(1000, 0), rig.workload(3000, 0)
    assert w1.params["node_port_range"] == w2.params["node_port_range"] == "30000-40999"
    first = rig.use("iptables", w1)
    assert c.switches == ["kube-proxy"] and first["mode"] == "kube-proxy" and first["mode_switch_s"] is not None
    assert first["created"] == 1000 and first["latency_s"] is not None and first["polls"] > 3
    assert first["latency_from"] == "switch"  # after a switch the new datapath programs everything
    body = c.core.store["svc-00001"]
    assert body["spec"]["clusterIP"] == w1.services[0].spec.cluster_ip  # labtools allocation, as in the lab
    again = rig.use("iptables", w2)
    assert c.switches == ["kube-proxy"] and again["mode_switch_s"] is None
    # 2000 new; the old middle and last lose their UDP ports, so they are replaced.
    assert (again["created"], again["deleted"]) == (2002, 2)
    assert again["latency_from"] == "api"
    same = rig.use("iptables", w2)  # the next repeat: nothing to change, no latency to record
    assert not same["changed"] and same["latency_s"] is None and same["created"] == same["deleted"] == 0
    back = rig.use("ebpf", w1)  # the way down: 2000 deleted and gone from the datapath
    assert c.switches == ["kube-proxy", "ebpf"] and back["deleted"] == 2002 and back["created"] == 2
    assert len(c.core.store) == 1000
    ends = rig.endpoints()
    assert ends.pod_address == "2001:db8:1234:5678:8:2:0:7" and ends.node_address == "2001:db8:1234:5678::2"
    assert ends.pod.prefix[:3] == ["sudo", "-n", "kubectl"] and "iperf3-deployment-abc" in ends.pod.prefix
    assert ends.worker.prefix == ["sudo", "-n"]  # conntrack needs root; the example logs in as ubuntu
    # The Deployment went to the apps API, pinned to the worker.
    assert rig.kube.apps.deployments[kube.DEPLOYMENT]["spec"]["template"]["spec"]["nodeSelector"] == {
        "kubernetes.io/hostname": "worker"
    }
    rig.close()
    assert c.core.store == {} and rig.kube.apps.deployments == {}


def test_rig_refuses_a_cluster_whose_node_port_range_is_too_small():
    rig, _ = stand_in_rig(10000, node_port_range="30000-32767")
    with pytest.raises(LabError, match=r"service-node-port-range is 30000-32767 \(2768 ports\).*--services 10000"):
        rig.check()


def test_rig_reports_a_datapath_that_never_programs():
    rig, c = stand_in_rig(10)
    c.lag = 10**9
    rig.timeout = 0.5
    with pytest.raises(LabError, match=r"iptables \(kube-proxy\) has not programmed the Services after 0.5 s: 0 of 13"):
        rig.use("iptables", rig.workload(10, 0))


# ----------------------------------------------------------------------------- end to end on emulated VMs


class EmulatedNode:
    """Stand-in for kube-proxy and Cilium on the emulated worker VM: on every poll it programs the
    worker, over SSH, with the Services the (fake) API holds, using the lab's own datapaths (iptables
    for Cilium's kube-proxy mode, the tc eBPF program for kube-proxy replacement), then answers with
    what the worker really has (``ip6tables-save`` for iptables)."""

    def __init__(self, core, worker, node, port_range):
        self.core, self.worker, self.node, self.port_range = core, worker, node, port_range
        self.switcher = datapaths.Switcher(worker, node)
        self.synced = None

    def probe(self, mode):
        outer = self

        class Probe:
            name = f"emulated {mode}"

            def programmed(self):
                return outer.sync(mode)

        return Probe()

    def sync(self, mode):
        n = len(self.core.store)
        w = services.build(n, udp_targets=True, node_port_range=self.port_range)
        live = {name: (d["spec"]["clusterIP"], sorted((p["protocol"], p["nodePort"]) for p in d["spec"]["ports"]))
                for name, d in self.core.store.items()}  # fmt: skip
        want = {s.metadata.name: (s.spec.cluster_ip, sorted((p.protocol, p.node_port) for p in s.spec.ports))
                for s in w.services}  # fmt: skip
        assert live == want, "the API does not hold exactly the workload"
        datapath = "iptables" if mode == "kube-proxy" else "ebpf"
        if self.synced != (datapath, n):
            self.switcher.use(datapath, services.service_ports(w, self.node.name))
            self.synced = (datapath, n)
        if datapath == "iptables":
            return readback.IptablesReadback(self.worker).programmed()
        return readback.frontends(w.services)  # the eBPF maps hold what was just programmed


@lab_fixture(scope="module")
def cluster_vms(tmp_path_factory):
    yield from emulated_vms_up("pyc", tmp_path_factory)


@pytest.fixture(scope="module")
def emulated_cluster(cluster_vms):
    """The thesis VMs with addresses (over SSH); the cluster's view of them has no pod machine."""
    vms = cluster_vms
    ssh_lab = Lab(vms.ssh_inventory())
    cl_lab = None
    try:
        ssh_lab.up(progress=False)  # addresses and routes, the pod's too, over SSH
        raw = yaml.safe_load(Path(ssh_lab.inventory.path).read_text())
        raw["machines"].pop("pod")
        raw["cluster"] = {"namespace": "default"}
        path = vms.workdir / "cluster.yml"
        path.write_text(yaml.safe_dump(raw, sort_keys=False))
        cl_lab = Lab(path)
        yield vms, cl_lab
    finally:
        for lab in (cl_lab, ssh_lab):
            if lab is not None:
                lab.close()


def test_cluster_sweep_end_to_end_on_emulated_vms(emulated_cluster, tmp_path):
    """sweep.run with a ClusterRig: everything real but the API server, the mode switch and kubectl.

    The load tools run on the client VM over SSH, the servers in the pod through an exec wrapper on
    the master, the worker's datapath changes with the "Cilium mode", and every point carries its
    programming latency.
    """
    vms, cl_lab = emulated_cluster
    state = StandInCluster(mode="ebpf")
    state.core = core = ClusterCore(state, "30000-40999", pod_ip=POD_IP)
    node = datapaths.node_of(vms.lab.inventory)  # the netns inventory knows the pod's veth (eBPF redirects to it)
    emu = EmulatedNode(core, cl_lab.host("worker"), node, "30000-40999")
    k = kube.Kube(core=core, apps=ClusterApps(state), qps=1e6, burst=1000)
    pod_ns = vms.lab.ns("pod")
    rig = cluster.ClusterRig(
        cl_lab, 100, kube_client=k, switch=state.switch, probe=emu.probe, progress=False,
        pod=lambda name: ExecHost(name, cl_lab.host("master"), ["ip", "netns", "exec", pod_ns]),
    )  # fmt: skip
    plan = plan_.Plan("emu", ["iptables", "ebpf"], [1, 100], ["crr", "udp-pps"],
                      {"crr": ["last", "pod"], "udp-pps": ["last"]}, repeats=1, crr_transactions=300,
                      udp_packets=2000, order="datapath")  # fmt: skip
    try:
        csv, new = sweep.run(cl_lab, plan, tmp_path, progress=False, rig=rig)
    finally:
        emu.switcher.use("none", [])
    assert new == len(plan.points()) == 12
    assert state.switches == ["kube-proxy", "ebpf"]
    df = pd.read_csv(csv)
    crr = df[df.metric == "crr_p50"]
    assert len(crr) == 8 and (crr.value > 0).all()
    assert df["programming_latency_s"].notna().all() and (df["programming_probe"].str.startswith("emulated")).all()
    first = df[(df.services == 1) & (df.datapath == "iptables")]
    assert first["programming_mode_switch_s"].notna().all()  # the switch to kube-proxy came with this point
    udp = df[df.metric == "udp_delivered_ratio"].set_index("datapath")
    assert (udp.value > 0.9).all()
    # kube-proxy's NAT tracks every new flow; the eBPF NodePort path tracks none.
    assert (udp.loc["iptables", "conntrack_entries"] >= 1800).all() and (
        udp.loc["ebpf", "conntrack_entries"] == 0
    ).all()
    manifest = json.loads((tmp_path / "raw" / "emu" / "manifest.json").read_text())
    assert manifest["provenance"]["rig"] == "cluster" and manifest["provenance"]["worker_kernel"]
    assert core.store == {} and rig.kube.apps.deployments == {}  # cleaned up by label


# ----------------------------------------------------------------------------- a real cluster


@pytest.mark.kube
def test_real_cluster_sweep(tmp_path):
    """Both Cilium modes, two counts, crr at the last NodePort and the pod: a complete, tidy run."""
    inv = os.environ.get("LABTOOLS_TESTBED")
    if not os.environ.get("KUBECONFIG") or not inv:
        pytest.skip("needs a real cluster: set KUBECONFIG and LABTOOLS_TESTBED (an inventory with `cluster:`); "
                    "it switches the cluster's Cilium mode")  # fmt: skip
    lab = Lab(inv)
    plan = plan_.Plan("cluster-test", ["iptables", "ebpf"], [1, 100], ["crr"], ["last", "pod"], repeats=1,
                      crr_transactions=300, order="datapath")  # fmt: skip
    csv, new = sweep.run(lab, plan, tmp_path, progress=False)
    df = pd.read_csv(csv)
    assert new == len(plan.points()) == 8
    assert set(df["datapath"]) == {"iptables", "ebpf"} and df["programming_latency_s"].notna().all()
    assert (df[df["metric"] == "crr_p50"]["value"] > 0).all()
