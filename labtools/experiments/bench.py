"""Programming latency: how long each datapath takes to take in N Services, against the bare tool.

For the iptables backends the same run also times a bare `ip6tables-*-restore` of the very file, from
the same empty tables, so the wrapper's overhead is a ratio measured side by side. Datapaths are
interleaved within each repeat. A datapath may name the release it models: ``nftables@1.35`` (kube-proxy's
rule layout) or ``ebpf@1.13`` (Cilium's), so that two releases are compared in the same run.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

from labtools import datapaths
from labtools import progress as bars
from labtools.datapaths.iptables import IptablesDatapath
from labtools.errors import LabError
from labtools.experiments import provenance
from labtools.experiments.recorder import Recorder
from labtools.lab import Lab
from labtools.model import services

BARE = "s=$(date +%s%N); {tool} -w < {path}; e=$(date +%s%N); echo $((e - s))"


def _versions(base: str, version: str) -> dict:
    if not version:
        return {}
    if base == "nftables":
        return {"kube_proxy_version": version}
    if base == "ebpf":
        return {"cilium_version": version}
    raise LabError(f"{base} has no modelled releases: name it without @{version}")


def _key(count: int, repeat: int, name: str) -> str:
    return f"n{count:05d}-r{repeat}-{name.replace('@', '-v')}"  # point files: nftables@1.35 -> nftables-v1.35


def _get(name: str):
    base, _, version = name.partition("@")
    return datapaths.get(base, **_versions(base, version))


def run(lab: Lab, run_id: str, counts: Sequence[int], names: Sequence[str], repeats: int, *,
        root: Path | None = None, progress: bool = True) -> list[dict]:  # fmt: skip
    """Program every datapath with every count, `repeats` times, interleaved; each apply is one recorded point."""
    for name in names:
        _get(name)
    rec = Recorder(run_id, kind="bench", params={"counts": list(counts), "datapaths": list(names), "repeats": repeats},
                   root=root).open(lambda: provenance.collect(lab.backend))  # fmt: skip
    node = datapaths.node_of(lab.inventory)
    host = lab.host(node.name)
    keys = [(c, r, n) for c in counts for r in range(repeats) for n in names]
    todo = [k for k in keys if not rec.done(_key(*k))]
    bar = bars.bar("programming", total=len(keys), done=len(keys) - len(todo), enabled=progress, unit="apply")
    ports_of: dict[int, list] = {}
    try:
        for count, repeat, name in todo:
            ports = ports_of.setdefault(count, services.service_ports(services.build(count), node.name))
            base, _, version = name.partition("@")
            done = datapaths.switch(host, node, base, ports, **_versions(base, version))
            row = {"datapath": name, "services": count, "repeat": repeat, "render_s": done.render_s,
                   "apply_s": done.apply_s, "objects": done.objects}  # fmt: skip
            dp = _get(name)
            if isinstance(dp, IptablesDatapath):
                local = rec.path("rules.txt")  # the same file restored bare, from the same empty tables
                local.write_text(dp.render(ports, node).full)
                remote = host.install(local)
                dp.clear(host, node)
                ns = int(host.run(["sh", "-c", BARE.format(tool=dp.restore, path=remote)]).stdout.strip())
                row["bare_restore_s"] = ns / 1e9
                row["ratio_to_bare"] = done.apply_s / row["bare_restore_s"]
            rec.write(_key(count, repeat, name), [row])
            bar.advance()
    finally:
        bar.close()
        datapaths.switch(host, node, "none", [])
        rec.path("rules.txt").unlink(missing_ok=True)
    rec.table()
    return [r for p in rec.all_points().values() for r in p["records"]]


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
