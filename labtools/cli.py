"""Command line: `labtools lab up|down|status [--inventory FILE] [--prefix P]`."""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence

from labtools.errors import LabError


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


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


def _workload(args: argparse.Namespace):
    from labtools import services

    protocols = ["TCP", "UDP"] if args.udp else ["TCP"]
    return services.build(args.count, protocols=protocols, mix=args.mix, node_port_range=args.node_port_range,
                          seed=args.seed)  # fmt: skip


def cmd_services(args: argparse.Namespace) -> int:
    import json

    from labtools import datapaths, services
    from labtools.lab import Lab

    if args.action == "bench":
        from labtools.datapaths import bench

        lab = Lab(args.inventory, args.prefix)
        names = args.datapaths.split(",")
        rows = bench.run(lab, [int(c) for c in args.counts.split(",")], names, args.repeats)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump({"rows": rows, "summary": bench.summary(rows)}, fh, indent=1)
        cols = ["datapath", "services", "repeats", "apply_median_s", "apply_min_s", "apply_max_s",
                "render_median_s", "bare_median_s", "ratio_median"]  # fmt: skip
        table = [[_fmt(r.get(c, "")) for c in cols] for r in bench.summary(rows)]
        print(_table(table, cols))
        return 0
    workload = _workload(args)
    if args.action == "manifests":
        sys.stdout.write(services.to_yaml(workload))
        return 0
    lab = Lab(args.inventory, args.prefix)
    node = datapaths.node_of(lab.inventory)
    done = datapaths.switch(lab.host(node.name), node, args.datapath, services.service_ports(workload, node.name))
    record = {"datapath": done.datapath, "services": done.services, "render_s": round(done.render_s, 4),
              "apply_s": round(done.apply_s, 4), "objects": done.objects, "workload": workload.params}  # fmt: skip
    lab.save_state("services", record)
    if args.json:
        print(json.dumps(record))
    else:
        print(f"{done.datapath}: {done.services} services on {node.name} — render {done.render_s:.3f} s, "
              f"apply {done.apply_s:.3f} s, {done.objects} rules/entries")  # fmt: skip
    return 0


