"""Programming latency: how long each datapath takes to take in N Services (a cold start: one full sync),
and how long one change takes on top of N (ClusterLoader2's network-programming latency), against the
bare tool.

For the iptables backends the same run also times a bare `ip6tables-*-restore` of the very file, from
the same empty tables, so the wrapper's overhead is a ratio measured side by side. Datapaths are
interleaved within each repeat. A datapath may name the release it models: ``nftables@1.35`` (kube-proxy's
rule layout) or ``ebpf@1.13`` (Cilium's), so that two releases are compared in the same run; a plain name is
programmed as the run's releases (`Releases`: parameters of the run, as is the pod attachment, `cni`). Every
change of the worker goes through its owner (`datapaths.worker.Worker`), which holds the lab's lock.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from labtools import datapaths
from labtools.base import progress as bars
from labtools.base.errors import LabError
from labtools.datapaths.iptables import IptablesDatapath
from labtools.datapaths.worker import Worker
from labtools.experiments import provenance, releases
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab, traffic
from labtools.model import datapaths as registry
from labtools.model import services
from labtools.model.datapaths import Releases
from labtools.model.plan import block_order, seed_of
from labtools.rigs.lab import timed_change

RELEASE_KEYS = (*registry.RELEASE_PARAMS, "cni")  # a profile's bench may name them
# The probe rates a change may be watched at: from 1 kHz (1 ms resolution) up to what one client core
# keeps pace with (a handshake each 100 us); nan, inf or 1e9 would leave every point to its time limit.
PROBE_HZ_RANGE = (1000.0, 10_000.0)
BARE = "s=$(date +%s%N); {tool} -w < {path}; e=$(date +%s%N); echo $((e - s))"
BARE_PARTIAL = "s=$(date +%s%N); {tool} -w --noflush --counters < {path}; e=$(date +%s%N); echo $((e - s))"


def _key(count: int, repeat: int, name: str) -> str:
    return f"n{count:05d}-r{repeat}-{name.replace('@', '-v')}"  # point files: nftables@1.35 -> nftables-v1.35


def _check(names: Sequence[str]) -> None:
    """Every name a registry datapath that programs something, with a modelled release if it names one."""
    for name in names:
        spec, _ = registry.split_release(name)
        if spec.family is registry.Family.NONE:
            raise LabError(f"{name}: bench times programming, and {name} programs nothing")


def _recorder(lab: Lab, run_id: str, params: dict, rel: Releases, cni: str | None, root: Path | None) -> Recorder:
    """The bench's run, its releases and pod attachment among its parameters (a resume with others is refused)."""
    have = lab.pod_attachment()
    if cni is not None and cni != have:
        raise LabError(f"run {run_id} needs the pod attached as {cni!r}, but lab {lab.prefix} has {have!r}: `lab "
                       f"down` and `lab up --cni {cni}{lab.hint}`, or name the attachment the lab has")  # fmt: skip
    params = {**params, **rel.as_dict(), "cni": have}
    rec = Recorder(run_id, kind="bench", params=params, root=root, recorded_params=releases.params_of)
    return rec.open(lambda: provenance.collect(lab.backend, have))


def _order(params: dict) -> list[tuple[int, int, str]]:
    """The run's (count, repeat, datapath) in measuring order: randomised blocks (`block_order`) from its
    recorded seed, so that a drift over the run is no slope in N; runs recorded before had N in time order."""
    counts, names, repeats = params["counts"], params["datapaths"], params["repeats"]
    if params.get("order") == "block":
        return block_order(counts, names, repeats, params["order_seed"])
    return [(c, r, n) for c in counts for r in range(repeats) for n in names]


def _labels(rel: Releases, name: str, cni: str | None) -> dict:
    """What a bench row records of what it measured: the release its datapath modelled, the pod attachment."""
    return {"model_release": rel.of(name), "cni": cni}


