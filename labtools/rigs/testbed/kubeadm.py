"""kubeadm configuration for the thesis cluster, rendered from the inventory.

Values from the thesis appendix (thesis-hu.txt):

- InitConfiguration (lines 1237-1244): ``localAPIEndpoint.advertiseAddress`` = the master's IPv6
  address; kubelet ``cluster-dns`` and ``node-ip``.
- ClusterConfiguration (lines 1246-1274): API server, controller manager and scheduler bound to
  ``::``; ``service-cluster-ip-range`` / ``networking.serviceSubnet`` = ``2001:db8:1234:5678:8:3::/112``;
  ``cluster-cidr`` = ``2001:db8:1234:5678:8:2::/104`` with ``node-cidr-mask-size: 120`` and
  ``allocate-node-cidrs``; etcd listening on the master's IPv6 address.
- KubeletConfiguration (lines 1276-1281): ``cgroupDriver: systemd``, ``clusterDNS`` =
  ``2001:db8:1234:5678:8:3:0:a``, ``healthzBindAddress: ::1``.
- JoinConfiguration (lines 1302-1314): bootstrap token discovery at ``[master]:6443`` and the
  worker's ``node-ip``.

Deliberate differences, each for a reason:

- API version. The thesis used ``kubeadm.k8s.io/v1beta3``; v1beta3 is deprecated since Kubernetes
  1.31 and due for removal, so the default is ``v1beta4``, whose ``extraArgs`` / ``kubeletExtraArgs``
  are lists of ``{name, value}`` instead of maps. ``api_version="v1beta3"`` renders the thesis' form.
- ``networking.podSubnet`` is set to the cluster CIDR too: kubeadm then gives kube-proxy the right
  ``clusterCIDR`` (its local-traffic detector). The thesis set only the controller-manager flag.
- ``service-node-port-range`` is added when the sweep needs more NodePorts than the default range
  holds (2768); the same rule as `labtools.model.services.build()`.
- etcd's ``initial-cluster`` (line 1266) names the thesis' host (``dome-ipv6-master-node``); kubeadm
  derives it from the real node name, so it is left out. The other etcd URLs are kept.
- ``node-ip``: the thesis gave the nodes an IPv4 address too (172.16.69.5 / 172.16.69.17, lines 1244
  and 1314), because Cilium's VXLAN tunnel needed an IPv4 underlay then. With native routing (see
  `labtools.rigs.testbed.cilium`) the cluster is IPv6-only; pass ``node_ips`` to reproduce the dual-stack form.
"""

from __future__ import annotations

from typing import Any

import yaml

from labtools.base.errors import LabError
from labtools.model import services
from labtools.model.topology import Inventory

API_VERSIONS = ("v1beta4", "v1beta3")
CLUSTER_DNS = str(services.SERVICE_CIDR.network_address + 10)  # ...:8:3:0:a, thesis lines 1243 and 1279
NODE_CIDR_MASK = 120  # thesis line 1258
API_PORT = 6443
CONFIG_DIR = "/etc/labtools"
INIT_PATH = f"{CONFIG_DIR}/kubeadm-init.yaml"
JOIN_PATH = f"{CONFIG_DIR}/kubeadm-join.yaml"
ADMIN_KUBECONFIG = "/etc/kubernetes/admin.conf"
TOKEN_PLACEHOLDER = "${KUBEADM_TOKEN}"
CA_HASH_PLACEHOLDER = "${KUBEADM_CA_CERT_HASH}"


def node_port_range_for(services_count: int, mix: str = "nodeport") -> str:
    """The API server's ``service-node-port-range`` for a sweep up to `services_count` Services."""
    n_nodeport = services_count if mix == "nodeport" else 1
    default = services.PortRange.parse(services.DEFAULT_NODE_PORT_RANGE)
    return services.DEFAULT_NODE_PORT_RANGE if n_nodeport <= default.size else services.WIDE_NODE_PORT_RANGE


def _args(api_version: str, args: dict[str, str]) -> Any:
    if api_version == "v1beta3":
        return dict(args)
    return [{"name": k, "value": v} for k, v in args.items()]


def _check(api_version: str) -> str:
    if api_version not in API_VERSIONS:
        raise LabError(f"kubeadm API version must be one of {', '.join(API_VERSIONS)}, got {api_version!r}")
    return api_version


def master_ip(inv: Inventory) -> str:
    return str(inv.by_role("master").global_v6()[0])


def _node_ip(inv: Inventory, role: str, node_ips: dict[str, list[str]] | None) -> str:
    m = inv.by_role(role)
    if node_ips and m.name in node_ips:
        return ",".join(node_ips[m.name])
    return str(m.global_v6()[0])


