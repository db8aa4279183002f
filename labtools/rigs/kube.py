"""A thin layer on the `kubernetes` client: the sweep's Services and iperf3 Deployment on a real cluster.

The objects are the very `V1Service` models `labtools.model.services.build()` makes for the emulated worker.
`Kube.create_services()` sends them in batches, rate-limited (token bucket), idempotently (an object
that is already there, 409 Conflict, is skipped, so an interrupted run resumes), with a progress bar;
`Kube.delete_services()` removes everything carrying the sweep's label.

`wait_programmed()` waits until the node's datapath has really programmed the Services, read over SSH
from the worker (``ip6tables-save -t nat`` / ``nft list``) or from the Cilium agent on it
(``cilium-dbg service list`` through ``kubectl exec`` on the master), and returns the programming
latency, ClusterLoader2's network-programming-latency SLI, as a record.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kubernetes import client as k8s
from kubernetes import config as k8s_config

from labtools.base import progress as progress_
from labtools.base.errors import LabError
from labtools.base.waiting import Timeout, until
from labtools.datapaths.readback import frontends
from labtools.model import services

SELECTOR = f"{services.LABEL}=true"
DEPLOYMENT = "iperf3-deployment"  # thesis-hu.txt line 1421
IMAGE = "leodotcloud/swiss-army-knife"  # thesis-hu.txt line 1433
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
CONTAINER = "iperf3"
POD_SELECTOR = "app.kubernetes.io/name=iperf3"
# Idle until deleted, and exit at once on SIGTERM (busybox and GNU alike).
IDLE = ["sh", "-c", "trap 'exit 0' TERM; while :; do sleep 3600 & wait $!; done"]


# ----------------------------------------------------------------------------- config


def api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s.ApiClient:
    """An API client configured the standard way: kubeconfig (``$KUBECONFIG``, ``~/.kube/config``), else in-cluster."""
    try:
        return k8s_config.new_client_from_config(config_file=kubeconfig, context=context)
    except (k8s_config.ConfigException, OSError, TypeError, ValueError) as e:
        kube_err = e
    try:
        cfg = k8s.Configuration()
        k8s_config.load_incluster_config(client_configuration=cfg)
        return k8s.ApiClient(cfg)
    except k8s_config.ConfigException as e:
        raise LabError(
            f"no Kubernetes cluster configured: kubeconfig ({kubeconfig or '$KUBECONFIG or ~/.kube/config'}) "
            f"failed ({kube_err}), and this is not a pod in a cluster ({e}). Point KUBECONFIG at the cluster's "
            f"admin.conf (on the master: {ADMIN_KUBECONFIG})"
        ) from None


def reachable(api: k8s.ApiClient, timeout: float = 5.0) -> str | None:
    """The API server's version if it answers, else None."""
    try:
        return k8s.VersionApi(api).get_code(_request_timeout=timeout).git_version
    except Exception:
        return None


# ----------------------------------------------------------------------------- objects


def deployment(
    replicas: int = 1, *, image: str = IMAGE, node: str | None = None, namespace: str = services.NAMESPACE
) -> k8s.V1Deployment:
    """The thesis' iperf3 Deployment (appendix), labelled so every sweep Service selects it.

    The thesis ran ``leodotcloud/swiss-army-knife`` with containerPort 5201 (TCP and UDP here). The
    container idles: a sweep starts ``iperf3 -s`` or ``labtools-crr serve`` on 5201 in it for each
    sample through ``kubectl exec``, exactly as in the emulated pod. `node` pins it to the worker
    (``kubernetes.io/hostname``).
    """
    labels = {"app": "iperf3", "app.kubernetes.io/name": "iperf3"}
    ports = [k8s.V1ContainerPort(container_port=services.IPERF_PORT, protocol=p) for p in ("TCP", "UDP")]
    pod = k8s.V1PodSpec(
        containers=[k8s.V1Container(name=CONTAINER, image=image, command=IDLE, ports=ports)],
        node_selector={"kubernetes.io/hostname": node} if node else None,
    )
    return k8s.V1Deployment(
        api_version="apps/v1",
        kind="Deployment",
        metadata=k8s.V1ObjectMeta(name=DEPLOYMENT, namespace=namespace, labels={**labels, services.LABEL: "true"}),
        spec=k8s.V1DeploymentSpec(
            replicas=replicas,
            selector=k8s.V1LabelSelector(match_labels={"app.kubernetes.io/name": "iperf3"}),
            template=k8s.V1PodTemplateSpec(metadata=k8s.V1ObjectMeta(labels=labels), spec=pod),
        ),
    )


