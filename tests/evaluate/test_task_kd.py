"""Task loading and splits (no id leaks), few-shot draws, the distillation loss by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from subsetlm.evaluate.methods import kd_loss
from subsetlm.evaluate.task import few_shot, majority_baseline
from subsetlm.task import load_task


def _write(tmp_path, rows, name="t.jsonl"):
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_hash_split_keeps_groups_together_and_is_seeded(tmp_path):
    rows = [{"id": f"doc{i // 4}", "text": f"text {i}", "label": "ab"[i % 2]} for i in range(800)]
    task = load_task(_write(tmp_path, rows))
    where = {}
    for name in ("train", "validation", "test"):
        for g in getattr(task, name).groups:
            where.setdefault(g, set()).add(name)
    assert all(len(s) == 1 for s in where.values())  # no group (id) in two splits
    assert 0.7 < len(task.train) / 800 < 0.9 and len(task.test) > 0
    other = load_task(_write(tmp_path, rows), seed=1)
    assert other.test.groups != task.test.groups


def test_given_splits_are_used_and_validation_is_carved_from_train_by_group(tmp_path):
    rows = [{"id": str(i), "text": f"t {i}", "label": "xy"[i % 2], "split": "train" if i < 80 else "test"}
            for i in range(100)]
    task = load_task(_write(tmp_path, rows))
    assert len(task.test) == 20 and len(task.train) + len(task.validation) == 80 and len(task.validation) > 0
    assert not set(task.validation.groups) & set(task.train.groups)


def test_task_errors_name_file_and_line(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": "a", "label": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not valid JSON"):
        load_task(bad)
    with pytest.raises(ValueError, match=r":1: field 'label' is missing"):
        load_task(_write(tmp_path, [{"text": "a"}]))
    with pytest.raises(ValueError, match="at least 2"):
        load_task(_write(tmp_path, [{"text": f"a{i}", "label": "x"} for i in range(30)]))
    with pytest.raises(ValueError, match="does not exist"):
        load_task(tmp_path / "missing.jsonl")


def test_few_shot_is_stratified_seeded_and_disjoint_from_the_rest(tmp_path):
    rows = [{"id": str(i), "text": f"t{i}", "label": "aaab"[i % 4]} for i in range(400)]
    task = load_task(_write(tmp_path, rows))
    lab, rest = few_shot(task.train, 32, seed=0)
    assert len(lab) == 32 and len(lab) + len(rest) == len(task.train)
    assert not set(lab.groups) & set(rest.groups)
    counts = np.bincount(lab.labels, minlength=2)
    assert counts.min() >= 1 and abs(counts[0] / 32 - 0.75) < 0.1  # stratified
    assert few_shot(task.train, 32, seed=0)[0].groups == lab.groups
    assert few_shot(task.train, 32, seed=1)[0].groups != lab.groups
    assert len(few_shot(task.train, None, seed=0)[0]) == len(task.train)
    assert majority_baseline(task)["label"] == "a"


def test_kd_loss_matches_a_hand_computed_example():
    s = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    t = torch.tensor([[0.0, 2.0, 0.0], [1.0, 0.0, 0.0]])
    y = torch.tensor([2, -1])  # second example unlabelled
    T, a = 2.0, 0.3

    def softmax(v):
        e = [math.exp(x) for x in v]
        return [x / sum(e) for x in e]

    want = 0.0
    for i in range(2):
        ps, pt = softmax([x / T for x in s[i].tolist()]), softmax([x / T for x in t[i].tolist()])
        kl = sum(q * (math.log(q) - math.log(p)) for p, q in zip(ps, pt)) * T * T
        ce = -math.log(softmax(s[i].tolist())[y[i]]) if y[i] >= 0 else 0.0
        want += a * kl + (1 - a) * ce
    assert float(kd_loss(s, t, y, T=T, alpha=a)) == pytest.approx(want / 2, rel=1e-6)
    assert float(kd_loss(t, t, torch.tensor([-1, -1]), T=T, alpha=1.0)) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="temperature"):
        kd_loss(s, t, y, T=0.0)


class _Recorder(torch.nn.Module):
    """A stand-in model: text "k" -> logits of a learnable table; records what it was fed."""

    def __init__(self):
        super().__init__()
        self.table = torch.nn.Embedding(2, 2)
        self.seen = []

    def encode(self, texts):
        if self.training:
            self.seen.extend(texts)
        return {"x": torch.tensor([int(t) for t in texts])}

    def forward(self, x):
        return self.table(x)


@pytest.mark.parametrize("balanced", [False, True])
def test_balanced_batches_draw_each_label_equally(balanced):
    from subsetlm.evaluate.methods import FitConfig, fit

    labels = np.array([0] * 190 + [1] * 10)
    texts = [str(y) for y in labels]
    m = _Recorder()
    fit(m, texts, labels, texts[:20], labels[:20], 2, FitConfig(min_steps=100, max_steps=100, evals=1,
                                                                 balanced=balanced), seed=0)
    share = m.seen.count("1") / len(m.seen)
    assert (0.4 < share < 0.6) if balanced else (0.03 < share < 0.08)