def init_documents(
    inv: Inventory,
    *,
    api_version: str = "v1beta4",
    node_port_range: str | None = None,
    node_ips: dict[str, list[str]] | None = None,
    kubernetes_version: str | None = None,
) -> list[dict[str, Any]]:
    """``kubeadm init --config`` documents: InitConfiguration, ClusterConfiguration, KubeletConfiguration."""
    av = f"kubeadm.k8s.io/{_check(api_version)}"
    ip = master_ip(inv)
    url = f"https://[{ip}]"
    init = {
        "apiVersion": av,
        "kind": "InitConfiguration",
        "localAPIEndpoint": {"advertiseAddress": ip, "bindPort": API_PORT},
        "nodeRegistration": {
            "kubeletExtraArgs": _args(
                api_version, {"cluster-dns": CLUSTER_DNS, "node-ip": _node_ip(inv, "master", node_ips)}
            ),
        },
    }
    api_server = {
        "advertise-address": ip,
        "bind-address": "::",
        "etcd-servers": f"{url}:2379",
        "service-cluster-ip-range": str(services.SERVICE_CIDR),
    }
    if node_port_range and node_port_range != services.DEFAULT_NODE_PORT_RANGE:
        services.PortRange.parse(node_port_range)  # validates
        api_server["service-node-port-range"] = node_port_range
    cluster: dict[str, Any] = {
        "apiVersion": av,
        "kind": "ClusterConfiguration",
        "apiServer": {"extraArgs": _args(api_version, api_server)},
        "controllerManager": {
            "extraArgs": _args(
                api_version,
                {
                    "allocate-node-cidrs": "true",
                    "bind-address": "::",
                    "cluster-cidr": str(services.CLUSTER_CIDR),
                    "node-cidr-mask-size": str(NODE_CIDR_MASK),
                    "service-cluster-ip-range": str(services.SERVICE_CIDR),
                },
            )
        },
        "etcd": {
            "local": {
                "dataDir": "/var/lib/etcd",
                "extraArgs": _args(
                    api_version,
                    {
                        "advertise-client-urls": f"{url}:2379",
                        "initial-advertise-peer-urls": f"{url}:2380",
                        "listen-client-urls": f"{url}:2379",
                        "listen-peer-urls": f"{url}:2380",
                    },
                ),
            }
        },
        "networking": {"serviceSubnet": str(services.SERVICE_CIDR), "podSubnet": str(services.CLUSTER_CIDR)},
        "scheduler": {"extraArgs": _args(api_version, {"bind-address": "::"})},
    }
    if kubernetes_version:
        cluster["kubernetesVersion"] = kubernetes_version
    kubelet = {
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        "cgroupDriver": "systemd",
        "clusterDNS": [CLUSTER_DNS],
        "healthzBindAddress": "::1",
    }
    return [init, cluster, kubelet]


def join_documents(
    inv: Inventory,
    *,
    api_version: str = "v1beta4",
    token: str = TOKEN_PLACEHOLDER,
    ca_cert_hash: str = CA_HASH_PLACEHOLDER,
    node_ips: dict[str, list[str]] | None = None,
) -> list[dict[str, Any]]:
    """``kubeadm join --config`` for the worker (thesis lines 1302-1314).

    The token and CA hash exist only once the master is initialised; `labtools testbed apply` asks the
    master for them (``kubeadm token create --print-join-command``) and fills the placeholders in.
    """
    av = f"kubeadm.k8s.io/{_check(api_version)}"
    return [
        {
            "apiVersion": av,
            "kind": "JoinConfiguration",
            "discovery": {
                "bootstrapToken": {
                    "apiServerEndpoint": f"[{master_ip(inv)}]:{API_PORT}",
                    "token": token,
                    "caCertHashes": [ca_cert_hash],
                }
            },
            "nodeRegistration": {
                "kubeletExtraArgs": _args(api_version, {"node-ip": _node_ip(inv, "worker", node_ips)}),
            },
        }
    ]


def dump(docs: list[dict[str, Any]], what: str) -> str:
    head = f"# {what}: rendered by labtools from the inventory (thesis appendix values); do not edit.\n"
    return head + yaml.safe_dump_all(docs, sort_keys=False)


def parse_join_command(text: str) -> tuple[str, str]:
    """Token and CA hash out of ``kubeadm token create --print-join-command``'s output."""
    words = text.split()
    try:
        token = words[words.index("--token") + 1]
        ca = words[words.index("--discovery-token-ca-cert-hash") + 1]
    except (ValueError, IndexError):
        raise LabError(f"cannot find --token and --discovery-token-ca-cert-hash in {text.strip()!r}") from None
    return token, ca