def api_allocated(svc: k8s.V1Service) -> k8s.V1Service:
    """A copy without cluster IP and node ports, for the API server to allocate them itself."""
    out = svc.model_copy(deep=True)
    out.spec.cluster_ip, out.spec.cluster_ips = None, None
    for p in out.spec.ports or []:
        p.node_port = None
    return out


# ----------------------------------------------------------------------------- rate limiting


class TokenBucket:
    """At most `rate` acquisitions per second on average, bursts up to `burst`. Thread-safe."""

    def __init__(self, rate: float, burst: int = 1, clock: Callable[[], float] = time.monotonic, sleep=time.sleep):
        if rate <= 0:
            raise LabError(f"rate must be positive, got {rate}")
        self.rate, self.burst, self.clock, self.sleep = rate, max(1, burst), clock, sleep
        self.tokens, self.stamp = float(self.burst), clock()
        self.lock = threading.Lock()

    def acquire(self) -> None:
        while True:
            with self.lock:
                now = self.clock()
                self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
                self.stamp = now
                if self.tokens >= 1 - 1e-9:  # tolerance: float sums of small waits may fall short of 1
                    self.tokens = max(0.0, self.tokens - 1)
                    return
                wait = (1 - self.tokens) / self.rate
            self.sleep(wait)


# ----------------------------------------------------------------------------- the cluster


def _status(e: Exception) -> int | None:
    return getattr(e, "status", None)


def _shape(svc: k8s.V1Service, with_ips: bool) -> tuple:
    ports = sorted((p.protocol or "TCP", p.port, p.node_port if with_ips else None) for p in svc.spec.ports or [])
    return (svc.spec.cluster_ip if with_ips else None, tuple(ports))


def _in_batches(fn: Callable, items: Sequence, batch: int, desc: str, progress: bool) -> None:
    """Call `fn` on every item, `batch` at a time in parallel (the next batch starts when one is done)."""
    batch = max(1, batch)
    bar = progress_.bar(desc, total=len(items), enabled=progress, unit="Service")
    try:
        with ThreadPoolExecutor(max_workers=batch) as pool:
            for i in range(0, len(items), batch):
                chunk = items[i : i + batch]
                for f in [pool.submit(fn, x) for x in chunk]:
                    f.result()
                bar.advance(len(chunk))
    finally:
        bar.close()


