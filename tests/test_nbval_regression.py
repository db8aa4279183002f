"""nbval guards the committed reference results: an edited reference value fails a checked cell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from tests.conftest import ROOT

DATA = ROOT / "data"
# notebook 01's sweeps (scenarios and the probe's), not the SRv6 or UDP runs; the headline sweep s2 last
REFERENCE = sorted(p for p in (DATA / "processed").glob("reference-*.csv")
                   if p.stem.split("-")[1] in ("s1", "s2", "probe"))  # fmt: skip


@pytest.mark.skipif(not REFERENCE, reason="no committed reference run in data/processed (reference-s*.csv)")
def test_editing_a_reference_value_fails_nbval(tmp_path):
    data = tmp_path / "data"
    for csv in REFERENCE:
        (data / "processed").mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, data / "processed" / csv.name)
        (data / "raw" / csv.stem).mkdir(parents=True)
        shutil.copy(DATA / "raw" / csv.stem / "manifest.json", data / "raw" / csv.stem / "manifest.json")
    edited = data / "processed" / REFERENCE[-1].name
    df = pd.read_csv(edited)
    row = df.index[(df.metric == "crr_p50") & (df.datapath == "iptables")][0]
    df.loc[row, "value"] *= 3  # one connection-setup latency, tripled
    df.to_csv(edited, index=False)
    env = {**os.environ, "LABTOOLS_DATA": str(data), "LABTOOLS_PAPER": str(tmp_path / "paper")}
    cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "--nbval-lax", "-q"]
    cmd.append("notebooks/01-scale-sweep.ipynb")
    res = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    assert res.returncode != 0, res.stdout[-2000:]
    assert "NBVAL_CHECK_OUTPUT" in res.stdout and "mismatch" in res.stdout.lower(), res.stdout[-3000:]
