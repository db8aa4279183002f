"""What notebook 01's scale sweeps say: the summary table, and the sentences and LaTeX macros computed
from it (the figures are `labtools.sweepview`'s). Notebook 01 and the paper both take their words here.

Everything works on the tidy tables of `labtools.analysis` (``data/processed/<run>.csv``) and the sweeps'
`Plan`s; nothing measures. Every verdict word follows a 95% confidence interval (`analysis.trend` for
slopes, `analysis.paired_ratio_ci` for ratios to `none`), never a point estimate.
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
WITHIN = 1.15  # "stays within 15% of none": every per-N 95% CI of the paired ratio to none below this


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
    """`analysis.slope_table` of the headline sweep `hd` at its NodePort target (`crr_target`), its ratios to
    `none` paired within each repeat (medians with 95% CIs), plus, when the
    sweep measured udp-pps, each datapath's median udp_pps at the largest N divided by `none`'s
    (``udp_pps_ratio_to_none``; NaN without a `none` datapath, as on a real cluster)."""
    target = crr_target(crr_targets)
    table = analysis.slope_table(hd, target=target)
    if (hd["datapath"] == "none").any():  # ratios paired within each repeat, with their 95% CIs
        nmax = int(hd["services"].max())
        for col, tgt in (("ratio_to_none", target), ("pod_ratio_to_none", "pod")):
            cis = [analysis.paired_ratio_ci(hd, "crr_p50", d, "none", tgt, "pod") for d in table["datapath"]]
            at = [c[c["services"] == nmax].iloc[0] if (c["services"] == nmax).any() else None for c in cis]
            for k, name in (("median", col), ("ci_lo", f"{col}_lo"), ("ci_hi", f"{col}_hi")):
                table[name] = [float("nan") if a is None else a[k] for a in at]
    if "udp-pps" in metrics:
        nmax = int(hd["services"].max())
        base = analysis.baseline(hd, "udp_pps", nmax, required=False)
        udp = hd[(hd["metric"] == "udp_pps") & (hd["target"] == target) & (hd["services"] == nmax)]
        table["udp_pps_ratio_to_none"] = [udp[udp["datapath"] == d]["value"].median() / base for d in table["datapath"]]
    return table


def _nan(x: float) -> bool:
    return isinstance(x, float) and math.isnan(x)


VERB = {"flat": "is flat", "no significant trend": "shows no significant trend"}  # the others read as verbs


def trend_phrase(t: analysis.Trend, unit_scale: float = 1e3, unit: str = "ns per Service") -> str:
    """A trend in words that follow its CI: "grows linearly: 168.0 ns per Service (95% CI 138.9 to 206.2 ...)"."""
    return (f"{VERB.get(t.word, t.word)}: {t.slope * unit_scale:.1f} {unit} (95% CI {t.ci_lo * unit_scale:.1f} to "
            f"{t.ci_hi * unit_scale:.1f}, bootstrap over {t.repeats} repeats per N; R² {t.r2_medians:.2f} through "
            "the per-N medians)")  # fmt: skip


def throughput_statements(df: pd.DataFrame, plans: Sequence[Plan]) -> list[str]:
    """Per throughput sweep and datapath (not `none`): the trend in N, its word from the CI of the change."""
    lines = []
    for plan in throughput_plans(plans):
        sub = df[df["run_id"] == plan.run_id]
        target, lo, hi = scenario_target(plan), min(plan.counts), max(plan.counts)
        for d in [d for d in plan.datapaths if d != "none"]:
            t = analysis.trend(sub, d, "throughput", target)
            lines.append(f"{plan.run_id}: {d} throughput {VERB.get(t.word, t.word)} in N (fitted change over "
                         f"N = {lo}..{hi}: 95% CI {t.change[0]:+.1%} to {t.change[1]:+.1%}; flat means within "
                         f"±{analysis.FLAT_BAND:.0%}).")  # fmt: skip
    return lines


def within_statement(hd: pd.DataFrame, d: str, target: str, limit: float = WITHIN) -> str:
    """Whether `d` stays within `limit` x `none` at every N, from the paired ratios' 95% CIs."""
    r = analysis.paired_ratio_ci(hd, "crr_p50", d, "none", target, "pod")
    if r.empty:
        return ""
    over = r[r["ci_lo"] > limit]
    if not over.empty:
        return f"exceeds {limit:.2f} × none at N = {', '.join(f'{n:,}' for n in over['services'])} (95% CIs)"
    if (r["ci_hi"] <= limit).all():
        return f"stays within {limit:.2f} × none at every N (every 95% CI)"
    worst = r.loc[r["ci_hi"].idxmax()]
    return (f"is not resolved against {limit:.2f} × none: the 95% CI of the paired ratio reaches "
            f"{worst['ci_hi']:.2f} at N = {int(worst['services']):,}")  # fmt: skip


