"""From a sweep's tidy table to the numbers the paper quotes: medians with spread, ratios, slopes, verdicts.

Everything here is computed from `data/processed/<run>.csv`; nothing is typed in. Ratios compare
datapaths measured in the same run (interleaved within each repeat), never across runs.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from labtools import paths
from labtools.errors import LabError
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
    per-N medians, which a few outlying repeats of a noisy machine do not dominate.
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
        rows.append({"datapath": d, "ns_per_service": f.slope * 1e3, "r2": f.r2, "r2_medians": fm.r2, "services": nmax,
                     "median_us": float(at.median()), "ratio_to_none": float(at.median()) / base,
                     "pod_ratio_to_none": float(pod.median()) / base if len(pod) else float("nan")})  # fmt: skip
    return pd.DataFrame(rows)


def is_flat(df: pd.DataFrame, datapath: str, target: str, metric: str = "throughput", tolerance: float = 0.10) -> bool:
    """Whether the fitted change of `metric` over the whole N range stays within `tolerance` of its median."""
    sub = df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)]
    f = fit(df, datapath, metric, target)
    span = sub["services"].max() - sub["services"].min()
    return abs(f.slope * span) <= tolerance * float(sub["value"].median())


def within(df: pd.DataFrame, datapath: str, target: str, metric: str = "crr_p50", limit: float = 1.15) -> float:
    """The largest ratio of `datapath`'s median to `none`'s (same N), over all N; compare with `limit`.

    NaN when the run has no `none` datapath (a real cluster)."""
    if not (df["datapath"] == "none").any():
        return float("nan")
    worst = 0.0
    for n, sub in df[(df["datapath"] == datapath) & (df["metric"] == metric) & (df["target"] == target)].groupby(
        "services"
    ):
        worst = max(worst, float(sub["value"].median()) / baseline(df, metric, int(n)))
    return worst
