"""Which model releases and pod attachment a run was measured under, also for runs recorded before these were
run parameters.

Since this change a sweep's and a bench's parameters name them (``kube_proxy_version``: the nftables layout;
``cilium_version``: the eBPF lookup; ``cni``: the pod attachment), and so does every point. Older manifests do
not; they are read as they were measured (data/README.md):

- the nftables layout: 1.35, the only one there was, for a run at a commit before the layout became a
  parameter (`LAYOUT_PARAMETER_COMMIT`, which made 1.37 the default); 1.37 after it. Where git cannot tell
  (no repository, an unknown commit), the run's time decides;
- the Cilium release: 1.17 (before the release was a parameter the datapath keyed Services by protocol, as
  1.17 does; after it, 1.17 was the default, and only udp-check and bench named another);
- the pod attachment: the manifest's ``cni`` where it has one, else ``plain`` on the netns lab (the
  Cilium-like attachment came with ``cni``), none over SSH.
"""

from __future__ import annotations

import subprocess

from labtools.base import paths
from labtools.model import datapaths as registry

LAYOUT_PARAMETER_COMMIT = "7de97fa"  # "kube-proxy's nftables layout as a parameter (... default current upstream)"
LAYOUT_PARAMETER_TIME = "2026-12-04T15:53:15Z"  # its commit time (UTC)
PARAMS = (*registry.RELEASE_PARAMS, "cni")


def _after_layout_parameter(provenance: dict) -> bool:
    commit = str(provenance.get("git_commit") or "")
    if commit and commit != "unavailable":
        try:
            res = subprocess.run(["git", "-C", str(paths.PACKAGE.parent), "merge-base", "--is-ancestor",
                                  LAYOUT_PARAMETER_COMMIT, commit], capture_output=True, timeout=10)  # fmt: skip
            if res.returncode in (0, 1):
                return res.returncode == 0
        except (OSError, subprocess.TimeoutExpired):
            pass
    return str(provenance.get("time") or "") >= LAYOUT_PARAMETER_TIME


def measured_under(manifest: dict) -> dict:
    """The releases and pod attachment of a run, from its manifest (its params where they name them)."""
    params = manifest.get("params") or {}
    prov = manifest.get("provenance") or {}
    out = {k: params[k] for k in PARAMS if k in params}
    if registry.KUBE_PROXY_PARAM not in out:
        out[registry.KUBE_PROXY_PARAM] = "1.37" if _after_layout_parameter(prov) else "1.35"
    out.setdefault(registry.CILIUM_PARAM, "1.17")
    if "cni" not in out:
        out["cni"] = prov.get("cni") or ("plain" if prov.get("backend", "netns") == "netns" else None)
    return out


def params_of(manifest: dict) -> dict:
    """A manifest's parameters as this version records them: with the releases it was measured under."""
    return {**(manifest.get("params") or {}), **measured_under(manifest)}
