"""The real testbed from code: render every machine's configuration, then apply it over SSH.

Rendering and applying are separate, explicit steps:

- `render(inventory, out)` writes every file a machine will receive (netplan, sysctl.d, kubeadm
  configs, Cilium helm values, the Services and the iperf3 Deployment) plus, per machine,
  ``commands.sh``: exactly what `apply` would run there, in order.
- `plan(inventory, options)` is the ordered list of `Step` (machine + command + optional stdin);
  `apply(lab, steps, dry_run=True)` prints it, ``dry_run=False`` runs it through the `Host` layer
  (`SSHHost` on real VMs, and on the emulated VMs of `labtools.lab.emulated_vms`).

Stages, in order: ``network`` (netplan + sysctl.d files, and the equivalent ``ip``/``sysctl``
commands at once), ``srv6`` (`labtools.datapaths.srv6.plan()`, when that module is there), ``kubeadm`` (init on
the master, join on the worker), ``cilium`` (helm install/upgrade in the chosen mode).
"""

from __future__ import annotations

import importlib
import shlex
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import yaml

from labtools.base.errors import LabError
from labtools.hosts.exec import privileged
from labtools.model import services, topology
from labtools.model.topology import Inventory
from labtools.rigs.testbed import cilium, kubeadm, netplan

STAGES = ("network", "srv6", "kubeadm", "cilium")
WRITE_SCRIPT = 'umask 077; mkdir -p "$(dirname "$1")" && cat > "$1.tmp" && chmod "$2" "$1.tmp" && mv "$1.tmp" "$1"'


@dataclass(frozen=True)
class Step:
    """One command on one machine; `input` goes to its stdin (a file's content)."""

    machine: str
    stage: str
    argv: tuple[str, ...]
    input: str | None = None
    why: str = ""
    timeout: float = 120.0
    capture: str | None = None  # "join": the output carries the kubeadm join token and CA hash

    def shell(self, sudo: bool = False) -> str:
        if not self.argv:
            return "# (nothing to run)"
        cmd = shlex.join(privileged(self.argv, sudo))
        if self.input is None:
            return cmd
        body = self.input if self.input.endswith("\n") else self.input + "\n"
        return f"{cmd} <<'LABTOOLS_EOF'\n{body}LABTOOLS_EOF"


def write_file(machine: str, stage: str, path: str, content: str, why: str, mode: str = "0644") -> Step:
    """A step that installs `content` at `path` atomically (temp file + rename)."""
    return Step(machine, stage, ("sh", "-c", WRITE_SCRIPT, "sh", path, mode), content, why)


@dataclass
class Options:
    """What to set up; defaults are the thesis' values."""

    stages: Sequence[str] | None = None  # None: every stage (srv6 only if labtools.datapaths.srv6 is there)
    kubeadm_api: str = "v1beta4"
    services: int = 1  # the largest Service count the sweep will create (decides the NodePort range)
    node_port_range: str | None = None  # default: from `services`
    cilium_mode: str = "kube-proxy"
    cilium_version: str | None = None
    srv6_mode: str = "end-dt6"
    node_ips: dict[str, list[str]] | None = None
    kubernetes_version: str | None = None
    # Emulated VMs share this machine's filesystem: install files under <files_root>/<machine>/ instead
    # of /etc, and skip what needs a whole machine (netplan generate, kubeadm, helm).
    files_root: str | None = None

    @property
    def port_range(self) -> str:
        return self.node_port_range or kubeadm.node_port_range_for(self.services)


def _path(opts: Options, machine: str, path: str) -> str:
    return str(Path(opts.files_root) / machine / path.lstrip("/")) if opts.files_root else path


def srv6_plan(inv: Inventory, mode: str) -> dict[str, list[list[str]]] | None:
    """The SRv6 commands per machine from `labtools.datapaths.srv6.plan(inventory, mode)`; None without it."""
    try:
        mod = importlib.import_module("labtools.datapaths.srv6")
    except ImportError:
        return None
    fn: Callable | None = getattr(mod, "plan", None)
    if fn is None:
        return None
    return {m: [list(map(str, a)) for a in argvs] for m, argvs in fn(inv, mode).items()}