def crr_statements(hd: pd.DataFrame, table: pd.DataFrame, target: str) -> list[str]:
    """Per row of the summary `table`: how connection setup scales with N (its trend word from the slope's CI),
    how it compares with `none` (paired ratios with CIs), what traffic to the pod IP pays, and the `none`
    baseline's own spread over N."""
    nmax = int(hd["services"].max())
    has_none = (hd["datapath"] == "none").any()
    lines = []
    for r in table.itertuples():
        d = r.datapath
        t = analysis.trend(hd, d, "crr_p50", target)
        line = f"{d}: connection setup {trend_phrase(t)}"
        if has_none and not _nan(r.ratio_to_none):
            line += (f"; {r.ratio_to_none:.2f} × none at {nmax:,} (95% CI {r.ratio_to_none_lo:.2f} to "
                     f"{r.ratio_to_none_hi:.2f})")  # fmt: skip
            if not d.startswith("iptables"):
                line += f"; it {within_statement(hd, d, target)}"
        elif not has_none:
            line += "; this run has no none datapath to compare with"
        lines.append(line + ".")
        if has_none and not _nan(r.pod_ratio_to_none):
            lines.append(f"{d}: non-service traffic (pod IP) pays {r.pod_ratio_to_none:.2f} × none at {nmax:,} "
                         f"(95% CI {r.pod_ratio_to_none_lo:.2f} to {r.pod_ratio_to_none_hi:.2f}).")  # fmt: skip
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
    """The numbers and verdicts the text quotes (``sweep-macros.tex``): N max, repeats, and per datapath its
    slope (ns per Service), its trend in words with the 95% CI (``\\Trend<Datapath>``), and its ratios to
    `none` at the NodePort and at the pod IP."""
    tex = [figures.macro("SweepMaxServices", f"{nmax:,}"), figures.macro("SweepRepeats", repeats)]
    for r in table.itertuples():
        name = macro_name(r.datapath)
        ci = f"95\\% CI {r.ns_ci_lo:.1f} to {r.ns_ci_hi:.1f}"
        words = {"grows linearly": f"grows linearly, by {r.ns_per_service:.1f}~ns per Service ({ci})",
                 "grows": f"grows, by {r.ns_per_service:.1f}~ns per Service ({ci}), but not linearly",
                 "falls": f"falls, by {-r.ns_per_service:.1f}~ns per Service ({ci})"}  # fmt: skip
        phrase = words.get(r.trend, f"shows {r.trend} ({r.ns_per_service:.1f}~ns per Service, {ci})")
        tex += [figures.macro(f"Slope{name}", f"{r.ns_per_service:.1f}"),
                figures.macro(f"Trend{name}", phrase),
                figures.macro(f"RatioNone{name}", f"{r.ratio_to_none:.2f}"),
                figures.macro(f"PodRatioNone{name}", f"{r.pod_ratio_to_none:.2f}")]  # fmt: skip
    return "".join(tex)
