"""Command line: `labtools lab up|down|status [--inventory FILE] [--prefix P]`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from labtools.errors import LabError


def _table(rows: list[Sequence[object]], header: Sequence[str]) -> str:
    cells = [list(map(str, header))] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def cmd_lab(args: argparse.Namespace) -> int:
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    where = f"prefix {lab.prefix}" if lab.prefix else "ssh"
    if args.action == "up":
        lab.up(progress=not args.quiet)
        print(f"lab {lab.inventory.name} is up ({where}): {', '.join(lab.inventory.machines)}")
    elif args.action == "down":
        removed = lab.down()
        print(f"lab {lab.inventory.name} is down ({where}); removed: {', '.join(removed) or 'nothing'}")
    elif lab.backend == "netns" and not lab.is_up():
        print(f"lab {lab.inventory.name} ({where}) is not up: run `labtools lab up`")
        return 1
    else:
        rows = [(s.machine, s.interface, s.state, s.mtu, s.link, " ".join(s.addresses) or "-") for s in lab.status()]
        print(f"lab {lab.inventory.name} ({where})")
        print(_table(rows, ["machine", "iface", "state", "mtu", "link", "addresses"]))
    lab.close()
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="labtools", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    lab = sub.add_parser("lab", help="bring the testbed up or down, or show it")
    lab.add_argument("action", choices=["up", "down", "status"])
    lab.add_argument("--inventory", "-i", help="inventory YAML (default: lab/thesis-netns.yml)")
    lab.add_argument("--prefix", "-p", help="namespace prefix (netns backend; default: the inventory's)")
    lab.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    lab.set_defaults(func=cmd_lab)
    return p


def _terminate(signum: int, frame: object) -> None:
    # Turn SIGTERM into an exception so `up` can clean up after itself, as on Ctrl-C.
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
        signal.signal(signal.SIGTERM, _terminate)
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except LabError as e:
        print(f"labtools: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("labtools: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
