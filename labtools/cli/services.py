"""`labtools services apply|manifests|bench|drops`: N Kubernetes Services into a datapath."""

from __future__ import annotations

import argparse
import sys
import time

from labtools.base.errors import LabError
from labtools.cli import common
from labtools.cli.common import (
    DEFAULTS,
    OUT_HELP,
    exclusive,
    fmt,
    int_list,
    lab_options,
    name_list,
    needs_root,
    release_options,
    releases_of,
    table,
)


def _workload(args: argparse.Namespace):
    from labtools.model import services

    protocols = ["TCP", "UDP"] if args.udp else ["TCP"]
    return services.build(args.count, protocols=protocols, mix=args.mix, node_port_range=args.node_port_range,
                          udp_targets=args.udp_targets, seed=args.seed)  # fmt: skip


def cmd_bench(args: argparse.Namespace) -> int:
    import json

    from labtools.base import paths
    from labtools.experiments import bench
    from labtools.lab import Lab

    root, run_id = common.data_out(args.out, args.run_id)
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "services bench")
    exclusive(args, lab)
    run_id = run_id or time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
    opts = {"mix": args.mix, "releases": releases_of(args), "cni": args.cni, "root": root}
    if args.change:
        rows = bench.run_change(lab, run_id, args.change, args.counts, args.datapaths, args.repeats, hz=args.probe_hz,
                                **opts)  # fmt: skip
        summary = bench.change_summary(rows)
        cols = ["datapath", "services", "repeats", "cold_apply_median_s", "change_apply_median_s",
                "change_e2e_median_s", "change_e2e_max_s", "spawn_median_s", "ratio_median"]  # fmt: skip
    else:
        rows = bench.run(lab, run_id, args.counts, args.datapaths, args.repeats, **opts)
        summary = bench.summary(rows)
        cols = ["datapath", "services", "repeats", "apply_median_s", "apply_min_s", "apply_max_s",
                "render_median_s", "bare_median_s", "ratio_median"]  # fmt: skip
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    data = root or paths.data_root()
    print(f"run {run_id}: every apply in {data / 'raw' / run_id}/, the table in {data / 'processed' / run_id}.csv")
    print(table([[fmt(r.get(c, "")) for c in cols] for r in summary], cols))
    return 0


def cmd_drops(args: argparse.Namespace) -> int:
    from labtools import datapaths
    from labtools.datapaths import ebpf
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "services drops")
    node = datapaths.node_of(lab.inventory)
    counts = ebpf.drops(lab.host(node.name), node)
    if not counts:
        raise LabError(f"no eBPF datapath on {node.name}: `labtools services apply -d ebpf{lab.hint}` first")
    rows = [[reason, str(counts.get(reason, 0))] for reason in ebpf.DROP_REASONS]
    print(table(rows, ["drop reason", "packets"]))
    return 0


def cmd_manifests(args: argparse.Namespace) -> int:
    from labtools.model import services

    sys.stdout.write(services.to_yaml(_workload(args)))
    return 0


def cmd_apply(args: argparse.Namespace) -> int:
    from labtools.datapaths.worker import Worker
    from labtools.lab import Lab
    from labtools.lab.state import ServicesState

    workload = _workload(args)
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "services apply")
    exclusive(args, lab)
    with Worker(lab, releases=releases_of(args)) as worker:
        worker.check(args.datapath)  # a refused datapath or release changes nothing, the record included
        done = worker.use(args.datapath, workload)
    record = lab.state.get(ServicesState)
    if args.json:
        print(record.model_dump_json() if record else "null")
    else:
        print(f"{done.datapath}: {done.services} services on {worker.node.name} — render {done.render_s:.3f} s, "
              f"apply {done.apply_s:.3f} s, {done.objects} rules/entries")  # fmt: skip
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools.experiments import bench as bench_
    from labtools.model import datapaths as registry
    from labtools.model import services

    defaults = DEFAULTS
    svc = sub.add_parser("services", help="program N Kubernetes Services into a datapath; manifests; bench")
    ssub = svc.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply_ = ssub.add_parser("apply", help="program the worker's datapath with N Services", formatter_class=defaults)
    man = ssub.add_parser("manifests", help="the same Services as YAML for a real cluster", formatter_class=defaults)
    drops = ssub.add_parser("drops", help="the eBPF datapath's drop counters, by reason", formatter_class=defaults)
    lab_options(drops)
    drops.set_defaults(func=cmd_drops)
    for sp in (apply_, man):
        sp.add_argument("--count", "-n", type=common.positive_int, default=1, help="number of Services")
        sp.add_argument("--mix", choices=services.MIXES, default="nodeport",
                        help="all NodePort, or N-1 ClusterIP and one NodePort")  # fmt: skip
        sp.add_argument("--udp", action="store_true", help="also UDP 5201 on every Service (for iperf3 -u)")
        sp.add_argument("--udp-targets", action="store_true",
                        help="also UDP on the first, middle and last NodePort (for the udp-pps metric)")  # fmt: skip
        sp.add_argument("--node-port-range", default=None, metavar="LO-HI",
                        help=f"the API server's service-node-port-range (default {services.DEFAULT_NODE_PORT_RANGE}, "
                             f"or {services.WIDE_NODE_PORT_RANGE} when more NodePorts are needed)")  # fmt: skip
        sp.add_argument("--seed", type=common.seed, default=0, help="seed of the cluster IP / node port allocator")
    apply_.add_argument("--datapath", "-d", choices=registry.NAMES, default="iptables")
    release_options(apply_)
    apply_.add_argument("--json", action="store_true", help="print the record as JSON")
    lab_options(apply_)
    apply_.set_defaults(func=cmd_apply)
    man.set_defaults(func=cmd_manifests)
    bench = ssub.add_parser("bench", help="programming time of N Services per datapath", formatter_class=defaults)
    bench.add_argument("--counts", type=int_list, default="1000,10000", metavar="N,N,...",
                       help="comma-separated Service counts")  # fmt: skip
    releases = registry.release_names()
    programs = [n for n, s in registry.REGISTRY.items() if s.family is not registry.Family.NONE]
    bench.add_argument("--datapaths", type=name_list([*programs, *releases]),
                       default="iptables,iptables-legacy,nftables,ebpf", metavar="D,D,...",
                       help=f"comma-separated; a release may be named: {', '.join(releases)}")  # fmt: skip
    bench.add_argument("--repeats", type=common.repeats, default=3, help="repeats per datapath and count")
    bench.add_argument("--mix", choices=services.MIXES, default="nodeport",
                       help="all NodePort, or N-1 ClusterIP and one NodePort (needed above 64,512 Services)")
    bench.add_argument("--change", choices=services.CHANGES,
                       help="time one change on top of N Services (add one, remove one, or move one's endpoint) "
                            "instead of the cold start alone: change_apply_s and change_e2e_s")
    bench.add_argument("--probe-hz", type=common.real(*bench_.PROBE_HZ_RANGE), default=2000.0, metavar="HZ",
                       help="--change: handshakes per second with which the client watches for the change "
                            f"({bench_.PROBE_HZ_RANGE[0]:g} to {bench_.PROBE_HZ_RANGE[1]:g})")
    release_options(bench, cni=True)
    bench.add_argument("--json", action="store_true", help="print every sample as JSON instead of the table")
    bench.add_argument("--run-id", help="the run under data/raw/ (default: bench-<UTC time>)")
    bench.add_argument("--out", help=OUT_HELP)
    lab_options(bench)
    bench.set_defaults(func=cmd_bench)

