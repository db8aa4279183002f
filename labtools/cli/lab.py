"""`labtools lab up|down|status`: the thesis testbed."""

from __future__ import annotations

import argparse
import os

from labtools.base.errors import LabError
from labtools.cli.common import exclusive, lab_options, table
from labtools.hosts import namespaces


def cmd_lab(args: argparse.Namespace) -> int:
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    where = f"prefix {lab.prefix}" if lab.prefix else "ssh"
    if args.action == "status" and lab.backend == "netns" and os.geteuid() != 0:
        raise LabError(f"cannot see lab {lab.prefix} without root (its namespaces' interfaces are root's to read): "
                       f"run `sudo labtools lab status{lab.hint}`")  # fmt: skip
    if args.action in ("up", "down") and (lab.backend != "netns" or os.geteuid() == 0):
        exclusive(args, lab)  # (without root, up and down say so themselves)
    if args.action == "up":
        lab.up(progress=not args.quiet, cni=args.cni)
        cni = f"; pod attachment: {args.cni or lab.inventory.cni}" if lab.backend == "netns" else ""
        print(f"lab {lab.inventory.name} is up ({where}): {', '.join(lab.inventory.machines)}{cni}")
    elif args.action == "down":
        removed = lab.down()
        print(f"lab {lab.inventory.name} is down ({where}); removed: {', '.join(removed) or 'nothing'}")
    elif lab.backend == "netns" and not namespaces.lab_namespaces(lab.prefix or ""):
        print(f"lab {lab.inventory.name} ({where}) is not up: run `labtools lab up{lab.hint}`")
        return 1
    else:
        status = lab.status()
        rows = [(s.machine, s.interface, s.state, s.mtu, s.link, " ".join(s.addresses) or "-") for s in status]
        print(f"lab {lab.inventory.name} ({where})")
        print(table(rows, ["machine", "iface", "state", "mtu", "link", "addresses"]))
        attachment = lab.pod_attachment()  # None over SSH, or while the lab is incomplete
        if attachment:
            print(f"pod attachment (cni): {attachment}")
        broken = [f"{s.machine}:{s.interface} {s.state}" for s in status if s.state not in ("UP", "UNKNOWN")]
        if lab.backend == "netns" and (broken or not lab.is_up()):
            print(f"lab {lab.prefix} is incomplete ({', '.join(broken) or 'namespaces missing'}): "
                  f"run `labtools lab up{lab.hint}` to finish it, or `labtools lab down{lab.hint}`")  # fmt: skip
            lab.close()
            return 1
    lab.close()
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools.model import topology

    lab = sub.add_parser("lab", help="bring the testbed up or down, or show it")
    lab.add_argument("action", choices=["up", "down", "status"])
    lab_options(lab)
    lab.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    lab.add_argument("--cni", choices=topology.CNIS, default=None,
                     help="up: how the pod is attached: as Cilium does (BPF on its veth ages every routed packet "
                          "once more, as in the thesis) or plainly; default the inventory's cni (cilium)")
    lab.set_defaults(func=cmd_lab)

