"""A thin layer on the `kubernetes` client: the sweep's Services and iperf3 Deployment on a real cluster.

The objects are the very `V1Service` models `labtools.services.build()` makes for the emulated worker.
`Kube.create_services()` sends them in batches, rate-limited (token bucket), idempotently (an object
that is already there, 409 Conflict, is skipped, so an interrupted run resumes), with a progress bar;
`Kube.delete_services()` removes everything carrying the sweep's label.

`wait_programmed()` waits until the node's datapath has really programmed the Services, read over SSH
from the worker (``ip6tables-save -t nat`` / ``nft list``) or from the Cilium agent on it
(``cilium-dbg service list`` through ``kubectl exec`` on the master), and returns the programming
latency, ClusterLoader2's network-programming-latency SLI, as a record.
"""

from __future__ import annotations

import ipaddress
import re
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from tqdm import tqdm

from labtools import services
from labtools.errors import CommandError, LabError
from labtools.hosts import Host

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
    with (
        tqdm(total=len(items), desc=desc, unit="svc", disable=not progress, leave=False) as bar,
        ThreadPoolExecutor(max_workers=batch) as pool,
    ):
        for i in range(0, len(items), batch):
            chunk = items[i : i + batch]
            for f in [pool.submit(fn, x) for x in chunk]:
                f.result()
            bar.update(len(chunk))


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
        deadline = time.monotonic() + timeout
        seen = "no pod"
        while True:
            pods = self._call(self.core.list_namespaced_pod, self.namespace, label_selector=POD_SELECTOR).items or []
            for p in pods:
                st = p.status
                ready = any(c.type == "Ready" and c.status == "True" for c in (st.conditions or []))
                ips = [i.ip for i in (st.pod_ips or []) if ":" in (i.ip or "")] or [st.pod_ip or ""]
                if st.phase == "Running" and ready and ":" in ips[0] and not p.metadata.deletion_timestamp:
                    return p
                seen = f"{p.metadata.name}: {st.phase}, ready={ready}, ips={ips}"
            if time.monotonic() > deadline:
                raise LabError(f"the iperf3 pod is not ready after {timeout:g} s ({seen}); see `kubectl describe pod`")
            time.sleep(interval)

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


# ----------------------------------------------------------------------------- programmed yet?

Frontend = tuple[str, str, int]  # (cluster IP, "tcp"/"udp", port): what a datapath programs per Service port


def _ip(text: str) -> str:
    return str(ipaddress.IPv6Address(text))


def frontends(svcs: Iterable[k8s.V1Service]) -> set[Frontend]:
    """The (cluster IP, protocol, port) of every port of `svcs`, as the datapaths key them."""
    return {(_ip(s.spec.cluster_ip), (p.protocol or "TCP").lower(), int(p.port))
            for s in svcs if s.spec.cluster_ip and s.spec.cluster_ip != "None" for p in s.spec.ports or []}  # fmt: skip


_IPTABLES = re.compile(r"-d ([0-9A-Fa-f:]+)/128 -p (tcp|udp|sctp)\b.*?--dport (\d+)")
_NFT = re.compile(r"([0-9A-Fa-f:]+) \. (tcp|udp|sctp) \. (\d+)")
_CILIUM = re.compile(r"\[([0-9A-Fa-f:]+)\]:(\d+)(?:/(TCP|UDP|SCTP|ANY))?")


def iptables_frontends(save: str) -> set[Frontend]:
    """Frontends in ``ip6tables-save -t nat`` output: the KUBE-SERVICES chain's -d/-p/--dport."""
    return {(_ip(m[1]), m[2], int(m[3])) for ln in save.splitlines() if ln.startswith("-A KUBE-SERVICES ")
            for m in [_IPTABLES.search(ln)] if m}  # fmt: skip


def nft_frontends(listing: str) -> set[Frontend]:
    """Frontends in ``nft list map ip6 kube-proxy service-ips``: ``ip . proto . port : verdict``."""
    return {(_ip(ip), proto, int(port)) for ip, proto, port in _NFT.findall(listing)}


def cilium_frontends(listing: str) -> set[Frontend]:
    """Frontends in ``cilium-dbg service list``: ``[ip]:port/PROTO`` (no protocol: ``any``)."""
    return {(_ip(ip), (proto or "any").lower(), int(port)) for ip, port, proto in _CILIUM.findall(listing)}


def present(have: set[Frontend], want: Iterable[Frontend]) -> set[Frontend]:
    """The frontends of `want` that `have` holds (a protocol-less ``any`` entry counts for every protocol)."""
    return {f for f in want if f in have or (f[0], "any", f[2]) in have}


