"""Service datapaths on the (emulated) worker: kube-proxy iptables/nftables modes and an eBPF NodePort.

Which datapaths there are is `labtools.model.datapaths.REGISTRY` (pure data); `registry` attaches their
factories (`get`). `Switcher` moves a node between them. What a lab's worker is programmed with is changed
only through `worker.Worker`, which holds the lab's lock and keeps the lab's record of it; `switch()` is the
bare mechanism underneath, for a node that belongs to no lab (tests, one-off tools).
"""

from __future__ import annotations

from labtools.datapaths.base import Applied, Datapath, Node, Programmed
from labtools.datapaths.node import node_of
from labtools.datapaths.registry import FACTORIES, all_datapaths, get
from labtools.datapaths.switcher import Switcher, switch
from labtools.model.datapaths import NAMES

__all__ = ["FACTORIES", "NAMES", "Applied", "Datapath", "Node", "Programmed", "Switcher", "all_datapaths", "get",
           "node_of", "switch"]
