"""Fixtures for the recipe tests: a learnable synthetic corpus (no third-party text)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _recipe_data import cyclic_texts


@pytest.fixture(scope="session")
def texts() -> list[str]:
    return cyclic_texts(240)


@pytest.fixture
def data(texts):
    from subsetlm.recipes.data import TrainData

    return TrainData.from_texts(texts, val_fraction=0.1, seed=0)


@pytest.fixture
def corpus_jsonl(tmp_path: Path) -> Path:
    p = tmp_path / "corpus.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        for i, t in enumerate(cyclic_texts(160)):
            fh.write(json.dumps({"id": f"d{i:03d}", "text": t}) + "\n")
    return p


@pytest.fixture
def store_and_subset(tmp_path: Path, corpus_jsonl: Path):
    """A hashing-embedder store of the synthetic corpus and a 25% facility-location subset of it."""
    from subsetlm.cli import main

    store, sub = tmp_path / "store", tmp_path / "subset"
    assert main(["embed", str(corpus_jsonl), "--out", str(store), "--model", "hashing", "-q"]) == 0
    assert main(["select", str(store), "--budget", "0.25", "--out", str(sub), "--k", "8", "-q"]) == 0
    return store, sub
