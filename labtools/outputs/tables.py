"""The LaTeX tables the notebooks write into ``paper/tables/``: booktabs tabulars, every cell escaped with
`labtools.outputs.paper.tex_escape` (the one escaper), headers given as LaTeX.

- `sweep_summary`: notebook 01's summary table (slope per Service, R², ratios to `none`);
- `srv6_headers`: notebook 02's IPv6/SRH header fields at each capture point (`srv6view.header_rows`);
- `thesis_comparison`: notebook 02's field-by-field comparison with the thesis (`srv6view.compare_with_thesis`);
- `srv6_matrix`: notebook 02's reachability matrix, ingress mode by datapath and target (`srv6view.reachability_grid`),
  and `srv6_matrix_notes`, why each cell is what it is;
- `transit_summary`: notebook 01's transit table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

import pandas as pd

from labtools.outputs import analysis
from labtools.outputs.paper import tex_escape

EMPTY = "--"  # a missing number (e.g. a ratio to `none` on a cluster, which has no `none`)


def tabular(header: Sequence[str], rows: Sequence[Sequence[object]], column_format: str, *,
            above: Sequence[str] = ()) -> str:  # fmt: skip
    """A booktabs ``tabular``: the `header` row (LaTeX cells) above `rows`, whose cells are escaped with
    `tex_escape`. `above`: LaTeX lines between ``\\toprule`` and the header (a grouping row and its
    ``\\cmidrule``s)."""
    lines = [rf"\begin{{tabular}}{{{column_format}}}", r"\toprule", *above, " & ".join(header) + r" \\", r"\midrule"]
    lines += [" & ".join(tex_escape(c) for c in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}", ""]
    return "\n".join(lines)


def stacked(*lines: str) -> str:
    """A header cell of several lines (each escaped), so that a table of many columns fits the text width."""
    # `\\{}`: a line that starts with "[" must not read as the optional length of `\\`
    return r"\begin{tabular}[b]{@{}c@{}}" + r" \\{} ".join(tex_escape(x) for x in lines) + r"\end{tabular}"


def _number(v: object, fmt: str = ".2f") -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return EMPTY
    return format(v, fmt)


def _blank(v: object) -> str:
    """A cell that may be missing: NaN and <NA> become empty."""
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


# -- notebook 01 ------------------------------------------------------------------------------------------------


def _with_ci(v: object, lo: object, hi: object, fmt: str = ".2f") -> str:
    """An estimate and its interval in brackets, or an empty cell."""
    if _number(v, fmt) == EMPTY:
        return EMPTY
    return f"{_number(v, fmt)} [{_number(lo, fmt)}, {_number(hi, fmt)}]"


def sweep_summary(table: pd.DataFrame) -> str:
    """The sweep summary (``sweep-summary.tex``) from `verdicts.summary_table`: per datapath the slope in ns per
    Service with its 95% CI and verdict word, R² through the per-N medians, the p50 at the largest N, and
    the ratios to `none` paired within repeats, with 95% CIs (NodePort, pod IP; udp-pps when measured)."""
    nmax = int(table["services"].max())
    has = {"udp_pps_ratio_to_none": "udp_pps_ratio_to_none" in table}
    header = ["datapath", stacked("ns per Service", "[95% CI]"), "trend", stacked("R²", "(medians)"),
              stacked(f"p50 at {nmax:,}", "(µs)"), stacked("÷ none", "[95% CI]"), stacked("pod ÷ none", "[95% CI]")]
    if has["udp_pps_ratio_to_none"]:
        header.append(stacked("udp-pps", "÷ none"))
    rows = []
    for _, r in table.iterrows():
        row = [r["datapath"], _with_ci(r["ns_per_service"], r["ns_ci_lo"], r["ns_ci_hi"], ".1f"), r["trend"],
               _number(r["r2_medians"]), _number(r["median_us"], ".1f"),
               *(_with_ci(r[c], r.get(f"{c}_lo"), r.get(f"{c}_hi")) for c in ("ratio_to_none", "pod_ratio_to_none"))]
        if has["udp_pps_ratio_to_none"]:
            row.append(_number(r["udp_pps_ratio_to_none"]))
        rows.append(row)
    return tabular(header, rows, "l" + "r" * (len(header) - 1))


# -- notebook 02 ------------------------------------------------------------------------------------------------

HEADER_COLUMNS = ("point", "header", "src", "dst", "nh", "hlim", "plen", "flow", "segleft", "segments")


def srv6_headers(rows: pd.DataFrame) -> str:
    """The IPv6 and SRH headers of one packet at each capture point (``srv6-headers-{request,reply}.tex``), from
    `srv6view.header_rows`; the flow label in hex, fields a header does not have left empty."""
    rows_out = []
    for _, r in rows.iterrows():
        flow = "" if pd.isna(r["flow"]) else f"0x{int(r['flow']):05x}"
        rows_out.append([_blank(r[c]) if c != "flow" else flow for c in HEADER_COLUMNS])
    return tabular([tex_escape(c) for c in HEADER_COLUMNS], rows_out, "llllrrrrrl")


def _arrow(v: object) -> str:
    return str(v).replace("->", "→")  # tex_escape makes it $\rightarrow$


def thesis_comparison(checks: pd.DataFrame) -> str:
    """The comparison with the thesis' Figs. 38-42 (``srv6-thesis-comparison.tex``) from
    `srv6view.compare_with_thesis`: field, the thesis' value, the measured one, and whether they agree."""
    rows = [[_arrow(r.field), _arrow(r.thesis), _arrow(r.measured), "yes" if r.same else "no"]
            for r in checks.itertuples()]  # fmt: skip
    return tabular(["field", "thesis", "measured", "same"], rows, "p{6.2cm}llr")