def cmd_measure(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from labtools import measure, services
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    state = lab.load_state("services")
    if state is None and args.target != "pod":
        raise LabError("no Services are programmed: run `labtools services apply` first, or use --target pod")
    if state and state["datapath"] == "none" and args.target != "pod":
        raise LabError("the datapath is `none`, so there is no NodePort: use --target pod")
    workload = services.build(**state["workload"]) if state else None
    t = measure.target(lab, workload, args.target)
    client, server = lab.host(lab.inventory.by_role("client").name), lab.host(lab.inventory.by_role("pod").name)
    base = {"datapath": state["datapath"] if state else "none", "services": state["services"] if state else 0,
            "target": args.target}  # fmt: skip
    prov = measure.provenance(lab)
    out = Path(args.out) if args.out else None
    if out:
        out.mkdir(parents=True, exist_ok=True)
    rows = []
    for r in range(args.repeats):
        raw = measure.sample(client, server, args.metric, t)
        recs = measure.records(args.metric, raw, {**base, "repeat": r})
        rows += recs
        if out:
            (out / f"{args.metric}-{args.target}-{r}.json").write_text(json.dumps(raw))
            with open(out / "records.jsonl", "a") as fh:
                for rec in recs:
                    fh.write(json.dumps({**rec, "provenance": prov}) + "\n")
    print(_table([[_fmt(r[c]) for c in ("datapath", "services", "target", "metric", "repeat", "value", "unit")]
                  for r in rows], ["datapath", "services", "target", "metric", "repeat", "value", "unit"]))  # fmt: skip
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labtools import sweep
    from labtools.lab import Lab

    def split(text: str) -> list[str]:
        return [x for x in text.split(",") if x]

    out = Path(args.out) if args.out else None
    run_id = out.name if out else args.run_id
    if not run_id:
        raise LabError("give --out data/raw/RUN (or --run-id RUN)")
    root = out.parents[1] if out else sweep.DATA
    plan = sweep.Plan(run_id, split(args.datapaths), [int(c) for c in split(args.counts)], split(args.metrics),
                      split(args.targets), args.repeats, args.crr_transactions, args.throughput_seconds,
                      args.seed)  # fmt: skip
    csv, new = sweep.run(Lab(args.inventory, args.prefix), plan, root)
    print(f"{run_id}: {new} new points measured, {len(plan.points()) - new} already there; table: {csv}")
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

    from labtools import datapaths, services

    svc = sub.add_parser("services", help="program N Kubernetes Services into a datapath, or print manifests")
    svc.add_argument(
        "action",
        choices=["apply", "manifests", "bench"],
        help="apply: program the worker; manifests: YAML for a cluster; bench: programming latency",
    )
    svc.add_argument("--datapath", "-d", choices=datapaths.NAMES, default="iptables")
    svc.add_argument("--count", "-n", type=int, default=1, help="number of Services (default 1)")
    svc.add_argument(
        "--mix", choices=services.MIXES, default="nodeport", help="all NodePort, or N-1 ClusterIP and one NodePort"
    )
    svc.add_argument("--udp", action="store_true", help="also UDP 5201 on every Service (for iperf3 -u)")
    svc.add_argument(
        "--node-port-range",
        default=None,
        help=f"API server's service-node-port-range (default {services.DEFAULT_NODE_PORT_RANGE}, "
        f"or {services.WIDE_NODE_PORT_RANGE} when more NodePorts are needed)",
    )
    svc.add_argument("--seed", type=int, default=0, help="seed of the cluster IP / node port allocator")
    svc.add_argument("--inventory", "-i")
    svc.add_argument("--prefix", "-p")
    svc.add_argument("--json", action="store_true", help="print the record as JSON")
    svc.add_argument("--counts", default="1000,10000", help="bench: comma-separated service counts")
    svc.add_argument("--datapaths", default="iptables,iptables-legacy,nftables,ebpf", help="bench: datapaths")
    svc.add_argument("--repeats", type=int, default=3, help="bench: repeats per datapath and count")
    svc.add_argument("--out", help="bench: write every sample and the summary as JSON here")
    svc.set_defaults(func=cmd_services)

    from labtools import measure

    me = sub.add_parser("measure", help="measure through the programmed datapath (client -> target)")
    me.add_argument("--metric", "-m", choices=measure.METRICS, default="crr")
    me.add_argument("--target", "-t", choices=measure.TARGETS, default="last")
    me.add_argument("--repeats", "-r", type=int, default=1)
    me.add_argument("--out", "-o", help="directory for raw outputs and records.jsonl")
    me.add_argument("--inventory", "-i")
    me.add_argument("--prefix", "-p")
    me.set_defaults(func=cmd_measure)

    sw = sub.add_parser("sweep", help="datapaths x counts x metrics x targets x repeats, resumable")
    sw.add_argument("--datapaths", default="none,iptables,iptables-legacy,nftables,ebpf")
    sw.add_argument("--counts", default="1,1000,10000")
    sw.add_argument("--metrics", default="throughput,crr")
    sw.add_argument("--targets", default="last,pod")
    sw.add_argument("--repeats", type=int, default=3)
    sw.add_argument("--crr-transactions", type=int, default=2000)
    sw.add_argument("--throughput-seconds", type=int, default=2)
    sw.add_argument("--seed", type=int, default=0)
    sw.add_argument("--out", help="data/raw/RUN: the run's directory (its name is the run id)")
    sw.add_argument("--run-id", help="run id under data/ (instead of --out)")
    sw.add_argument("--inventory", "-i")
    sw.add_argument("--prefix", "-p")
    sw.set_defaults(func=cmd_sweep)
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
