"""From a sweep's tidy table to the numbers the paper quotes: medians with spread, ratios, slopes, verdicts.

Everything here is computed from `data/processed/<run>.csv`; nothing is typed in. Ratios compare
datapaths measured in the same run (interleaved within each repeat), never across runs.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

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


def recorded_params(run_id: str, root: Path | None = None) -> dict:
    """The parameters a run was measured with, from its manifest (``data/raw/<run>/manifest.json``); empty when
    the run has no raw manifest here."""
    path = (root or paths.data_root()) / "raw" / run_id / "manifest.json"
    return json.loads(path.read_text()).get("params", {}) if path.exists() else {}


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
#
# Every interval here states the coverage it has (tests/test_coverage.py checks each by simulation):
# - a median of R repeats gets the distribution-free interval between two order statistics, whose exact
#   coverage follows from the binomial distribution: the narrowest with at least 95% where R >= 6, else
#   [min, max] with its own, lower coverage (93.75% for 5 repeats, 75% for 3), named as such;
# - paired differences and log ratios (measured in the same block) get Student's t interval over blocks;
# - slopes against N get Student's t interval over the blocks' own slopes (each repeat is a block that
#   visits every N once), never a bootstrap of points, which ignores that the points of a block share a
#   moment of the machine's drift.

CONFIDENCE = 0.95
ALPHA = 0.05  # of the lack-of-fit test (the quadratic term) and of per-N tests before Holm's correction
FLAT_BAND = 0.05  # "flat": the whole CI of the change over the N range lies within ±5% of the median


@dataclass(frozen=True)
class Interval:
    """An estimate with its interval, the coverage that interval has, and how it was made."""

    estimate: float
    lo: float
    hi: float
    level: float  # exact for order statistics, nominal (normal errors) for t intervals
    n: int
    method: str

    @property
    def name(self) -> str:
        """How to call the interval in a sentence or a caption: '95% CI', or what it is when it is less."""
        return interval_name(self.level)


def interval_name(level: float) -> str:
    """'95% CI' when `level` reaches the confidence the package promises, else e.g. '93.8% interval'."""
    return f"{CONFIDENCE:.0%} CI" if level >= CONFIDENCE - 1e-12 else f"{level:.1%} interval"


def median_level(n: int) -> float:
    """The coverage of `median_interval` for `n` repeats (continuous data)."""
    return _order_statistic_pair(n)[1]


def _order_statistic_pair(n: int) -> tuple[int, float]:
    """(k, coverage): the narrowest pair x(k), x(n+1-k) (1-based) covering the median with >= 95%, or k = 1."""
    if n < 2:
        return 1, 0.0
    best = (1, 1 - 2 * stats.binom.cdf(0, n, 0.5))
    for k in range(2, n // 2 + 1):
        cover = 1 - 2 * stats.binom.cdf(k - 1, n, 0.5)
        if cover < CONFIDENCE:
            break
        best = (k, float(cover))
    return best[0], float(best[1])


def median_interval(values) -> Interval:
    """The median of `values` (the repeats of one point) between two of its order statistics."""
    x = np.sort(_finite(values))
    n = len(x)
    if n == 0:
        return Interval(float("nan"), float("nan"), float("nan"), 0.0, 0, "order statistics")
    k, level = _order_statistic_pair(n)
    return Interval(float(np.median(x)), float(x[k - 1]), float(x[n - k]), level, n, "order statistics")


def median_ci(values) -> tuple[float, float, float]:
    """(median, lo, hi) of `median_interval`; its coverage is `median_level(len(values))`, below 95% under 6."""
    i = median_interval(values)
    return i.estimate, i.lo, i.hi


def mean_interval(values) -> Interval:
    """The mean of `values` (paired differences, one per block) with Student's t 95% interval."""
    x = _finite(values)
    n = len(x)
    if n < 2:
        m = float(x.mean()) if n else float("nan")
        return Interval(m, float("nan"), float("nan"), 0.0, n, "t")
    half = stats.t.ppf(1 - ALPHA / 2, n - 1) * x.std(ddof=1) / np.sqrt(n)
    m = float(x.mean())
    return Interval(m, m - half, m + half, CONFIDENCE, n, "t")


def ratio_interval(ratios) -> Interval:
    """The geometric mean of paired ratios (one per block) with the t 95% interval of their logarithms."""
    r = _finite(ratios)
    r = r[r > 0]
    i = mean_interval(np.log(r))
    return Interval(float(np.exp(i.estimate)), float(np.exp(i.lo)), float(np.exp(i.hi)), i.level, i.n, "t on logs")