def srv6_matrix(grid: pd.DataFrame) -> str:
    """The reachability matrix (``srv6-matrix.tex``) from `srv6view.reachability_grid`: one row per ingress
    mode, a column group per datapath with one column per target."""
    datapaths = list(dict.fromkeys(d for d, _ in grid.columns))
    grid = grid[[c for d in datapaths for c in grid.columns if c[0] == d]]  # each datapath's columns together
    widths = [sum(1 for c in grid.columns if c[0] == d) for d in datapaths]
    groups = [rf"\multicolumn{{{n}}}{{c}}{{{tex_escape(d)}}}" for d, n in zip(datapaths, widths, strict=True)]
    group = " & ".join(["", *groups])
    starts = [2 + sum(widths[:i]) for i in range(len(widths))]
    rules = "".join(rf"\cmidrule(lr){{{a}-{a + n - 1}}}" for a, n in zip(starts, widths, strict=True))
    header = ["mode", *(tex_escape(t) for _, t in grid.columns)]
    rows = [[mode, *(_blank(v) for v in values)] for mode, values in zip(grid.index, grid.to_numpy(), strict=True)]
    return tabular(header, rows, "l" + "c" * len(grid.columns), above=[group + r" \\", rules])


def srv6_matrix_notes(M: pd.DataFrame) -> str:
    """Why each cell of the reachability matrix is what it is (``srv6-matrix-notes.tex``): one row per ingress
    mode and datapath with the kernel path its traffic took, as the matrix run recorded it."""
    notes = M.dropna(subset=["notes"]).drop_duplicates(["mode", "datapath"])
    rows = [[r.mode, r.datapath, r.notes] for r in notes.itertuples()]
    return tabular(["mode", "datapath", "what happens to the traffic"], rows, "llp{0.62\\linewidth}")


