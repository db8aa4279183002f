"""The shape of a sample distribution: is it one mode or several, and how many samples each holds.

A connect() latency on 2 vCPUs is often bimodal (about 10 or 20 µs, by where the softirq ran); a
median of such samples describes neither mode, so every handshake sample records its modes.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
from scipy.signal import find_peaks
from scipy.stats import gaussian_kde, mannwhitneyu

MIN_SHARE = 0.05  # a mode holds at least this share of the samples
MIN_PROMINENCE = 0.1  # of the density's highest peak, on a log-time axis


def modes(samples: Sequence[float]) -> list[dict]:
    """The modes of `samples` (positive times): each with its centre and the share of samples in it.

    Found as the peaks of a Gaussian kernel density of log(samples) (Scott's bandwidth) that stand out
    by at least `MIN_PROMINENCE` of the highest peak; the samples are split between modes at the density's
    minima. Modes holding fewer than `MIN_SHARE` of the samples are dropped (and their samples with them).
    """
    x = np.log(np.asarray([s for s in samples if s > 0], dtype=float))
    if len(x) < 20 or np.ptp(x) == 0:
        return [{"centre": float(np.exp(np.median(x))) if len(x) else float("nan"), "share": 1.0}]
    grid = np.linspace(x.min(), x.max(), 512)
    density = gaussian_kde(x)(grid)
    peaks, _ = find_peaks(np.r_[0, density, 0], prominence=MIN_PROMINENCE * density.max())
    peaks = peaks - 1
    if len(peaks) <= 1:
        return [{"centre": float(np.exp(np.median(x))), "share": 1.0}]
    cuts = [grid[a + int(np.argmin(density[a:b]))] for a, b in itertools.pairwise(peaks)]
    parts = np.split(np.sort(x), np.searchsorted(np.sort(x), cuts))
    out = [{"centre": float(np.exp(np.median(p))), "share": len(p) / len(x)} for p in parts if len(p)]
    kept = [m for m in out if m["share"] >= MIN_SHARE]
    return kept or [{"centre": float(np.exp(np.median(x))), "share": 1.0}]


DRIFT_BAND = 0.05  # a drift smaller than this share of the median is not flagged, however significant
DRIFT_ALPHA = 0.001  # Mann-Whitney U, first third against last third of the samples in measuring order


def drift(samples: Sequence[float]) -> tuple[float, float]:
    """How far the samples moved while they were taken: the last third's median relative to the first
    third's (signed), and the two-sided Mann-Whitney U p-value of the two thirds (samples in measuring order)."""
    x = np.asarray(samples, dtype=float)
    if len(x) < 30:
        return 0.0, 1.0
    k = len(x) // 3
    first, last = x[:k], x[-k:]
    base = float(np.median(first))
    change = float(np.median(last)) / base - 1 if base else 0.0
    return change, float(mannwhitneyu(first, last, alternative="two-sided").pvalue)


def flags(samples: Sequence[float]) -> dict:
    """The shape of one sample's distribution as data: how many modes, the main mode's share, the drift and
    whether it drifted (beyond ±`DRIFT_BAND` of the median at p < `DRIFT_ALPHA`)."""
    found = modes(samples)
    change, p = drift(samples)
    return {"modes": len(found), "main_mode_share": max(m["share"] for m in found), "drift": change,
            "drifting": int(abs(change) > DRIFT_BAND and p < DRIFT_ALPHA)}  # fmt: skip