def run(lab: Lab, run_id: str, counts: Sequence[int], names: Sequence[str], repeats: int, *, mix: str = "nodeport",
        root: Path | None = None, progress: bool = True, releases: Releases | None = None,
        cni: str | None = None) -> list[dict]:  # fmt: skip
    """Program every datapath with every count, `repeats` times, interleaved; each apply is one recorded point."""
    _check(names)
    rel = releases or Releases()
    params = {"counts": list(counts), "datapaths": list(names), "repeats": repeats, "mix": mix,
              "order": "block", "order_seed": seed_of(run_id)}  # fmt: skip
    rec = _recorder(lab, run_id, params, rel, cni, root)
    cni = rec.params["cni"]
    keys = _order(rec.params)
    todo = [k for k in keys if not rec.done(_key(*k))]
    bar = bars.bar("programming", total=len(keys), done=len(keys) - len(todo), enabled=progress, unit="apply")
    workloads: dict[int, services.Workload] = {}
    with Worker(lab, releases=rel) as worker:
        node, host = worker.node, worker.host
        try:
            for count, repeat, name in todo:
                workload = workloads.setdefault(count, services.build(count, mix=mix))
                done = worker.use(name, workload)
                row = {"datapath": name, "services": count, "repeat": repeat, "mix": mix, "render_s": done.render_s,
                       "apply_s": done.apply_s, "objects": done.objects, **_labels(rel, name, cni)}  # fmt: skip
                dp = datapaths.get(name, releases=rel)
                if isinstance(dp, IptablesDatapath):
                    local = rec.path("rules.txt")  # the same file restored bare, from the same empty tables
                    local.write_text(dp.render(services.service_ports(workload, node.name), node).full)
                    remote = host.install(local)
                    with worker.changing():  # the worker holds the bare restore's rules: no record until the next use
                        dp.clear(host, node)
                        bare = BARE.format(tool=dp.restore, path=remote)
                        ns = int(host.run(["sh", "-c", bare], timeout=600).stdout.strip())
                    row["bare_restore_s"] = ns / 1e9
                    row["ratio_to_bare"] = done.apply_s / row["bare_restore_s"]
                rec.write(_key(count, repeat, name), [row])
                bar.advance()
        finally:
            bar.close()
            worker.clear()
            rec.path("rules.txt").unlink(missing_ok=True)
    rec.table()
    return [r for p in rec.all_points().values() for r in p["records"]]


def run_change(lab: Lab, run_id: str, change: str, counts: Sequence[int], names: Sequence[str], repeats: int, *,
               mix: str = "nodeport", hz: float = 2000.0, root: Path | None = None, progress: bool = True,
               releases: Releases | None = None, cni: str | None = None) -> list[dict]:  # fmt: skip
    """One change on top of N Services, per datapath, `repeats` times, interleaved.

    Each point programs the N Services from nothing (a full sync, recorded as the cold start), starts a
    client probing the changed Service's NodePort at `hz` handshakes per second, then applies the change
    as the datapath's own update path does (`Datapath.apply_change`: kube-proxy's partial sync, Cilium's
    map writes). `change_apply_s` is that call, `change_e2e_s` the time from its start to the first
    probe whose outcome shows the change (its SYN's departure: a connection to an added Service or an
    endpoint that now answers; a refusal from a removed one); `change_e2e_lo_s` the last probe before it,
    so the truth lies between the two. Both clocks are the machine's CLOCK_MONOTONIC, so e2e needs the
    netns lab; over SSH it is left out. `spawn_s` is the floor of running any command on the worker
    (kube-proxy execs iptables-restore and nft too; Cilium's agent makes its bpf() calls in-process).
    """
    if change not in services.CHANGES:
        raise LabError(f"change must be one of {', '.join(services.CHANGES)}, got {change!r}")
    if not PROBE_HZ_RANGE[0] <= hz <= PROBE_HZ_RANGE[1]:  # also refuses nan
        lo, hi = PROBE_HZ_RANGE
        raise LabError(f"probe rate {hz:g}/s is not from {lo:g} to {hi:g}: below, the change would be seen at "
                       "coarser than 1 ms; above, the client cannot keep the pace")
    _check(names)
    rel = releases or Releases()
    params = {"change": change, "counts": list(counts), "datapaths": list(names), "repeats": repeats, "mix": mix,
              "probe_hz": hz, "order": "block", "order_seed": seed_of(run_id)}  # fmt: skip
    rec = _recorder(lab, run_id, params, rel, cni, root)
    cni = rec.params["cni"]
    ends = traffic.ends(lab)
    shared_clock = lab.backend == "netns"
    keys = _order(rec.params)
    todo = [k for k in keys if not rec.done(_key(*k))]
    bar = bars.bar(f"one change ({change})", total=len(keys), done=len(keys) - len(todo), enabled=progress,
                   unit="change")  # fmt: skip
    changes: dict[int, services.Change] = {}
    with Worker(lab, releases=rel) as worker:
        server = traffic.start_crr_server(ends.pod, services.IPERF_PORT, ends.server_cpu) if todo else None
        try:
            for count, repeat, name in todo:
                ch = changes.setdefault(count, services.one_change(services.build(count, mix=mix), kind=change))
                row = _one_change(worker, rec, name, ch, ends, shared_clock, hz)
                rec.write(_key(count, repeat, name), [{"datapath": name, "services": count, "repeat": repeat,
                                                       "change": change, "mix": mix, **row,
                                                       **_labels(rel, name, cni)}])  # fmt: skip
                bar.advance()
        finally:
            bar.close()
            if server is not None:
                server.stop()
            worker.clear()
            rec.path("rules.txt").unlink(missing_ok=True)
    rec.table()
    return [r for p in rec.all_points().values() for r in p["records"]]


