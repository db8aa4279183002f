"""``labtools vm run [--kernel debian] -- CMD...``: CMD as root on a distribution's stock kernel in a VM."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labtools.cli import common


def add_parsers(subparsers: argparse._SubParsersAction) -> None:
    """The ``vm`` command and its ``run`` action."""
    from labtools.hosts import vm

    p = subparsers.add_parser("vm", help="run a command as root on a stock distribution kernel (QEMU; KVM, else TCG)")
    sub = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    run = sub.add_parser(
        "run",
        help="boot the kernel over this host's root (read-only, tmpfs overlay, no network device) and run CMD",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        epilog="e.g. labtools vm run -- labtools srv6 up;  labtools vm run --share data -- labtools capture ...",
    )
    run.add_argument("--kernel", default="debian",
                     help=f"{', '.join(vm.KERNELS)} (its current kernel image) or a linux-image-* package name")
    run.add_argument("--share", action="append", type=Path, default=[],
                     help=f"a folder the guest may write, at its own path (repeatable; default {vm.default_share()})")
    run.add_argument("--memory", type=common.integer(256, 65536), default=vm.MEMORY_MB, help="guest memory in MiB")
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="-- CMD", help="the command and its arguments")
    run.set_defaults(func=cmd_vm)


def cmd_vm(args: argparse.Namespace) -> int:
    """Run the command in the VM; the command's exit status is this one's."""
    from labtools.base.errors import LabError
    from labtools.hosts import vm

    argv = args.argv[1:] if args.argv[:1] == ["--"] else args.argv
    if not argv:
        raise LabError("vm run: give the command after --, e.g. `labtools vm run -- labtools srv6 up`")
    res = vm.run(argv, kernel=args.kernel, shares=args.share, memory_mb=args.memory,
                 say=lambda s: print(s, file=sys.stderr, flush=True))  # fmt: skip
    return res.status
