"""labtools.rigs.kube: Services and the iperf3 Deployment through the `kubernetes` client, and the programming probes.

Without a cluster the client calls go to an in-memory fake API server that answers like the real one
(409 on duplicates, 404 on missing, label selectors, paging). The end-to-end test needs a real cluster.
"""

from __future__ import annotations

import itertools
import os

import pytest
from kubernetes import client as k8s

from labtools.base.errors import LabError
from labtools.datapaths import readback
from labtools.hosts import RecordingHost, Reply
from labtools.model import services
from labtools.rigs import kube


class FakeCore:
    """The parts of CoreV1Api that labtools.rigs.kube uses, with the API server's answers."""

    def __init__(self, fail_first: int = 0):
        self.store: dict[str, dict] = {}
        self.calls = 0
        self.fail_first = fail_first

    def _maybe_429(self):
        self.calls += 1
        if self.fail_first:
            self.fail_first -= 1
            raise k8s.exceptions.ApiException(status=429, reason="Too Many Requests")

    def create_namespaced_service(self, namespace, body):
        self._maybe_429()
        assert isinstance(body, k8s.V1Service)
        d = body.model_dump(by_alias=True, exclude_none=True, mode="json")
        name = d["metadata"]["name"]
        if name in self.store:
            raise k8s.exceptions.ApiException(status=409, reason="Conflict")
        self.store[name] = d
        return body

    def list_namespaced_service(self, namespace, label_selector=None, limit=None, _continue=None):
        self._maybe_429()
        key, _, value = (label_selector or "").partition("=")
        items = sorted(n for n, d in self.store.items() if not key or d["metadata"].get("labels", {}).get(key) == value)
        start = int(_continue or 0)
        page = items[start : start + (limit or len(items))]
        more = start + len(page) < len(items)
        return k8s.V1ServiceList(
            items=[k8s.V1Service.model_validate(self.store[n]) for n in page],
            metadata=k8s.V1ListMeta(_continue=str(start + len(page)) if more else None),
        )

    def delete_namespaced_service(self, name, namespace):
        self._maybe_429()
        if self.store.pop(name, None) is None:
            raise k8s.exceptions.ApiException(status=404, reason="Not Found")


class FakeApps:
    def __init__(self):
        self.deployments: dict[str, dict] = {}
        self.scaled: list[int] = []

    def create_namespaced_deployment(self, namespace, body):
        d = body.model_dump(by_alias=True, exclude_none=True, mode="json")
        if d["metadata"]["name"] in self.deployments:
            raise k8s.exceptions.ApiException(status=409, reason="Conflict")
        self.deployments[d["metadata"]["name"]] = d

    def patch_namespaced_deployment_scale(self, name, namespace, body):
        self.scaled.append(body["spec"]["replicas"])

    def delete_namespaced_deployment(self, name, namespace):
        if self.deployments.pop(name, None) is None:
            raise k8s.exceptions.ApiException(status=404, reason="Not Found")


def fake_kube(**kw) -> kube.Kube:
    return kube.Kube(core=FakeCore(**kw), apps=FakeApps(), qps=1e6, burst=1000)


def test_no_cluster_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(LabError, match=r"no Kubernetes cluster configured: kubeconfig .* failed .* not a pod"):
        kube.api_client()


def test_create_is_batched_idempotent_and_resumes():
    k = fake_kube()
    w = services.build(100)
    first = k.create_services(w.services[:30], batch=7, progress=False)  # an interrupted run
    assert (first["created"], first["existing"]) == (30, 0)
    again = k.create_services(w.services, batch=7, progress=False)  # resume: 409s are skipped
    assert (again["created"], again["existing"]) == (70, 30)
    assert set(k.core.store) == {s.metadata.name for s in w.services}
    # What the API server received parses back into the very objects build() made.
    back = {n: k8s.V1Service.model_validate(d) for n, d in k.core.store.items()}
    assert all(back[s.metadata.name] == s for s in w.services)
    assert k.cluster_ips() == {s.metadata.name: s.spec.cluster_ip for s in w.services}