def _one_change(worker: Worker, rec: Recorder, name: str, ch: services.Change, ends: traffic.TrafficEnds,
                watch: bool, hz: float) -> dict:  # fmt: skip
    """One point of `run_change`: the cold start of `ch.before`, the timed change, and for iptables the same
    partial restore bare onto the same state."""
    node, host = worker.node, worker.host
    before = services.service_ports(ch.before, node.name)
    after = services.service_ports(ch.after, node.name)
    cold = worker.use(name, ch.before)
    dp = datapaths.get(name, releases=worker.releases)
    target = traffic.Target(ch.service, ends.node_address, ch.node_port)
    with worker.changing():  # the worker holds `after` now, which no record describes
        timed, rendered = timed_change(host, node, dp, before, after, ends if watch else None, target, ch.want, hz)
    row = {"cold_render_s": cold.render_s, "cold_apply_s": cold.apply_s, "cold_objects": cold.objects, **timed}
    if isinstance(dp, IptablesDatapath):  # the same partial restore, bare, onto the same state
        worker.use(name, ch.before)
        local = rec.path("rules.txt")
        local.write_text(rendered.text)
        bare = BARE_PARTIAL.format(tool=dp.restore, path=host.install(local))
        with worker.changing():
            ns = int(host.run(["sh", "-c", bare], timeout=600).stdout)  # 50,000 Services: a minute and more
        row["bare_restore_s"] = ns / 1e9
        row["ratio_to_bare"] = row["change_apply_s"] / row["bare_restore_s"]
    return row


def summary(rows: list[dict]) -> list[dict]:
    """Median and range per (datapath, services)."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["datapath"], r["services"]), []).append(r)
    out = []
    for (name, count), rs in groups.items():
        apply = [r["apply_s"] for r in rs]
        row = {"datapath": name, "services": count, "repeats": len(rs),
               "apply_median_s": statistics.median(apply), "apply_min_s": min(apply), "apply_max_s": max(apply),
               "render_median_s": statistics.median(r["render_s"] for r in rs)}  # fmt: skip
        if "ratio_to_bare" in rs[0]:
            row["bare_median_s"] = statistics.median(r["bare_restore_s"] for r in rs)
            row["ratio_median"] = statistics.median(r["ratio_to_bare"] for r in rs)
        out.append(row)
    return out


def change_summary(rows: list[dict]) -> list[dict]:
    """Median and maximum per (datapath, services) of one change's times, with the cold start's median."""
    groups: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        groups.setdefault((r["datapath"], r["services"]), []).append(r)
    out = []
    for (name, count), rs in groups.items():
        row = {"datapath": name, "services": count, "repeats": len(rs), "change": rs[0]["change"]}
        for col in ("cold_apply_s", "change_apply_s", "change_e2e_s", "spawn_s", "map_calls_s", "ratio_to_bare"):
            values = [r[col] for r in rs if col in r]
            if values:
                stem = col.removesuffix("_s") if col.endswith("_s") else col.removesuffix("_to_bare")
                row[f"{stem}_median{'_s' if col.endswith('_s') else ''}"] = statistics.median(values)
                if col == "change_e2e_s":
                    row["change_e2e_max_s"] = max(values)
        out.append(row)
    return out


def run_profile(lab: Lab, run_id: str, benches: dict[str, dict], *, progress: bool = True) -> list[str]:
    """A profile's benches (notebook 04's ``benches``): each ``{suffix: spec}`` becomes run ``<run_id>-<suffix>``,
    a one-change bench when the spec names a ``change``, else a cold-start bench. Returns the run ids."""
    out = []
    for suffix, spec in benches.items():
        unknown = set(spec) - {"change", "counts", "datapaths", "repeats", "mix", "probe_hz", *RELEASE_KEYS}
        if unknown or not {"counts", "datapaths"} <= set(spec):
            raise LabError(f"bench {suffix!r}: needs counts and datapaths, may have change, repeats, mix, probe_hz, "
                           f"{', '.join(RELEASE_KEYS)}; got {', '.join(sorted(spec))}")  # fmt: skip
        rel = Releases(**{k: spec[k] for k in registry.RELEASE_PARAMS if k in spec})
        common = {"mix": spec.get("mix", "nodeport"), "progress": progress, "releases": rel, "cni": spec.get("cni")}
        rid = f"{run_id}-{suffix}"
        if spec.get("change"):
            run_change(lab, rid, spec["change"], spec["counts"], spec["datapaths"], spec.get("repeats", 3),
                       hz=spec.get("probe_hz", 2000.0), **common)  # fmt: skip
        else:
            run(lab, rid, spec["counts"], spec["datapaths"], spec.get("repeats", 3), **common)
        out.append(rid)
    return out