def _finite(values) -> np.ndarray:
    x = np.asarray(values, dtype=float)
    return x[np.isfinite(x)]


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjustment of `pvalues` (family-wise error rate), in the given order."""
    p = np.asarray(pvalues, dtype=float)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def paired_ratio_ci(df: pd.DataFrame, metric: str, num: str, den: str, num_target: str,
                    den_target: str | None = None) -> pd.DataFrame:  # fmt: skip
    """`num`/`den` per services count, paired within each repeat (the same block of the same run): the
    geometric mean ratio with its t 95% CI over repeats (`ratio_interval`), the two-sided p-value of
    "ratio = 1" (a t test on the log ratios), and the repeats behind it."""
    den_target = den_target or num_target
    sub = df[df["metric"] == metric]
    a = sub[(sub["datapath"] == num) & (sub["target"] == num_target)].set_index(["services", "repeat"])["value"]
    b = sub[(sub["datapath"] == den) & (sub["target"] == den_target)].set_index(["services", "repeat"])["value"]
    r = (a / b).dropna().rename("ratio").reset_index()
    rows = []
    for n, g in r.groupby("services"):
        i = ratio_interval(g["ratio"])
        logs = np.log(g["ratio"][g["ratio"] > 0])
        p = float(stats.ttest_1samp(logs, 0.0).pvalue) if len(logs) > 1 and logs.std() > 0 else float("nan")
        rows.append({"services": n, "median": i.estimate, "ci_lo": i.lo, "ci_hi": i.hi, "p": p, "repeats": i.n})
    return pd.DataFrame(rows, columns=["services", "median", "ci_lo", "ci_hi", "p", "repeats"])


@dataclass(frozen=True)
class Trend:
    """A slope against N with its 95% CI over blocks, the shape of the curve, and the word that follows both."""

    slope: float  # value units per Service: the mean of the blocks' least-squares slopes
    ci_lo: float
    ci_hi: float
    r2_medians: float  # of the pooled line through the per-N medians (descriptive only)
    change: tuple[float, float]  # the CI of the fitted change over the N range, relative to the median
    repeats: int  # blocks with at least two values of N
    word: str  # "grows linearly", "grows faster than linearly", "grows slower than linearly", "grows",
    # "falls", "flat", "no significant trend"
    curvature_p: float = float("nan")  # lack of fit: t test over blocks of the quadratic term
    exponent: Interval | None = None  # value ~ N^k: k over blocks (log-log), where every value is positive


def _block_fits(sub: pd.DataFrame) -> pd.DataFrame:
    """Per block (repeat): least-squares slope, the quadratic coefficient (N scaled to [0, 1]) and the
    log-log slope, each where the block has enough distinct N."""
    nmax = float(sub["services"].max()) or 1.0
    rows = []
    for r, g in sub.groupby("repeat"):
        x, y = g["services"].to_numpy(float), g["value"].to_numpy(float)
        if len(np.unique(x)) < 2:
            continue
        row = {"repeat": r, "slope": float(np.polyfit(x, y, 1)[0]), "quad": float("nan"), "loglog": float("nan")}
        if len(np.unique(x)) >= 3:
            row["quad"] = float(np.polyfit(x / nmax, y, 2)[0])
        if (x > 0).all() and (y > 0).all():
            row["loglog"] = float(np.polyfit(np.log(x), np.log(y), 1)[0])
        rows.append(row)
    return pd.DataFrame(rows, columns=["repeat", "slope", "quad", "loglog"])


def trend(df: pd.DataFrame, datapath: str, metric: str, target: str, *,
          flat_slope: float | None = None) -> Trend:  # fmt: skip
    """How `metric` at `target` changes with N for `datapath`, and what may be said of it.

    The slope's 95% CI is Student's t over the blocks' own slopes (each repeat visits every N once). The
    verdict follows the CI, never the point estimate: *flat* when the CI of the change over the whole N range
    stays within ±5% of the median (an equivalence test, so it comes first); *grows linearly* when the CI
    lies above 0 and the lack-of-fit test (the blocks' quadratic terms, t test, 5%) does not reject a line
    (with only two N the shape is untested: *grows*); *grows faster* or *slower than linearly* when it does;
    *falls* when the CI lies below 0; *no significant trend* otherwise. With
    `flat_slope` (value units per Service), *flat* instead means that the slope's whole CI lies within
    ±`flat_slope`: for differences, whose median may be near 0.
    """
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)]
    ns = np.array(sorted(sub["services"].unique()), dtype=float)
    if len(ns) < 2:
        raise LabError(f"{datapath}/{metric}/{target}: a slope needs at least two service counts")
    blocks = _block_fits(sub)
    s = mean_interval(blocks["slope"])
    meds = sub.groupby("services")["value"].median().to_numpy(float)
    line = np.polyfit(ns, meds, 1)
    ss = ((meds - meds.mean()) ** 2).sum()
    r2m = float(1 - ((meds - np.polyval(line, ns)) ** 2).sum() / ss) if ss else 1.0
    quad = _finite(blocks["quad"])
    curvature_p = float(stats.ttest_1samp(quad, 0.0).pvalue) if len(quad) > 1 and quad.std() > 0 else float("nan")
    loglog = _finite(blocks["loglog"])
    exponent = mean_interval(loglog) if len(loglog) == len(blocks) and len(loglog) > 1 else None
    span, median = ns.max() - ns.min(), float(sub["value"].median())
    change = (s.lo * span / median, s.hi * span / median) if median else (float("nan"), float("nan"))
    flat = (-flat_slope <= s.lo <= s.hi <= flat_slope) if flat_slope is not None else \
        (-FLAT_BAND <= change[0] <= change[1] <= FLAT_BAND)  # fmt: skip
    if flat:  # equivalence first: a whole CI inside the band is "flat", however significant its sign
        word = "flat"
    elif s.lo > 0:
        if not curvature_p < ALPHA:  # NaN (too few N to test the shape) reads as "not rejected"
            word = "grows linearly" if len(ns) >= 3 else "grows"
        else:
            word = "grows faster than linearly" if quad.mean() > 0 else "grows slower than linearly"
    elif s.hi < 0:
        word = "falls"
    else:
        word = "no significant trend"
    return Trend(s.estimate, s.lo, s.hi, r2m, change, s.n, word, curvature_p, exponent)


def growth(t: Trend) -> bool:
    """Whether a trend word says the metric grows with N (linearly or not)."""
    return t.word.startswith("grows")


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

@dataclass(frozen=True)
class Resolution:
    """What a datapath adds over `none` at one N, paired within blocks, and what pairing bought."""

    datapath: str
    services: int
    metric: str
    excess: Interval  # mean paired excess (ns) with its t 95% interval over blocks
    drift_share: float  # the share of the two samples' variance common to both (drift), removed by pairing
    apart_s: float  # median time between the datapath's sample and none's within a block

    @property
    def half_width(self) -> float:
        return (self.excess.hi - self.excess.lo) / 2


def resolution(df: pd.DataFrame, datapath: str, services: int, metric: str = "transit_request_p50",
               target: str = "last") -> Resolution:  # fmt: skip
    """`datapath`'s `metric` at `target` minus none's at the pod, paired within each block at `services`: the
    mean excess with its t interval (`mean_interval`), and the drift share, 1 - var(paired difference) /
    (var(datapath) + var(none)): near 0 when the two vary independently, near 1 when a common drift dominated."""
    at = df[df["services"] == services]
    ex = excess(at, metric, datapath, target)
    i = mean_interval(ex["value"])
    sub = at[at["metric"] == metric]
    a = sub[(sub["datapath"] == datapath) & (sub["target"] == target)].set_index("repeat")
    b = sub[(sub["datapath"] == "none") & (sub["target"] == "pod")].set_index("repeat")
    both = a.index.intersection(b.index)
    a, b = a.loc[both], b.loc[both]
    unpaired = a["value"].var(ddof=1) + b["value"].var(ddof=1)
    share = float(1 - ex["value"].var(ddof=1) / unpaired) if len(both) > 1 and unpaired > 0 else float("nan")
    apart = float((a["t_start_s"] - b["t_start_s"]).abs().median()) if "t_start_s" in a else float("nan")
    return Resolution(datapath, int(services), metric, i, share, apart)


def sessions(run_id: str, root: Path | None = None) -> list[tuple[int, int]]:
    """The blocks of a run measured in one go, as [first, end) ranges: the run's first repeats, then each later
    extension (the manifest's ``extended``). Blocks of different sessions ran on different lab instances."""
    path = (root or paths.data_root()) / "raw" / run_id / "manifest.json"
    man = json.loads(path.read_text()) if path.exists() else {}
    ext = man.get("extended", [])
    repeats = int(man.get("params", {}).get("repeats", 0))
    first = ext[0]["repeats"][0] if ext else repeats
    return [(0, first)] + [(int(e["repeats"][0]), int(e["repeats"][1])) for e in ext]


def sessions_differ(df: pd.DataFrame, datapath: str, services: int, metric: str, target: str,
                    spans: list[tuple[int, int]]) -> float:  # fmt: skip
    """Welch's t test p value of the paired excess between the first two sessions (nan with one session)."""
    if len(spans) < 2:
        return float("nan")
    parts = [excess(df[(df["services"] == services) & df["repeat"].between(lo, hi - 1)], metric, datapath,
                    target)["value"] for lo, hi in spans[:2]]  # fmt: skip
    return float(stats.ttest_ind(parts[0], parts[1], equal_var=False).pvalue)


PARTS = ("transit", "stacks", "harness")  # of crr's p50, innermost first


def per_point(df: pd.DataFrame, metric: str, datapath: str, target: str) -> pd.DataFrame:
    """Median per N of `metric` for `datapath` at `target` (`none`: at the pod, its only target) with its
    order-statistic interval (`median_interval`; `level` is that interval's coverage), and the repeats."""
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric)
             & (df["target"] == ("pod" if datapath == "none" else target))]  # fmt: skip
    rows = []
    for n, g in sub.groupby("services"):
        i = median_interval(g["value"])
        rows.append({"services": n, "median": i.estimate, "ci_lo": i.lo, "ci_hi": i.hi, "level": i.level,
                     "repeats": i.n})  # fmt: skip
    return pd.DataFrame(rows, columns=["services", "median", "ci_lo", "ci_hi", "level", "repeats"])


