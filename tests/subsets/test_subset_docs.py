"""The reading examples in docs/formats.md run, against files written by our code."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from subsetlm.subsets import write_subset

from .conftest import example_inputs

DOC = Path(__file__).resolve().parents[2] / "docs" / "formats.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)


@pytest.fixture
def files(store, tmp_path, monkeypatch):
    write_subset(tmp_path / "subset", store=store, **example_inputs())
    monkeypatch.chdir(tmp_path)
    return store.path, tmp_path / "subset"


def _run(code: str, store_dir: Path, subset_dir: Path) -> None:
    code = code.replace('"runs/store"', repr(str(store_dir))).replace('"runs/subset"', repr(str(subset_dir)))
    exec(compile(code, str(DOC), "exec"), {})


def test_doc_has_the_examples():
    blocks = python_blocks()
    assert len(blocks) == 3
    assert "import subsetlm" not in blocks[0] + blocks[1] and "from subsetlm" not in blocks[0] + blocks[1]


@pytest.mark.parametrize("i", [0, 1])
def test_plain_pyarrow_examples_run(files, i):
    _run(python_blocks()[i], *files)


def test_plain_example_detects_foreign_store(files, other_store):
    with pytest.raises(AssertionError, match="selected from another store"):
        _run(python_blocks()[1], other_store.path, files[1])


def test_subsetlm_example_runs(files):
    embed = pytest.importorskip("subsetlm.embed")
    if not hasattr(embed, "EmbeddingStore"):
        pytest.skip("subsetlm.embed.EmbeddingStore not written yet")
    _run(python_blocks()[2], *files)
    assert (Path.cwd() / "selected.jsonl.gz").exists()


@pytest.mark.parametrize("module", ["format", "sampler", "export", "hf"])
def test_module_docstring_examples(module, tmp_path, monkeypatch):
    import doctest
    import importlib

    monkeypatch.chdir(tmp_path)
    mod = importlib.import_module(f"subsetlm.subsets.{module}")
    result = doctest.testmod(mod, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
