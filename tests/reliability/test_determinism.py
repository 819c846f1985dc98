"""R3: same inputs and seed -> identical bytes of store, kNN graph, subset and manifest, in a fresh
process and with 1 or 2 threads (OMP / MKL / OpenBLAS / numba, which torch and FAISS follow).

Each run is one fresh Python process (``PIPELINE``: embed with the hashing model, index, select
with top-k and with Taylor-softmax sampling) in its own directory with the same relative paths,
so the manifests can be compared byte for byte. Only ``stats.json`` (timings) is left out.
1,000 documents: enough rows for FAISS and BLAS to split the kNN search across threads.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from benchmarks import _faults as F  # noqa: E402

N_DOCS = 1000
OUTPUTS = ("store", "store/graphs/knn-k8", "sub", "sub-taylor")
PIPELINE = """
import sys
from subsetlm.cli import main
for argv in (["embed", "corpus.jsonl", "--out", "store", "--model", "hashing"],
             ["index", "store", "--k", "8"],
             ["select", "store", "--budget", "0.25", "--k", "8", "--out", "sub"],
             ["select", "store", "--budget", "0.25", "--k", "8", "--out", "sub-taylor", "--sampling",
              "taylor-softmax", "--seed", "3"]):
    if main(argv + ["-q"]) != 0:
        sys.exit(f"{argv[0]} failed")
"""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("det") / "corpus.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        for r in F.synthetic_rows(N_DOCS, seed=5):
            fh.write(json.dumps({"id": r["id"], "text": r["text"]}) + "\n")
    return p


_RUNS: dict[tuple[str, str], Path] = {}


def _run(corpus: Path, threads: int, name: str) -> Path:
    """The pipeline's outputs from a fresh process with ``threads`` threads (cached per module)."""
    key = (str(corpus), name)
    if key not in _RUNS:
        work = corpus.parent / name
        work.mkdir()
        (work / "corpus.jsonl").write_bytes(corpus.read_bytes())
        p = subprocess.run([sys.executable, "-c", PIPELINE], cwd=work, env=F.child_env(threads),
                           capture_output=True, text=True, timeout=600)
        assert p.returncode == 0, p.stderr[-2000:]
        _RUNS[key] = work
    return _RUNS[key]


def _differences(a: Path, b: Path) -> dict[str, list[str]]:
    out = {}
    for o in OUTPUTS:
        assert (a / o / "_SUCCESS").is_file() and (b / o / "_SUCCESS").is_file()
        if o == "store":  # the store's own files; its graph is compared on its own
            d = [x for x in F.compare(a / o, b / o) if not x.startswith("graphs")]
        else:
            d = F.compare(a / o, b / o)
        if d:
            out[o] = d
    return out


def test_same_bytes_in_a_fresh_process(corpus: Path) -> None:
    a, b = _run(corpus, 2, "t2-a"), _run(corpus, 2, "t2-b")
    assert _differences(a, b) == {}
    # the comparison sees every data file and manifest (not an empty tree)
    files = {str(p.relative_to(a)) for p in a.rglob("*") if p.is_file()}
    for f in ("store/embeddings.npy", "store/manifest.json", "store/graphs/knn-k8/similarities.npy",
              "sub/subset.parquet", "sub/manifest.json", "sub-taylor/subset.parquet"):
        assert f in files


def test_same_bytes_with_one_and_two_threads(corpus: Path) -> None:
    a, b = _run(corpus, 1, "t1"), _run(corpus, 2, "t2-a")
    assert _differences(a, b) == {}