def files(inv: Inventory, opts: Options | None = None) -> dict[str, dict[str, str]]:
    """machine -> {absolute path on that machine: content}: every file the set-up installs."""
    opts = opts or Options()
    out: dict[str, dict[str, str]] = {}
    for m in netplan.vm_machines(inv):
        out[m.name] = {netplan.NETPLAN_PATH: netplan.netplan_yaml(m), netplan.SYSCTL_PATH: netplan.sysctl_conf(m)}
    roles = {m.role for m in inv.machines.values()}
    if {"master", "worker"} <= roles:
        master, worker = inv.by_role("master").name, inv.by_role("worker").name
        init = kubeadm.init_documents(
            inv,
            api_version=opts.kubeadm_api,
            node_port_range=opts.port_range,
            node_ips=opts.node_ips,
            kubernetes_version=opts.kubernetes_version,
        )
        out[master][kubeadm.INIT_PATH] = kubeadm.dump(init, "kubeadm init --config")
        join = kubeadm.join_documents(inv, api_version=opts.kubeadm_api, node_ips=opts.node_ips)
        out[worker][kubeadm.JOIN_PATH] = kubeadm.dump(join, "kubeadm join --config")
        for mode in cilium.MODES:
            out[master][cilium.values_path(mode)] = cilium.values_yaml(inv, mode, node_port_range=opts.port_range)
    return out


def plan(inv: Inventory, opts: Options | None = None) -> list[Step]:
    """Every step of the set-up, in the order `apply` runs them."""
    opts = opts or Options()
    stages = list(opts.stages) if opts.stages is not None else list(STAGES)
    unknown = set(stages) - set(STAGES)
    if unknown:
        raise LabError(f"unknown stage(s) {', '.join(sorted(unknown))}: choose from {', '.join(STAGES)}")
    all_files = files(inv, opts)
    steps: list[Step] = []
    if "network" in stages:
        steps += _network_steps(inv, opts, all_files)
    if "srv6" in stages:
        steps += _srv6_steps(inv, opts)
    roles = {m.role for m in inv.machines.values()}
    if opts.files_root is None and {"master", "worker"} <= roles:  # emulated VMs have no whole machine for these
        master, worker = inv.by_role("master").name, inv.by_role("worker").name
        if "kubeadm" in stages:
            steps += _kubeadm_steps(master, worker, all_files)
        if "cilium" in stages:
            for mode in cilium.MODES:
                path = cilium.values_path(mode)
                steps.append(write_file(master, "cilium", path, all_files[master][path], f"Cilium values, {mode}"))
            steps += [
                Step(machine, "cilium", tuple(a), why=f"Cilium in {opts.cilium_mode} mode", timeout=600)
                for machine, a in cilium.switch_commands(inv, opts.cilium_mode, version=opts.cilium_version)
            ]
    return steps


def _network_steps(inv: Inventory, opts: Options, all_files: dict[str, dict[str, str]]) -> list[Step]:
    """Per machine: its netplan and sysctl files installed and applied, then the same configuration as commands."""
    steps: list[Step] = []
    for m in inv.machines.values():
        mine = all_files.get(m.name, {})
        if netplan.NETPLAN_PATH in mine:
            np_path = _path(opts, m.name, netplan.NETPLAN_PATH)
            sc_path = _path(opts, m.name, netplan.SYSCTL_PATH)
            steps.append(
                write_file(
                    m.name,
                    "network",
                    np_path,
                    mine[netplan.NETPLAN_PATH],
                    "netplan (thesis appendix, lines 1170-1230)",
                    "0600",
                )
            )
            steps.append(
                write_file(
                    m.name, "network", sc_path, mine[netplan.SYSCTL_PATH], "forwarding sysctls (thesis line 457)"
                )
            )
            if opts.files_root is None:
                steps.append(Step(m.name, "network", ("netplan", "generate"), why="validate the netplan files"))
            steps.append(Step(m.name, "network", ("sysctl", "-q", "-p", sc_path), why="sysctls, now"))
        # The netplan file's content, applied now without restarting the network (see netplan.py).
        why = "run-time equivalent of the netplan file" if mine else "the pod's network (the CNI's job)"
        steps += [Step(m.name, "network", tuple(a), why=why) for a in topology.configure_commands(m)]
    return steps


