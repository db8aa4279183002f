"""labtools: a reproducible lab for Kubernetes service datapaths (kube-proxy iptables/nftables, eBPF) and SRv6.

commands:
  lab up|down|status        the thesis testbed in network namespaces (or real VMs over SSH)
  services apply|manifests|bench
                            N Kubernetes Services into a datapath; YAML for a cluster; programming time
  measure                   one metric through the programmed datapath (a recorded run)
  udp-check                 the thesis' UDP observation: UDP to a TCP-only Service, per datapath and release
  sweep                     datapaths x counts x metrics x targets x repeats, resumable
  srv6 up|down|status|matrix
                            the thesis' SRv6 L3VPN, and which way through it reaches what
  capture                   tcpdump at the thesis' five capture points around traffic
  dissect                   one row per packet and header of a capture, tshark cross-check
  reproduce, figures        the notebooks headless (measuring, or from committed data)
  testbed                   render or apply the real testbed's set-up

The lab needs root. Its prefix comes from --prefix, else $LABTOOLS_PREFIX, else the inventory."""

from __future__ import annotations

import argparse
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from rich import box
from rich.console import Console
from rich.table import Table

from labtools import cli_vm
from labtools.errors import LabError
from labtools.hosts import namespaces

EXAMPLES = """examples:
  sudo labtools lab up --prefix mylab
  sudo labtools services apply --prefix mylab --datapath nftables --count 1000 --udp-targets
  sudo labtools measure --prefix mylab --metric crr --target last --repeats 3
  sudo labtools sweep --prefix mylab --run-id try1 --datapaths none,ebpf --counts 1,1000 --metrics crr
  labtools dissect data/raw/reference-srv6/icmp/*.pcap --check-tshark
  labtools figures
  sudo labtools lab down --prefix mylab
"""


# --- argument types: bad input is a named error before any work, never a traceback


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


def _needs_root(lab, what: str) -> None:
    """The netns lab is kernel state: say so at once instead of failing deep inside."""
    import os

    if lab.backend == "netns" and os.geteuid() != 0:
        raise LabError(f"`labtools {what}` needs root: the lab lives in network namespaces (run it with sudo)")


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def _table(rows: list[Sequence[object]], header: Sequence[str]) -> str:
    """A plain-text table (rich), wide enough never to wrap a cell."""
    table = Table(*header, box=box.SIMPLE_HEAD, pad_edge=False, show_edge=False)
    for r in rows:
        table.add_row(*(str(c) for c in r))
    console = Console(width=10_000, no_color=True, highlight=False, markup=False, emoji=False)
    with console.capture() as cap:
        console.print(table)
    return "\n".join(line.rstrip() for line in cap.get().splitlines() if line.strip())


def cmd_lab(args: argparse.Namespace) -> int:
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    where = f"prefix {lab.prefix}" if lab.prefix else "ssh"
    if args.action == "status" and lab.backend == "netns" and os.geteuid() != 0:
        raise LabError(f"cannot see lab {lab.prefix} without root (its namespaces' interfaces are root's to read): "
                       f"run `sudo labtools lab status{lab.hint}`")  # fmt: skip
    if args.action == "up":
        lab.up(progress=not args.quiet, cni=args.cni)
        cni = f"; pod attachment: {args.cni or lab.inventory.cni}" if lab.backend == "netns" else ""
        print(f"lab {lab.inventory.name} is up ({where}): {', '.join(lab.inventory.machines)}{cni}")
    elif args.action == "down":
        removed = lab.down()
        print(f"lab {lab.inventory.name} is down ({where}); removed: {', '.join(removed) or 'nothing'}")
    elif lab.backend == "netns" and not namespaces.lab_namespaces(lab.prefix or ""):
        print(f"lab {lab.inventory.name} ({where}) is not up: run `labtools lab up{lab.hint}`")
        return 1
    else:
        status = lab.status()
        rows = [(s.machine, s.interface, s.state, s.mtu, s.link, " ".join(s.addresses) or "-") for s in status]
        print(f"lab {lab.inventory.name} ({where})")
        print(_table(rows, ["machine", "iface", "state", "mtu", "link", "addresses"]))
        attachment = lab.pod_attachment()  # None over SSH, or while the lab is incomplete
        if attachment:
            print(f"pod attachment (cni): {attachment}")
        broken = [f"{s.machine}:{s.interface} {s.state}" for s in status if s.state not in ("UP", "UNKNOWN")]
        if lab.backend == "netns" and (broken or not lab.is_up()):
            print(f"lab {lab.prefix} is incomplete ({', '.join(broken) or 'namespaces missing'}): "
                  f"run `labtools lab up{lab.hint}` to finish it, or `labtools lab down{lab.hint}`")  # fmt: skip
            lab.close()
            return 1
    lab.close()
    return 0


