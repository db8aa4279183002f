"""What every command group shares: argument types that refuse bad input before any work, the
root check, and plain-text tables."""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from labtools.base.errors import LabError

DEFAULTS = argparse.ArgumentDefaultsHelpFormatter


def integer(lo: int, hi: int) -> Callable[[str], int]:
    """An argument type: a whole number from `lo` to `hi`, refused where it is parsed."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if value < lo:
            raise argparse.ArgumentTypeError(f"must be at least {lo}, got {value}")
        if value > hi:
            raise argparse.ArgumentTypeError(f"must be at most {hi:,}, got {value:,}")
        return value

    return parse


def real(lo: float, hi: float) -> Callable[[str], float]:
    """An argument type: a finite number from `lo` to `hi` (nan and inf are refused, not waited out)."""

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo:g} to {hi:g}, got {value:g}")
        return value

    return parse


# The numeric flags' types, one per kind of quantity, shared by every command.
positive_int = integer(1, 1_000_000)  # Service counts
repeats = integer(1, 1000)
samples = integer(1, 100_000_000)  # packets, transactions, echo requests per sample
seconds = integer(1, 3600)
seed = integer(0, 2**32 - 1)
timeout = real(0.01, 600)


def _unique(text: str, parts: Sequence[object]) -> None:
    twice = sorted({str(p) for p in parts if parts.count(p) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{text!r} names {', '.join(twice)} more than once")


def int_list(text: str) -> list[int]:
    """Comma-separated distinct Service counts, e.g. 1,1000,10000."""
    parts = text.split(",")
    if any(not p.strip() for p in parts):
        raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give numbers separated by single commas")
    values = [positive_int(p.strip()) for p in parts]
    _unique(text, values)
    return values


def name_list(choices: Sequence[str]) -> Callable[[str], list[str]]:
    """An argument type: comma-separated distinct names out of `choices`."""

    def parse(text: str) -> list[str]:
        parts = [p.strip() for p in text.split(",")]
        if any(not p for p in parts):
            raise argparse.ArgumentTypeError(f"{text!r} has an empty item: give names separated by single commas")
        bad = [p for p in parts if p not in choices]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {', '.join(bad)} (choose from {', '.join(choices)})")
        _unique(text, parts)
        return parts

    return parse


def data_out(out: str | None, run_id: str | None, *, run_folder: bool = False) -> tuple[Path | None, str | None]:
    """`--out`, the same for every command that records a run: a data folder instead of data/ (the run goes
    to OUT/raw/RUN-ID, its table to OUT/processed/RUN-ID.csv). With `run_folder` (sweep, capture), OUT/raw/RUN,
    e.g. data/raw/RUN, names the run's own folder and RUN is its run id. Returns the data folder (None:
    data/) and the run id; a file or a place that cannot be written is refused before any work."""
    from labtools.base import paths

    if not out:
        return None, run_id
    folder = paths.writable_folder(out)
    if run_folder and folder.parent.name == "raw":
        if run_id and run_id != folder.name:
            raise LabError(f"--out {out} names run {folder.name}, --run-id {run_id}: give one of them")
        return folder.parents[1], paths.check_run_id(folder.name)
    return folder, run_id


OUT_HELP = "a data folder instead of data/: the run goes to OUT/raw/RUN-ID, its table to OUT/processed/RUN-ID.csv"


def needs_root(lab, what: str) -> None:
    """The netns lab is kernel state: say so at once instead of failing deep inside."""
    import os

    if lab.backend == "netns" and os.geteuid() != 0:
        raise LabError(f"`labtools {what}` needs root: the lab lives in network namespaces (run it with sudo)")


def exclusive(args: argparse.Namespace, lab) -> None:
    """This command changes or measures `lab`: hold the lab's lock until the command ends (`main` releases it).
    Refused at once, naming the holder's command and pid, when another command holds it."""
    import atexit
    import shlex
    import sys

    argv = getattr(args, "_argv", None)
    command = shlex.join(["labtools", *(sys.argv[1:] if argv is None else argv)])
    stack = getattr(args, "_resources", None)
    if stack is not None:
        stack.enter_context(lab.lock.hold(command))
    else:  # called outside `main`: held until the process ends
        lock = lab.lock
        lock.acquire(command)
        atexit.register(lock.release)


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




def release_options(parser: argparse.ArgumentParser, *, cni: bool = False) -> None:
    """--kube-proxy-version and --cilium-version (the model releases, from the registry), and --cni: run parameters."""
    from labtools.model import datapaths as registry
    from labtools.model.topology import CNIS

    for name, param in (("nftables", registry.KUBE_PROXY_PARAM), ("ebpf", registry.CILIUM_PARAM)):
        spec = registry.spec(name)
        notes = "; ".join(f"{r.version}: {r.behaviour.value}" for r in spec.releases)
        later = ", or a later release of the same major" if spec.later_releases else ""
        parser.add_argument(f"--{param.replace('_', '-')}", default=spec.default_release, metavar="V",
                            choices=None if spec.later_releases else spec.versions,
                            help=f"{name}: the release modelled ({notes}{later})")  # fmt: skip
    if cni:
        parser.add_argument("--cni", choices=CNIS, default=None,
                            help="the pod attachment the run needs (default: the lab's; recorded either way)")


def releases_of(args: argparse.Namespace):
    """The model releases the command line names (`--kube-proxy-version`, `--cilium-version`)."""
    from labtools.model.datapaths import Releases

    return Releases(kube_proxy_version=args.kube_proxy_version, cilium_version=args.cilium_version)
