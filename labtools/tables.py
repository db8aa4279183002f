"""The LaTeX tables the notebooks write into ``paper/tables/``: booktabs tabulars, every cell escaped with
`labtools.paper.tex_escape` (the one escaper), headers given as LaTeX.

- `sweep_summary`: notebook 01's summary table (slope per Service, R², ratios to `none`);
- `srv6_headers`: notebook 02's IPv6/SRH header fields at each capture point (`srv6view.header_rows`);
- `thesis_comparison`: notebook 02's field-by-field comparison with the thesis (`srv6view.compare_with_thesis`);
- `srv6_matrix`: notebook 02's reachability matrix, ingress mode x datapath and target (`srv6view.reachability_grid`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import pandas as pd

from labtools.paper import tex_escape

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


def _number(v: object, fmt: str = ".2f") -> str:
    if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)):
        return EMPTY
    return format(v, fmt)


def _blank(v: object) -> str:
    """A cell that may be missing: NaN and <NA> become empty."""
    return "" if v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v)) else str(v)


# -- notebook 01 ------------------------------------------------------------------------------------------------


def sweep_summary(table: pd.DataFrame) -> str:
    """The sweep summary (``sweep-summary.tex``) from `verdicts.summary_table`: per datapath the slope in ns per
    Service, R² over every repeat and over the per-N medians, the p50 at the largest N, and the ratios to
    `none` (NodePort, pod IP and, when measured, udp-pps); two decimals, ``--`` where there is no `none`."""
    nmax = int(table["services"].max())
    cols = {"datapath": "datapath", "ns_per_service": "ns/Service", "r2": "$R^2$", "r2_medians": "$R^2$ med.",
            "median_us": tex_escape(f"p50 at {nmax:,} (µs)"), "ratio_to_none": tex_escape("÷ none"),
            "pod_ratio_to_none": tex_escape("pod ÷ none")}  # fmt: skip
    if "udp_pps_ratio_to_none" in table:
        cols["udp_pps_ratio_to_none"] = tex_escape("udp-pps ÷ none")
    rows = [[r["datapath"], *(_number(r[c]) for c in list(cols)[1:])] for _, r in table.iterrows()]
    return tabular(list(cols.values()), rows, "l" + "r" * (len(cols) - 1))


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
