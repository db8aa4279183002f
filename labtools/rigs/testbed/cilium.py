"""Cilium's helm values for the two modes of the thesis, and the commands that switch between them.

The thesis installs Cilium with helm twice (thesis-hu.txt lines 1350-1367 and 1373-1388):

=================================================  =========================================
thesis ``--set``                                    rendered value (current chart)
=================================================  =========================================
``global.k8sServiceHost=2001:db8:1234:5678::1``     ``k8sServiceHost`` (the master's address)
``global.k8sServicePort=6443``                      ``k8sServicePort: 6443``
``ipv4.enabled=false`` / ``ipv6.enabled=true``      the same
``ipam.mode=cluster-pool``                          the same
``ipam.operator.clusterPoolIPv6PodCIDRList``        ``[2001:db8:1234:5678:8:2::/104]``
``ipam.operator.clusterPoolIPv6MaskSize=112``       the same (and ``clusterPoolIPv4MaskSize: 24``)
``enableIPv4Masquerade`` / ``enableIPv6Masquerade``  both ``true``, as in the thesis
``bpf.masquerade=false`` (kube-proxy mode)           ``false``; ``true`` in eBPF mode
``kubeProxyReplacement=true`` (eBPF mode only)      ``false`` / ``true``
``bpf.tunnel=false`` / ``true``                     ``routingMode: native`` (see below)
=================================================  =========================================

Two thesis settings do not exist in a current chart and were silently ignored: the ``global.`` prefix
was dropped in Cilium 1.9, and there never was a ``bpf.tunnel`` value (tunnelling was ``tunnel:``, now
``routingMode``/``tunnelProtocol``). The thesis notes (line 1234) that the tunnel needed an IPv4
underlay; the nodes here are IPv6-only, so both modes use native routing with
``autoDirectNodeRoutes`` and the pod CIDR as ``ipv6NativeRoutingCIDR`` (traffic inside it is not
masqueraded). ``devices`` names the inventory's cluster-side interface, so NodePort is served on it,
and ``nodePort.range`` follows the API server's ``service-node-port-range`` (Cilium's kube-proxy
replacement has its own copy of the range).

Switching modes on a running cluster (what the sweep does between datapaths):

- to ``ebpf``: ``helm upgrade`` with ``kubeProxyReplacement: true``, delete kube-proxy's DaemonSet and
  ConfigMap (thesis lines 1293-1296), flush the KUBE-* rules kube-proxy left on the nodes, restart the
  Cilium agents;
- to ``kube-proxy``: ``helm upgrade`` with ``kubeProxyReplacement: false``, re-install kube-proxy with
  ``kubeadm init phase addon kube-proxy`` from the same kubeadm config, restart the agents.
"""

from __future__ import annotations

from typing import Any

import yaml

from labtools.base.errors import LabError
from labtools.model import services
from labtools.model.topology import Inventory
from labtools.rigs.testbed.kubeadm import ADMIN_KUBECONFIG, API_PORT, CONFIG_DIR, INIT_PATH, master_ip

MODES = ("kube-proxy", "ebpf")
CHART = "cilium/cilium"
REPO_URL = "https://helm.cilium.io/"  # thesis line 1350
IPV6_MASK = 112  # thesis line 1363


def values_path(mode: str) -> str:
    return f"{CONFIG_DIR}/cilium-values-{mode}.yaml"


def _check(mode: str) -> str:
    if mode not in MODES:
        raise LabError(f"Cilium mode must be one of {', '.join(MODES)}, got {mode!r}")
    return mode


def cluster_interface(inv: Inventory) -> str:
    """The worker's interface that carries its cluster address (``ens3`` in the thesis)."""
    worker = inv.by_role("worker")
    ip = worker.global_v6()[0]
    return next(i.name for i in worker.interfaces.values() if any(a.ip == ip for a in i.addresses))


