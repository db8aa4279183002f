"""Every interval the package calls "95%" covers the truth at least 95% of the time: simulations with a known
truth, the package's own estimators, at least 2,000 draws each, and the repeat counts the profiles use.

An interval below 95% (the median of fewer than 6 repeats) must say what it is: its `level` is checked
against the simulated coverage, and its name must not be "95% CI".
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from labtools.outputs import analysis

DRAWS = 4000
# The repeat counts of params/quick.yaml and params/full.yaml (sweeps 3 and 5, benches 2 and 3), and more; the
# resolution sweep's 20 blocks have a test of their own, through `analysis.resolution`.
REPEATS = (2, 3, 5, 8)


def at_least(level: float, hits: int, draws: int) -> bool:
    """Whether `hits` of `draws` is consistent with a coverage of at least `level` (one-sided, 1%)."""
    return hits / draws >= level - 2.33 * math.sqrt(level * (1 - level) / draws)


def near(level: float, hits: int, draws: int) -> bool:
    """Whether `hits` of `draws` is consistent with a coverage of exactly `level` (two-sided, 1%)."""
    return abs(hits / draws - level) <= 2.58 * math.sqrt(level * (1 - level) / draws)


@pytest.mark.parametrize("repeats", REPEATS)
def test_the_median_interval_states_its_own_coverage(repeats):
    rng = np.random.default_rng(repeats)
    truth = math.exp(0.0)  # the median of a log-normal(0, 0.4): skewed like a latency
    hits = 0
    for _ in range(DRAWS):
        i = analysis.median_interval(rng.lognormal(0.0, 0.4, repeats))
        hits += i.lo <= truth <= i.hi
    level = analysis.median_level(repeats)
    print(f"coverage: median_interval, {repeats} repeats: {hits / DRAWS:.3f} (stated {level:.3f})")
    assert near(level, hits, DRAWS), (repeats, hits / DRAWS, level)
    assert (analysis.interval_name(level) == "95% CI") == (level >= 0.95)
    if repeats == 5:
        assert level == pytest.approx(0.9375) and analysis.interval_name(level) == "93.8% interval"


@pytest.mark.parametrize("repeats", REPEATS)
def test_the_paired_difference_ci_covers_95(repeats):
    """Paired differences (e.g. a transit excess over none): normal errors around a true difference."""
    rng = np.random.default_rng(100 + repeats)
    hits = 0
    for _ in range(DRAWS):
        i = analysis.mean_interval(0.8 + rng.normal(0.0, 0.3, repeats))
        hits += i.lo <= 0.8 <= i.hi
    print(f"coverage: mean_interval (paired difference), {repeats} repeats: {hits / DRAWS:.3f}")
    assert at_least(0.95, hits, DRAWS), (repeats, hits / DRAWS)


@pytest.mark.parametrize("repeats", REPEATS)
def test_the_paired_ratio_ci_covers_95(repeats):
    """Ratios of two metrics measured in one block: multiplicative (log-normal) noise around a true ratio."""
    rng = np.random.default_rng(200 + repeats)
    hits = 0
    for _ in range(DRAWS):
        i = analysis.ratio_interval(1.3 * rng.lognormal(0.0, 0.25, repeats))
        hits += i.lo <= 1.3 <= i.hi
    print(f"coverage: ratio_interval (paired log ratio), {repeats} repeats: {hits / DRAWS:.3f}")
    assert at_least(0.95, hits, DRAWS), (repeats, hits / DRAWS)


COUNTS = np.array([1, 1000, 2000, 4000, 7000, 10000])


def sweep(rng, repeats: int, slope: float, *, randomised: bool, drift: float) -> pd.DataFrame:
    """A simulated sweep: each repeat a block visiting every N once, with a block offset, a drift that grows
    over the block's minutes, and noise; N in random order within each block, or in time order."""
    rows = []
    for r in range(repeats):
        order = rng.permutation(COUNTS) if randomised else COUNTS
        offset = rng.normal(0.0, 5.0)
        for k, n in enumerate(order):
            value = 50.0 + slope * n + offset + drift * k + rng.normal(0.0, 2.0)
            rows.append({"datapath": "x", "metric": "m", "target": "last", "services": n, "repeat": r,
                         "value": value})  # fmt: skip
    return pd.DataFrame(rows)