def test_api_allocation_strips_ips_and_ports():
    k = fake_kube()
    w = services.build(3)
    k.create_services(w.services, allocate="api", progress=False)
    for d in k.core.store.values():
        assert "clusterIP" not in d["spec"] and "clusterIPs" not in d["spec"]
        assert all("nodePort" not in p for p in d["spec"]["ports"])
        assert d["spec"]["ipFamilies"] == ["IPv6"] and d["spec"]["externalTrafficPolicy"] == "Local"
    assert w.services[0].spec.cluster_ip  # the originals are untouched
    with pytest.raises(LabError, match="allocate"):
        k.create_services(w.services, allocate="random", progress=False)


def test_delete_by_label_scale_and_retry_on_429():
    k = fake_kube(fail_first=3)  # the first calls are throttled: retried, not failed
    k.create_services(services.build(100).services, progress=False)
    other = k8s.V1Service(metadata=k8s.V1ObjectMeta(name="kubernetes"), spec=k8s.V1ServiceSpec())
    k.core.create_namespaced_service("default", other)  # not ours: must survive the cleanup
    res = k.scale_services(services.build(40), progress=False)
    assert (res["deleted"], res["existing"], res["created"]) == (60, 40, 0)
    assert len(k.list_services()) == 40  # paged list (limit 500) works too
    assert k.delete_services(progress=False) == 40
    assert list(k.core.store) == ["kubernetes"]
    assert k.delete_services(["svc-00001"], progress=False) == 0  # already gone (404) is fine


def test_other_api_errors_are_lab_errors():
    k = fake_kube()

    def refuse(namespace, body):
        raise k8s.exceptions.ApiException(status=422, reason="Unprocessable Entity")

    k.core.create_namespaced_service = refuse
    with pytest.raises(LabError, match=r"creating Service svc-00001 failed \(422"):
        k.create_services(services.build(1).services, progress=False)


def test_token_bucket_limits_the_rate():
    now = [0.0]
    slept = []

    def sleep(s):
        slept.append(s)
        now[0] += s

    b = kube.TokenBucket(rate=10, burst=2, clock=lambda: now[0], sleep=sleep)
    for _ in range(12):
        b.acquire()
    assert now[0] == pytest.approx(1.0)  # 2 from the burst, then 10 per second
    with pytest.raises(LabError):
        kube.TokenBucket(rate=0)


