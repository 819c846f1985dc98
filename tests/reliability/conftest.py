"""Shared fixtures of the reliability suite (issue 18): one small hashing store per test module.

``corpus_60`` is a 60-document JSONL file (generated text, tests/_docs.py) and ``rstore``
a hashing-embedder store of it, built once per module through the CLI. Tests that alter a
store must copy it first (``shutil.copytree``); stages may add caches (graphs/) to it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _docs import make_docs


@pytest.fixture(scope="module")
def corpus_60(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("corpus") / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in make_docs(60)), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def rstore(tmp_path_factory: pytest.TempPathFactory, corpus_60: Path) -> Path:
    from subsetlm.cli import main

    out = tmp_path_factory.mktemp("rstore") / "store"
    assert main(["embed", str(corpus_60), "--out", str(out), "--model", "hashing", "-q"]) == 0
    return out