def _workload(args: argparse.Namespace):
    from labtools.model import services

    protocols = ["TCP", "UDP"] if args.udp else ["TCP"]
    return services.build(args.count, protocols=protocols, mix=args.mix, node_port_range=args.node_port_range,
                          udp_targets=args.udp_targets, seed=args.seed)  # fmt: skip


def cmd_services(args: argparse.Namespace) -> int:
    import json

    from labtools import datapaths
    from labtools.lab import Lab
    from labtools.lab.state import ServicesState
    from labtools.model import services

    if args.action == "bench":
        from labtools.experiments import bench

        lab = Lab(args.inventory, args.prefix)
        _needs_root(lab, "services bench")
        names = args.datapaths
        run_id = args.run_id or time.strftime("bench-%Y%m%dT%H%M%SZ", time.gmtime())
        if args.change:
            rows = bench.run_change(lab, run_id, args.change, args.counts, names, args.repeats, mix=args.mix,
                                    hz=args.probe_hz)  # fmt: skip
            summary = bench.change_summary(rows)
        else:
            rows = bench.run(lab, run_id, args.counts, names, args.repeats, mix=args.mix)
            summary = bench.summary(rows)
        if args.out:
            with open(args.out, "w") as fh:
                json.dump({"rows": rows, "summary": summary}, fh, indent=1)
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        print(f"run {run_id}: every apply in data/raw/{run_id}/, the table in data/processed/{run_id}.csv")
        cols = ["datapath", "services", "repeats", "apply_median_s", "apply_min_s", "apply_max_s",
                "render_median_s", "bare_median_s", "ratio_median"]  # fmt: skip
        if args.change:
            cols = ["datapath", "services", "repeats", "cold_apply_median_s", "change_apply_median_s",
                    "change_e2e_median_s", "change_e2e_max_s", "spawn_median_s", "ratio_median"]  # fmt: skip
        table = [[_fmt(r.get(c, "")) for c in cols] for r in summary]
        print(_table(table, cols))
        return 0
    if args.action == "drops":
        from labtools.datapaths import ebpf

        lab = Lab(args.inventory, args.prefix)
        _needs_root(lab, "services drops")
        node = datapaths.node_of(lab.inventory)
        counts = ebpf.drops(lab.host(node.name), node)
        if not counts:
            raise LabError(f"no eBPF datapath on {node.name}: `labtools services apply -d ebpf{lab.hint}` first")
        rows = [[reason, str(counts.get(reason, 0))] for reason in ebpf.DROP_REASONS]
        print(_table(rows, ["drop reason", "packets"]))
        return 0
    workload = _workload(args)
    if args.action == "manifests":
        sys.stdout.write(services.to_yaml(workload))
        return 0
    lab = Lab(args.inventory, args.prefix)
    _needs_root(lab, "services apply")
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


