"""`labtools srv6` and `labtools capture`: the thesis' SRv6 L3VPN and its captures."""

from __future__ import annotations

import argparse
import sys
import time

from labtools.base.errors import LabError
from labtools.cli import common
from labtools.cli.common import OUT_HELP, exclusive, fmt, needs_root, table


def cmd_srv6(args: argparse.Namespace) -> int:
    import json

    from labtools.datapaths import srv6
    from labtools.lab import Lab
    from labtools.model import topology

    sids = {"router_sid": args.router_sid, "worker_sid": args.worker_sid}
    if args.dry_run:
        inv = topology.load(args.inventory)
        if args.action == "up":
            print(f"# SRv6 up, ingress mode {args.mode}; table {srv6.LOCALSID_TABLE} is the thesis' 'localsid'")
            print(srv6.render(srv6.plan(inv, args.mode, **sids)))
        elif args.action == "down":
            print("# SRv6 down (removes what `up` adds in any mode; absent items are skipped)")
            print(srv6.render(srv6.plan_down(inv, **sids)))
        else:
            raise LabError(f"--dry-run applies to up and down, not {args.action}")
        return 0
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, f"srv6 {args.action}")
    if args.action != "status":  # status only reads
        exclusive(args, lab)
    if args.action == "up":
        srv6.up(lab, args.mode, **sids)
        print(f"SRv6 L3VPN up in ingress mode {args.mode} ({sids['router_sid']} <-> {sids['worker_sid']})")
    elif args.action == "down":
        srv6.down(lab)
        print("SRv6 L3VPN down; the plain routed path is back")
    elif args.action == "status":
        for machine, items in srv6.status(lab).items():
            print(f"# {machine}")
            text = "\n".join(f"## {k}\n{v}" for k, v in items.items())
            print(json.dumps(items, indent=1) if machine == "state" else text)
    else:  # matrix
        import pandas as pd

        from labtools.experiments import matrix

        run_id = args.run_id or time.strftime("srv6-matrix-%Y%m%dT%H%M%SZ", time.gmtime())
        csv = matrix.run(lab, run_id, [m for m in args.modes.split(",") if m],
                         [d for d in args.datapaths.split(",") if d], timeout=args.timeout)  # fmt: skip
        rows = pd.read_csv(csv).fillna("").to_dict("records")
        print(f"run {run_id}: {csv}")
        if args.json:
            print(json.dumps(rows, indent=1))
        else:
            cols = ["mode", "datapath", "target", "via_tunnel", "reachable", "connect_us", "error", "notes"]
            print(table([[fmt(r.get(c, "")) for c in cols] for r in rows], cols))
    lab.close()
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from labtools.base import paths
    from labtools.experiments import captures
    from labtools.lab import Lab

    root, run_id = common.data_out(args.out, args.run_id, run_folder=True)
    if not run_id:
        raise LabError("give --run-id RUN (pcaps go to data/raw/RUN/, or OUT/raw/RUN with --out) or --out DATA/raw/RUN")
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "capture")
    exclusive(args, lab)
    manifest = captures.run(
        lab, run_id, scenarios=[s for s in args.scenarios.split(",") if s], mode=args.mode, datapath=args.datapath,
        point_names=[p for p in args.points.split(",") if p], count=args.count, timeout=args.timeout,
        root=root, command=command or None,
    )  # fmt: skip
    rows = [[c["scenario"], "ok" if c["ok"] else f"failed ({c['returncode']})",
             *(c["files"][p]["packets"] for p in manifest["points"])] for c in manifest["captures"]]  # fmt: skip
    print(f"run {run_id}: SRv6 mode {manifest['srv6_mode']}, pcaps and manifest.json in "
          f"{(root or paths.data_root()) / 'raw' / run_id}")  # fmt: skip
    print(table(rows, ["scenario", "traffic", *manifest["points"]]))
    lab.close()
    failed = [c["scenario"] for c in manifest["captures"] if not c["ok"]]
    if failed:
        print(f"labtools: the traffic of {', '.join(failed)} failed: see `output` in the manifest", file=sys.stderr)
        return 1
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools.datapaths import srv6
    from labtools.experiments import captures
    from labtools.lab import capture

    s6 = sub.add_parser("srv6", help="the thesis' SRv6 L3VPN between router and worker (up/down/status/matrix)")
    s6.add_argument("action", choices=["up", "down", "status", "matrix"])
    s6.add_argument("--mode", "--ingress", "-m", dest="mode", choices=srv6.MODES, default=srv6.DEFAULT_MODE,
                    help="how the worker side terminates the tunnel (default: end-dt6, the thesis)")  # fmt: skip
    s6.add_argument("--dry-run", "-n", action="store_true", help="print every command per host, run nothing")
    s6.add_argument("--router-sid", default=srv6.ROUTER_SID)
    s6.add_argument("--worker-sid", default=srv6.WORKER_SID)
    s6.add_argument("--modes", default=",".join(("none", *srv6.MODES)), help="matrix: ingress modes (none = no tunnel)")
    s6.add_argument("--datapaths", default=",".join(srv6.MATRIX_DATAPATHS), help="matrix: service datapaths")
    s6.add_argument("--timeout", type=common.timeout, default=1.0, help="matrix: seconds per TCP transaction")
    s6.add_argument("--json", action="store_true", help="matrix: print the rows as JSON")
    s6.add_argument("--run-id", help="matrix: the run under data/raw/ (default: srv6-matrix-<UTC time>)")
    s6.add_argument("--inventory", "-i")
    s6.add_argument("--prefix", "-p")
    s6.set_defaults(func=cmd_srv6)

    cp = sub.add_parser("capture", help="tcpdump at the thesis' five points around ICMPv6 / TCP traffic")
    cp.add_argument("--run-id", help="pcaps and manifest.json go to data/raw/RUN-ID/")
    cp.add_argument("--out", "-o", help=f"{OUT_HELP}; OUT/raw/RUN (e.g. data/raw/RUN) is the run's own folder, RUN "
                    "its id")  # fmt: skip
    cp.add_argument("--mode", "--ingress", "-m", dest="mode", choices=srv6.MODES,
                    help="bring the SRv6 tunnel up in this mode first (default: the path as it is)")  # fmt: skip
    cp.add_argument("--scenarios", default=",".join(captures.SCENARIOS), help="comma-separated traffic scenarios")
    cp.add_argument("--points", default=",".join(capture.POINTS), help="comma-separated capture points")
    cp.add_argument(
        "--datapath",
        "-d",
        default="nftables",
        help="service datapath for tcp-nodeport (1 Service); default nftables: iptables' KUBE-FORWARD drops "
        "the encapsulated replies as INVALID",
    )
    cp.add_argument("--count", type=common.samples, default=3, help="echo requests / TCP transactions per scenario")
    cp.add_argument("--timeout", type=common.timeout, default=2.0, help="seconds per reply")
    cp.add_argument("--inventory", "-i")
    cp.add_argument("--prefix", "-p")
    cp.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD...: capture around CMD run on the client")
    cp.set_defaults(func=cmd_capture)


