"""labtools: a reproducible data-centre networking lab.

Kubernetes service datapaths (kube-proxy iptables/nftables vs eBPF) and an SRv6 L3VPN, on
Linux network namespaces (the default) or on real VMs over SSH, with one code path for both.

The package is layered, one folder per layer, each importing only from those below it:
base → model → hosts → lab → datapaths → rigs → experiments → outputs, with `cli` and `pipeline` on top.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.util
import sys
import warnings

from labtools.base.errors import (
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

# Modules that sat at the package root until 0.1.0; the old names keep working for one release.
_BASE = ("paths", "errors", "prereqs", "progress", "waiting", "distribution")
_OUTPUTS = ("analysis", "benchview", "claims", "dissect", "drawing", "figstyle", "figures", "paper", "srv6view",
            "sweepview", "tables", "verdicts")  # fmt: skip
MOVED = {f"labtools.{m}": f"labtools.{layer}.{m}" for layer, names in (("base", _BASE), ("outputs", _OUTPUTS))
         for m in names}  # fmt: skip


class _MovedModules(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old module name as its new module, with a DeprecationWarning naming the new one."""

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in MOVED:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec):
        new = MOVED[spec.name]
        warnings.warn(f"{spec.name} moved to {new}; the old name goes in the next release",
                      DeprecationWarning, stacklevel=3)  # fmt: skip
        module = importlib.import_module(new)
        sys.modules[spec.name] = module
        return module

    def exec_module(self, module) -> None:  # already executed under its new name
        return None


if not any(isinstance(f, _MovedModules) for f in sys.meta_path):
    sys.meta_path.append(_MovedModules())