def cmd_measure(args: argparse.Namespace) -> int:
    import json

    from labtools.experiments import measure
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    _needs_root(lab, "measure")
    rec, rows, t = measure.run(lab, args.metric, args.target, repeats=args.repeats, run_id=args.run_id,
                               root=Path(args.out) if args.out else None)  # fmt: skip
    if args.json:
        print(json.dumps([{k: r[k] for k in ("metric", "value", "unit", "datapath", "services", "target", "repeat")}
                          for r in rows]))  # fmt: skip
        return 0
    print(f"{args.metric} from the client to {args.target} ([{t.address}]:{t.port}), {args.repeats} repeat(s); "
          f"run {rec.run_id} in {rec.dir}")  # fmt: skip
    cols = ["datapath", "services", "target", "metric", "repeat", "value", "unit"]
    print(_table([[_fmt(r[c]) for c in cols] for r in rows], cols))
    return 0


def cmd_udp_check(args: argparse.Namespace) -> int:
    import pandas as pd

    from labtools.experiments import udpcheck
    from labtools.lab import Lab

    lab = Lab(args.inventory, args.prefix)
    _needs_root(lab, "udp-check")
    if lab.backend == "netns" and not lab.is_up():
        raise LabError(f"the lab {lab.prefix} is down: run `labtools lab up{lab.hint}` first")
    run_id = args.run_id or f"udp-check-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    csv = udpcheck.run(lab, run_id, repeats=args.repeats, packets=args.packets,
                       root=Path(args.out) if args.out else None)  # fmt: skip
    df = pd.read_csv(csv)
    g = df.groupby(["datapath", "release"], sort=False)["value"].agg(["median", "min", "max", "size"]).reset_index()
    print(f"UDP to the NodePort of a TCP-only Service: share of datagrams that reached the pod; run {run_id}")
    cols = ["datapath", "release", "median", "min", "max", "size"]
    print(_table([[_fmt(r[c]) for c in cols] for _, r in g.iterrows()], cols))
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labtools.experiments import sweep
    from labtools.lab import Lab
    from labtools.model import plan as plan_
    from labtools.rigs import cluster

    lab = Lab(args.inventory, args.prefix)
    if not args.dry_run:
        _needs_root(lab, "sweep")
    if args.profile:
        if not args.run_id:
            raise LabError("--profile needs --run-id (each of the profile's sweeps becomes RUN-ID-<name>)")
        plans = plan_.plans(
            plan_.profile_params(args.profile)["sweeps"], args.run_id, str(plan_.profile_path(args.profile))
        )
        root = None
    else:
        out = Path(args.out) if args.out else None
        run_id = out.name if out else args.run_id
        if not run_id:
            raise LabError("give --profile P --run-id RUN, --out data/raw/RUN or --run-id RUN")
        root = out.parents[1] if out else None
        on_cluster = cluster.is_cluster(lab.inventory)
        dps = args.datapaths or (["iptables", "ebpf"] if on_cluster else list(plan_.DATAPATHS))
        order = args.order or ("datapath" if on_cluster else "repeat")  # a Cilium mode switch takes minutes
        plans = [plan_.Plan(run_id=run_id, datapaths=dps, counts=args.counts,
                            metrics=args.metrics, targets=args.targets, repeats=args.repeats,
                            crr_transactions=args.crr_transactions, throughput_seconds=args.throughput_seconds,
                            udp_packets=args.udp_packets, seed=args.seed, order=order)]  # fmt: skip
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


def cmd_dissect(args: argparse.Namespace) -> int:
    import warnings

    from labtools import dissect

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
    print(_table(dissect.table_rows(df), dissect.TABLE_HEADER))
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


