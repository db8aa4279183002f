"""`labtools measure` and `labtools udp-check`: recorded measurements through the programmed datapath."""

from __future__ import annotations

import argparse
import time

from labtools.base.errors import LabError
from labtools.cli import common
from labtools.cli.common import DEFAULTS, OUT_HELP, exclusive, fmt, lab_options, needs_root, table


def cmd_measure(args: argparse.Namespace) -> int:
    import json

    from labtools.experiments import measure
    from labtools.lab import Lab

    root, run_id = common.data_out(args.out, args.run_id)
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "measure")
    exclusive(args, lab)
    rec, rows, t = measure.run(lab, args.metric, args.target, repeats=args.repeats, run_id=run_id, root=root)
    if args.json:
        print(json.dumps([{k: r[k] for k in ("metric", "value", "unit", "datapath", "services", "target", "repeat")}
                          for r in rows]))  # fmt: skip
        return 0
    print(f"{args.metric} from the client to {args.target} ([{t.address}]:{t.port}), {args.repeats} repeat(s); "
          f"run {rec.run_id} in {rec.dir}")  # fmt: skip
    cols = ["datapath", "services", "target", "metric", "repeat", "value", "unit"]
    print(table([[fmt(r[c]) for c in cols] for r in rows], cols))
    return 0


def cmd_udp_check(args: argparse.Namespace) -> int:
    import pandas as pd

    from labtools.experiments import udpcheck
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "udp-check")
    exclusive(args, lab)
    if lab.backend == "netns" and not lab.is_up():
        raise LabError(f"the lab {lab.prefix} is down: run `labtools lab up{lab.hint}` first")
    root, run_id = common.data_out(args.out, args.run_id)
    run_id = run_id or f"udp-check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    csv = udpcheck.run(lab, run_id, repeats=args.repeats, packets=args.packets, root=root)
    df = pd.read_csv(csv)
    g = df.groupby(["datapath", "release"], sort=False)["value"].agg(["median", "min", "max", "size"]).reset_index()
    print(f"UDP to the NodePort of a TCP-only Service: share of datagrams that reached the pod; run {run_id}")
    cols = ["datapath", "release", "median", "min", "max", "size"]
    print(table([[fmt(r[c]) for c in cols] for _, r in g.iterrows()], cols))
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools.lab import traffic

    defaults = DEFAULTS
    me = sub.add_parser("measure", help="measure through the programmed datapath (client -> target)",
                        formatter_class=defaults)  # fmt: skip
    # `change` times a datapath's update path: a sweep or `services bench --change` metric, not one of traffic's
    me.add_argument("--metric", "-m", choices=[m for m in traffic.METRICS if m != "change"], default="crr")
    me.add_argument("--target", "-t", choices=traffic.TARGETS, default="last",
                    help="the first, middle or last created NodePort Service, or the pod IP")  # fmt: skip
    me.add_argument("--repeats", "-r", type=common.repeats, default=1)
    me.add_argument("--run-id", help="the run under data/raw/ (default: measure-METRIC-<UTC time>)")
    me.add_argument("--out", "-o", help=OUT_HELP)
    me.add_argument("--json", action="store_true", help="print the records as a JSON list")
    lab_options(me)
    me.set_defaults(func=cmd_measure)

    uc = sub.add_parser("udp-check", help="the thesis' UDP observation: UDP to a TCP-only Service's NodePort",
                        formatter_class=defaults)  # fmt: skip
    uc.add_argument("--repeats", "-r", type=common.repeats, default=3)
    uc.add_argument("--packets", type=common.samples, default=2000, help="datagrams per sample")
    uc.add_argument("--run-id", help="the run under data/raw/ (default: udp-check-<UTC time>)")
    uc.add_argument("--out", "-o", help=OUT_HELP)
    lab_options(uc)
    uc.set_defaults(func=cmd_udp_check)

