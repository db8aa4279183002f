"""What notebook 01's scale sweeps say: the summary table, and the sentences and LaTeX macros computed
from it (the figures are `labtools.outputs.sweepview`'s). Notebook 01 and the paper both take their words here.

Everything works on the tidy tables of `labtools.outputs.analysis` (``data/processed/<run>.csv``) and the sweeps'
`Plan`s; nothing measures. Every verdict word follows a 95% confidence interval (`analysis.trend` for
slopes, `analysis.paired_ratio_ci` for ratios to `none`), never a point estimate.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import pandas as pd

from labtools.base import paths
from labtools.model import datapaths as registry
from labtools.model.plan import Plan
from labtools.outputs import analysis, figures

# One colour per datapath (the registry's styles, colour-blind safe), in the order the figures list them; `none`
# is the grey baseline.
PALETTE = {name: spec.style.color for name, spec in registry.REGISTRY.items()}
# Colour, marker and line style per datapath, so that a figure printed in grey or read by a colour-blind reader
# still tells the datapaths apart.
STYLE = {name: {"color": spec.style.color, "marker": spec.style.marker, "ls": spec.style.ls}
         for name, spec in registry.REGISTRY.items()}  # fmt: skip
WITHIN = 1.15  # "stays within 15% of none": every per-N 95% CI of the paired ratio to none below this


# -- which sweep, which target ----------------------------------------------------------------------------


def throughput_plans(plans: Sequence[Plan]) -> list[Plan]:
    """The sweeps that measured throughput (the thesis' figures)."""
    return [p for p in plans if "throughput" in p.metrics]


SCENARIOS = {"s1": "scenario 1", "s2": "scenario 2", "quick": "quick sweep", "probe": "probe overhead",
             "equivalence": "equivalence"}


def scenario_name(plan: Plan) -> str:
    """What a figure calls a sweep: the thesis' scenario (the profile's sweep name), not the run id."""
    name = plan.run_id.rsplit("-", 1)[-1]
    return SCENARIOS.get(name, name)


def scenario_target(plan: Plan) -> str:
    """The target of a sweep's throughput scenario: the first one it names (thesis: first or last NodePort)."""
    return plan.targets_of("throughput")[0]


def scenario1_plan(plans: Sequence[Plan]) -> Plan | None:
    """The sweep the claims take as the thesis' scenario 1: of those with throughput to the first Service, the
    one with the most eBPF/iptables pairs (a sweep made for the equivalence test, where a run has one)."""
    thr = [p for p in plans if "throughput" in p.metrics and p.targets_of("throughput")[0] == "first"]
    pairs = [p for p in thr if {"ebpf", "iptables"} <= set(p.datapaths)]
    return max(pairs, key=lambda p: p.repeats * len(p.counts)) if pairs else next(iter(thr), None)


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
    """The datapaths of `df` in the registry's order; a datapath the registry does not know is an error (never
    silently left out of a figure)."""
    return registry.ordered(df["datapath"])


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
    `none` paired within each repeat (geometric means with 95% CIs), plus, when the
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


def decimals(half_width: float) -> int:
    """Decimals that give an interval's half-width two significant digits (no false precision)."""
    if not math.isfinite(half_width) or half_width <= 0:
        return 1
    return max(0, 1 - math.floor(math.log10(half_width)))


def trend_phrase(t: analysis.Trend, unit_scale: float = 1e3, unit: str = "ns per Service") -> str:
    """A trend in words that follow its CI: "grows linearly: 168 ns per Service (95% CI 139 to 206 ...)", to the
    precision the interval allows."""
    f = f".{decimals((t.ci_hi - t.ci_lo) * unit_scale / 2)}f"
    shape = "" if math.isnan(t.curvature_p) else f"; lack of fit p = {t.curvature_p:.2g}"
    return (f"{VERB.get(t.word, t.word)}: {t.slope * unit_scale:{f}} {unit} (95% CI {t.ci_lo * unit_scale:{f}} to "
            f"{t.ci_hi * unit_scale:{f}}, t over the slopes of {t.repeats} repeats{shape})")  # fmt: skip


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
    """Every sentence of "What the data says": throughput per sweep, the headline sweep's connection setup,
    then, when measured, the worker's transit time, where crr's time goes, the transit excess at the
    resolution sweep's N, the probe's own cost, how many samples were multimodal or drifting, and whether N
    followed the clock."""
    head = headline(plans)
    hd = df[df["run_id"] == head.run_id]
    crr_targets = head.targets_of("crr")
    table = summary_table(hd, crr_targets, head.metrics)
    lines = throughput_statements(df, plans) + crr_statements(hd, table, crr_target(crr_targets))
    tp = transit_plan(plans)
    if tp is not None:
        td = df[df["run_id"] == tp.run_id]
        lines += transit_statements(td, tp.targets_of("transit"))
        if "handshake" in tp.metrics and "crr" in tp.metrics:
            lines += latency_statements(td, crr_target(tp.targets_of("transit")))
    rp = resolution_plan(plans)
    if rp is not None:
        lines += resolution_statements(resolution_table(df[df["run_id"] == rp.run_id], rp), rp)
    probe = probe_data(df, plans)
    if not probe.empty:
        lines += probe_statements(probe)
    return lines + flag_statements(df) + order_statements(df, plans)


def order_statements(df: pd.DataFrame, plans: Sequence[Plan]) -> list[str]:
    """Whether N followed the clock: per sweep, its order, and for runs whose samples carry their start time,
    Spearman's rank correlation between N and time per datapath (`analysis.order_confounding`)."""
    rho = analysis.order_confounding(df)
    lines = []
    for plan in plans:
        order = analysis.recorded_params(plan.run_id).get("order", plan.order)  # as measured, not as planned now
        r = rho[rho["run_id"] == plan.run_id]
        if len(plan.counts) < 2:
            continue  # one value of N: nothing to follow the clock
        if r.empty:
            lines.append(f"{plan.run_id}: visited N in order {order!r}; its samples carry no start times, so the "
                         "correlation of N with time cannot be shown" + (" (N followed the clock within each repeat)."
                                                                        if order == "repeat" else "."))
            continue
        parts = ", ".join(f"{x.datapath} {x.rho:+.2f}" for x in r.itertuples())
        lines.append(f"{plan.run_id}: order {order!r}; rank correlation of N with measurement time: {parts}.")
    return lines


def design_macros(df: pd.DataFrame, plans: Sequence[Plan]) -> str:
    """How the run was made, for the text: the headline sweep's iperf3 duration (``\\SweepThroughputSeconds``),
    the equivalence test's sweep (``\\EquivalenceRun``, its ``\\EquivalenceSeconds`` and ``\\EquivalenceBlocks``)
    and, where the tidy table records them, the releases it modelled and the pod attachment
    (``\\SweepNftRelease``, ``\\SweepCiliumRelease``, ``\\SweepCni``); and `order_statements`, joined
    (``\\SweepOrder``): every sweep's order and its rank correlation of N with time."""
    head = headline(plans)
    hd = df[df["run_id"] == head.run_id]
    seconds = analysis.recorded_params(head.run_id).get("throughput_seconds", head.throughput_seconds)
    eq = scenario1_plan(plans)
    eq_seconds = analysis.recorded_params(eq.run_id).get("throughput_seconds", eq.throughput_seconds) if eq else None
    tex = [figures.macro("SweepThroughputSeconds", seconds),
           *([figures.macro("EquivalenceSeconds", eq_seconds), figures.macro("EquivalenceBlocks", eq.repeats),
              figures.macro("EquivalenceRun", eq.run_id)] if eq else []),
           figures.macro("SweepOrder", " ".join(order_statements(df, plans)).replace("'", ""))]  # fmt: skip
    for col, name in (("kube_proxy_version", "SweepNftRelease"), ("cilium_version", "SweepCiliumRelease"),
                      ("cni", "SweepCni")):  # fmt: skip
        if col in hd and hd[col].notna().any():
            tex.append(figures.macro(name, str(hd[col].dropna().iloc[0])))
    return "".join(tex)


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


# -- transit, handshake and the harness ----------------------------------------------------------------------


def probe_data(df: pd.DataFrame, plans: Sequence[Plan]) -> pd.DataFrame:
    """The records of the sweeps that measured the probe's own cost (empty when none did)."""
    runs = [p.run_id for p in plans if "probe-overhead" in p.metrics]
    return df[df["run_id"].isin(runs) & df["metric"].str.startswith("probe_")]


def transit_plan(plans: Sequence[Plan]) -> Plan | None:
    """The sweep whose transit goes to the largest N, over the most values of N (None when no sweep measured
    transit): the grid, not the resolution sweep's two values of N."""
    with_transit = [p for p in plans if "transit" in p.metrics]
    return max(with_transit, key=lambda p: (max(p.counts), len(p.counts))) if with_transit else None


def _ci_us(v: float, lo: float, hi: float, level: float) -> str:
    """A median in µs with its order-statistic interval, named by its coverage."""
    return f"{v / 1e3:.2f} µs ({analysis.interval_name(level)} {lo / 1e3:.2f} to {hi / 1e3:.2f})"


def transit_table(hd: pd.DataFrame, targets: Sequence[str]) -> pd.DataFrame:
    """Per datapath, target and direction: the transit p50 at the smallest and largest N (ns, medians with their
    order-statistic intervals over repeats, `level` their coverage) and its trend in N (`analysis.trend`: slope
    in ns per Service with its CI and word)."""
    lo_n, hi_n = int(hd["services"].min()), int(hd["services"].max())
    rows = []
    for d in order(hd):
        for target in ["pod"] if d == "none" else targets:
            for direction in ("request", "reply"):
                metric = f"transit_{direction}_p50"
                pts = analysis.per_point(hd, metric, d, target).set_index("services")
                if pts.empty:
                    continue
                t = analysis.trend(hd, d, metric, target)
                row = {"datapath": d, "target": target, "direction": direction, "repeats": t.repeats,
                       "slope_ns": t.slope, "slope_lo": t.ci_lo, "slope_hi": t.ci_hi, "trend": t.word}  # fmt: skip
                if d != "none" and (hd["datapath"] == "none").any():
                    x = analysis.trend(analysis.excess(hd, metric, d, target), d, f"{metric}_excess", target,
                                       flat_slope=analysis.FLAT_TRANSIT)  # fmt: skip
                    row.update(excess_slope_ns=x.slope, excess_lo=x.ci_lo, excess_hi=x.ci_hi, excess_trend=x.word)
                for tag, n in (("first", lo_n), ("last", hi_n)):
                    for k in ("median", "ci_lo", "ci_hi", "level"):
                        row[f"{k}_{tag}"] = float(pts.loc[n, k]) if n in pts.index else float("nan")
                rows.append(row)
    out = pd.DataFrame(rows)
    out.attrs.update(nmin=lo_n, nmax=hi_n)
    return out


def transit_statements(hd: pd.DataFrame, targets: Sequence[str]) -> list[str]:
    """Per datapath and target: the worker's transit time of the request and the reply at the smallest and
    largest N, and how it changes with N (the word follows the slope's 95% CI)."""
    lo_n, hi_n = int(hd["services"].min()), int(hd["services"].max())
    lines = [f"(excess over none: the datapath's value minus none's in the same repeat and N, which takes out the "
             f"machine's drift over the sweep; it is flat when its slope's 95% CI lies within "
             f"±{analysis.FLAT_TRANSIT} ns per Service)"]  # fmt: skip
    for r in transit_table(hd, targets).itertuples():
        t = analysis.trend(hd, r.datapath, f"transit_{r.direction}_p50", r.target)
        first = _ci_us(r.median_first, r.ci_lo_first, r.ci_hi_first, r.level_first)
        last = _ci_us(r.median_last, r.ci_lo_last, r.ci_hi_last, r.level_last)
        line = (f"{r.datapath} transit, {r.direction} at {r.target}: {first} at N = {lo_n:,}, {last} at "
                f"N = {hi_n:,}; it {trend_phrase(t, unit_scale=1.0)}")  # fmt: skip
        if r.datapath != "none" and not _nan(getattr(r, "excess_slope_ns", float("nan"))):
            metric = f"transit_{r.direction}_p50"
            x = analysis.trend(analysis.excess(hd, metric, r.datapath, r.target), r.datapath, f"{metric}_excess",
                               r.target, flat_slope=analysis.FLAT_TRANSIT)  # fmt: skip
            line += f"; its excess over none {trend_phrase(x, unit_scale=1.0)}"
        lines.append(line + ".")
    return lines


def latency_statements(hd: pd.DataFrame, target: str) -> list[str]:
    """Where a crr transaction's p50 goes at the largest N, per datapath (`analysis.decomposition`)."""
    nmax = int(hd["services"].max())
    lines = []
    for r in analysis.decomposition(hd, target, nmax).itertuples():
        parts = "; ".join(f"{name} {getattr(r, name):.1f} µs (95% CI {getattr(r, name + '_lo'):.1f} to "
                          f"{getattr(r, name + '_hi'):.1f})" for name in ("transit", "stacks", "harness"))  # fmt: skip
        lines.append(f"{r.datapath} at {r.target}, N = {nmax:,}: crr p50 {r.crr:.1f} µs, handshake "
                     f"{r.handshake:.1f} µs; of the crr: {parts} ({r.repeats} repeats, differences within each "
                     "repeat).")  # fmt: skip
    return lines


def probe_run_ns(probe: pd.DataFrame) -> dict[str, float]:
    """The probe programs' run time per direction (entry plus exit stamp, ns; medians over all datapaths)."""
    m = probe[probe["metric"].str.endswith("_run")].groupby("metric")["value"].median()
    return {d: float(m[f"probe_in_{d}_run"] + m[f"probe_out_{d}_run"]) for d in ("request", "reply")
            if f"probe_in_{d}_run" in m and f"probe_out_{d}_run" in m}  # fmt: skip


def probe_statements(probe: pd.DataFrame) -> list[str]:
    """What the transit probe costs: its programs' run time per direction, and the handshake with it attached
    minus without (paired; the word "no significant difference" only when the CI includes 0)."""
    lines = []
    cost = analysis.probe_cost(probe)
    for d, g in cost.groupby("datapath"):
        g = g.set_index("metric")
        runs = ", ".join(f"{m.removeprefix('probe_').removesuffix('_run')} {g.loc[m, 'median']:.0f} ns "
                         f"[{g.loc[m, 'ci_lo']:.0f}, {g.loc[m, 'ci_hi']:.0f}]"
                         for m in g.index if m.endswith("_run"))  # fmt: skip
        runs_level = float(g[g.index.str.endswith("_run")]["level"].min())
        line = (f"probe under {d}: mean run time per program run {runs} (kernel BPF statistics; medians with "
                f"{analysis.interval_name(runs_level)}s over {int(g['repeats'].min())} repeats)")  # fmt: skip
        if "probe_handshake_delta" in g.index:
            h = g.loc["probe_handshake_delta"]
            word = ("no significant difference" if h["ci_lo"] <= 0 <= h["ci_hi"]
                    else "slower with the probe" if h["ci_lo"] > 0 else "faster with the probe")  # fmt: skip
            line += (f"; handshake p50 with the probe minus without: {h['median'] / 1e3:+.2f} µs (95% CI "
                     f"{h['ci_lo'] / 1e3:+.2f} to {h['ci_hi'] / 1e3:+.2f}): {word}")  # fmt: skip
        lines.append(line + ".")
    return lines


def flag_statements(df: pd.DataFrame) -> list[str]:
    """How many samples were multimodal or drifting (`analysis.flagged`), per sampled metric."""
    f = analysis.flagged(df)
    lines = []
    for metric, g in f.groupby("metric", sort=False):
        n, mm, dr = int(g["samples"].sum()), int(g["multimodal"].sum()), int(g["drifting"].sum())
        worst = g.loc[(g["multimodal"] / g["samples"]).idxmax()]
        lines.append(f"{metric}: {mm} of {n} samples multimodal ({mm / n:.0%}; most under {worst['datapath']}, "
                     f"{int(worst['multimodal'])} of {int(worst['samples'])}), {dr} drifting "
                     f"({dr / n:.0%}).")  # fmt: skip
    return lines


def transit_macros(tt: pd.DataFrame, dec: pd.DataFrame, probe_ns: dict[str, float], target: str) -> str:
    """The transit numbers the text quotes (``transit-macros.tex``): per datapath the request's transit at the
    largest N at `target` (``\\TransitMax<Datapath>``, µs with CI) and its trend phrase
    (``\\TransitTrend<Datapath>``), the harness part of crr under `none`, and the probe's own run time."""
    tex = []
    for r in tt[(tt["direction"] == "request") & (tt["target"].isin([target, "pod"]))].itertuples():
        if r.datapath != "none" and r.target != target:
            continue
        name = macro_name(r.datapath)
        ci = f"{analysis.interval_name(r.level_last)} {r.ci_lo_last / 1e3:.2f} to {r.ci_hi_last / 1e3:.2f}"
        ci = ci.replace("%", "\\%")
        tex.append(figures.macro(f"TransitMax{name}", f"{r.median_last / 1e3:.2f}~µs ({ci})"))
        if r.datapath == "none":
            v, lo, hi, word = r.slope_ns, r.slope_lo, r.slope_hi, r.trend
        else:  # what the datapath adds over none, paired within each repeat
            v, lo, hi, word = r.excess_slope_ns, r.excess_lo, r.excess_hi, r.excess_trend
        f = f".{decimals((hi - lo) / 2)}f"
        slope = f"{v:{f}}~ns per Service, 95\\% CI {lo:{f}} to {hi:{f}}"
        tex.append(figures.macro(f"TransitTrend{name}", f"{VERB.get(word, word)} ({slope})"))
    for r in dec.itertuples():
        name = macro_name(r.datapath)
        for part in ("harness", "stacks", "transit"):
            v, lo, hi = getattr(r, part), getattr(r, f"{part}_lo"), getattr(r, f"{part}_hi")
            tex.append(figures.macro(f"Part{part.capitalize()}{name}", f"{v:.1f}~µs (95\\% CI {lo:.1f} to {hi:.1f})"))
    for d, ns in probe_ns.items():
        tex.append(figures.macro(f"ProbeRun{d.capitalize()}", f"{ns:.0f}"))
    return "".join(tex)


# -- resolution: the transit excess over none at one N, paired within blocks --------------------------------------

RESOLUTION_AIM_NS = 150.0  # the half-width the study needs at 10,000 Services (aim: 100 ns)


def resolution_plan(plans: Sequence[Plan]) -> Plan | None:
    """The sweep that measured transit with the most repeats at its largest N (the resolution sweep), if any
    has more repeats than the others; None when the transit sweeps all have the same."""
    with_transit = [p for p in plans if "transit" in p.metrics and "none" in p.datapaths]
    if not with_transit:
        return None
    best = max(with_transit, key=lambda p: p.repeats)
    return best if sum(p.repeats == best.repeats for p in with_transit) == 1 else None


def resolution_table(rd: pd.DataFrame, plan: Plan, spans: list[tuple[int, int]] | None = None) -> pd.DataFrame:
    """Per datapath (not none) and direction, at the plan's largest N: `analysis.resolution` as a row, over all
    blocks (``session`` "all") and, where the run was extended, per session of blocks (`analysis.sessions`), with
    the p value of the sessions' difference (``sessions_p``)."""
    n, target = max(plan.counts), plan.targets_of("transit")[0]
    spans = spans if spans is not None else analysis.sessions(plan.run_id)
    parts = [("all", rd)] + ([(f"blocks {lo}-{hi - 1}", rd[rd["repeat"].between(lo, hi - 1)]) for lo, hi in spans]
                             if len(spans) > 1 else [])  # fmt: skip
    rows = []
    for d in order(rd):
        if d == "none":
            continue
        for direction in ("request", "reply"):
            metric = f"transit_{direction}_p50"
            p = analysis.sessions_differ(rd, d, n, metric, target, spans)
            for session, sub in parts:
                r = analysis.resolution(sub, d, n, metric, target)
                rows.append({"datapath": d, "direction": direction, "session": session, "services": n,
                             "excess_ns": r.excess.estimate, "lo_ns": r.excess.lo, "hi_ns": r.excess.hi,
                             "half_width_ns": r.half_width, "blocks": r.excess.n, "drift_share": r.drift_share,
                             "apart_s": r.apart_s, "sessions_p": p})  # fmt: skip
    return pd.DataFrame(rows)


def resolution_statements(table: pd.DataFrame, plan: Plan) -> list[str]:
    """Per datapath: how its request's and reply's transit differ from none's at the largest N over all blocks,
    each with its t interval, half-width and the share of variance pairing removed; whether the half-widths
    meet the aim; how far apart a block's two samples were. Where the run's blocks came in sessions: each
    session's excess, and whether the sessions differ (Welch): if they do, the pooled interval holds within a
    session only."""
    lines = []
    for d, g in table.groupby("datapath", sort=False):
        pooled = g[g["session"] == "all"]
        parts = [f"by {r.excess_ns:+.0f} ns on the {r.direction} (95% CI {r.lo_ns:.0f} to {r.hi_ns:.0f}, "
                 f"±{r.half_width_ns:.0f} ns; pairing removed {max(r.drift_share, 0):.0%} of the variance)"
                 for r in pooled.itertuples()]  # fmt: skip
        meets = "within" if pooled["half_width_ns"].max() <= RESOLUTION_AIM_NS else "wider than"
        r0 = pooled.iloc[0]
        lines.append(f"At N = {int(r0.services):,} ({plan.run_id}, {int(r0.blocks)} blocks), {d}'s transit differs "
                     f"from none's {' and '.join(parts)}: {meets} the ±{RESOLUTION_AIM_NS:.0f} ns aim; a block's "
                     f"two samples were a median {r0.apart_s:.1f} s apart.")  # fmt: skip
        split = g[g["session"] != "all"]
        if split.empty:
            continue
        per = "; ".join(f"{r.direction}, {r.session}: {r.excess_ns:+.0f} ns (±{r.half_width_ns:.0f})"
                        for r in split.itertuples())  # fmt: skip
        worst = pooled["sessions_p"].min()
        verdict = (f"the sessions differ (Welch p = {worst:.2g}): the lab instance moved the excess by more than "
                   "its within-session interval, so the pooled interval holds within a session only"
                   if worst < 0.05 else f"the sessions do not differ (Welch p = {worst:.2g})")  # fmt: skip
        lines.append(f"{d} per session of blocks (each session on its own lab instance): {per}; {verdict}.")
    return lines


def resolution_macros(table: pd.DataFrame, plan: Plan) -> str:
    """``\\Resolution<Datapath>``: the sentence of `resolution_statements`; ``\\ResolutionBlocks``, its blocks, and
    the N and connections per sample (``\\ResolutionServices``, ``\\ResolutionConnections``);
    ``\\ResolutionHalf<Datapath>``: the request's half-width in ns."""
    tex = [figures.macro("ResolutionBlocks", str(plan.repeats)), figures.macro("ResolutionRun", plan.run_id),
           figures.macro("ResolutionServices", f"{max(plan.counts):,}"),
           figures.macro("ResolutionConnections", f"{plan.crr_transactions:,}")]
    for d, g in table.groupby("datapath", sort=False):
        name, text = macro_name(d), " ".join(resolution_statements(g, plan))
        tex.append(figures.macro(f"Resolution{name}", text.replace("%", "\\%").replace("±", "$\\pm$")))
        half = g[(g["direction"] == "request") & (g["session"] == "all")]["half_width_ns"].iloc[0]
        tex.append(figures.macro(f"ResolutionHalf{name}", f"{half:.0f}"))
    return "".join(tex)
