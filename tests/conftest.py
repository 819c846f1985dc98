"""Shared fixtures: small corpora the tests generate themselves (no third-party text)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

TOPICS = {
    "cardio": "heart artery blood pressure cardiac infarction statin hypertension vessel stent".split(),
    "onco": "tumor cancer chemotherapy metastasis oncology radiation carcinoma biopsy lymphoma".split(),
    "neuro": "brain neuron cortex seizure dementia stroke cognitive synapse migraine".split(),
    "infect": "virus bacteria antibiotic infection vaccine pathogen sepsis fever immune".split(),
}
FILLER = "the a of in with and patients study results were was for to on by".split()


def make_docs(n: int, seed: int = 0) -> list[dict]:
    """n synthetic documents over four topics, deterministic for a seed."""
    rng = np.random.default_rng(seed)
    names = sorted(TOPICS)
    docs = []
    for i in range(n):
        topic = names[i % len(names)]
        words = rng.choice(TOPICS[topic], size=int(rng.integers(12, 40))).tolist()
        words += rng.choice(FILLER, size=len(words) // 2).tolist()
        rng.shuffle(words)
        docs.append({"id": f"doc{i:04d}", "text": " ".join(words).capitalize() + ".", "topic": topic})
    return docs


@pytest.fixture
def small_jsonl(tmp_path: Path) -> Path:
    """A 60-document JSONL corpus with ``id``, ``text`` and ``topic`` fields."""
    path = tmp_path / "corpus.jsonl"
    with open(path, "w", encoding="utf-8") as fh:
        for d in make_docs(60):
            fh.write(json.dumps(d) + "\n")
    return path
