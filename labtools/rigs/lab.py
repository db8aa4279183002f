"""The emulated lab as a rig: the worker namespace's datapaths (`datapaths.Switcher`) and the lab's machines."""

from __future__ import annotations

from labtools import datapaths
from labtools.lab import Lab, traffic
from labtools.model import services


class LabRig:
    """The emulated lab: switches the worker between datapaths, parking where that is cheap."""

    def __init__(self, lab: Lab):
        self.lab = lab
        self.node = datapaths.node_of(lab.inventory)
        self.switcher = datapaths.Switcher(lab.host(self.node.name), self.node)

    def check(self) -> None:
        """Nothing to check before a run: `Lab` and the datapaths name what is missing themselves."""

    def provenance(self) -> dict:
        return {"rig": "lab"}

    def workload(self, count: int, seed: int) -> services.Workload:
        return services.build(count, udp_targets=True, seed=seed)

    def endpoints(self) -> traffic.TrafficEnds:
        return traffic.ends(self.lab)

    def use(self, datapath: str, workload: services.Workload, key: object = None) -> dict:
        done = self.switcher.use(datapath, services.service_ports(workload, self.node.name), key=key)
        return {"render_s": done.render_s, "apply_s": done.apply_s, "objects": done.objects,
                "resumed_s": done.detail.get("resumed_s"),
                "parked": ";".join(sorted(n for n in self.switcher.parked if n != datapath))}  # fmt: skip

    def close(self) -> None:
        self.switcher.use("none", [])  # clears parked datapaths too (no key)