def values(inv: Inventory, mode: str, *, node_port_range: str | None = None) -> dict[str, Any]:
    """Helm values for `mode` ("kube-proxy" or "ebpf"), from the thesis' ``--set`` flags."""
    ebpf = _check(mode) == "ebpf"
    ports = services.PortRange.parse(node_port_range or services.DEFAULT_NODE_PORT_RANGE)
    return {
        "k8sServiceHost": master_ip(inv),
        "k8sServicePort": API_PORT,
        "kubeProxyReplacement": ebpf,
        "ipv4": {"enabled": False},
        "ipv6": {"enabled": True},
        "ipam": {
            "mode": "cluster-pool",
            "operator": {
                "clusterPoolIPv6PodCIDRList": [str(services.CLUSTER_CIDR)],
                "clusterPoolIPv4MaskSize": 24,
                "clusterPoolIPv6MaskSize": IPV6_MASK,
            },
        },
        "routingMode": "native",
        "autoDirectNodeRoutes": True,
        "ipv6NativeRoutingCIDR": str(services.CLUSTER_CIDR),
        "devices": cluster_interface(inv),
        "bpf": {"masquerade": ebpf},
        "enableIPv4Masquerade": True,
        "enableIPv6Masquerade": True,
        "nodePort": {"range": f"{ports.lo},{ports.hi}"},
    }


def values_yaml(inv: Inventory, mode: str, *, node_port_range: str | None = None) -> str:
    head = f"# Cilium helm values, {mode} mode: rendered by labtools (thesis appendix, lines 1354-1388).\n"
    return head + yaml.safe_dump(values(inv, mode, node_port_range=node_port_range), sort_keys=False)


def kubectl(*args: str) -> list[str]:
    return ["kubectl", "--kubeconfig", ADMIN_KUBECONFIG, *args]


def helm_commands(mode: str, *, version: str | None = None) -> list[list[str]]:
    """``helm`` on the master: add the repo and install or upgrade Cilium with `mode`'s values."""
    ver = ["--version", version] if version else []
    return [
        ["helm", "repo", "add", "cilium", REPO_URL, "--force-update"],
        [
            "helm",
            "upgrade",
            "--install",
            "cilium",
            CHART,
            "--namespace",
            "kube-system",
            *ver,
            "--values",
            values_path(_check(mode)),
            "--kubeconfig",
            ADMIN_KUBECONFIG,
        ],
    ]


def delete_kube_proxy() -> list[list[str]]:
    """Thesis lines 1293-1296: kube-proxy's DaemonSet and its ConfigMap (so `kubeadm upgrade` won't bring it back)."""
    return [
        # Foreground: returns once kube-proxy's pods are gone, so none rewrites its rules after the flush.
        kubectl("-n", "kube-system", "delete", "ds", "kube-proxy", "--ignore-not-found", "--cascade=foreground"),
        kubectl("-n", "kube-system", "delete", "cm", "kube-proxy", "--ignore-not-found"),
    ]


def restore_kube_proxy() -> list[list[str]]:
    return [
        ["kubeadm", "init", "phase", "addon", "kube-proxy", "--config", INIT_PATH],
        kubectl("-n", "kube-system", "rollout", "status", "ds/kube-proxy", "--timeout", "300s"),
    ]


# Run on every node after kube-proxy is gone: its rules would otherwise stay and keep matching first.
FLUSH_KUBE_RULES = [
    ["sh", "-c", "ip6tables-save | grep -v KUBE | ip6tables-restore"],
    ["sh", "-c", "iptables-save | grep -v KUBE | iptables-restore"],
    ["sh", "-c", "nft list table ip6 kube-proxy >/dev/null 2>&1 && nft delete table ip6 kube-proxy || true"],
]

RESTART_AGENTS = [
    kubectl("-n", "kube-system", "rollout", "restart", "ds/cilium"),
    kubectl("-n", "kube-system", "rollout", "status", "ds/cilium", "--timeout", "300s"),
]


def switch_commands(inv: Inventory, mode: str, *, version: str | None = None) -> list[tuple[str, list[str]]]:
    """(machine, argv) in order: switch the cluster's service datapath to `mode`.

    The values file must already be on the master (`labtools testbed apply --stages cilium`, or
    `labtools.rigs.testbed.switch_mode()`, which writes it first).
    """
    master, worker = inv.by_role("master").name, inv.by_role("worker").name
    steps = [(master, c) for c in helm_commands(mode, version=version)]
    if mode == "ebpf":
        steps += [(master, c) for c in delete_kube_proxy()]
        steps += [(m, c) for m in (master, worker) for c in FLUSH_KUBE_RULES]
    else:
        steps += [(master, c) for c in restore_kube_proxy()]
    steps += [(master, c) for c in RESTART_AGENTS]
    return steps
