"""The reading examples in docs/formats.md run, against files written by our code, and compute
what they say they compute. (Module docstring examples: tests/test_doctests.py.)"""

from __future__ import annotations

import gzip
import json
import re
from pathlib import Path

import numpy as np
import pytest

from subsetlm.subsets import read_subset, write_subset

from .conftest import example_inputs

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def files(store, tmp_path, monkeypatch):
    write_subset(tmp_path / "subset", store=store, **example_inputs())
    monkeypatch.chdir(tmp_path)
    return store.path, tmp_path / "subset"


def _run(code: str, store_dir: Path, subset_dir: Path) -> dict:
    """Run a doc block with the example paths replaced; return its variables."""
    code = code.replace('"runs/store"', repr(str(store_dir))).replace('"runs/subset"', repr(str(subset_dir)))
    env: dict = {}
    exec(compile(code, str(DOC), "exec"), env)
    return env


def test_doc_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert "import subsetlm" not in blocks[0] + blocks[1] and "from subsetlm" not in blocks[0] + blocks[1]


def test_plain_store_example_reads_the_store(files, store):
    env = _run(python_blocks()[0], *files)
    assert (env["n"], env["dim"]) == (store.n, store.dim)
    np.testing.assert_array_equal(env["X"], store.embeddings)
    assert env["ids"].column("id").to_pylist() == store.ids.tolist()
    assert env["texts"].to_pylist() == store.texts(range(store.n))
    assert env["h"].hexdigest() == store.fingerprint


def test_plain_subset_example_joins_the_store(files, store):
    env = _run(python_blocks()[1], *files)
    inp = example_inputs()
    np.testing.assert_array_equal(env["index"], inp["indices"])
    np.testing.assert_array_equal(env["weight"], inp["weights"])
    assert env["selected_texts"] == store.texts(inp["indices"])
    np.testing.assert_array_equal(env["X_sel"], store.embeddings[np.sort(inp["indices"])].astype(np.float32))
    assert env["m"]["size"] == len(inp["indices"]) and env["m"]["n_ground"] == store.n


def test_plain_example_detects_foreign_store(files, other_store):
    with pytest.raises(AssertionError, match="selected from another store"):
        _run(python_blocks()[1], other_store.path, files[1])


def test_subsetlm_example_runs(files, store):
    env = _run(python_blocks()[2], *files)
    inp = example_inputs()
    sub = read_subset(files[1], store=store)
    np.testing.assert_array_equal(env["sub"].indices, inp["indices"])
    assert sorted(env["sampler"]) == sorted(inp["indices"].tolist())
    assert env["ds"]["id"] == sub.ids.tolist()
    with gzip.open(Path.cwd() / "selected.jsonl.gz", "rt", encoding="utf-8") as fh:
        rows = [json.loads(line) for line in fh]
    assert [r["index"] for r in rows] == inp["indices"].tolist()
    assert [r["text"] for r in rows] == store.texts(inp["indices"])