@pytest.mark.parametrize("repeats", (3, 5))
def test_the_slope_ci_over_blocks_covers_95_when_n_is_randomised(repeats):
    rng = np.random.default_rng(300 + repeats)
    draws, hits, slope = 2000, 0, 0.004
    for _ in range(draws):
        t = analysis.trend(sweep(rng, repeats, slope, randomised=True, drift=1.5), "x", "m", "last")
        hits += t.ci_lo <= slope <= t.ci_hi
    print(f"coverage: trend slope over blocks (N randomised), {repeats} blocks: {hits / draws:.3f}")
    assert at_least(0.95, hits, draws), (repeats, hits / draws)


def test_a_sweep_in_time_order_turns_drift_into_slope():
    """The design matters: the same estimator on N visited in time order misses the true slope far more
    often than 5% (so the sweep randomises N within blocks)."""
    rng = np.random.default_rng(400)
    draws, hits, slope = 2000, 0, 0.004
    for _ in range(draws):
        t = analysis.trend(sweep(rng, 5, slope, randomised=False, drift=1.5), "x", "m", "last")
        hits += t.ci_lo <= slope <= t.ci_hi
    print(f"coverage: trend slope over blocks (N in time order), 5 blocks: {hits / draws:.3f}")
    assert hits / draws < 0.5


def test_a_curve_is_not_called_linear():
    """A cost that grows as N^2 (say, an excess over none): the lack-of-fit test rejects the line, and the
    power-law exponent's interval lies above 1."""
    rng = np.random.default_rng(500)
    rows = []
    for r in range(5):
        for n in rng.permutation(COUNTS):
            rows.append({"datapath": "x", "metric": "m", "target": "last", "services": n, "repeat": r,
                         "value": 1e-6 * n**2 * rng.lognormal(0.0, 0.1)})  # fmt: skip
    t = analysis.trend(pd.DataFrame(rows), "x", "m", "last")
    assert t.word == "grows faster than linearly" and t.curvature_p < 0.05
    assert t.exponent is not None and 1.5 < t.exponent.lo < 2 < t.exponent.hi
    line = analysis.trend(sweep(np.random.default_rng(501), 5, 0.004, randomised=True, drift=0.0), "x", "m", "last")
    assert line.word == "grows linearly"


def test_holm_adjusts_in_step_down_order():
    assert list(analysis.holm([0.01, 0.04, 0.03])) == pytest.approx([0.03, 0.06, 0.06])
    assert list(analysis.holm([0.5])) == [0.5]


def test_the_resolution_interval_covers_95_with_drift_between_blocks():
    """The resolution sweep (20 blocks): a datapath's excess over none, paired within blocks that drift apart
    from each other, through `analysis.resolution` itself."""
    rng = np.random.default_rng(600)
    draws, hits, excess, blocks = 2000, 0, 250.0, 20
    keys = pd.DataFrame([{"datapath": d, "target": t, "services": 10000, "repeat": r, "metric": "transit_request_p50",
                          "t_start_s": 60.0 * r + 4 * k}
                         for r in range(blocks) for k, (d, t) in enumerate((("none", "pod"), ("ebpf", "last")))])
    for _ in range(draws):
        drift = np.repeat(rng.normal(0, 300, blocks), 2)  # the machine's speed, shared within a block
        df = keys.assign(value=2000 + drift + np.tile([0.0, excess], blocks) + rng.lognormal(4, 0.5, 2 * blocks))
        i = analysis.resolution(df, "ebpf", 10000).excess
        hits += i.lo <= excess <= i.hi
    print(f"coverage: resolution (paired excess, drifting blocks), {blocks} blocks: {hits / draws:.3f}")
    assert at_least(0.95, hits, draws), hits / draws
