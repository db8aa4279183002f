"""Reading a datapath's programmed state back: which Service frontends a node really holds.

Parsers of ``ip6tables-save -t nat``, ``nft list map ... service-ips`` and ``cilium-dbg service list``,
the readbacks that run them on a node (through ``sudo -n`` where the login is not root), and
`wait_programmed()`, which polls a readback until a change is there: the programming latency,
ClusterLoader2's network-programming-latency SLI.
"""

from __future__ import annotations

import ipaddress
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from kubernetes import client as k8s

from labtools.base.errors import CommandError, LabError
from labtools.hosts import Host, as_root

ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"


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


@dataclass
class IptablesReadback:
    """kube-proxy iptables mode: the frontends in the nat table's KUBE-SERVICES chain on the worker."""

    host: Host
    save: str = "ip6tables-save"
    sudo: bool = False
    name: str = "iptables"

    def programmed(self) -> set[Frontend]:
        return iptables_frontends(as_root(self.host, self.sudo).run([self.save, "-t", "nat"]).stdout)


@dataclass
class NftablesReadback:
    """kube-proxy nftables mode: the keys of ``table ip6 kube-proxy``'s ``service-ips`` map."""

    host: Host
    sudo: bool = False
    name: str = "nftables"

    def programmed(self) -> set[Frontend]:
        res = as_root(self.host, self.sudo).run(["nft", "list", "map", "ip6", "kube-proxy", "service-ips"], check=False)
        return nft_frontends(res.stdout) if res.ok else set()


@dataclass
class CiliumReadback:
    """Cilium: the service frontends of the agent on the worker, via ``kubectl exec`` on the master."""

    master: Host
    node_ip: str  # the worker's InternalIP: picks the agent pod running there
    kubeconfig: str = ADMIN_KUBECONFIG
    sudo: bool = False
    name: str = "cilium"
    _pod: str | None = None

    def _kubectl(self, *args: str, check: bool = True):
        return as_root(self.master, self.sudo).run(["kubectl", "--kubeconfig", self.kubeconfig, *args], check=check)

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