def transit_summary(tt: pd.DataFrame) -> str:
    """The worker's transit time (``transit-summary.tex``) from `verdicts.transit_table`: per datapath, target and
    direction, the p50 at the smallest and largest N with their order-statistic intervals (µs, named by their
    lowest coverage), and the slope of the excess over `none`
    in ns per Service with its CI and verdict word (`none` itself: its own slope)."""

    def us(v: float, lo: float, hi: float) -> str:
        return _with_ci(v / 1e3, lo / 1e3, hi / 1e3)

    rows = []
    for r in tt.itertuples():
        own = r.datapath == "none"
        slope = (r.slope_ns, r.slope_lo, r.slope_hi, r.trend) if own else \
            (r.excess_slope_ns, r.excess_lo, r.excess_hi, r.excess_trend)  # fmt: skip
        rows.append([r.datapath, r.target, r.direction, us(r.median_first, r.ci_lo_first, r.ci_hi_first),
                     us(r.median_last, r.ci_lo_last, r.ci_hi_last), _with_ci(*slope[:3], ".3f"), slope[3]])  # fmt: skip
    nmin, nmax = (f"{int(n):,}" for n in (tt.attrs.get("nmin", 0), tt.attrs.get("nmax", 0)))
    name = analysis.interval_name(min(tt["level_first"].min(), tt["level_last"].min()))
    header = ["datapath", "target", "packet", stacked(f"p50 at N = {nmin}", f"(µs) [{name}]"),
              stacked(f"p50 at N = {nmax}", f"(µs) [{name}]"), stacked("ns per Service", "over none [95% CI]"),
              "trend"]  # fmt: skip
    return tabular(header, rows, "lllrrrl")


def claims(frame: pd.DataFrame, *, thesis: bool = True) -> str:
    """The claims ledger (``claims.tex``) or our findings (``findings.tex``, `thesis=False`) from
    `labtools.outputs.claims.as_frame`: the claim, (the thesis' evidence,) our measurement, the test, the verdict."""
    if thesis:
        header = ["claim", "thesis' evidence", "measured", "test", "verdict", "see"]
        cols = ["claim", "thesis", "measured", "test", "verdict", "ref"]
        widths = (0.16, 0.11, 0.33, 0.13, 0.09, 0.07)  # with \tabcolsep 3pt: within the text width
    else:
        header = ["finding", "measured", "test", "verdict", "see"]
        cols = ["claim", "measured", "test", "verdict", "ref"]
        widths = (0.2, 0.42, 0.13, 0.08, 0.07)
    rows = [[(_REF + r[c] if c == "ref" else r[c]) for c in cols] for _, r in frame.iterrows()]
    fmt = "".join(f">{{\\raggedright\\arraybackslash}}p{{{w}\\linewidth}}" for w in widths)
    return _refs(tabular(header, rows, fmt))


_REF = "REFCELL:"  # a cell holding a reference ("Fig. fig:crr"): made a LaTeX \\ref after escaping
_REF_KINDS = {"Fig.": "Fig.", "Table": "Tab.", "Chap.": "Ch."}


def _refs(tex: str) -> str:
    def one(m: re.Match) -> str:
        kind, _, label = m.group(1).partition(" ")
        return f"{_REF_KINDS[kind]}~\\ref{{{label}}}" if kind in _REF_KINDS and label else EMPTY

    return re.sub(r"REFCELL:([^&\\]*?)(?= \\\\| &)", lambda m: one(m), tex)


# -- notebook 04 ------------------------------------------------------------------------------------------------


def programming(table: pd.DataFrame) -> str:
    """Cold start and one change per datapath and N (``programming.tex``) from `benchview.change_table`: medians
    with their order-statistic intervals, named by the lowest coverage among them (2 or 3 repeats: 50% or 75%);
    the cold start in s, each change end to end in ms."""
    levels = table[[c for c in table.columns if c.endswith("_level")]].to_numpy().ravel()
    name = analysis.interval_name(float(pd.Series(levels).min()))
    rows = []
    for r in table.to_dict("records"):
        row = [r["datapath"], f"{r['services']:,}", _with_ci(r["cold_median"], r["cold_ci_lo"], r["cold_ci_hi"])]
        for kind in ("add", "remove", "endpoints"):
            row.append(_with_ci(*(r[f"{kind}_{x}"] * 1e3 for x in ("median", "ci_lo", "ci_hi")), ".1f"))
        rows.append(row)
    header = ["datapath", "N", stacked("cold start", f"(s) [{name}]"), stacked("add one", f"(ms) [{name}]"),
              stacked("remove one", f"(ms) [{name}]"), stacked("move an endpoint", f"(ms) [{name}]")]  # fmt: skip
    return tabular(header, rows, "lrrrrr")


def sentences(lines: Sequence[str]) -> str:
    """The sentences a notebook prints, as a LaTeX list, so that the paper quotes them word for word."""
    return "\\begin{itemize}\n" + "".join(f"\\item {tex_escape(x)}\n" for x in lines) + "\\end{itemize}\n"
