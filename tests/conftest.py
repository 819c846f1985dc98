"""Shared fixtures: small corpora the tests generate themselves (no third-party text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _docs import FILLER, TOPICS, make_docs  # noqa: E402,F401 - re-exported for fixtures and tests


@pytest.fixture
def small_jsonl(tmp_path: Path) -> Path:
    """A 60-document JSONL corpus with ``id``, ``text`` and ``topic`` fields."""
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for d in make_docs(60):
            fh.write(json.dumps(d) + "\n")
    return path


@pytest.fixture
def store(tmp_path: Path, small_jsonl: Path) -> Path:
    """A hashing-embedder store of :func:`small_jsonl`, built through the CLI (subsets/ and index/ have their own)."""
    from subsetlm.cli import main

    out = tmp_path / "store"
    assert main(["embed", str(small_jsonl), "--out", str(out), "--model", "hashing", "-q"]) == 0
    return out
