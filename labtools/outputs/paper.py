"""The generated parts of the LaTeX thesis in `paper/` that come from the manifest, not from a notebook.

`render()` writes, into `paper/build/` (which `latexmk -outdir=build` also uses):

* ``provenance.tex`` — the appendix: one longtable row per output recorded in `paper/manifest.json` (file
  and short SHA-256, notebook, parameter set, data set, date, and whether the file and its data still
  match their recorded hashes), then every data set (files with short SHA-256) and parameter set in full;
* ``captions.tex`` — ``\\ProvDefCaption{figures/sweep-crr}{caption}{notebook}`` for every output, so that
  each figure's and table's caption is the one its notebook recorded, with the notebook named;
* ``testbed.tex``, ``testbed-macros.tex`` — the testbed table and ``\\TestbedMTU``, from the lab's inventory;
* ``srv6-headers.tex`` / ``srv6-matrix.tex`` — an ``\\input`` of every ``tables/srv6-*.tex`` present (the
  per-capture-point header tables and the reachability matrix), whatever their names.

Run it with ``python -m labtools.outputs.paper [--paper DIR]`` (``make paper`` does). It never fails for a
missing or stale generated file: the thesis shows a visible placeholder, the appendix a state column.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import sys
from collections.abc import Mapping
from pathlib import Path

from labtools.base import paths
from labtools.model import topology
from labtools.outputs import figures

SHORT = 10  # hex digits of a SHA-256 shown in the appendix

_SPECIAL = {
    "\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
    "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}", ">": r"\textgreater{}",
}  # fmt: skip
# Characters pdflatex (utf8 input, T1/TS1 fonts) cannot typeset as they are.
_UNICODE = {
    "µ": r"\textmu{}", "÷": r"\textdiv{}", "×": r"\texttimes{}", "≥": r"$\geq$", "≤": r"$\leq$", "≈": r"$\approx$",
    "→": r"$\rightarrow$", "←": r"$\leftarrow$", "²": r"\texttwosuperior{}", "±": r"\textpm{}",
    "·": r"\textperiodcentered{}", "…": r"\dots{}", "–": "--", "—": "---",
    "‘": "`", "’": "'", "“": "``", "”": "''", "✓": "yes", "✗": "no",
    "−": "-", "°": r"\textdegree{}", "\u00a0": "~",
}  # fmt: skip


def tex_escape(text: object) -> str:
    """`text` as LaTeX that pdflatex typesets verbatim; unknown non-Latin-1 characters become '?'."""
    out = []
    for ch in str(text):
        if ch in _SPECIAL:
            out.append(_SPECIAL[ch])
        elif ch in _UNICODE:
            out.append(_UNICODE[ch])
        elif ord(ch) > 0xFF:
            out.append("?")
        else:
            out.append(ch)
    return "".join(out)


def tex_path(text: str) -> str:
    """A path or identifier in typewriter type that may break after / - _ , and =."""
    s = tex_escape(text)
    return r"\texttt{" + re.sub(r"(/|-|\\_|,|=)", r"\1\\allowbreak{}", s) + "}"


def paper_relative(key: str, manifest: Path) -> str:
    """A manifest key (repo-relative, or absolute when LABTOOLS_PAPER pointed elsewhere) relative to paper/."""
    p = Path(key)
    if not p.is_absolute():
        p = paths.project_root() / p
    for base in (manifest.resolve().parent, paths.paper_root().resolve(), (paths.project_root() / "paper").resolve()):
        try:
            return p.resolve().relative_to(base).as_posix()
        except ValueError:
            continue
    return Path(*p.parts[-2:]).as_posix()  # figures/x.pdf, tables/y.tex


def _sha(path: Path) -> str | None:
    return figures.sha256(path) if path.exists() else None


def _data_path(key: str) -> Path:
    p = Path(key)
    return p if p.is_absolute() else paths.project_root() / p


def state(entry: Mapping, file: Path) -> str:
    """ok, missing, edited (the file's bytes differ from the recorded ones) or stale (its data changed)."""
    digest = _sha(file)
    if digest is None:
        return "missing"
    if digest != entry.get("sha256"):
        return "edited"
    for data, recorded in entry.get("data", {}).items():
        if _sha(_data_path(data)) != recorded:
            return "stale"
    return "ok"


def _params_key(params: object) -> str:
    return json.dumps(params, sort_keys=True, default=str)


def render_provenance(manifest: Path, paper_dir: Path) -> str:
    """The provenance appendix: a longtable row per manifest output, then the parameter and data sets in full."""
    outputs = figures.load_manifest(manifest)["outputs"]
    psets: dict[str, str] = {}  # params JSON -> P1, P2, ...
    dsets: dict[tuple, str] = {}  # ((data file, sha256), ...) -> D1, D2, ...
    rows = []
    for key in sorted(outputs, key=lambda k: paper_relative(k, manifest)):
        entry = outputs[key]
        rel = paper_relative(key, manifest)
        plabel = psets.setdefault(_params_key(entry.get("params", {})), f"P{len(psets) + 1}")
        data = tuple(sorted(entry.get("data", {}).items()))
        dlabel = dsets.setdefault(data, f"D{len(dsets) + 1}") if data else "--"
        st = state(entry, paper_dir / rel)
        st_tex = st if st == "ok" else r"\textcolor{red}{\textbf{" + st + "}}"
        made = tex_escape(str(entry.get("made", ""))[:10])
        sha = tex_path(str(entry.get("sha256", "?"))[:SHORT])
        rows.append(f"{tex_path(rel)} & {sha} & {tex_path(Path(str(entry.get('notebook', '?'))).name)} & {plabel} & "
                    f"{dlabel} & {made} & {st_tex} \\\\")  # fmt: skip
    head = (r"\textbf{generated file} & \textbf{SHA-256} & \textbf{notebook} & \textbf{params} & \textbf{data} & "
            r"\textbf{made} & \textbf{state} \\")  # fmt: skip
    lines = [
        "% Generated by labtools.outputs.paper from " + tex_escape(manifest.name) + " -- do not edit.",
        r"\begingroup\footnotesize\setlength{\tabcolsep}{4pt}",
        r"\begin{longtable}{@{}>{\raggedright}p{0.29\linewidth}lllllr@{}}",
        r"\toprule", head, r"\midrule", r"\endfirsthead",
        r"\toprule", head, r"\midrule", r"\endhead",
        r"\bottomrule", r"\endfoot",
    ]  # fmt: skip
    lines += rows or [r"\multicolumn{7}{l}{\emph{no generated files recorded yet -- run make figures}} \\"]
    lines += [r"\end{longtable}", r"\endgroup", ""]
    lines.append(
        r"\paragraph{State.} \emph{ok}: the file and every data file it was drawn from still have the "
        r"recorded SHA-256; \emph{edited}: the file changed after it was generated; \emph{stale}: a data "
        r"file changed or is missing (re-run the notebook); \emph{missing}: recorded but not present."
    )
    if dsets:
        lines += [r"\paragraph{Data sets.} The data files each output was drawn from, with their SHA-256 "
                  r"(first digits) when it was made:", r"\begin{description}\footnotesize\raggedright"]  # fmt: skip
        for data, label in dsets.items():
            files = r" \\ ".join(f"{tex_path(d)}~{tex_path(h[:SHORT])}" for d, h in data)
            lines.append(rf"\item[{label}] {files}")
        lines.append(r"\end{description}")
    if psets:
        lines += [r"\paragraph{Parameter sets.} Each notebook's papermill parameters, as recorded:",
                  r"\begin{description}\footnotesize\raggedright"]  # fmt: skip
        for pk, label in psets.items():
            lines.append(rf"\item[{label}] {tex_path(pk)}")
        lines.append(r"\end{description}")
    return "\n".join(lines) + "\n"


def _stem(rel: str) -> str:
    return rel.rsplit(".", 1)[0]


def runs_of(entry: Mapping) -> list[str]:
    """The run ids an output was drawn from: ``data/processed/<run>.csv`` and ``data/raw/<run>/...``."""
    runs = set()
    for key in entry.get("data") or {}:
        parts = Path(key).parts
        if len(parts) >= 3 and parts[0] == "data" and parts[1] == "processed":
            runs.add(Path(parts[2]).stem)
        elif len(parts) >= 3 and parts[0] == "data" and parts[1] == "raw":
            runs.add(parts[2])
    return sorted(runs)


def render_captions(manifest: Path) -> str:
    """``\\ProvDefCaption{<file without extension>}{<caption>}{<notebook>}`` for every output (PDF wins over PNG);
    each caption ends with the runs its data came from, so that a figure of a new run and one of the reference
    cannot be mistaken for each other."""
    outputs = figures.load_manifest(manifest)["outputs"]
    seen: dict[str, str] = {}
    for key in sorted(outputs, key=lambda k: (not k.endswith(".pdf"), k)):
        stem = _stem(paper_relative(key, manifest))
        if stem in seen:
            continue
        e = outputs[key]
        runs = runs_of(e)
        named = f"; {'runs' if len(runs) > 1 else 'run'} {', '.join(runs)}" if runs else ""
        caption = (e.get("caption") or "") + named
        seen[stem] = (rf"\ProvDefCaption{{{stem}}}{{{tex_escape(caption)}}}"
                      rf"{{{tex_path(e.get('notebook') or '?')}}}")  # fmt: skip
    return "% Generated by labtools.outputs.paper -- do not edit.\n" + "\n".join(seen[s] for s in sorted(seen)) + "\n"


def render_testbed(inventory: str | Path | None = None) -> tuple[str, str]:
    """The testbed macros (``\\TestbedMTU``, the inventory, its hash) and table (machines, addresses, routes)."""
    inv = topology.load(inventory)
    mtus = sorted({i.mtu for m in inv.machines.values() for i in m.interfaces.values()})
    rows = []
    for m in inv.machines.values():
        for n, iface in enumerate(m.interfaces.values()):
            addrs = ", ".join(str(a) for a in iface.addresses) or "--"
            routes = r" \newline ".join(
                tex_path(f"{r.to}" + (f" via {r.via}" if r.via else "") + (f" dev {r.dev}" if r.dev else ""))
                for r in m.routes
            )
            name = "" if n else tex_escape(m.name if m.role == m.name else f"{m.name} ({m.role})")
            rows.append(f"{name} & {tex_path(iface.name)} & {tex_path(addrs)} & {iface.mtu} & "
                        f"{(routes or '--') if n == 0 else ''} \\\\")  # fmt: skip
    src = Path(inv.path).resolve() if inv.path else None
    try:
        shown = src.relative_to(paths.project_root()).as_posix() if src else "?"
    except ValueError:
        shown = src.name
    digest = hashlib.sha256(src.read_bytes()).hexdigest()[:SHORT] if src and src.exists() else "?"
    macros = "\n".join([
        f"% Generated by labtools.outputs.paper from {tex_escape(shown)} -- do not edit.",
        rf"\providecommand{{\TestbedMTU}}{{{'/'.join(str(x) for x in mtus)}}}",
        rf"\providecommand{{\TestbedInventory}}{{{tex_path(shown)}}}",
        rf"\providecommand{{\TestbedInventorySha}}{{{tex_path(digest)}}}", "",
    ])  # fmt: skip
    table = "\n".join([
        f"% Generated by labtools.outputs.paper from {tex_escape(shown)} -- do not edit.",
        r"\begin{tabular}{@{}l>{\raggedright}p{0.07\linewidth}>{\raggedright}p{0.34\linewidth}r"
        r">{\raggedright\arraybackslash}p{0.34\linewidth}@{}}",
        r"\toprule",
        r"\textbf{machine} & \textbf{iface} & \textbf{addresses} & \textbf{MTU} & \textbf{static routes} \\",
        r"\midrule", *rows, r"\bottomrule", r"\end{tabular}", "",
    ])  # fmt: skip
    return macros, table


def _is_float_or_long(text: str) -> bool:
    return bool(re.search(r"\\begin\{(table|longtable|figure)", text))


def render_srv6_tables(paper_dir: Path, manifest: Path, kind: str) -> str:
    """Include every present ``tables/srv6-*.tex`` of `kind` ("matrix": the reachability matrix; "headers": the rest).

    Bare tabulars get a table float with their recorded caption (shrunk to the text width if wider);
    fragments that are floats or longtables already are input as they are.
    """
    files = sorted(
        (p for p in (paper_dir / "tables").glob("srv6-*.tex") if p.name != "srv6-macros.tex"),
        key=lambda p: ("request" not in p.name, "reply" not in p.name, p.name),  # requests, replies, the rest
    )
    is_matrix = [("matrix" in p.name or "reach" in p.name) for p in files]
    chosen = [p for p, m in zip(files, is_matrix, strict=True) if m == (kind == "matrix")]
    if not chosen:
        what = "tables/srv6-*matrix*.tex" if kind == "matrix" else "tables/srv6-*.tex"
        return rf"\MissingFile{{{what}}}" + "\n"
    lines = ["% Generated by labtools.outputs.paper -- do not edit."]
    for n, p in enumerate(chosen):
        stem = f"tables/{p.stem}"
        if _is_float_or_long(p.read_text(errors="replace")):
            lines.append(rf"\input{{{stem}.tex}}")
        else:  # the (first) matrix is what the text refers to as tab:srv6-matrix
            label = "[tab:srv6-matrix]" if kind == "matrix" and n == 0 else ""
            lines.append(rf"\GenTable{label}{{{stem}}}")
    return "\n".join(lines) + "\n"


RUN_FILE = "run.json"  # in a paper folder built from a new run (make reproduce): which run and profile


def render_banner(paper_dir: Path) -> str:
    """``\\RunBanner{...}`` when the paper is built from a new run rather than the committed reference."""
    run = paper_dir / RUN_FILE
    if not run.exists():
        return "% Built from the committed reference runs: no banner.\n"
    info = json.loads(run.read_text())
    run_id = info.get("run_id", "?")
    text = (f"Built from run {run_id} (profile {info.get('profile', '?')}), not from the committed reference runs: "
            f"the figures, tables and numbers whose captions name a run starting {run_id} are that run's; every "
            "other one is the reference's, as its caption says.")  # fmt: skip
    return "% Generated by labtools.outputs.paper -- do not edit.\n" + rf"\RunBanner{{{tex_escape(text)}}}" + "\n"


def render_pagemark(paper_dir: Path) -> str:
    """For a paper built from a new run, a line at the foot of every page (title page included) naming the run,
    so that a page printed alone still says whose numbers it holds; nothing for the reference."""
    run = paper_dir / RUN_FILE
    if not run.exists():
        return "% Built from the committed reference runs: no page mark.\n"
    run_id = json.loads(run.read_text()).get("run_id", "?")
    page = tex_escape(f"Run {run_id}: only what names this run is this run's; the rest is the reference")
    return ("% Generated by labtools.outputs.paper -- do not edit.\n"
            # \put's coordinates in pt (the picture's unit), from the page's top left corner
            rf"\AddToHook{{shipout/foreground}}{{\put(\numexpr\dimexpr 1in+\oddsidemargin\relax/65536\relax,"
            rf"-\numexpr\dimexpr\paperheight-1.2cm\relax/65536\relax){{\makebox[0pt][l]{{\footnotesize"
            rf"\color{{orange}}{page}}}}}}}"
            "\n")  # fmt: skip


def render(paper_dir: str | Path | None = None, *, inventory: str | Path | None = None) -> list[Path]:
    """Write every generated-from-manifest file into ``<paper_dir>/build``; return their paths."""
    paper_dir = Path(paper_dir) if paper_dir is not None else paths.paper_root()
    manifest = paper_dir / "manifest.json"
    build = paper_dir / "build"
    build.mkdir(parents=True, exist_ok=True)
    testbed_macros, testbed_table = render_testbed(inventory)
    texts = {
        "banner.tex": render_banner(paper_dir),
        "pagemark.tex": render_pagemark(paper_dir),
        "provenance.tex": render_provenance(manifest, paper_dir),
        "captions.tex": render_captions(manifest),
        "testbed-macros.tex": testbed_macros,
        "testbed.tex": testbed_table,
        "srv6-headers.tex": render_srv6_tables(paper_dir, manifest, "headers"),
        "srv6-matrix.tex": render_srv6_tables(paper_dir, manifest, "matrix"),
    }
    written = []
    for name, text in texts.items():
        out = build / name
        if not out.exists() or out.read_text() != text:  # unchanged files keep their mtime (latexmk)
            out.write_text(text)
        written.append(out)
    return written


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m labtools.outputs.paper", description=__doc__.splitlines()[0])
    ap.add_argument("--paper", default=None, help="the paper folder (default: paper/, or $LABTOOLS_PAPER)")
    ap.add_argument("--inventory", default=None, help="inventory for the testbed table (default: the netns lab)")
    args = ap.parse_args(argv)
    paper_dir = Path(args.paper) if args.paper else paths.paper_root()
    for out in render(paper_dir, inventory=args.inventory):
        print(f"wrote {out}")
    for p in figures.check(paper_dir / "manifest.json"):
        print(f"warning: {p}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
