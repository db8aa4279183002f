"""The eBPF datapath's map layouts, as Cilium's `bpf/lib` checks its own: the structs labtools packs in Python
(`datapaths.ebpf.LAYOUTS`) against the compiled object's BTF (``bpftool btf dump``), member by member."""

from __future__ import annotations

import json
import shutil
import struct
import subprocess

import pytest

from labtools.base import paths
from labtools.datapaths import ebpf

OBJECT = paths.BPF / "nodeport.o"


@pytest.fixture(scope="module")
def btf() -> dict[str, dict]:
    if not OBJECT.exists() or not shutil.which("bpftool"):
        pytest.skip("needs labtools/bpf/nodeport.o and bpftool: run `make setup`")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(OBJECT)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    return {t["name"]: t for t in json.loads(out)["types"] if t["kind"] == "STRUCT" and t.get("name")}


def _offsets(fmt: str) -> list[int]:
    """Byte offset of each item of a `struct` format (no alignment: "<")."""
    items, out, at = struct.Struct(fmt).format.lstrip("<"), [], 0
    count = ""
    for ch in items:
        if ch.isdigit():
            count += ch
            continue
        n = int(count or 1)
        out.append(at)
        at += struct.calcsize(f"<{n}{ch}")
        count = ""
    return out


@pytest.mark.parametrize("name", sorted(ebpf.LAYOUTS))
def test_python_layout_matches_btf(btf, name):
    fmt, members = ebpf.LAYOUTS[name]
    c = btf[name]
    assert struct.calcsize(fmt) == c["size"], f"{name}: Python packs {struct.calcsize(fmt)} bytes, C has {c['size']}"
    assert [m["name"] for m in c["members"]] == list(members)
    assert [m["bits_offset"] // 8 for m in c["members"]] == _offsets(fmt)


def test_offsets_of_a_format():
    assert _offsets("<16s2sHBB2x") == [0, 16, 18, 20, 21, 22]


def test_drop_reasons_match_the_programs_enum():
    if not OBJECT.exists() or not shutil.which("bpftool"):
        pytest.skip("needs labtools/bpf/nodeport.o and bpftool: run `make setup`")
    out = subprocess.run(["bpftool", "-j", "btf", "dump", "file", str(OBJECT)], capture_output=True, text=True,
                         check=True).stdout  # fmt: skip
    enum = next(t for t in json.loads(out)["types"] if t["kind"] == "ENUM" and t.get("name") == "drop_reason")
    values = {v["name"]: v["val"] for v in enum["values"]}
    assert [values[f"DROP_{r.upper()}"] for r in ebpf.DROP_REASONS] == list(range(1, len(ebpf.DROP_REASONS) + 1))
    assert values["__DROP_MAX"] == len(ebpf.DROP_REASONS) + 1