class Kube:
    """Services and the iperf3 Deployment on one cluster. `core`/`apps` can be given (tests use fakes)."""

    def __init__(
        self,
        api: k8s.ApiClient | None = None,
        *,
        namespace: str = services.NAMESPACE,
        core=None,
        apps=None,
        qps: float = 50.0,
        burst: int = 10,
    ):
        if core is None or apps is None:
            api = api or api_client()
        self.core = core or k8s.CoreV1Api(api)
        self.apps = apps or k8s.AppsV1Api(api)
        self.namespace = namespace
        self.bucket = TokenBucket(qps, burst)

    def _call(self, fn: Callable, *args, retries: int = 5, **kw):
        """One rate-limited API call; 429 and 5xx are retried with back-off."""
        for attempt in range(retries + 1):
            self.bucket.acquire()
            try:
                return fn(*args, **kw)
            except k8s.exceptions.ApiException as e:
                if (_status(e) == 429 or (_status(e) or 0) >= 500) and attempt < retries:
                    time.sleep(min(0.2 * 2**attempt, 5.0))
                    continue
                raise

    def create_services(
        self, svcs: Sequence[k8s.V1Service], *, batch: int = 20, allocate: str = "labtools", progress: bool = True
    ) -> dict:
        """Create `svcs` (skipping those already there), `batch` requests in flight at a time.

        allocate="labtools" keeps the cluster IPs and node ports `services.build()` chose (the same
        objects as in the emulated lab); allocate="api" lets the API server choose them.
        """
        if allocate not in ("labtools", "api"):
            raise LabError(f"allocate must be 'labtools' or 'api', got {allocate!r}")
        counts = {"created": 0, "existing": 0}
        lock = threading.Lock()

        def one(svc: k8s.V1Service) -> None:
            body = api_allocated(svc) if allocate == "api" else svc
            if body.metadata.namespace != self.namespace:  # the API refuses a body naming another namespace
                body = body.model_copy(deep=True)
                body.metadata.namespace = self.namespace
            try:
                self._call(self.core.create_namespaced_service, self.namespace, body)
                key = "created"
            except k8s.exceptions.ApiException as e:
                if _status(e) != 409:
                    raise LabError(
                        f"creating Service {svc.metadata.name} failed ({_status(e)} {e.reason}): {e.body or e}"
                    ) from None
                key = "existing"
            with lock:
                counts[key] += 1

        t0 = time.monotonic()
        _in_batches(one, svcs, batch, "services", progress)
        return {**counts, "seconds": round(time.monotonic() - t0, 3)}

    def list_services(self, selector: str = SELECTOR) -> list[k8s.V1Service]:
        out, token = [], None
        while True:
            page = self._call(
                self.core.list_namespaced_service, self.namespace, label_selector=selector, limit=500, _continue=token
            )
            out += page.items or []
            token = page.metadata._continue if page.metadata else None
            if not token:
                return out

    def cluster_ips(self, selector: str = SELECTOR) -> dict[str, str]:
        """name -> cluster IP of the labelled Services, as the API server has them."""
        return {s.metadata.name: s.spec.cluster_ip for s in self.list_services(selector)}

    def delete_services(
        self, names: Iterable[str] | None = None, *, batch: int = 20, progress: bool = True, selector: str = SELECTOR
    ) -> int:
        """Delete the named Services, or every one with the sweep's label. Gone already (404) is fine."""
        todo = list(names) if names is not None else [s.metadata.name for s in self.list_services(selector)]
        deleted = 0
        lock = threading.Lock()

        def one(name: str) -> None:
            nonlocal deleted
            try:
                self._call(self.core.delete_namespaced_service, name, self.namespace)
            except k8s.exceptions.ApiException as e:
                if _status(e) != 404:
                    raise LabError(f"deleting Service {name} failed ({_status(e)} {e.reason})") from None
                return
            with lock:
                deleted += 1

        _in_batches(one, todo, batch, "delete", progress)
        return deleted

    def scale_services(self, workload: services.Workload, **kw) -> dict:
        """Make the labelled Services exactly the workload's: create the missing, delete the extra.

        A Service that is there with other ports (the first/middle/last UDP ports move with N) or, with
        labtools allocation, another cluster IP, is deleted and created again. Services that are right
        already cost no request. ``gone`` in the result: the frontends of the deleted Services.
        """
        want = {s.metadata.name: s for s in workload.services}
        labtools_ips = kw.get("allocate", "labtools") == "labtools"
        have = {s.metadata.name: s for s in self.list_services()}
        stale = [
            n for n, s in have.items() if n not in want or _shape(s, labtools_ips) != _shape(want[n], labtools_ips)
        ]
        removed = self.delete_services(stale, progress=kw.get("progress", True)) if stale else 0
        keep = set(have) - set(stale)
        done = self.create_services([s for n, s in want.items() if n not in keep], **kw)
        gone = frontends(have[n] for n in stale)
        return {**done, "existing": done["existing"] + len(keep), "deleted": removed, "gone": gone}

    def ensure_deployment(self, dep: k8s.V1Deployment | None = None) -> str:
        """Create the iperf3 Deployment, or set its replicas if it is there. Returns "created" or "scaled"."""
        dep = dep or deployment()
        try:
            self._call(self.apps.create_namespaced_deployment, self.namespace, dep)
            return "created"
        except k8s.exceptions.ApiException as e:
            if _status(e) != 409:
                raise LabError(f"creating Deployment {dep.metadata.name} failed ({_status(e)} {e.reason})") from None
        self.scale_deployment(dep.spec.replicas or 1, dep.metadata.name)
        return "scaled"

    def scale_deployment(self, replicas: int, name: str = DEPLOYMENT) -> None:
        self._call(self.apps.patch_namespaced_deployment_scale, name, self.namespace, {"spec": {"replicas": replicas}})

    def require_reachable(self) -> None:
        """Raise a clear error when the API server does not answer (fakes in tests always do)."""
        api = getattr(self.core, "api_client", None)
        if isinstance(api, k8s.ApiClient) and reachable(api) is None:
            raise LabError(
                f"the Kubernetes API server {api.configuration.host} does not answer from this machine: the "
                "kubeconfig's `server:` must be reachable from here (an SSH tunnel to the master's port 6443 will do)"
            )

    def version(self) -> str | None:
        """The API server's version, None if it does not answer."""
        api = getattr(self.core, "api_client", None)
        return reachable(api) if isinstance(api, k8s.ApiClient) else None

    def ready_pod(self, *, timeout: float = 300.0, interval: float = 2.0) -> k8s.V1Pod:
        """The iperf3 Deployment's pod once it runs, is Ready and has an IPv6 address."""
        seen = ["no pod"]

        def ready_one() -> k8s.V1Pod | None:
            pods = self._call(self.core.list_namespaced_pod, self.namespace, label_selector=POD_SELECTOR).items or []
            for p in pods:
                st = p.status
                ready = any(c.type == "Ready" and c.status == "True" for c in (st.conditions or []))
                ips = [i.ip for i in (st.pod_ips or []) if ":" in (i.ip or "")] or [st.pod_ip or ""]
                if st.phase == "Running" and ready and ":" in ips[0] and not p.metadata.deletion_timestamp:
                    return p
                seen[0] = f"{p.metadata.name}: {st.phase}, ready={ready}, ips={ips}"
            return None

        try:
            return until(ready_one, timeout=timeout, interval=interval)
        except Timeout:
            raise LabError(
                f"the iperf3 pod is not ready after {timeout:g} s ({seen[0]}); see `kubectl describe pod`"
            ) from None

    def service_datapath(self) -> str | None:
        """Which of Cilium's two modes the cluster is in: "ebpf" (kube-proxy replacement, no kube-proxy
        DaemonSet), "kube-proxy", or None when it is neither cleanly (a switch was interrupted)."""
        try:
            cm = self._call(self.core.read_namespaced_config_map, "cilium-config", "kube-system")
            kpr = str((cm.data or {}).get("kube-proxy-replacement", "false")).lower() in ("true", "strict")
        except k8s.exceptions.ApiException as e:
            if _status(e) != 404:
                raise
            kpr = False
        try:
            self._call(self.apps.read_namespaced_daemon_set, "kube-proxy", "kube-system")
            has_kube_proxy = True
        except k8s.exceptions.ApiException as e:
            if _status(e) != 404:
                raise
            has_kube_proxy = False
        if kpr and not has_kube_proxy:
            return "ebpf"
        return "kube-proxy" if has_kube_proxy and not kpr else None

    def node_port_range(self) -> services.PortRange | None:
        """The API server's ``--service-node-port-range`` (from its static pod), None if it cannot be read."""
        try:
            pods = self._call(self.core.list_namespaced_pod, "kube-system", label_selector="component=kube-apiserver")
        except k8s.exceptions.ApiException:
            return None
        for p in pods.items or []:
            for c in p.spec.containers:
                for arg in [*(c.command or []), *(c.args or [])]:
                    if arg.startswith("--service-node-port-range="):
                        return services.PortRange.parse(arg.split("=", 1)[1])
            return services.PortRange.parse(services.DEFAULT_NODE_PORT_RANGE)  # the flag's default
        return None

    def delete_deployment(self, name: str = DEPLOYMENT) -> bool:
        try:
            self._call(self.apps.delete_namespaced_deployment, name, self.namespace)
            return True
        except k8s.exceptions.ApiException as e:
            if _status(e) == 404:
                return False
            raise
