"""`labtools testbed render|apply|cilium-mode`: the real testbed's set-up."""

from __future__ import annotations

import argparse

from labtools.base.errors import LabError
from labtools.cli.common import positive_int


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


def add_parsers(sub: argparse._SubParsersAction) -> None:
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
    tb.add_argument("--services", type=positive_int, default=1,
                    help="largest Service count of the sweep (NodePort range)")
    tb.add_argument("--node-port-range", help="override the API server's service-node-port-range")
    tb.add_argument("--cilium-mode", choices=testbed.cilium.MODES, default="kube-proxy")
    tb.add_argument("--cilium-version", help="Cilium chart version (default: the repo's latest)")
    tb.add_argument("--kubernetes-version", help="kubeadm kubernetesVersion (default: kubeadm's own)")
    tb.add_argument("--srv6-mode", default="end-dt6", help="SRv6 ingress mode handed to labtools.datapaths.srv6.plan")
    tb.set_defaults(func=cmd_testbed)
