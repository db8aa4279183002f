"""What every command group shares: argument types that refuse bad input before any work, the
root check, and plain-text tables."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.table import Table

from labtools.base.errors import LabError

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def int_list(text: str) -> list[int]:
    """Comma-separated positive whole numbers, e.g. 1,1000,10000."""
    parts = text.split(",")
    if any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give numbers separated by single commas")
    return [positive_int(p.strip()) for p in parts]


def name_list(choices: Sequence[str]):
    def parse(text: str) -> list[str]:
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give names separated by single commas")
        bad = [p for p in parts if p not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)} (choose from {', '.join(choices)})")
        return parts

    return parse


def needs_root(lab, what: str) -> None:
    """The netns lab is kernel state: say so at once instead of failing deep inside."""
    import os

    if lab.backend == "netns" and os.geteuid() != 0:
        raise LabError(f"`labtools {what}` needs root: the lab lives in network namespaces (run it with sudo)")


def fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def table(rows: list[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table (rich), wide enough never to wrap a cell."""
    table = Table(*header, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for r in rows:
        table.add_row(*(str(c) for c in r))
    console = Console(width=10_000, no_color=True, highlight=False, markup=False, emoji=False)
    with console.capture() as cap:
        console.print(table)
    return "\n".join(line.rstrip() for line in cap.get().splitlines() if line.strip())


def lab_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", "-i", help="inventory YAML (default: the thesis lab, "
                        "labtools/inventories/thesis-netns.yml)")  # fmt: skip
    parser.add_argument("--prefix", "-p", help="the lab's namespace prefix (default: $LABTOOLS_PREFIX, else the "
                        "inventory's)")  # fmt: skip


