"""`labtools reproduce`, `figures` and `dissect`: the notebooks headless, and captures read back."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from labtools.base.errors import LabError
from labtools.cli.common import table


def cmd_reproduce(args: argparse.Namespace) -> int:
    from labtools import pipeline

    pipeline.reproduce(args.profile, run_id=args.run_id, prefix=args.prefix)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from labtools import pipeline
    from labtools.outputs import figures

    pipeline.figures()
    problems = figures.check()
    for p in problems:
        print(f"labtools: {p}", file=sys.stderr)
    print(f"figures and tables regenerated from data/; manifest: {figures.manifest_path()}")
    return 1 if problems else 0


def cmd_dissect(args: argparse.Namespace) -> int:
    import warnings

    from labtools.outputs import dissect

    pcaps = []
    for given in map(Path, args.pcap):  # a folder stands for the captures in it (recursively, sorted)
        if given.is_dir():
            found = sorted(p for p in given.rglob("*") if p.suffix in (".pcap", ".pcapng"))
            if not found:
                raise LabError(f"{given} holds no .pcap or .pcapng file")
            pcaps += found
        else:
            pcaps.append(given)
    args.pcap = [str(p) for p in pcaps]
    if args.csv:
        parent = Path(args.csv).parent
        try:
            parent.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise LabError(f"cannot write {args.csv}: {e.strerror} ({parent})") from None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", dissect.DissectWarning)
        df = dissect.dissect(args.pcap)
    for w in caught:
        print(f"labtools: warning: {w.message}", file=sys.stderr)
    print(table(dissect.table_rows(df), dissect.TABLE_HEADER))
    if args.csv:
        df.to_csv(args.csv, index=False)
        print(f"{len(df)} rows written to {args.csv}")
    if not args.check_tshark:
        return 0
    bad = [d for pcap in args.pcap for d in dissect.compare(pcap)]
    for d in bad:
        print(f"disagreement: {d}")
    print(f"tshark cross-check: {len(bad)} disagreement(s) in {len(args.pcap)} capture(s)")
    return 1 if bad else 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    rp = sub.add_parser("reproduce", help="bring the lab up, run every notebook measuring (papermill), take it down")
    rp.add_argument("--profile", default="quick", help="params/PROFILE.yaml (quick, full)")
    rp.add_argument("--run-id", help="default: PROFILE-<UTC time>; an existing run id is resumed")
    rp.add_argument("--prefix", "-p", help="namespace prefix of the lab (default: $LABTOOLS_PREFIX, else thesis)")
    rp.set_defaults(func=cmd_reproduce)

    fg = sub.add_parser("figures", help="regenerate figures and tables from committed data (no root, no lab)")
    fg.set_defaults(func=cmd_figures)

    dx = sub.add_parser("dissect", help="one row per packet and header layer of captures (scapy), tshark cross-check")
    dx.add_argument("pcap", nargs="+", help="pcap / pcapng files, or folders holding them")
    dx.add_argument("--csv", help="also write the tidy table as CSV here (its folder is created)")
    dx.add_argument("--check-tshark", action="store_true", help="compare with tshark; exit 1 on any disagreement")
    dx.set_defaults(func=cmd_dissect)
