"""The worker's own transit time per packet, from BPF stamps at its uplink and its pod veth.

`TransitProbe` runs ``labtools-transit`` (``labtools/bpf/transit-load.c``) in the worker's namespace for
the length of a `with` block: the request is stamped at the uplink's ingress and the pod veth's egress,
the reply at the pod veth's ingress and the uplink's egress, and each packet matched by the client's
address and port and its TCP sequence number (see ``labtools/bpf/transit.c``). The entry stamps are tcx
links, which run before every classic tc program (the eBPF datapath's) and tc ingress runs before
netfilter; the exit stamps are classic tc filters at the last priority, after POSTROUTING and after
the datapath's programs there. By default only the handshake is stamped (SYN, SYN-ACK): the packets
that walk the service rules. Before kernel 6.6 (Debian 12's 6.1) there is no tcx: the entry stamps are classic
tc filters at the datapath's priority, which run before its programs when those were attached first (see
``transit-load.c``); the result's ``ingress_hook`` says which.

Through an SRv6 ingress mode the uplink sees the outer packet: the probe matches the inner one, so the
request's transit includes the worker's decapsulation and the reply's its encapsulation (where the
worker encapsulates in tc: after the probe's exit stamp, which then times the reply before encapsulation
by ``srv6_egress`` only if that program ran first — it does, at a lower priority).

A probe killed outright (kill -9 of its owner) takes its tcx links with it, but its two exit filters stay
in the worker's path; `detach_stale` removes them, and every command that programs or measures the worker
calls it first, as `lab down` does.
"""

from __future__ import annotations

import contextlib
import json

from labtools.base import paths
from labtools.base.errors import LabError, PrerequisiteError
from labtools.base.waiting import Timeout, until
from labtools.hosts import Host, Process

LOADER = paths.BPF / "labtools-transit"
OBJECT = paths.BPF / "transit.o"
PROBE_PREF = 0xFFF0  # the exit filters' tc priority and handle (transit-load.c)
EXIT_PROGRAMS = ("out_request", "out_reply")  # their programs (transit.c)


def detach_stale(worker: Host) -> list[str]:
    """Remove the transit probe's exit filters from every interface of `worker` (idempotent: nothing to do
    is no error); returns the interfaces they were on. Only while no probe runs: it would lose its stamps."""
    links = worker.run(["ip", "-br", "link", "show"], check=False).stdout.split("\n")
    found = []
    for dev in (line.split()[0].partition("@")[0] for line in links if line.strip()):
        argv = ["tc", "filter", "show", "dev", dev, "egress", "pref", str(PROBE_PREF)]
        shown = worker.run(argv, check=False).stdout  # fails on a device without a clsact qdisc: none there
        if any(f" {name} " in f" {shown} " for name in EXIT_PROGRAMS):
            worker.run(["tc", "filter", "del", "dev", dev, "egress", "pref", str(PROBE_PREF)])
            found.append(dev)
    return found


class TransitProbe:
    """``with TransitProbe(worker, uplink, pod_veth) as probe: ...``; then ``probe.result``."""

    def __init__(self, worker: Host, uplink: str, pod_interface: str, established: bool = False,
                 stats: bool = False, keys: bool = False):  # fmt: skip
        for built in (LOADER, OBJECT):
            if not built.exists():
                raise PrerequisiteError(f"{built} is missing: run `make setup` (it builds labtools/bpf)")
        self.worker, self.uplink, self.pod_interface, self.established = worker, uplink, pod_interface, established
        self.stats = stats  # the probe programs' own run time (kernel BPF statistics: times every program)
        self.keys = keys  # each sample's packet key (client port << 32 | TCP sequence), to pair with a capture
        self.proc: Process | None = None
        self.result: dict | None = None

    def __enter__(self) -> TransitProbe:
        argv = [self.worker.install(LOADER), self.worker.install(OBJECT), self.uplink, self.pod_interface]
        flags = [*(["--established"] if self.established else []), *(["--stats"] if self.stats else []),
                 *(["--keys"] if self.keys else [])]
        self.proc = self.worker.start([*argv, *flags])
        with contextlib.suppress(Timeout):
            until(lambda: "attached" in self.proc.output() or not self.proc.running(), timeout=10, interval=0.02)
        if "attached" not in self.proc.output():
            self.proc.stop()
            raise LabError(f"[{self.worker.name}] the transit probe did not attach:\n{self.proc.output()}")
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.proc is not None
        self.proc.interrupt()
        try:
            self.proc.wait(15)
        finally:
            self.proc.stop()
        out = self.proc.output().strip().splitlines()
        self.worker.run(["rm", "-f", self.proc.log], check=False)
        try:
            self.result = json.loads(out[-1])
        except (IndexError, ValueError):
            if exc[0] is None:
                raise LabError(f"[{self.worker.name}] the transit probe reported nothing:\n{out}") from None
