"""nbval guards the committed reference results: an edited reference value fails a checked cell."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

from labtools.model.plan import profile_params
from tests.conftest import ROOT

DATA = ROOT / "data"
NOTEBOOK = ROOT / "notebooks" / "01-scale-sweep.ipynb"
# The run notebook 01 loads by default, and its sweeps (the full profile's): not the SRv6, UDP or bench runs.
RUN = re.search(r'run_id = \\"([^\\"]+)\\"', NOTEBOOK.read_text()).group(1)
REFERENCE = [DATA / "processed" / f"{RUN}-{name}.csv" for name in profile_params("full")["sweeps"]]
HEADLINE = DATA / "processed" / f"{RUN}-s2.csv"


@pytest.mark.skipif(not all(p.exists() for p in REFERENCE), reason=f"no committed reference run {RUN} in data/")
def test_editing_a_reference_value_fails_nbval(tmp_path):
    data = tmp_path / "data"
    for csv in REFERENCE:
        (data / "processed").mkdir(parents=True, exist_ok=True)
        shutil.copy(csv, data / "processed" / csv.name)
        (data / "raw" / csv.stem).mkdir(parents=True)
        shutil.copy(DATA / "raw" / csv.stem / "manifest.json", data / "raw" / csv.stem / "manifest.json")
    edited = data / "processed" / HEADLINE.name
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
