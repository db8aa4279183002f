"""Programming latency: how long each datapath takes to take in N Services, against the bare tool.

For the iptables backends the same run also times a bare `ip6tables-*-restore` of the very file, from
the same empty tables, so the wrapper's overhead is a ratio measured side by side. Datapaths are
interleaved within each repeat.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence

from tqdm import tqdm

from labtools import datapaths, services
from labtools.datapaths.iptables import IptablesDatapath
from labtools.lab import Lab

BARE = "s=$(date +%s%N); {tool} -w < {path}; e=$(date +%s%N); echo $((e - s))"


def run(lab: Lab, counts: Sequence[int], names: Sequence[str], repeats: int, progress: bool = True) -> list[dict]:
    node = datapaths.node_of(lab.inventory)
    host = lab.host(node.name)
    rows: list[dict] = []
    steps = tqdm(total=len(counts) * repeats * len(names), desc="programming", unit="apply", disable=not progress)
    for count in counts:
        ports = services.service_ports(services.build(count), node.name)
        for repeat in range(repeats):
            for name in names:
                done = datapaths.switch(host, node, name, ports)
                row = {"datapath": name, "services": count, "repeat": repeat, "render_s": done.render_s,
                       "apply_s": done.apply_s, "objects": done.objects}  # fmt: skip
                dp = datapaths.get(name)
                if isinstance(dp, IptablesDatapath):
                    path = f"/tmp/labtools-bench-{lab.prefix or 'ssh'}.rules"
                    with open(path, "w") as fh:  # netns hosts share this filesystem
                        fh.write(dp.render(ports, node).full)
                    host.put(path, path)
                    dp.clear(host, node)  # the bare run starts from the same empty tables as ours did
                    ns = int(host.run(["sh", "-c", BARE.format(tool=dp.restore, path=path)]).stdout.strip())
                    row["bare_restore_s"] = ns / 1e9
                    row["ratio_to_bare"] = done.apply_s / row["bare_restore_s"]
                rows.append(row)
                steps.update()
    steps.close()
    datapaths.switch(host, node, "none", [])
    return rows


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