def decomposition(df: pd.DataFrame, target: str, services: int) -> pd.DataFrame:
    """Where a crr transaction's p50 goes, per datapath at `target` and N = `services`, in µs:

    - ``transit``: the worker's own time, request plus reply (`transit` p50s, BPF stamps);
    - ``stacks``: handshake p50 minus transit: the client's and the pod's TCP stacks and the wires;
    - ``harness``: crr p50 minus handshake p50: what a full transaction adds to the handshake (the server's
      wakeup and accept, one byte each way, the close).

    Each part is the mean over repeats of the difference within one repeat (the three metrics of a repeat
    were measured seconds apart), with its t 95% CI (`mean_interval`); means add, so crr = transit + stacks +
    harness holds for the estimates."""
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
            i = mean_interval(v.dropna())
            row[name], row[f"{name}_lo"], row[f"{name}_hi"] = i.estimate, i.lo, i.hi
        rows.append(row)
    return pd.DataFrame(rows)


def probe_cost(df: pd.DataFrame) -> pd.DataFrame:
    """The transit probe's own cost from a probe-overhead run, per datapath: each program's mean run time
    (ns, from the kernel's BPF statistics; the median over repeats with its order-statistic interval) and
    the handshake p50 with the probe attached minus without, paired within each repeat (the mean with its t
    95% CI). `level` is each interval's coverage."""
    rows = []
    for (d, metric), g in df[df["metric"].str.startswith("probe_")].groupby(["datapath", "metric"]):
        i = mean_interval(g["value"]) if metric == "probe_handshake_delta" else median_interval(g["value"])
        rows.append({"datapath": d, "metric": metric, "median": i.estimate, "ci_lo": i.lo, "ci_hi": i.hi,
                     "level": i.level, "repeats": i.n})  # fmt: skip
    return pd.DataFrame(rows, columns=["datapath", "metric", "median", "ci_lo", "ci_hi", "level", "repeats"])


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


def order_confounding(df: pd.DataFrame) -> pd.DataFrame:
    """Per run and datapath: Spearman's rank correlation between N and the time each sample started, over the
    samples of one metric and target (near 0 in a randomised block design; near 1 when N followed the clock).
    Empty for runs recorded before samples carried their start time (``t_start_s``)."""
    cols = ["run_id", "datapath", "samples", "rho"]
    if "t_start_s" not in df:
        return pd.DataFrame(columns=cols)
    rows = []
    timed = df.dropna(subset=["t_start_s"])
    for (run, d), g in timed.groupby(["run_id", "datapath"]):
        first = g.drop_duplicates(["services", "repeat", "target", "t_start_s"])  # one row per sample
        if first["services"].nunique() < 2:
            continue
        rho = stats.spearmanr(first["services"], first["t_start_s"]).statistic
        rows.append({"run_id": run, "datapath": d, "samples": len(first), "rho": float(rho)})
    return pd.DataFrame(rows, columns=cols)
