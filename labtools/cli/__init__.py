"""labtools: a reproducible lab for Kubernetes service datapaths (kube-proxy iptables/nftables, eBPF) and SRv6.

commands:
  lab up|down|status        the thesis testbed in network namespaces (or real VMs over SSH)
  services apply|manifests|bench
                            N Kubernetes Services into a datapath; YAML for a cluster; programming time
  measure                   one metric through the programmed datapath (a recorded run)
  udp-check                 the thesis' UDP observation: UDP to a TCP-only Service, per datapath and release
  sweep                     datapaths x counts x metrics x targets x repeats, resumable
  srv6 up|down|status|matrix
                            the thesis' SRv6 L3VPN, and which way through it reaches what
  capture                   tcpdump at the thesis' five capture points around traffic
  dissect                   one row per packet and header of a capture, tshark cross-check
  reproduce, figures        the notebooks headless (measuring, or from committed data)
  testbed                   render or apply the real testbed's set-up

The lab needs root. Its prefix comes from --prefix, else $LABTOOLS_PREFIX, else the inventory."""

from __future__ import annotations

import argparse
import contextlib
import signal
import sys
from collections.abc import Sequence

from labtools.base.errors import LabError

EXAMPLES = """examples:
  sudo labtools lab up --prefix mylab
  sudo labtools services apply --prefix mylab --datapath nftables --count 1000 --udp-targets
  sudo labtools measure --prefix mylab --metric crr --target last --repeats 3
  sudo labtools sweep --prefix mylab --run-id try1 --datapaths none,ebpf --counts 1,1000 --metrics crr
  labtools dissect data/raw/reference-srv6/icmp/*.pcap --check-tshark
  labtools figures
  sudo labtools lab down --prefix mylab
"""


def build_parser() -> argparse.ArgumentParser:
    """The whole command line: one module of this package per command group adds its parsers."""
    from importlib.metadata import PackageNotFoundError, version

    from labtools.cli import lab, measure, outputs, services, srv6, sweep, testbed, vm

    try:
        ver = version("labtools")
    except PackageNotFoundError:
        from labtools import __version__ as ver
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="labtools", description=__doc__, epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"labtools {ver}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (lab, services, measure, sweep, outputs, testbed, srv6, vm):
        group.add_parsers(sub)
    return p


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that every clean-up path runs; the exit status says which it was."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    """The `labtools` command. The signal handling comes first, before the command modules' imports (the
    slow part of starting), so that Ctrl-C at any moment exits with 130 and one line, SIGTERM with 143."""
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    try:
        args = build_parser().parse_args(argv)
        args._argv = list(sys.argv[1:] if argv is None else argv)
        with contextlib.ExitStack() as resources:  # what the command holds (a lab's lock: `common.exclusive`)
            args._resources = resources
            return args.func(args)
    except LabError as e:
        print(f"labtools: error: {e}", file=sys.stderr)
        return 2
    except Terminated:
        print("labtools: terminated", file=sys.stderr)
        return 128 + signal.SIGTERM
    except KeyboardInterrupt:
        print("labtools: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


if __name__ == "__main__":
    sys.exit(main())