def _srv6_steps(inv: Inventory, opts: Options) -> list[Step]:
    """The SRv6 plan's commands; when the stage was not asked for by name and cannot be planned, a note instead."""
    explicit = opts.stages is not None
    try:
        sr = srv6_plan(inv, opts.srv6_mode)
    except LabError as e:
        if explicit:
            raise
        sr, why = None, f"SRv6 left out: {e}"
    else:
        why = "SRv6 left out: labtools.datapaths.srv6.plan(inventory, mode) is not there"
    if sr is None:
        if explicit:
            raise LabError("stage srv6 needs labtools.datapaths.srv6.plan(inventory, mode), which is not there")
        # Not asked for by name: say so in the plan (and the dry run) and go on.
        return [Step(inv.by_role("router").name, "srv6", (), why=why)]
    return [Step(machine, "srv6", tuple(a), why=f"SRv6 ({opts.srv6_mode})") for machine, argvs in sr.items()
            for a in argvs]  # fmt: skip


def _kubeadm_steps(master: str, worker: str, all_files: dict[str, dict[str, str]]) -> list[Step]:
    """kubeadm init on the master, a join token from it, and kubeadm join on the worker; each only once."""
    return [
        write_file(
            master,
            "kubeadm",
            kubeadm.INIT_PATH,
            all_files[master][kubeadm.INIT_PATH],
            "kubeadm init config (thesis lines 1237-1281)",
            "0600",
        ),
        Step(
            master,
            "kubeadm",
            ("sh", "-c", f"test -f {kubeadm.ADMIN_KUBECONFIG} || kubeadm init --config {kubeadm.INIT_PATH}"),
            why="kubeadm init (thesis line 1287), unless already done",
            timeout=900,
        ),
        Step(
            master,
            "kubeadm",
            ("kubeadm", "token", "create", "--print-join-command"),
            why="a bootstrap token for the worker",
            capture="join",
        ),
        write_file(
            worker,
            "kubeadm",
            kubeadm.JOIN_PATH,
            all_files[worker][kubeadm.JOIN_PATH],
            "kubeadm join config (thesis lines 1302-1314)",
            "0600",
        ),
        Step(
            worker,
            "kubeadm",
            ("sh", "-c", f"test -f /etc/kubernetes/kubelet.conf || kubeadm join --config {kubeadm.JOIN_PATH}"),
            why="kubeadm join (thesis line 1320), unless already done",
            timeout=900,
        ),
    ]


def needs_sudo(inv: Inventory, machine: str) -> bool:
    """Commands go through ``sudo -n`` when the inventory logs in as someone other than root."""
    m = inv.machine(machine)
    return inv.backend == "ssh" and str((m.ssh or {}).get("user", "root")) != "root"


def script(inv: Inventory, steps: Sequence[Step], machine: str | None = None) -> str:
    """The steps as a readable shell script (all machines, or one), as the dry run prints them."""
    lines, current, why = [], None, None
    for s in steps:
        if machine is not None and s.machine != machine:
            continue
        if (s.stage, s.machine) != current:
            current, why = (s.stage, s.machine), None
            lines.append(f"\n# ---- [{s.machine}] stage {s.stage}")
        if s.why and s.why != why:
            lines.append(f"# {s.why}")
        why = s.why
        lines.append(s.shell(needs_sudo(inv, s.machine)))
    return "\n".join(lines).lstrip("\n") + "\n"