def cmd_testbed(args: argparse.Namespace) -> int:
    from labtools.lab import Lab
    from labtools.model import topology
    from labtools.rigs import testbed

    opts = testbed.Options(
        stages=args.stages.split(",") if args.stages else None,
        kubeadm_api=args.kubeadm_api,
        services=args.services,
        node_port_range=args.node_port_range,
        cilium_mode=args.cilium_mode,
        cilium_version=args.cilium_version,
        srv6_mode=args.srv6_mode,
        kubernetes_version=args.kubernetes_version,
    )
    if args.action == "render":
        if not args.out:
            raise LabError("give --out DIR for the rendered files")
        written = testbed.render(topology.load(args.inventory), args.out, opts)
        print(f"{len(written)} files under {args.out}")
        return 0
    lab = Lab(args.inventory)
    try:
        if args.action == "apply":
            testbed.apply(lab, testbed.plan(lab.inventory, opts), dry_run=args.dry_run, echo=print)
        else:  # cilium-mode
            testbed.switch_mode(lab, args.mode, opts, dry_run=args.dry_run, echo=print)
    finally:
        lab.close()
    return 0


# --- srv6 / capture (labtools.datapaths.srv6, labtools.experiments.captures) ----------------------------------


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
    _needs_root(lab, f"srv6 {args.action}")
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
            print(_table([[_fmt(r.get(c, "")) for c in cols] for r in rows], cols))
    lab.close()
    return 0


def cmd_capture(args: argparse.Namespace) -> int:
    from pathlib import Path

    from labtools import paths
    from labtools.experiments import captures
    from labtools.lab import Lab

    out = Path(args.out) if args.out else None
    run_id = out.name if out else args.run_id
    if not run_id:
        raise LabError("give --run-id RUN (pcaps go to data/raw/RUN/) or --out DIR")
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    lab = Lab(args.inventory, args.prefix)
    _needs_root(lab, "capture")
    manifest = captures.run(
        lab, run_id, scenarios=[s for s in args.scenarios.split(",") if s], mode=args.mode, datapath=args.datapath,
        point_names=[p for p in args.points.split(",") if p], count=args.count, timeout=args.timeout,
        root=out.parents[1] if out else None, command=command or None,
    )  # fmt: skip
    rows = [[c["scenario"], "ok" if c["ok"] else f"failed ({c['returncode']})",
             *(c["files"][p]["packets"] for p in manifest["points"])] for c in manifest["captures"]]  # fmt: skip
    print(f"run {run_id}: SRv6 mode {manifest['srv6_mode']}, pcaps and manifest.json in "
          f"{(out or paths.raw(run_id))}")  # fmt: skip
    print(_table(rows, ["scenario", "traffic", *manifest["points"]]))
    lab.close()
    failed = [c["scenario"] for c in manifest["captures"] if not c["ok"]]
    if failed:
        print(f"labtools: the traffic of {', '.join(failed)} failed: see `output` in the manifest", file=sys.stderr)
        return 1
    return 0


def _add_srv6_capture_parsers(sub: argparse._SubParsersAction) -> None:
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
    s6.add_argument("--timeout", type=float, default=1.0, help="matrix: seconds per TCP transaction")
    s6.add_argument("--json", action="store_true", help="matrix: print the rows as JSON")
    s6.add_argument("--run-id", help="matrix: the run under data/raw/ (default: srv6-matrix-<UTC time>)")
    s6.add_argument("--inventory", "-i")
    s6.add_argument("--prefix", "-p")
    s6.set_defaults(func=cmd_srv6)

    cp = sub.add_parser("capture", help="tcpdump at the thesis' five points around ICMPv6 / TCP traffic")
    cp.add_argument("--run-id", help="pcaps and manifest.json go to data/raw/RUN-ID/")
    cp.add_argument("--out", "-o", help="the run's directory instead (its name is the run id)")
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
    cp.add_argument("--count", type=int, default=3, help="echo requests / TCP transactions per scenario")
    cp.add_argument("--timeout", type=float, default=2.0, help="seconds per reply")
    cp.add_argument("--inventory", "-i")
    cp.add_argument("--prefix", "-p")
    cp.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD...: capture around CMD run on the client")
    cp.set_defaults(func=cmd_capture)


# --- end srv6 / capture ------------------------------------------------------------------------------------


def cmd_reproduce(args: argparse.Namespace) -> int:
    from labtools import pipeline

    pipeline.reproduce(args.profile, run_id=args.run_id, prefix=args.prefix)
    return 0