def _sudo(argv: list[str], sudo: bool) -> list[str]:
    return ["sudo", "-n", *argv] if sudo else argv


@dataclass
class IptablesProbe:
    """kube-proxy iptables mode: the frontends in the nat table's KUBE-SERVICES chain on the worker."""

    host: Host
    save: str = "ip6tables-save"
    sudo: bool = False
    name: str = "iptables"

    def programmed(self) -> set[Frontend]:
        return iptables_frontends(self.host.run(_sudo([self.save, "-t", "nat"], self.sudo)).stdout)


@dataclass
class NftablesProbe:
    """kube-proxy nftables mode: the keys of ``table ip6 kube-proxy``'s ``service-ips`` map."""

    host: Host
    sudo: bool = False
    name: str = "nftables"

    def programmed(self) -> set[Frontend]:
        res = self.host.run(_sudo(["nft", "list", "map", "ip6", "kube-proxy", "service-ips"], self.sudo), check=False)
        return nft_frontends(res.stdout) if res.ok else set()


@dataclass
class CiliumProbe:
    """Cilium: the service frontends of the agent on the worker, via ``kubectl exec`` on the master."""

    master: Host
    node_ip: str  # the worker's InternalIP: picks the agent pod running there
    kubeconfig: str = ADMIN_KUBECONFIG
    sudo: bool = False
    name: str = "cilium"
    _pod: str | None = None

    def _kubectl(self, *args: str, check: bool = True):
        return self.master.run(_sudo(["kubectl", "--kubeconfig", self.kubeconfig, *args], self.sudo), check=check)

    def pod(self) -> str:
        if self._pod is None:
            out = self._kubectl(
                "-n",
                "kube-system",
                "get",
                "pods",
                "-l",
                "k8s-app=cilium",
                "-o",
                'jsonpath={range .items[*]}{.metadata.name} {.status.hostIP}{"\\n"}{end}',
            ).stdout
            want = str(ipaddress.ip_address(self.node_ip))
            for line in out.splitlines():
                name, _, ip = line.partition(" ")
                if ip.strip() and str(ipaddress.ip_address(ip.strip())) == want:
                    self._pod = name
                    break
            else:
                raise LabError(f"no Cilium agent pod runs on the node with address {self.node_ip}:\n{out}")
        return self._pod

    def programmed(self) -> set[Frontend]:
        pod = self.pod()
        for tool in ("cilium-dbg", "cilium"):  # cilium-dbg since Cilium 1.15
            res = self._kubectl(
                "-n", "kube-system", "exec", pod, "-c", "cilium-agent", "--", tool, "service", "list", check=False
            )
            if res.ok:
                return cilium_frontends(res.stdout)
        raise CommandError(
            self.master.name,
            ["kubectl", "exec", pod, "--", "cilium-dbg", "service", "list"],
            res.returncode,
            res.stdout,
            res.stderr,
        )


def wait_programmed(
    probe,
    expected: Iterable[Frontend],
    *,
    absent: Iterable[Frontend] = (),
    since: float | None = None,
    timeout: float = 600.0,
    interval: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> dict:
    """Poll `probe` until every frontend of `expected` is programmed; the programming-latency record.

    Frontends are (cluster IP, protocol, port) (`frontends()`), so a Service that only gained or lost
    a port counts too. `since` is the `clock()` reading when the change was made (e.g. right before
    `create_services`); latency_s is from then until the probe first saw all of them (ClusterLoader2's
    network-programming-latency SLI, measured for the whole batch). Frontends in `absent` (just
    deleted) must be gone as well. On timeout the record says ``ok: False`` with how many were
    programmed, rather than raising: a sweep records the failure.
    """
    want = {(_ip(ip), proto, int(port)) for ip, proto, port in expected}
    gone = {(_ip(ip), proto, int(port)) for ip, proto, port in absent} - want
    start = clock() if since is None else since
    deadline = clock() + timeout
    timeline: list[tuple[float, int]] = []
    found: set[Frontend] = set()
    lingering: set[Frontend] = set()
    polls = 0
    while True:
        have = probe.programmed()
        found, lingering = present(have, want), have & gone
        polls += 1
        now = clock()
        if not timeline or timeline[-1][1] != len(found):
            timeline.append((round(now - start, 4), len(found)))
        if (found == want and not lingering) or now >= deadline:
            break
        time.sleep(interval)
    ok = found == want and not lingering
    return {
        "sli": "network_programming_latency",
        "probe": probe.name,
        "expected": len(want),
        "programmed": len(found),
        "lingering": len(lingering),
        "ok": ok,
        "latency_s": round(now - start, 4) if ok else None,
        "polls": polls,
        "timeline": timeline,
    }