def test_deployment_is_the_thesis_one_and_selected_by_every_service():
    dep = kube.deployment(node="worker")
    d = dep.model_dump(by_alias=True, exclude_none=True, mode="json")
    assert k8s.V1Deployment.model_validate(d) == dep  # a valid apps/v1 Deployment
    assert d["metadata"]["name"] == "iperf3-deployment"  # thesis line 1421
    c = d["spec"]["template"]["spec"]["containers"][0]
    assert c["image"] == "leodotcloud/swiss-army-knife"  # thesis line 1433
    assert {"containerPort": 5201, "protocol": "TCP"} in c["ports"]  # thesis line 1435
    assert d["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "worker"}
    labels = d["spec"]["template"]["metadata"]["labels"]
    assert labels["app"] == "iperf3"  # the thesis' selector
    for s in services.build(5, protocols=("TCP", "UDP")).services:
        assert s.spec.selector.items() <= labels.items()
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items()
    k = fake_kube()
    assert k.ensure_deployment(dep) == "created"
    assert k.ensure_deployment(kube.deployment(replicas=2)) == "scaled" and k.apps.scaled == [2]
    assert k.delete_deployment() is True and k.delete_deployment() is False


# ----------------------------------------------------------------------------- probes

IPTABLES_SAVE = """\
*nat
:KUBE-SERVICES - [0:0]
-A KUBE-SERVICES -d 2001:db8:1234:5678:8:3:0:d92d/128 -p tcp -m comment --comment "default/svc-00001:iperf3" \
-m tcp --dport 5201 -j KUBE-SVC-ABC
-A KUBE-SERVICES -d 2001:db8:1234:5678:8:3::1/128 -p tcp -m tcp --dport 443 -j KUBE-SVC-NPX
-A KUBE-NODEPORTS -d 2001:db8:1234:5678:8:3:0:ffff/128 -j KUBE-EXT-X
-A KUBE-SEP-X -s 2001:db8:1234:5678:8:2:1:841/128 -j KUBE-MARK-MASQ
COMMIT
"""
CILIUM_LIST = """\
ID   Frontend                                 Service Type   Backend
1    [2001:db8:1234:5678:8:3::1]:443/TCP      ClusterIP      1 => [2001:db8:1234:5678::1]:6443/TCP (active)
7    [2001:db8:1234:5678:8:3:0:d92d]:5201/TCP ClusterIP      1 => [2001:db8:1234:5678:8:2:1:841]:5201/TCP (active)
8    [::]:31234/TCP                           NodePort       1 => [2001:db8:1234:5678:8:2:1:841]:5201/TCP (active)
"""


NFT_MAP = """\
table ip6 kube-proxy {
\tmap service-ips {
\t\ttype ipv6_addr . inet_proto . inet_service : verdict
\t\telements = { 2001:db8:1234:5678:8:3:0:d92d . tcp . 5201 : goto service-ABC-default/svc-00001/tcp/iperf3,
\t\t\t     2001:db8:1234:5678:8:3:0:d92d . udp . 5201 : goto service-DEF-default/svc-00001/udp/iperf3-udp }
\t}
}
"""


def test_frontends_in_tool_output():
    """(cluster IP, protocol, port) from each datapath's own listing, IPv6 written as Python writes it."""
    svc = ("2001:db8:1234:5678:8:3:0:d92d", "tcp", 5201)
    assert readback.iptables_frontends(IPTABLES_SAVE) == {svc, ("2001:db8:1234:5678:8:3:0:1", "tcp", 443)}
    assert readback.nft_frontends(NFT_MAP) == {svc, (svc[0], "udp", 5201)}
    cil = readback.cilium_frontends(CILIUM_LIST)
    assert svc in cil and ("2001:db8:1234:5678:8:3:0:1", "tcp", 443) in cil
    assert readback.cilium_frontends("[2001:DB8::1]:80") == {("2001:db8::1", "any", 80)}  # no protocol printed
    assert readback.present({("2001:db8::1", "any", 80)}, [("2001:db8::1", "udp", 80)]) == {("2001:db8::1", "udp", 80)}
    w = services.build(10, udp_targets=True)
    f = readback.frontends(w.services)
    assert len(f) == 10 + 3  # TCP on every Service, UDP on the first, middle and last
    assert (w.services[0].spec.cluster_ip, "udp", 5201) in f


def scripted(answers: dict[str, tuple[int, str]]) -> RecordingHost:
    """A host that answers these commands (exit code, stdout) and fails the test on any other."""
    return RecordingHost("fake", {k: Reply(rc, out, "" if rc == 0 else "error") for k, (rc, out) in answers.items()},
                         strict=True)  # fmt: skip


def test_iptables_probe_counts_only_kube_services_cluster_ips():
    h = scripted({"ip6tables-save -t nat": (0, IPTABLES_SAVE)})
    found = readback.IptablesReadback(h, sudo=True).programmed()
    assert found == {("2001:db8:1234:5678:8:3:0:d92d", "tcp", 5201), ("2001:db8:1234:5678:8:3:0:1", "tcp", 443)}
    assert h.commands == [["sudo", "-n", "ip6tables-save", "-t", "nat"]]


def test_cilium_probe_finds_the_worker_agent_and_falls_back_to_old_cli():
    pods = "cilium-aaaa 2001:db8:1234:5678::1\ncilium-bbbb 2001:db8:1234:5678::2\n"
    h = scripted(
        {
            "get pods": (0, pods),
            "cilium-dbg service list": (1, ""),  # Cilium < 1.15 has no cilium-dbg
            "cilium service list": (0, CILIUM_LIST),
        }
    )
    p = readback.CiliumReadback(h, node_ip="2001:0db8:1234:5678:0::2")
    assert ("2001:db8:1234:5678:8:3:0:d92d", "tcp", 5201) in p.programmed()
    assert p.pod() == "cilium-bbbb" and any("cilium-bbbb" in c for c in h.commands[-1])
    assert h.commands[0][:3] == ["kubectl", "--kubeconfig", "/etc/kubernetes/admin.conf"]
    with pytest.raises(LabError, match="no Cilium agent pod runs on the node with address"):
        readback.CiliumReadback(scripted({"get pods": (0, pods)}), node_ip="2001:db8::9").programmed()


class GrowingProbe:
    name = "fake"

    def __init__(self, fronts, per_poll):
        self.fronts, self.per_poll, self.n = sorted(fronts), per_poll, 0

    def programmed(self):
        self.n += self.per_poll
        return set(self.fronts[: self.n]) | {("2001:db8::dead", "tcp", 80)}  # unrelated services do not count


def test_wait_programmed_measures_the_latency():
    fronts = readback.frontends(services.build(10).services)
    ticks = itertools.count(step=0.5)
    rec = readback.wait_programmed(GrowingProbe(fronts, 4), fronts, since=0.0, interval=0, clock=lambda: next(ticks))
    assert rec["ok"] and rec["programmed"] == 10 and rec["polls"] == 3
    assert rec["sli"] == "network_programming_latency" and rec["latency_s"] > 0
    assert [n for _, n in rec["timeline"]] == [4, 8, 10]
    ticks = itertools.count(step=1.0)
    rec = readback.wait_programmed(GrowingProbe(fronts, 1), fronts, timeout=3, interval=0, clock=lambda: next(ticks))
    assert not rec["ok"] and rec["latency_s"] is None and rec["programmed"] < 10


def test_wait_programmed_waits_for_deleted_frontends_to_go():
    fronts = sorted(readback.frontends(services.build(4).services))

    class Shrinking:
        name = "fake"
        polls = 0

        def programmed(self):
            self.polls += 1
            return set(fronts if self.polls < 3 else fronts[:2])

    rec = readback.wait_programmed(Shrinking(), fronts[:2], absent=fronts[2:], interval=0)
    assert rec["ok"] and rec["polls"] == 3 and rec["lingering"] == 0


def test_services_go_to_the_clients_namespace_and_rescaling_sends_only_changes():
    k = kube.Kube(core=FakeCore(), apps=FakeApps(), namespace="sweep", qps=1e6, burst=1000)
    created = []
    real_create = k.core.create_namespaced_service

    def create(namespace, body):
        assert namespace == body.metadata.namespace == "sweep"  # the API refuses a body naming another one
        created.append(body.metadata.name)
        return real_create(namespace, body)

    k.core.create_namespaced_service = create
    k.scale_services(services.build(100, udp_targets=True), progress=False)
    assert len(created) == 100
    created.clear()
    res = k.scale_services(services.build(150, udp_targets=True), progress=False)
    # 50 new; the old middle and last lose their UDP ports and the new middle (svc-00076) gains one, so
    # those three are re-created; nothing else is sent.
    assert len(created) == 53 and res["deleted"] == 3 and res["existing"] == 97
    assert {"svc-00051", "svc-00076", "svc-00100"} <= set(created)


# ----------------------------------------------------------------------------- a real cluster


def _real_cluster() -> kube.Kube:
    if not os.environ.get("KUBECONFIG"):
        pytest.skip("needs a real cluster: KUBECONFIG is not set (point it at the cluster's admin.conf)")
    try:
        api = kube.api_client()
    except LabError as e:
        pytest.skip(f"needs a real cluster: KUBECONFIG={os.environ['KUBECONFIG']} does not load ({e})")
    if kube.reachable(api) is None:
        pytest.skip(f"needs a real cluster: KUBECONFIG={os.environ['KUBECONFIG']} points at no reachable API server")
    return kube.Kube(api)


@pytest.mark.kube
def test_real_cluster_creates_verifies_and_deletes_100_services():
    k = _real_cluster()
    k.delete_services(progress=False)  # leftovers of an interrupted run
    w = services.build(100)
    try:
        res = k.create_services(w.services, allocate="api", progress=False)
        assert res["created"] + res["existing"] == 100
        assert k.create_services(w.services, allocate="api", progress=False)["existing"] == 100  # idempotent
        live = k.list_services()
        assert sorted(s.metadata.name for s in live) == sorted(s.metadata.name for s in w.services)
        for s in live:
            assert s.spec.type == "NodePort" and s.spec.ip_families == ["IPv6"]
            assert s.spec.external_traffic_policy == "Local" and s.spec.cluster_ip
            assert s.spec.ports[0].port == 5201 and s.spec.ports[0].node_port
    finally:
        assert k.delete_services(progress=False) >= 0
    assert k.list_services() == []
