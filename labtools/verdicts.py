"""What notebook 01's scale sweeps say: the summary table, and the sentences and LaTeX macros computed
from it (the figures are `labtools.sweepview`'s).

Everything here works on the tidy tables of `labtools.analysis` (``data/processed/<run>.csv``) and the
sweeps' `Plan`s; nothing measures. The thresholds are the issue's: throughput is *flat* when the fitted
change over the whole N range is within 10% of its median (`analysis.is_flat`), a datapath *stays within
15%* when its median p50 never exceeds 1.15 x `none` at the same N (`analysis.within`), and connection
setup *grows linearly* with a positive slope and R² >= 0.9 over every repeat.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from labtools import analysis, figures, paths
from labtools.model.plan import Plan

# One colour per datapath, in the order the figures list them; `none` is the grey baseline.
PALETTE = {"none": "0.45", "iptables": "tab:red", "iptables-legacy": "tab:orange", "nftables": "tab:blue",
           "ebpf": "tab:green"}  # fmt: skip
LINEAR_R2 = 0.9  # connection setup "grows linearly": positive slope and R² at least this, over every repeat
WITHIN = 1.15  # "stays within 15% of none": the worst per-N median ratio to none at most this


# -- which sweep, which target ----------------------------------------------------------------------------


def throughput_plans(plans: Sequence[Plan]) -> list[Plan]:
    """The sweeps that measured throughput (the thesis' figures)."""
    return [p for p in plans if "throughput" in p.metrics]


def scenario_target(plan: Plan) -> str:
    """The target of a sweep's throughput scenario: the first one it names (thesis: first or last NodePort)."""
    return plan.targets_of("throughput")[0]


def headline(plans: Sequence[Plan]) -> Plan:
    """The headline sweep: the one with the crr metric that goes to the largest N."""
    crr = [p for p in plans if "crr" in p.metrics]
    if not crr:
        raise ValueError("no sweep measures crr: the summary table and statements need one")
    return max(crr, key=lambda p: max(p.counts))


def crr_target(crr_targets: Sequence[str]) -> str:
    """The NodePort whose connection setup the table reports: `last` when measured, else the first target."""
    return "last" if "last" in crr_targets else crr_targets[0]


def order(df: pd.DataFrame) -> list[str]:
    """The datapaths of `df` in `PALETTE` order."""
    present = set(df["datapath"])
    return [d for d in PALETTE if d in present]


# -- the run at a glance ------------------------------------------------------------------------------------


def provenance(run_id: str) -> dict:
    """The provenance block (kernel, tool versions, git commit, ...) of a run's ``manifest.json``."""
    return json.loads((paths.raw(run_id) / "manifest.json").read_text())["provenance"]


def describe_run(df: pd.DataFrame, prov: dict) -> str:
    """One line: how many records and samples, and the machine they were measured on."""
    samples = df.groupby(["run_id", "datapath", "services", "target", "repeat"]).ngroups
    return (f"{len(df)} records from {samples} samples; kernel {prov['kernel']}, {prov['iptables']}, {prov['nft']}, "
            f"commit {prov['git_commit'][:10]}")  # fmt: skip


def overview(df: pd.DataFrame) -> pd.DataFrame:
    """Per run and metric: records, and how many datapaths, service counts and repeats they cover."""
    g = df.groupby(["run_id", "metric"])
    return g.agg(records=("value", "size"), datapaths=("datapath", "nunique"), counts=("services", "nunique"),
                 repeats=("repeat", "nunique"))  # fmt: skip


# -- the summary table, the sentences and the macros -----------------------------------------------------------


def summary_table(hd: pd.DataFrame, crr_targets: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """`analysis.slope_table` of the headline sweep `hd` at its NodePort target (`crr_target`), plus, when the
    sweep measured udp-pps, each datapath's median udp_pps at the largest N divided by `none`'s
    (``udp_pps_ratio_to_none``; NaN without a `none` datapath, as on a real cluster)."""
    target = crr_target(crr_targets)
    table = analysis.slope_table(hd, target=target)
    if "udp-pps" in metrics:
        nmax = int(hd["services"].max())
        base = analysis.baseline(hd, "udp_pps", nmax, required=False)
        udp = hd[(hd["metric"] == "udp_pps") & (hd["target"] == target) & (hd["services"] == nmax)]
        table["udp_pps_ratio_to_none"] = [udp[udp["datapath"] == d]["value"].median() / base for d in table["datapath"]]
    return table


def _nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


def throughput_statements(df: pd.DataFrame, plans: Sequence[Plan]) -> list[str]:
    """Per throughput sweep and datapath (not `none`): flat in N or not, with the fitted change over the N range."""
    lines = []
    for plan in throughput_plans(plans):
        sub = df[df["run_id"] == plan.run_id]
        target, lo, hi = scenario_target(plan), min(plan.counts), max(plan.counts)
        for d in [d for d in plan.datapaths if d != "none"]:
            flat = analysis.is_flat(sub, d, target)
            f = analysis.fit(sub, d, "throughput", target)
            median = sub[(sub["datapath"] == d) & (sub["metric"] == "throughput")]["value"].median()
            change = f.slope * (hi - lo) / median
            lines.append(f"{plan.run_id}: {d} throughput is {'flat' if flat else 'NOT flat'} in N "
                         f"(fitted change over N = {lo}..{hi}: {change:+.1%}).")  # fmt: skip
    return lines


def crr_statements(hd: pd.DataFrame, table: pd.DataFrame, target: str) -> list[str]:
    """Per row of the summary `table`: how connection setup scales (iptables: linear or not; the others: within
    15% of `none` or not), what traffic to the pod IP pays, and the `none` baseline's own spread over N."""
    nmax = int(hd["services"].max())
    lines = []
    for r in table.itertuples():
        d = r.datapath
        worst = analysis.within(hd, d, target, limit=WITHIN)
        if d.startswith("iptables"):
            linear = r.ns_per_service > 0 and r.r2 >= LINEAR_R2
            end = "." if _nan(r.ratio_to_none) else f"; {r.ratio_to_none:.2f} × none at {nmax:,}."
            lines.append(f"{d}: connection setup {'grows linearly' if linear else 'does NOT grow linearly'} with N: "
                         f"{r.ns_per_service:.1f} ns per Service (R² {r.r2:.2f} over every repeat, {r.r2_medians:.2f} "
                         f"over the per-N medians){end}")  # fmt: skip
        elif _nan(worst):  # no none datapath, as on a real cluster
            lines.append(f"{d}: {r.median_us:.1f} µs at {nmax:,}, slope {r.ns_per_service:.2f} ns per Service "
                         f"(R² {r.r2:.2f}); this run has no none datapath to compare with.")  # fmt: skip
        else:
            lines.append(f"{d}: connection setup {'stays within' if worst <= WITHIN else 'does NOT stay within'} 15% "
                         f"of none up to {nmax:,} (worst median ratio {worst:.2f}, ratio at {nmax:,} "
                         f"{r.ratio_to_none:.2f}; slope {r.ns_per_service:.2f} ns per Service).")  # fmt: skip
        if not _nan(r.pod_ratio_to_none):
            lines.append(f"{d}: non-service traffic (pod IP) pays {r.pod_ratio_to_none:.2f} × none at {nmax:,}.")
    spread = hd[(hd["datapath"] == "none") & (hd["metric"] == "crr_p50")].groupby("services")["value"].median()
    if len(spread):
        lines.append(f"for scale: the none baseline's own median p50 ranges {spread.min():.1f}-{spread.max():.1f} µs "
                     f"over N ({spread.max() / spread.min():.2f}×) on this machine.")  # fmt: skip
    return lines


def statements(df: pd.DataFrame, plans: Sequence[Plan]) -> list[str]:
    """Every sentence of "What the data says": throughput per sweep, then the headline sweep's connection setup."""
    head = headline(plans)
    hd = df[df["run_id"] == head.run_id]
    crr_targets = head.targets_of("crr")
    table = summary_table(hd, crr_targets, head.metrics)
    return throughput_statements(df, plans) + crr_statements(hd, table, crr_target(crr_targets))


def macro_name(datapath: str) -> str:
    """A datapath as a LaTeX macro name part (letters only): ``iptables-legacy`` -> ``IptablesLegacy``."""
    return "".join(w.capitalize() for w in datapath.replace("-", " ").split())


def sweep_macros(table: pd.DataFrame, nmax: int, repeats: int) -> str:
    """The numbers the text quotes (``sweep-macros.tex``): N max, repeats, and per datapath its slope (ns per
    Service) and its ratios to `none` at the NodePort and at the pod IP."""
    tex = [figures.macro("SweepMaxServices", f"{nmax:,}"), figures.macro("SweepRepeats", repeats)]
    for r in table.itertuples():
        name = macro_name(r.datapath)
        tex += [figures.macro(f"Slope{name}", f"{r.ns_per_service:.1f}"),
                figures.macro(f"RatioNone{name}", f"{r.ratio_to_none:.2f}"),
                figures.macro(f"PodRatioNone{name}", f"{r.pod_ratio_to_none:.2f}")]  # fmt: skip
    return "".join(tex)
