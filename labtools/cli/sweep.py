"""`labtools sweep`: datapaths x counts x metrics x targets x repeats, resumable."""

from __future__ import annotations

import argparse
import time

from labtools.base.errors import LabError
from labtools.cli import common
from labtools.cli.common import (
    DEFAULTS,
    OUT_HELP,
    exclusive,
    int_list,
    lab_options,
    name_list,
    needs_root,
    release_options,
)


def cmd_sweep(args: argparse.Namespace) -> int:
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    if not args.dry_run:
        needs_root(lab, "sweep")
        exclusive(args, lab)  # before the heavier imports: a second command on the lab is refused at once

    from labtools.experiments import sweep
    from labtools.model import plan as plan_
    from labtools.rigs import cluster

    if args.profile:
        if args.out:
            raise LabError("--profile writes its sweeps to data/raw/: give --run-id, not --out")
        if not args.run_id:
            raise LabError("--profile needs --run-id (each of the profile's sweeps becomes RUN-ID-<name>)")
        plans = plan_.plans(
            plan_.profile_params(args.profile)["sweeps"], args.run_id, str(plan_.profile_path(args.profile))
        )
        root = None
    else:
        root, run_id = common.data_out(args.out, args.run_id, run_folder=True)
        if not run_id:
            raise LabError("give --profile P --run-id RUN, --run-id RUN (with --out DATA or not) or --out DATA/raw/RUN")
        on_cluster = cluster.is_cluster(lab.inventory)
        dps = args.datapaths or (["iptables", "ebpf"] if on_cluster else list(plan_.DATAPATHS))
        order = args.order or ("datapath" if on_cluster else "block")  # a Cilium mode switch takes minutes
        plans = [plan_.Plan(run_id=run_id, datapaths=dps, counts=args.counts,
                            metrics=args.metrics, targets=args.targets, repeats=args.repeats,
                            crr_transactions=args.crr_transactions, throughput_seconds=args.throughput_seconds,
                            udp_packets=args.udp_packets, seed=args.seed, order=order,
                            order_seed=args.order_seed, kube_proxy_version=args.kube_proxy_version,
                            cilium_version=args.cilium_version, cni=args.cni)]  # fmt: skip
    if args.dry_run:
        for plan in plans:
            print(f"# ==== {plan.run_id}: {len(plan.points())} points")
            print("\n".join(sweep.describe(lab, plan)))
        return 0
    for plan in plans:
        t0 = time.monotonic()
        csv, new = sweep.run(lab, plan, root)
        print(f"{plan.run_id}: {new} new points measured, {len(plan.points()) - new} already there, "
              f"in {time.monotonic() - t0:.0f} s; table: {csv}")  # fmt: skip
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    from labtools.lab import traffic
    from labtools.model import datapaths as registry
    from labtools.model import plan as plan_

    defaults = DEFAULTS
    sw = sub.add_parser("sweep", help="datapaths x counts x metrics x targets x repeats, resumable",
                        formatter_class=defaults)  # fmt: skip
    sw.add_argument("--datapaths", type=name_list(registry.NAMES), metavar="D,D,...",
                    help=f"comma-separated; default: {','.join(registry.NAMES)}; on a real cluster "
                         "(inventory with `cluster:`): iptables,ebpf")  # fmt: skip
    sw.add_argument("--counts", type=int_list, default="1,1000,10000", metavar="N,N,...",
                    help="comma-separated Service counts")  # fmt: skip
    sw.add_argument("--metrics", type=name_list(traffic.METRICS), default="throughput,crr,udp-pps",
                    metavar="M,M,...", help=f"comma-separated, of {', '.join(traffic.METRICS)}")  # fmt: skip
    sw.add_argument("--targets", type=name_list(traffic.TARGETS), default="last,pod", metavar="T,T,...",
                    help=f"comma-separated, of {', '.join(traffic.TARGETS)} (none is measured at the pod)")  # fmt: skip
    sw.add_argument("--repeats", type=common.repeats, default=3, help="repeats of every point")
    sw.add_argument("--crr-transactions", type=common.samples, default=2000, help="crr: connections per sample")
    sw.add_argument("--throughput-seconds", type=common.seconds, default=2, help="throughput: iperf3 -t")
    sw.add_argument("--udp-packets", type=common.samples, default=50000, help="udp-pps: new flows per sample")
    sw.add_argument("--profile", help="take the sweeps of params/PROFILE.yaml (quick, full) instead of the flags")
    sw.add_argument("--seed", type=common.seed, default=0, help="seed of the cluster IP / node port allocator")
    sw.add_argument("--order", choices=plan_.ORDERS,
                    help="block (default on the lab): each repeat visits every N once in a drawn order, the "
                         "datapaths at one N one after the other; repeat: N in time order; datapath (default on a "
                         "cluster): one datapath after the other, one Cilium mode switch each")  # fmt: skip
    sw.add_argument("--order-seed", type=common.seed, default=None, metavar="S",
                    help="block: the seed of the drawn order (default: derived from the run id; recorded)")
    release_options(sw, cni=True)
    sw.add_argument("--dry-run", action="store_true", help="print what the sweep would change and measure, in order")
    sw.add_argument("--out", help=f"{OUT_HELP}; OUT/raw/RUN (e.g. data/raw/RUN) is the run's own folder, RUN its id")
    sw.add_argument("--run-id", help="the run id: the run goes to data/raw/RUN-ID, or OUT/raw/RUN-ID with --out")
    lab_options(sw)
    sw.set_defaults(func=cmd_sweep)

