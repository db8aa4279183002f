"""`labtools services apply|manifests|bench|drops`: N Kubernetes Services into a datapath."""

from __future__ import annotations

import argparse
import sys
import time

from labtools.base.errors import LabError
from labtools.cli import common
from labtools.cli.common import DEFAULTS, OUT_HELP, fmt, int_list, lab_options, name_list, needs_root, table


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
    run_id = run_id or time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
    if args.change:
        rows = bench.run_change(lab, run_id, args.change, args.counts, args.datapaths, args.repeats, mix=args.mix,
                                hz=args.probe_hz, root=root)  # fmt: skip
        summary = bench.change_summary(rows)
        cols = ["datapath", "services", "repeats", "cold_apply_median_s", "change_apply_median_s",
                "change_e2e_median_s", "change_e2e_max_s", "spawn_median_s", "ratio_median"]  # fmt: skip
    else:
        rows = bench.run(lab, run_id, args.counts, args.datapaths, args.repeats, mix=args.mix, root=root)
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
    from labtools import datapaths
    from labtools.lab import Lab
    from labtools.lab.state import ServicesState
    from labtools.model import services

    workload = _workload(args)
    lab = Lab(args.inventory, args.prefix)
    needs_root(lab, "services apply")
    node = datapaths.node_of(lab.inventory)
    lab.state.forget(ServicesState)  # until the apply succeeds, the worker is in no known state
    done = datapaths.switch(lab.host(node.name), node, args.datapath, services.service_ports(workload, node.name),
                            cilium_version=args.cilium_version, kube_proxy_version=args.kube_proxy_version)  # fmt: skip
    record = ServicesState(
        datapath=done.datapath,
        services=done.services,
        render_s=round(done.render_s, 4),
        apply_s=round(done.apply_s, 4),
        objects=done.objects,
        workload=workload.params,
        cilium_version=args.cilium_version if args.datapath == "ebpf" else None,
        kube_proxy_version=args.kube_proxy_version if args.datapath == "nftables" else None,
    )
    lab.state.put(record)
    if args.json:
        print(record.model_dump_json())
    else:
        print(f"{done.datapath}: {done.services} services on {node.name} — render {done.render_s:.3f} s, "
              f"apply {done.apply_s:.3f} s, {done.objects} rules/entries")  # fmt: skip
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools import datapaths
    from labtools.datapaths import ebpf, nftables
    from labtools.experiments import bench as bench_
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
    apply_.add_argument("--datapath", "-d", choices=datapaths.NAMES, default="iptables")
    apply_.add_argument("--cilium-version", default=ebpf.DEFAULT_CILIUM, metavar="V",
                        help=f"ebpf: the Cilium release whose service lookup is modelled "
                             f"({', '.join(ebpf.CILIUM_VERSIONS)}; before 1.17 a NodePort answers every L4 protocol)")
    apply_.add_argument("--kube-proxy-version", default=nftables.DEFAULT_VERSION, choices=nftables.VERSIONS,
                        help="nftables: the kube-proxy release whose rule layout is rendered (1.35: an endpoint "
                             "chain and a verdict map per Service; 1.36: DNAT from a map; 1.37: one endpoint, no map)")
    apply_.add_argument("--json", action="store_true", help="print the record as JSON")
    lab_options(apply_)
    apply_.set_defaults(func=cmd_apply)
    man.set_defaults(func=cmd_manifests)
    bench = ssub.add_parser("bench", help="programming time of N Services per datapath", formatter_class=defaults)
    bench.add_argument("--counts", type=int_list, default="1000,10000", metavar="N,N,...",
                       help="comma-separated Service counts")  # fmt: skip
    releases = [*(f"nftables@{v}" for v in nftables.VERSIONS), *(f"ebpf@{v}" for v in ebpf.CILIUM_VERSIONS)]
    bench.add_argument("--datapaths", type=name_list([*(d for d in datapaths.NAMES if d != "none"), *releases]),
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
    bench.add_argument("--json", action="store_true", help="print every sample as JSON instead of the table")
    bench.add_argument("--run-id", help="the run under data/raw/ (default: bench-<UTC time>)")
    bench.add_argument("--out", help=OUT_HELP)
    lab_options(bench)
    bench.set_defaults(func=cmd_bench)

