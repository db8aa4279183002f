"""labtools: a reproducible data-centre networking lab.

Kubernetes service datapaths (kube-proxy iptables/nftables vs eBPF) and an SRv6 L3VPN, on
Linux network namespaces (the default) or on real VMs over SSH, with one code path for both.
"""

from labtools.errors import (
    CommandError,
    HostKeyError,
    HostUnreachable,
    InventoryError,
    LabError,
    PrerequisiteError,
)

__version__ = "0.1.0"

__all__ = [
    "CommandError",
    "HostKeyError",
    "HostUnreachable",
    "InventoryError",
    "LabError",
    "PrerequisiteError",
    "__version__",
]
