"""The sweep on a real cluster (labtools.cluster): inventory, ordering, dry run, and the rig's bookkeeping.

What needs Kubernetes itself is split in two. The API calls go to the in-memory API server of
test_kube (it answers like the real one); the mode switch and the datapath probe are replaced by a
small stand-in cluster whose datapath "programs" the Services that are in that API. The path to the
pod (SSH to the master, then an exec wrapper) is tested for real in test_ssh. The end-to-end sweep
needs a real cluster and runs only when KUBECONFIG and LABTOOLS_TESTBED point at one.
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml
from kubernetes import client as k8s

from labtools import cluster, kube, services, sweep, topology
from labtools.errors import InventoryError, LabError
from labtools.lab import Lab
from tests.conftest import ROOT
from tests.test_kube import FakeApps, FakeCore

OPENSTACK = ROOT / "lab" / "openstack-example.yml"


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
            lambda d: d.update(yaml.safe_load((ROOT / "lab" / "thesis-netns.yml").read_text()), cluster={}),
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
    plan = sweep.Plan("x", ["iptables", "ebpf"], [1, 10, 100], ["crr"], ["last"], repeats=2, order="datapath")
    outer = list(dict.fromkeys((d, c, r) for c, r, d, _, _ in plan.points()))
    assert outer == [("iptables", c, r) for c in (1, 10, 100) for r in (0, 1)] + [
        ("ebpf", c, r) for c in (100, 10, 1) for r in (0, 1)
    ]
    assert len(plan.points()) == len(sweep.Plan("x", ["iptables", "ebpf"], [1, 10, 100], ["crr"], ["last"],
                                                repeats=2).points())  # fmt: skip
    with pytest.raises(LabError, match="order must be one of"):
        sweep.Plan("x", ["ebpf"], [1], ["crr"], ["last"], order="random").validate()


def test_cluster_dry_run_shows_every_switch_and_api_change():
    res = subprocess.run(
        [sys.executable, "-m", "labtools", "sweep", "--profile", "testbed", "--run-id", "tb", "-i", str(OPENSTACK),
         "--dry-run"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    out = res.stdout
    params = sweep.profile_params("testbed")["sweeps"]
    for name, spec in params.items():
        plan = sweep.plans({name: spec}, "tb")[0]
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

    def __init__(self, state, node_port_range):
        super().__init__()
        self.state, self.node_port_range = state, node_port_range

    def list_namespaced_pod(self, namespace, label_selector=None):
        if label_selector == kube.POD_SELECTOR:
            status = k8s.V1PodStatus(
                phase="Running",
                pod_ip="2001:db8:1234:5678:8:2:0:7",
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
                return {d["spec"]["clusterIP"] for d in outer.core.store.values()} if self.polls > outer.lag else set()

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
    body = c.core.store["svc-00001"]
    assert body["spec"]["clusterIP"] == w1.services[0].spec.cluster_ip  # labtools allocation, as in the lab
    again = rig.use("iptables", w2)
    assert c.switches == ["kube-proxy"] and again["mode_switch_s"] is None
    # 2000 new; the old middle and last lose their UDP ports, so they are replaced.
    assert (again["created"], again["deleted"]) == (2002, 2)
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
    with pytest.raises(LabError, match=r"iptables \(kube-proxy\) has not programmed the Services after 0.5 s: 0 of 10"):
        rig.use("iptables", rig.workload(10, 0))


# ----------------------------------------------------------------------------- a real cluster


@pytest.mark.kube
def test_real_cluster_sweep(tmp_path):
    """Both Cilium modes, two counts, crr at the last NodePort and the pod: a complete, tidy run."""
    inv = os.environ.get("LABTOOLS_TESTBED")
    if not os.environ.get("KUBECONFIG") or not inv:
        pytest.skip("needs a real cluster: set KUBECONFIG and LABTOOLS_TESTBED (an inventory with `cluster:`); "
                    "it switches the cluster's Cilium mode")  # fmt: skip
    lab = Lab(inv)
    plan = sweep.Plan("cluster-test", ["iptables", "ebpf"], [1, 100], ["crr"], ["last", "pod"], repeats=1,
                      crr_transactions=300, order="datapath")  # fmt: skip
    csv, new = sweep.run(lab, plan, tmp_path, progress=False)
    import pandas as pd

    df = pd.read_csv(csv)
    assert new == len(plan.points()) == 8
    assert set(df["datapath"]) == {"iptables", "ebpf"} and df["programming_latency_s"].notna().all()
    assert (df[df["metric"] == "crr_p50"]["value"] > 0).all()
