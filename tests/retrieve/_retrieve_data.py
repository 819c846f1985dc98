"""Shared data of the retrieve tests: a tiny four-topic corpus and a task over three of its topics."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

TOPICS = {
    "cardio": "heart artery cardiac infarction statin hypertension",
    "onco": "tumor chemotherapy metastasis carcinoma biopsy lymphoma",
    "neuro": "brain neuron cortex seizure dementia synapse",
    "econ": "market inflation tariff budget deficit treasury",
}


def _corpus(tmp: Path) -> tuple[Path, list[dict]]:
    """24 documents: 6 per topic, and one 'zebra' document that only a test example mentions."""
    rng = np.random.default_rng(0)
    docs = []
    for t, words in sorted(TOPICS.items()):
        w = words.split()
        for j in range(6):
            docs.append({"id": f"{t}-{j}", "text": " ".join(rng.choice(w, size=12)) + f" note {j}"})
    docs.append({"id": "zebra-doc", "text": "zebra savanna stripes herd grazing"})
    docs.append({"id": "t-held", "text": "heart artery cardiac infarction statin heart artery"})  # = a test doc id
    p = tmp / "corpus.jsonl"
    p.write_text("".join(json.dumps(d) + "\n" for d in docs))
    return p, docs


def _task(tmp: Path) -> Path:
    rows = [{"id": "q0", "text": "heart artery infarction", "label": "cardio", "split": "train"},
            {"id": "q1", "text": "tumor biopsy carcinoma", "label": "onco", "split": "train"},
            {"id": "q2", "text": "brain seizure cortex", "label": "neuro", "split": "train"},
            {"id": "v0", "text": "statin hypertension", "label": "cardio", "split": "validation"},
            {"id": "v1", "text": "lymphoma metastasis", "label": "onco", "split": "validation"},
            {"id": "t-held", "text": "zebra savanna stripes", "label": "neuro", "split": "test"},
            {"id": "t1", "text": "dementia synapse", "label": "neuro", "split": "test"}]
    p = tmp / "task.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p
