"""Layer 5, rigs: what an experiment measures on, behind one protocol the caller injects.

`rigs.lab.LabRig` is the emulated lab; `rigs.cluster.ClusterRig` a real kubeadm cluster with Cilium.
`rig_for()` picks one from the inventory.
"""

from __future__ import annotations

from typing import Protocol

from labtools.lab import Lab, traffic
from labtools.model import services
from labtools.model.datapaths import Releases


class Rig(Protocol):
    """What a sweep needs from where it measures."""

    def check(self) -> None:
        """Before anything changes: raise if the rig cannot run the plan."""

    def provenance(self) -> dict:
        """Facts about the rig for the run's manifest."""

    def workload(self, count: int, seed: int) -> services.Workload:
        """The Services of one count."""

    def endpoints(self) -> traffic.TrafficEnds:
        """Where the traffic comes from and goes to."""

    def use(self, datapath: str, workload: services.Workload, key: object = None) -> dict:
        """Put the worker on `datapath` with `workload`; the programming record."""

    def change(self, datapath: str, workload: services.Workload, ends: traffic.TrafficEnds) -> dict:
        """The `change` metric: one Service added on top of `workload` and timed end to end, then removed."""

    def close(self) -> None:
        """Leave the rig as it was found."""


def rig_for(lab: Lab, datapath_names: list[str], max_services: int, progress: bool = True,
            releases: Releases | None = None) -> Rig:  # fmt: skip
    """The lab rig (programming the model `releases`), or on an inventory with ``cluster:`` a `ClusterRig`
    (Cilium modes, the API)."""
    from labtools.rigs import cluster
    from labtools.rigs.lab import LabRig

    if not cluster.is_cluster(lab.inventory):
        return LabRig(lab, releases)
    cluster.check_datapaths(datapath_names)
    return cluster.ClusterRig(lab, max_services, progress=progress)
