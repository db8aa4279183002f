"""The LaTeX thesis: provenance of every generated file, the appendix rendered from it, and the build."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from labtools.base import paths
from labtools.outputs import figures, paper

PAPER = paths.project_root() / "paper"
MANIFEST = PAPER / "manifest.json"


def _rows(tex: str) -> list[str]:
    return [line for line in tex.splitlines() if line.startswith(r"\texttt{") and line.endswith(r"\\")]


def _fake_outputs(tmp_path, n_figs: int = 2):
    """A tiny paper folder with recorded outputs drawn from one data file."""
    data = tmp_path / "data.csv"
    data.write_text("services,value\n1,10\n1000,12\n")
    pdir = tmp_path / "paper"
    (pdir / "figures").mkdir(parents=True)
    (pdir / "tables").mkdir()
    man = pdir / "manifest.json"
    outs = []
    for i in range(n_figs):
        out = pdir / "figures" / f"fig-{i}.png"
        out.write_bytes(b"\x89PNG fake " + bytes([i]))
        outs.append(out)
    tab = pdir / "tables" / "t_1.tex"
    tab.write_text("\\begin{tabular}{ll}a & b \\\\\\end{tabular}\n")
    outs.append(tab)
    figures.record(outs, notebook="notebooks/99-test.ipynb", params={"profile": "quick", "n": 3}, data=[data],
                   caption="A test: 50% of µs & N_max", manifest=man)  # fmt: skip
    return pdir, man, data, outs


def test_committed_manifest_is_consistent():
    if not MANIFEST.exists():
        pytest.skip("paper/manifest.json does not exist yet: run `make figures` (the notebooks write it)")
    assert figures.check(MANIFEST) == []


def test_provenance_has_a_row_for_every_output(tmp_path):
    pdir, man, _, outs = _fake_outputs(tmp_path)
    tex = paper.render_provenance(man, pdir)
    rows = _rows(tex)
    assert len(rows) == len(outs)
    for out in outs:
        rel = out.relative_to(pdir).as_posix()
        assert any(r.startswith(paper.tex_path(rel)) for r in rows), rel
    assert all(r.rstrip("\\ ").endswith("ok") for r in rows)
    assert "test.ipynb" in tex and "P1" in tex and "D1" in tex
    # the same for the committed manifest, when there is one
    if MANIFEST.exists():
        committed = figures.load_manifest(MANIFEST)["outputs"]
        assert len(_rows(paper.render_provenance(MANIFEST, PAPER))) == len(committed)


def test_captions_name_the_notebook_and_escape_latex(tmp_path):
    _, man, _, _ = _fake_outputs(tmp_path, n_figs=1)
    tex = paper.render_captions(man)
    line = next(line for line in tex.splitlines() if "{figures/fig-0}" in line)
    assert r"50\% of \textmu{}s \& N\_max" in line
    assert "99-" in line and "test.ipynb" in line


def test_edited_data_is_reported(tmp_path):
    pdir, man, data, outs = _fake_outputs(tmp_path, n_figs=1)
    assert figures.check(man) == []
    data.write_bytes(data.read_bytes().replace(b"12", b"13"))  # the data changed after the figure was made
    problems = figures.check(man)
    assert len(problems) == len(outs)
    assert all("changed after it was made" in p and "99-test.ipynb" in p for p in problems)
    rows = _rows(paper.render_provenance(man, pdir))
    assert rows and all(r.rstrip("\\ ").endswith(r"\textcolor{red}{\textbf{stale}}") for r in rows)
    outs[0].write_bytes(b"edited by hand")
    assert any("changed since it was generated" in p for p in figures.check(man))


def _build(pdir):
    paper.render(pdir)
    cmd = ["latexmk", "-pdf", "-interaction=nonstopmode", "-halt-on-error", "-outdir=build", "thesis.tex"]
    res = subprocess.run(cmd, cwd=pdir, capture_output=True, text=True, timeout=120)
    logfile = pdir / "build" / "thesis.log"
    log = logfile.read_text(errors="replace") if logfile.exists() else ""
    assert res.returncode == 0, res.stdout[-3000:] + log[-3000:]
    assert (pdir / "build" / "thesis.pdf").stat().st_size > 10_000
    return log


@pytest.mark.skipif(shutil.which("latexmk") is None, reason="latexmk not installed (make tex-deps)")
def test_paper_builds(tmp_path):
    """The thesis builds from whatever generated files exist; missing ones become placeholders, not errors."""
    full = tmp_path / "full"
    shutil.copytree(PAPER, full, ignore=shutil.ignore_patterns("build"))
    _build(full)

    # A partial run: one figure and part of the macros, no SRv6 outputs at all.
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    part = tmp_path / "partial"
    shutil.copytree(PAPER, part, ignore=shutil.ignore_patterns("build", "figures", "tables", "manifest.json"))
    (part / "figures").mkdir()
    (part / "tables").mkdir()
    data = tmp_path / "data.csv"
    data.write_text("x,y\n1,2\n")
    fig, ax = plt.subplots(figsize=(4, 2.5))
    ax.plot([1, 2], [2, 3])
    fig.savefig(part / "figures" / "sweep-crr.pdf")
    plt.close(fig)
    (part / "tables" / "sweep-macros.tex").write_text(figures.macro("SlopeIptables", "1.5"))
    figures.record([part / "figures" / "sweep-crr.pdf", part / "tables" / "sweep-macros.tex"],
                   notebook="notebooks/01-scale-sweep.ipynb", params={}, data=[data], caption="crr_p50 in µs",
                   manifest=part / "manifest.json")  # fmt: skip
    _build(part)
    assert r"\MissingFile" in (part / "build" / "srv6-matrix.tex").read_text()
    assert "figures/sweep-crr" in (part / "build" / "captions.tex").read_text()


def test_a_new_runs_paper_is_kept_apart_and_says_which_run_it_is(tmp_path, monkeypatch):
    from labtools import pipeline

    monkeypatch.setattr(paths, "build_dir", lambda: tmp_path)
    dst = pipeline.new_paper("quick-20261204T000000Z", "quick")
    assert dst == tmp_path / "paper" and (dst / "thesis.tex").exists() and (dst / "sections").is_dir()
    assert not (dst / "figures").exists() and not (dst / "manifest.json").exists()  # nothing of the reference
    banner = paper.render_banner(dst)
    assert r"\RunBanner{" in banner and "quick-20261204T000000Z" in banner and "profile quick" in banner
    assert r"\RunBanner" not in paper.render_banner(PAPER)  # the committed paper is the reference
    assert r"\IfFileExists{build/banner.tex}" in (PAPER / "thesis.tex").read_text()
    mark = paper.render_pagemark(dst)  # every page of a new run's paper names it, not only the first
    assert r"\AddToHook{shipout/foreground}" in mark and "quick-20261204T000000Z" in mark
    assert "AddToHook" not in paper.render_pagemark(PAPER)
    assert r"\IfFileExists{build/pagemark.tex}" in (PAPER / "thesis.tex").read_text()


def test_every_caption_names_its_runs():
    entry = {"data": {"data/processed/reference-s2.csv": "x", "data/raw/reference-srv6/icmp/a.pcap": "y"}}
    assert paper.runs_of(entry) == ["reference-s2", "reference-srv6"]
    tex = paper.render_captions(MANIFEST)
    lines = [line for line in tex.splitlines() if line.startswith(r"\ProvDefCaption")]
    assert lines and all("; run " in line or "; runs " in line for line in lines), lines
