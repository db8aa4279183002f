"""From a sweep's tidy table to the numbers the paper quotes: medians with spread, ratios, slopes, verdicts.

Everything here is computed from `data/processed/<run>.csv`; nothing is typed in. Ratios compare
datapaths measured in the same run (interleaved within each repeat), never across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labtools.base import paths
from labtools.base.errors import LabError
from labtools.model.plan import Plan

KEYS = ["datapath", "services", "target", "metric"]


def load(run_ids: list[str], root: Path | None = None) -> pd.DataFrame:
    """The processed tables of `run_ids`, concatenated, with a `run_id` column."""
    frames = []
    for run in run_ids:
        path = (root or paths.data_root()) / "processed" / f"{run}.csv"
        if not path.exists():
            raise LabError(f"no processed table {path}: run the sweep (or `labtools sweep ... --run-id {run}`)")
        frames.append(pd.read_csv(path))
    return pd.concat(frames, ignore_index=True)


def check_complete(df: pd.DataFrame, plan: Plan) -> None:
    """Raise unless every point of `plan` is present with all its repeats (no figure from fewer)."""
    sub = df[df["run_id"] == plan.run_id]
    have = {(c, r, d, t) for c, r, d, t in sub[["services", "repeat", "datapath", "target"]].itertuples(index=False)}
    missing = [p for p in plan.points() if (p[0], p[1], p[2], p[4]) not in have]
    if missing:
        raise LabError(f"run {plan.run_id} is incomplete: {len(missing)} of {len(plan.points())} points missing "
                       f"(e.g. {missing[0]}); resume it with the same run id")  # fmt: skip


def summary(df: pd.DataFrame) -> pd.DataFrame:
    """Median, quartiles and the number of repeats per (datapath, services, target, metric)."""
    g = df.groupby(KEYS)["value"]
    out = pd.DataFrame({"median": g.median(), "q1": g.quantile(0.25), "q3": g.quantile(0.75), "repeats": g.size()})
    return out.reset_index()


def paired_ratio(df: pd.DataFrame, metric: str, target: str, num: str, den: str) -> pd.DataFrame:
    """`num`/`den` per services count, paired by repeat (measured minutes apart): median and quartiles."""
    sub = df[(df["metric"] == metric) & (df["target"] == target)]
    a = sub[sub["datapath"] == num].set_index(["services", "repeat"])["value"]
    b = sub[sub["datapath"] == den].set_index(["services", "repeat"])["value"]
    r = (a / b).dropna().rename("ratio").reset_index()
    g = r.groupby("services")["ratio"]
    return pd.DataFrame({"median": g.median(), "q1": g.quantile(0.25), "q3": g.quantile(0.75),
                         "repeats": g.size()}).reset_index()  # fmt: skip


@dataclass(frozen=True)
class Fit:
    slope: float  # value units per Service
    intercept: float
    r2: float


def fit(df: pd.DataFrame, datapath: str, metric: str, target: str) -> Fit:
    """Least-squares line through every repeat of `metric` versus the number of Services."""
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)]
    if sub["services"].nunique() < 2:
        raise LabError(f"{datapath}/{metric}/{target}: a slope needs at least two service counts")
    x, y = sub["services"].to_numpy(float), sub["value"].to_numpy(float)
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = ((y - y.mean()) ** 2).sum()
    return Fit(float(slope), float(intercept), float(1 - (resid**2).sum() / ss) if ss else 1.0)


def baseline(df: pd.DataFrame, metric: str, services: int | None = None, required: bool = True) -> float:
    """Median of the `none` datapath (straight to the pod) for `metric`, at `services` if given.

    A real cluster has no `none` (every node runs a service datapath): with `required=False` the
    baseline is then NaN, and so is every ratio to it.
    """
    sub = df[(df["datapath"] == "none") & (df["metric"] == metric)]
    if services is not None:
        sub = sub[sub["services"] == services]
    if sub.empty:
        if not required:
            return float("nan")
        raise LabError(f"no `none` baseline for {metric}: include the none datapath in the sweep")
    return float(sub["value"].median())


def slope_table(df: pd.DataFrame, target: str = "last", metric: str = "crr_p50") -> pd.DataFrame:
    """Per datapath: ns per Service of `metric` at `target`, and its ratio to `none` at the largest N.

    The slope and `r2` come from a line through every repeat; `r2_medians` is the same fit through the
    per-N medians, which a few outlying repeats of a noisy machine do not dominate; `ns_ci_lo`/`ns_ci_hi`
    and `trend` are `trend()`'s 95% CI and verdict word.
    """
    nmax = int(df["services"].max())
    base = baseline(df, metric, nmax, required=False)
    rows = []
    for d in [d for d in df["datapath"].unique() if d != "none"]:
        f = fit(df, d, metric, target)
        at = df[(df["datapath"] == d) & (df["metric"] == metric) & (df["target"] == target)
                & (df["services"] == nmax)]["value"]  # fmt: skip
        pod = df[(df["datapath"] == d) & (df["metric"] == metric) & (df["target"] == "pod")
                 & (df["services"] == nmax)]["value"]  # fmt: skip
        med = (
            df[(df["datapath"] == d) & (df["metric"] == metric) & (df["target"] == target)]
            .groupby("services", as_index=False)["value"]
            .median()
        )
        fm = fit(med.assign(datapath=d, metric=metric, target=target), d, metric, target)  # outliers weigh less
        tr = trend(df, d, metric, target)
        rows.append({"datapath": d, "ns_per_service": f.slope * 1e3, "ns_ci_lo": tr.ci_lo * 1e3,
                     "ns_ci_hi": tr.ci_hi * 1e3, "trend": tr.word, "repeats": tr.repeats,
                     "r2": f.r2, "r2_medians": fm.r2, "services": nmax,
                     "median_us": float(at.median()), "ratio_to_none": float(at.median()) / base,
                     "pod_ratio_to_none": float(pod.median()) / base if len(pod) else float("nan")})  # fmt: skip
    return pd.DataFrame(rows)


def is_flat(df: pd.DataFrame, datapath: str, target: str, metric: str = "throughput", tolerance: float = 0.10) -> bool:
    """Whether the fitted change of `metric` over the whole N range stays within `tolerance` of its median.

    A point estimate: no verdict the notebooks or the paper print comes from it (they use `trend`)."""
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)]
    f = fit(df, datapath, metric, target)
    span = sub["services"].max() - sub["services"].min()
    return abs(f.slope * span) <= tolerance * float(sub["value"].median())


def within(df: pd.DataFrame, datapath: str, target: str, metric: str = "crr_p50", limit: float = 1.15) -> float:
    """The largest ratio of `datapath`'s median to `none`'s (same N), over all N; compare with `limit`.

    A point estimate, for a quick look: the verdicts use `paired_ratio_ci` (intervals over repeats).

    NaN when the run has no `none` datapath (a real cluster)."""
    if not (df["datapath"] == "none").any():
        return float("nan")
    worst = 0.0
    for n, sub in df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)].groupby(
        "services"
    ):
        worst = max(worst, float(sub["value"].median()) / baseline(df, metric, int(n)))
    return worst


# ----------------------------------------------------------------------------- uncertainty

CONFIDENCE = 0.95
BOOTSTRAP = 2000  # resamples; percentile intervals, seeded so that a table is a function of its data
FLAT_BAND = 0.05  # "flat": the whole CI of the change over the N range lies within ±5% of the median
LINEAR_R2 = 0.9  # "grows linearly": a positive slope CI and R² >= this through the per-N medians


def median_ci(values, *, seed: int = 0) -> tuple[float, float, float]:
    """The median of `values` (the repeats of one point) and its 95% percentile-bootstrap interval."""
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    boots = np.median(rng.choice(x, size=(BOOTSTRAP, len(x)), replace=True), axis=1)
    a = (1 - CONFIDENCE) / 2
    return float(np.median(x)), float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))


def paired_ratio_ci(df: pd.DataFrame, metric: str, num: str, den: str, num_target: str,
                    den_target: str | None = None) -> pd.DataFrame:  # fmt: skip
    """`num`/`den` per services count, paired within each repeat (measured minutes apart in the same run):
    the median ratio with its 95% bootstrap CI over repeats, and the repeats behind it."""
    den_target = den_target or num_target
    sub = df[df["metric"] == metric]
    a = sub[(sub["datapath"] == num) & (sub["target"] == num_target)].set_index(["services", "repeat"])["value"]
    b = sub[(sub["datapath"] == den) & (sub["target"] == den_target)].set_index(["services", "repeat"])["value"]
    r = (a / b).dropna().rename("ratio").reset_index()
    rows = []
    for n, g in r.groupby("services"):
        med, lo, hi = median_ci(g["ratio"])
        rows.append({"services": n, "median": med, "ci_lo": lo, "ci_hi": hi, "repeats": len(g)})
    return pd.DataFrame(rows, columns=["services", "median", "ci_lo", "ci_hi", "repeats"])


@dataclass(frozen=True)
class Trend:
    """A slope against N with its 95% CI (cluster bootstrap: the repeats of each N resampled) and its word."""

    slope: float  # value units per Service, least squares through every repeat
    ci_lo: float
    ci_hi: float
    r2_medians: float  # of the same line through the per-N medians
    change: tuple[float, float]  # the CI of the fitted change over the N range, relative to the median
    repeats: int  # per N (the smallest)
    word: str  # "grows linearly", "grows", "falls", "flat", "no significant trend"


def trend(df: pd.DataFrame, datapath: str, metric: str, target: str, *, seed: int = 0,
          flat_slope: float | None = None) -> Trend:  # fmt: skip
    """How `metric` at `target` changes with N for `datapath`, and what may be said of it.

    The verdict follows the CI, never the point estimate: *grows linearly* when the slope's CI lies above
    0 and the per-N medians fit the line (R² >= 0.9); *grows* or *falls* when the CI excludes 0 without
    that fit; *flat* when the CI of the change over the whole N range stays within ±5% of the median;
    *no significant trend* otherwise. With `flat_slope` (value units per Service), *flat* instead means
    that the slope's whole CI lies within ±`flat_slope`: for differences, whose median may be near 0.
    """
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)]
    groups = [g["value"].to_numpy(float) for _, g in sub.groupby("services")]
    ns = np.array(sorted(sub["services"].unique()), dtype=float)
    if len(ns) < 2:
        raise LabError(f"{datapath}/{metric}/{target}: a slope needs at least two service counts")
    slope = fit(df, datapath, metric, target).slope
    meds = np.array([np.median(g) for g in groups])
    line = np.polyfit(ns, meds, 1)
    ss = ((meds - meds.mean()) ** 2).sum()
    r2m = float(1 - ((meds - np.polyval(line, ns)) ** 2).sum() / ss) if ss else 1.0
    rng = np.random.default_rng(seed)
    xs = np.concatenate([np.full(len(g), n) for n, g in zip(ns, groups, strict=True)])
    boots = np.empty(BOOTSTRAP)
    for b in range(BOOTSTRAP):
        ys = np.concatenate([rng.choice(g, size=len(g), replace=True) for g in groups])
        boots[b] = np.polyfit(xs, ys, 1)[0]
    a = (1 - CONFIDENCE) / 2
    lo, hi = float(np.quantile(boots, a)), float(np.quantile(boots, 1 - a))
    span, median = ns.max() - ns.min(), float(sub["value"].median())
    change = (lo * span / median, hi * span / median) if median else (float("nan"), float("nan"))
    if lo > 0:
        word = "grows linearly" if r2m >= LINEAR_R2 else "grows"
    elif hi < 0:
        word = "falls"
    elif (-flat_slope <= lo <= hi <= flat_slope) if flat_slope is not None else \
            (-FLAT_BAND <= change[0] <= change[1] <= FLAT_BAND):  # fmt: skip
        word = "flat"
    else:
        word = "no significant trend"
    return Trend(slope, lo, hi, r2m, change, min(len(g) for g in groups), word)


# ----------------------------------------------------------------------------- where the time goes

FLAT_TRANSIT = 0.01  # ns per Service: "flat" for a transit excess over none (100 ns over 10,000 Services)


def excess(df: pd.DataFrame, metric: str, datapath: str, target: str) -> pd.DataFrame:
    """`datapath`'s `metric` at `target` minus `none`'s (at the pod) in the same repeat and N, as rows of the
    tidy table (metric ``<metric>_excess``): what the datapath adds, with the machine's drift over the sweep,
    which both saw minutes apart, taken out."""
    sub = df[df["metric"] == metric]
    a = sub[(sub["datapath"] == datapath) & (sub["target"] == target)].set_index(["services", "repeat"])["value"]
    b = sub[(sub["datapath"] == "none") & (sub["target"] == "pod")].set_index(["services", "repeat"])["value"]
    d = (a - b).dropna().rename("value").reset_index()
    return d.assign(datapath=datapath, metric=f"{metric}_excess", target=target)

PARTS = ("transit", "stacks", "harness")  # of crr's p50, innermost first


def per_point(df: pd.DataFrame, metric: str, datapath: str, target: str) -> pd.DataFrame:
    """Median with its 95% CI per N of `metric` for `datapath` at `target` (`none`: at the pod, its only target),
    and the repeats behind each."""
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric)
             & (df["target"] == ("pod" if datapath == "none" else target))]  # fmt: skip
    rows = [{"services": n, **dict(zip(("median", "ci_lo", "ci_hi"), median_ci(g["value"]), strict=True)),
             "repeats": len(g)} for n, g in sub.groupby("services")]  # fmt: skip
    return pd.DataFrame(rows, columns=["services", "median", "ci_lo", "ci_hi", "repeats"])


def decomposition(df: pd.DataFrame, target: str, services: int) -> pd.DataFrame:
    """Where a crr transaction's p50 goes, per datapath at `target` and N = `services`, in µs:

    - ``transit``: the worker's own time, request plus reply (`transit` p50s, BPF stamps);
    - ``stacks``: handshake p50 minus transit: the client's and the pod's TCP stacks and the wires;
    - ``harness``: crr p50 minus handshake p50: what a full transaction adds to the handshake (the server's
      wakeup and accept, one byte each way, the close).

    Each part is the median over repeats of the difference within one repeat (the three metrics of a repeat
    were measured seconds apart), with its 95% bootstrap CI. Medians do not add exactly, so the parts are
    reported each with its own interval rather than as shares of a total."""
    sub = df[(df["services"] == services)]
    rows = []
    for d in [d for d in sub["datapath"].unique()]:
        t = "pod" if d == "none" else target
        s = sub[(sub["datapath"] == d) & (sub["target"] == t)].pivot_table(
            index="repeat", columns="metric", values="value", aggfunc="first")
        need = {"crr_p50", "handshake_p50", "transit_request_p50", "transit_reply_p50"}
        if not need <= set(s.columns):
            continue
        transit_us = (s["transit_request_p50"] + s["transit_reply_p50"]) / 1e3
        parts = {"crr": s["crr_p50"], "handshake": s["handshake_p50"], "transit": transit_us,
                 "stacks": s["handshake_p50"] - transit_us, "harness": s["crr_p50"] - s["handshake_p50"]}  # fmt: skip
        row = {"datapath": d, "target": t, "services": services, "repeats": len(s.dropna())}
        for name, v in parts.items():
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = median_ci(v.dropna())
        rows.append(row)
    return pd.DataFrame(rows)


def probe_cost(df: pd.DataFrame) -> pd.DataFrame:
    """The transit probe's own cost from a probe-overhead run, per datapath: each program's mean run time
    (ns, from the kernel's BPF statistics) and the paired handshake p50 difference with the probe attached
    and without, each the median over repeats with its 95% bootstrap CI."""
    rows = []
    for (d, metric), g in df[df["metric"].str.startswith("probe_")].groupby(["datapath", "metric"]):
        med, lo, hi = median_ci(g["value"])
        rows.append({"datapath": d, "metric": metric, "median": med, "ci_lo": lo, "ci_hi": hi, "repeats": len(g)})
    return pd.DataFrame(rows, columns=["datapath", "metric", "median", "ci_lo", "ci_hi", "repeats"])


FLAGS = ("crr", "handshake", "transit_request", "transit_reply")


def flagged(df: pd.DataFrame) -> pd.DataFrame:
    """Per datapath and sampled metric: how many samples there are, and how many were multimodal (more than
    one mode) or drifting (`distribution.flags`, recorded with every sample)."""
    rows = []
    for name in FLAGS:
        modes = df[df["metric"] == f"{name}_modes"]
        drift = df[df["metric"] == f"{name}_drifting"]
        for d, g in modes.groupby("datapath"):
            rows.append({"datapath": d, "metric": name, "samples": len(g), "multimodal": int((g["value"] > 1).sum()),
                         "drifting": int(drift[drift["datapath"] == d]["value"].sum())})  # fmt: skip
    return pd.DataFrame(rows, columns=["datapath", "metric", "samples", "multimodal", "drifting"])


# ----------------------------------------------------------------------------- programming benches

BENCH_METRICS = ("cold_apply_s", "change_apply_s", "change_e2e_s", "change_e2e_lo_s", "spawn_s", "map_calls_s",
                 "ratio_to_bare", "apply_s", "probe_hz")  # fmt: skip


def load_bench(run_ids: list[str], root: Path | None = None) -> pd.DataFrame:
    """`services bench` runs as one tidy table: datapath (with its release, e.g. ``nftables@1.35``), services,
    repeat, change (``cold`` for a run without ``--change``), metric, value, run_id, and target ``nodeport``
    (where the bench's client looks), so that `per_point` and `trend` take it as they take a sweep."""
    frames = []
    for run in run_ids:
        path = (root or paths.data_root()) / "processed" / f"{run}.csv"
        if not path.exists():
            raise LabError(f"no processed table {path}: run `labtools services bench ... --run-id {run}`")
        wide = pd.read_csv(path)
        if "change" not in wide:
            wide["change"] = "cold"
        keep = [m for m in BENCH_METRICS if m in wide]
        long = wide.melt(id_vars=["datapath", "services", "repeat", "change"], value_vars=keep, var_name="metric")
        frames.append(long.dropna(subset=["value"]).assign(run_id=run, target="nodeport"))
    return pd.concat(frames, ignore_index=True)