def apply(lab, steps: Sequence[Step], *, dry_run: bool = True, echo: Callable[[str], None] | None = None) -> list:
    """Run `steps` on the lab's hosts in order (or, with `dry_run`, only print them). Returns the results."""
    inv: Inventory = lab.inventory
    if dry_run:
        (echo or print)(script(inv, steps).rstrip("\n"))
        return []
    _refuse_host_etc(inv, steps)
    results, subst = [], {}
    for s in steps:
        if subst and s.input:
            text = s.input
            for k, v in subst.items():
                text = text.replace(k, v)
            s = replace(s, input=text)
        if not s.argv:  # a note in the plan, e.g. a stage left out
            if echo:
                echo(f"[{s.machine}] {s.why}")
            continue
        cmd = list(s.argv)
        if s.stage == "srv6":  # the BPF modes name the loader and object by placeholder: install them
            from labtools.datapaths import srv6

            cmd = srv6.resolve_argv(lab.host(s.machine), cmd, check=True)
        argv = privileged(cmd, needs_sudo(inv, s.machine))
        if echo:
            echo(f"[{s.machine}] {s.why}: {shlex.join(list(s.argv))}")
        res = lab.host(s.machine).run(argv, input=s.input, timeout=s.timeout)
        if s.capture == "join":
            token, ca = kubeadm.parse_join_command(res.stdout)
            subst = {kubeadm.TOKEN_PLACEHOLDER: token, kubeadm.CA_HASH_PLACEHOLDER: ca}
        results.append(res)
    return results


def _local(inv: Inventory, machine: str) -> bool:
    """Does `machine` live on this very machine (a namespace, or an emulated VM reached from one)?"""
    return inv.backend == "netns" or bool((inv.machine(machine).ssh or {}).get("netns"))


def _refuse_host_etc(inv: Inventory, steps: Sequence[Step]) -> None:
    # Namespaces share this machine's filesystem: writing /etc there would reconfigure the host itself.
    for s in steps:
        writes_etc = s.argv[:3] == ("sh", "-c", WRITE_SCRIPT) and s.argv[4].startswith("/etc/")
        if (writes_etc or s.argv[:1] in (("netplan",), ("kubeadm",), ("helm",))) and _local(inv, s.machine):
            raise LabError(
                f"[{s.machine}] is a network namespace on this machine, which shares its /etc: refusing "
                f"`{shlex.join(s.argv[:5])}`. Use Options(files_root=DIR) and the network/srv6 stages only."
            )


def render(inv: Inventory, out: str | Path, opts: Options | None = None) -> list[Path]:
    """Write every file and every machine's ``commands.sh`` under `out`/<machine>/; returns the paths."""
    opts = opts or Options()
    out = Path(out)
    written = []
    for machine, fs in files(inv, opts).items():
        for path, content in fs.items():
            dest = out / machine / path.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            dest.write_text(content)
            written.append(dest)
    steps = plan(inv, opts)
    for machine in dict.fromkeys(s.machine for s in steps):
        dest = out / machine / "commands.sh"
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_text(
            "#!/bin/sh\n# What `labtools testbed apply` runs on this machine, in order.\nset -e\n"
            + script(inv, steps, machine)
        )
        written.append(dest)
    # The workload for the real cluster: the same objects the emulated worker renders.
    from labtools.rigs import kube

    workload = services.build(opts.services, node_port_range=opts.port_range)
    (out / "services.yaml").write_text(services.to_yaml(workload))
    (out / "iperf3-deployment.yaml").write_text(
        yaml.safe_dump(kube.deployment().model_dump(by_alias=True, exclude_none=True, mode="json"), sort_keys=False)
    )
    written += [out / "services.yaml", out / "iperf3-deployment.yaml"]
    return written


def switch_mode(lab, mode: str, opts: Options | None = None, *, dry_run: bool = False, echo=None) -> list[Step]:
    """Switch the cluster's service datapath between Cilium's kube-proxy and eBPF modes (over SSH on the master).

    Writes the values file first (so it matches the inventory), then runs `cilium.switch_commands()`.
    """
    opts = replace(opts or Options(), stages=("cilium",), cilium_mode=mode)
    steps = plan(lab.inventory, opts)
    apply(lab, steps, dry_run=dry_run, echo=echo)
    return steps


__all__ = [
    "STAGES",
    "Options",
    "Step",
    "apply",
    "cilium",
    "files",
    "kubeadm",
    "netplan",
    "plan",
    "render",
    "script",
    "srv6_plan",
    "switch_mode",
]
