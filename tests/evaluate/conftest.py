"""Fixtures: an easy synthetic classification task and tiny models pretrained on it here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from _eval_data import TOPIC_WORDS, task_rows


@pytest.fixture(scope="session")
def task_file(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("task") / "topics.jsonl"
    with open(p, "w", encoding="utf-8") as fh:
        for r in task_rows(320):
            fh.write(json.dumps(r) + "\n")
    return p


def _pretrain(root: Path, recipe: str) -> Path:
    from subsetlm.recipes.data import TrainData
    from subsetlm.recipes.base import build_recipe
    from subsetlm.recipes.loop import TrainConfig, train

    texts = [r["text"] for r in task_rows(320)]
    data = TrainData.from_texts(texts, val_fraction=0.05)
    r = build_recipe(recipe, [texts[i] for i in data.train_rows], preset="tiny", seq_len=64, seed=0)
    train(r, data, TrainConfig(out=str(root / recipe), steps=40, batch_size=16, lr=2e-3, log_every=0,
                               save_every=0, eval_batches=1))
    return root / recipe


@pytest.fixture(scope="session")
def bert_run(tmp_path_factory) -> Path:
    return _pretrain(tmp_path_factory.mktemp("runs"), "bert")


@pytest.fixture(scope="session")
def gpt2_run(tmp_path_factory) -> Path:
    return _pretrain(tmp_path_factory.mktemp("runs"), "gpt2")


@pytest.fixture(scope="session")
def verbalizer() -> dict:
    return {lab: words[0] for lab, words in TOPIC_WORDS.items()}