def cmd_figures(args: argparse.Namespace) -> int:
    from labtools import figures, pipeline

    pipeline.figures()
    problems = figures.check()
    for p in problems:
        print(f"labtools: {p}", file=sys.stderr)
    print(f"figures and tables regenerated from data/; manifest: {figures.manifest_path()}")
    return 1 if problems else 0


def _lab_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--inventory", "-i", help="inventory YAML (default: the thesis lab, "
                        "labtools/inventories/thesis-netns.yml)")  # fmt: skip
    parser.add_argument("--prefix", "-p", help="the lab's namespace prefix (default: $LABTOOLS_PREFIX, else the "
                        "inventory's)")  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("labtools")
    except PackageNotFoundError:
        from labtools import __version__ as ver
    fmt = argparse.RawDescriptionHelpFormatter
    p = argparse.ArgumentParser(prog="labtools", description=__doc__, epilog=EXAMPLES, formatter_class=fmt)
    p.add_argument("--version", action="version", version=f"labtools {ver}")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    defaults = argparse.ArgumentDefaultsHelpFormatter

    from labtools.model import topology

    lab = sub.add_parser("lab", help="bring the testbed up or down, or show it")
    lab.add_argument("action", choices=["up", "down", "status"])
    _lab_options(lab)
    lab.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    lab.add_argument("--cni", choices=topology.CNIS, default=None,
                     help="up: how the pod is attached: as Cilium does (BPF on its veth ages every routed packet "
                          "once more, as in the thesis) or plainly; default the inventory's cni (cilium)")
    lab.set_defaults(func=cmd_lab)

    from labtools import datapaths
    from labtools.datapaths import ebpf, nftables
    from labtools.lab import traffic
    from labtools.model import plan as plan_
    from labtools.model import services

    svc = sub.add_parser("services", help="program N Kubernetes Services into a datapath; manifests; bench")
    ssub = svc.add_subparsers(dest="action", required=True, metavar="ACTION")
    apply_ = ssub.add_parser("apply", help="program the worker's datapath with N Services", formatter_class=defaults)
    man = ssub.add_parser("manifests", help="the same Services as YAML for a real cluster", formatter_class=defaults)
    drops = ssub.add_parser("drops", help="the eBPF datapath's drop counters, by reason", formatter_class=defaults)
    _lab_options(drops)
    drops.set_defaults(func=cmd_services)
    for sp in (apply_, man):
        sp.add_argument("--count", "-n", type=positive_int, default=1, help="number of Services")
        sp.add_argument("--mix", choices=services.MIXES, default="nodeport",
                        help="all NodePort, or N-1 ClusterIP and one NodePort")  # fmt: skip
        sp.add_argument("--udp", action="store_true", help="also UDP 5201 on every Service (for iperf3 -u)")
        sp.add_argument("--udp-targets", action="store_true",
                        help="also UDP on the first, middle and last NodePort (for the udp-pps metric)")  # fmt: skip
        sp.add_argument("--node-port-range", default=None, metavar="LO-HI",
                        help=f"the API server's service-node-port-range (default {services.DEFAULT_NODE_PORT_RANGE}, "
                             f"or {services.WIDE_NODE_PORT_RANGE} when more NodePorts are needed)")  # fmt: skip
        sp.add_argument("--seed", type=int, default=0, help="seed of the cluster IP / node port allocator")
        sp.set_defaults(func=cmd_services)
    apply_.add_argument("--datapath", "-d", choices=datapaths.NAMES, default="iptables")
    apply_.add_argument("--cilium-version", default=ebpf.DEFAULT_CILIUM, metavar="V",
                        help=f"ebpf: the Cilium release whose service lookup is modelled "
                             f"({', '.join(ebpf.CILIUM_VERSIONS)}; before 1.17 a NodePort answers every L4 protocol)")
    apply_.add_argument("--kube-proxy-version", default=nftables.DEFAULT_VERSION, choices=nftables.VERSIONS,
                        help="nftables: the kube-proxy release whose rule layout is rendered (1.35: an endpoint "
                             "chain and a verdict map per Service; 1.36: DNAT from a map; 1.37: one endpoint, no map)")
    apply_.add_argument("--json", action="store_true", help="print the record as JSON")
    _lab_options(apply_)
    bench = ssub.add_parser("bench", help="programming time of N Services per datapath", formatter_class=defaults)
    bench.add_argument("--counts", type=int_list, default="1000,10000", metavar="N,N,...",
                       help="comma-separated Service counts")  # fmt: skip
    releases = [*(f"nftables@{v}" for v in nftables.VERSIONS), *(f"ebpf@{v}" for v in ebpf.CILIUM_VERSIONS)]
    bench.add_argument("--datapaths", type=name_list([*(d for d in datapaths.NAMES if d != "none"), *releases]),
                       default="iptables,iptables-legacy,nftables,ebpf", metavar="D,D,...",
                       help=f"comma-separated; a release may be named: {', '.join(releases)}")  # fmt: skip
    bench.add_argument("--repeats", type=positive_int, default=3, help="repeats per datapath and count")
    bench.add_argument("--mix", choices=services.MIXES, default="nodeport",
                       help="all NodePort, or N-1 ClusterIP and one NodePort (needed above 64,512 Services)")
    bench.add_argument("--change", choices=services.CHANGES,
                       help="time one change on top of N Services (add one, remove one, or move one's endpoint) "
                            "instead of the cold start alone: change_apply_s and change_e2e_s")
    bench.add_argument("--probe-hz", type=float, default=2000.0, metavar="HZ",
                       help="--change: handshakes per second with which the client watches for the change (>= 1000)")
    bench.add_argument("--json", action="store_true", help="print every sample as JSON instead of the table")
    bench.add_argument("--run-id", help="the run under data/raw/ (default: bench-<UTC time>)")
    bench.add_argument("--out", help="also write every sample and the summary as JSON here")
    _lab_options(bench)
    bench.set_defaults(func=cmd_services)

    me = sub.add_parser("measure", help="measure through the programmed datapath (client -> target)",
                        formatter_class=defaults)  # fmt: skip
    me.add_argument("--metric", "-m", choices=traffic.METRICS, default="crr")
    me.add_argument("--target", "-t", choices=traffic.TARGETS, default="last",
                    help="the first, middle or last created NodePort Service, or the pod IP")  # fmt: skip
    me.add_argument("--repeats", "-r", type=positive_int, default=1)
    me.add_argument("--run-id", help="the run under data/raw/ (default: measure-METRIC-<UTC time>)")
    me.add_argument("--out", "-o", help="a data folder instead of data/ (the run goes to OUT/raw/RUN-ID)")
    me.add_argument("--json", action="store_true", help="print the records as a JSON list")
    _lab_options(me)
    me.set_defaults(func=cmd_measure)

    uc = sub.add_parser("udp-check", help="the thesis' UDP observation: UDP to a TCP-only Service's NodePort",
                        formatter_class=defaults)  # fmt: skip
    uc.add_argument("--repeats", "-r", type=positive_int, default=3)
    uc.add_argument("--packets", type=positive_int, default=2000, help="datagrams per sample")
    uc.add_argument("--run-id", help="the run under data/raw/ (default: udp-check-<UTC time>)")
    uc.add_argument("--out", "-o", help="a data folder instead of data/ (the run goes to OUT/raw/RUN-ID)")
    _lab_options(uc)
    uc.set_defaults(func=cmd_udp_check)

    sw = sub.add_parser("sweep", help="datapaths x counts x metrics x targets x repeats, resumable",
                        formatter_class=defaults)  # fmt: skip
    sw.add_argument("--datapaths", type=name_list(datapaths.NAMES), metavar="D,D,...",
                    help="comma-separated; default: none,iptables,iptables-legacy,nftables,ebpf; on a real cluster "
                         "(inventory with `cluster:`): iptables,ebpf")  # fmt: skip
    sw.add_argument("--counts", type=int_list, default="1,1000,10000", metavar="N,N,...",
                    help="comma-separated Service counts")  # fmt: skip
    sw.add_argument("--metrics", type=name_list(traffic.METRICS), default="throughput,crr,udp-pps",
                    metavar="M,M,...", help=f"comma-separated, of {', '.join(traffic.METRICS)}")  # fmt: skip
    sw.add_argument("--targets", type=name_list(traffic.TARGETS), default="last,pod", metavar="T,T,...",
                    help=f"comma-separated, of {', '.join(traffic.TARGETS)} (none is measured at the pod)")  # fmt: skip
    sw.add_argument("--repeats", type=positive_int, default=3, help="repeats of every point")
    sw.add_argument("--crr-transactions", type=positive_int, default=2000, help="crr: connections per sample")
    sw.add_argument("--throughput-seconds", type=positive_int, default=2, help="throughput: iperf3 -t")
    sw.add_argument("--udp-packets", type=positive_int, default=50000, help="udp-pps: new flows per sample")
    sw.add_argument("--profile", help="take the sweeps of params/PROFILE.yaml (quick, full) instead of the flags")
    sw.add_argument("--seed", type=int, default=0, help="seed of the cluster IP / node port allocator")
    sw.add_argument("--order", choices=plan_.ORDERS,
                    help="repeat (default on the lab): interleave datapaths within every repeat; datapath (default on "
                         "a cluster): one datapath after the other, one Cilium mode switch each")  # fmt: skip
    sw.add_argument("--dry-run", action="store_true", help="print what the sweep would change and measure, in order")
    sw.add_argument("--out", help="data/raw/RUN: the run's directory (its name is the run id)")
    sw.add_argument("--run-id", help="run id under data/raw/ (instead of --out)")
    _lab_options(sw)
    sw.set_defaults(func=cmd_sweep)

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
    from labtools.rigs import testbed

    tb = sub.add_parser("testbed", help="render / apply the real testbed's set-up (netplan, SRv6, kubeadm, Cilium)")
    tb.add_argument(
        "action",
        choices=["render", "apply", "cilium-mode"],
        help="render: write every file to --out; apply: run it over SSH (--dry-run prints it); "
        "cilium-mode: switch the cluster between Cilium's kube-proxy and eBPF modes",
    )
    tb.add_argument("mode", nargs="?", choices=testbed.cilium.MODES, help="cilium-mode: the mode to switch to")
    tb.add_argument(
        "--inventory",
        "-i",
        required=True,
        help="ssh-backend inventory (e.g. labtools/inventories/openstack-example.yml)",
    )
    tb.add_argument("--out", "-o", help="render: output directory")
    tb.add_argument("--dry-run", "-n", action="store_true", help="print every command per host, run nothing")
    tb.add_argument("--stages", help=f"comma-separated subset of {','.join(testbed.STAGES)} (default: all)")
    tb.add_argument("--kubeadm-api", choices=testbed.kubeadm.API_VERSIONS, default="v1beta4")
    tb.add_argument("--services", type=int, default=1, help="largest Service count of the sweep (NodePort range)")
    tb.add_argument("--node-port-range", help="override the API server's service-node-port-range")
    tb.add_argument("--cilium-mode", choices=testbed.cilium.MODES, default="kube-proxy")
    tb.add_argument("--cilium-version", help="Cilium chart version (default: the repo's latest)")
    tb.add_argument("--kubernetes-version", help="kubeadm kubernetesVersion (default: kubeadm's own)")
    tb.add_argument("--srv6-mode", default="end-dt6", help="SRv6 ingress mode handed to labtools.datapaths.srv6.plan")
    tb.set_defaults(func=cmd_testbed)
    _add_srv6_capture_parsers(sub)
    cli_vm.add_parser(sub)
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
