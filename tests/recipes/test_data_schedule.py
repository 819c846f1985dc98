"""Validation split, batch stream, learning-rate schedule, weighted sampling, gradient accumulation."""

from __future__ import annotations

import numpy as np
import pytest

from _recipe_data import tiny_recipe
from subsetlm.recipes.data import BatchStream, TrainData, validation_split
from subsetlm.recipes.loop import TrainConfig, _schedule, train
from subsetlm.subsets.sampler import SubsetSampler


def test_validation_split_keeps_documents_whole_and_is_stable():
    doc_ids = [f"doc{i // 3}" for i in range(600)]  # 3 chunks per document
    m = validation_split(doc_ids, 0.1, None, seed=0)
    assert m.sum() % 3 == 0 and 30 <= m.sum() <= 90
    for d in set(doc_ids):
        rows = [i for i, x in enumerate(doc_ids) if x == d]
        assert len(set(m[rows])) == 1  # all chunks of a document on one side
    assert np.array_equal(m, validation_split(list(reversed(doc_ids)), 0.1, None, seed=0)[::-1])
    assert not np.array_equal(m, validation_split(doc_ids, 0.1, None, seed=1))
    capped = validation_split(doc_ids, 0.1, 12, seed=0)
    assert capped.sum() == 12 and not (capped & ~m).any()
    with pytest.raises(ValueError, match="val_fraction"):
        validation_split(doc_ids, 1.5, None)


def test_subset_rows_never_include_validation_rows(texts):
    data = TrainData.from_texts(texts, val_fraction=0.2)
    rows, w = data.subset_rows(np.arange(data.n), np.arange(data.n, dtype=float))
    assert not np.isin(rows, data.val_rows).any() and np.array_equal(w, rows.astype(float))
    with pytest.raises(ValueError, match="another store"):
        data.subset_rows(np.array([data.n + 5]))


def test_packed_stream_cuts_exact_blocks_and_carries_the_rest():
    toks = {i: np.arange(10 * i, 10 * i + 7, dtype=np.int32) for i in range(6)}
    s = BatchStream(SubsetSampler(np.arange(6), shuffle=False), lambda rows: [toks[r] for r in rows], 2,
                    packed=True, seq_len=5, sep_id=-1)
    a, b = s.next(), s.next()
    flat = np.concatenate([np.concatenate([toks[i], [-1]]) for i in range(6)])
    assert np.array_equal(np.concatenate(a + b), flat[:20])
    state = s.state_dict()
    c = s.next()
    s2 = BatchStream(SubsetSampler(np.arange(6), shuffle=False), lambda rows: [toks[r] for r in rows], 2,
                     packed=True, seq_len=5, sep_id=-1)
    s2.load_state_dict(state)
    assert all(np.array_equal(x, y) for x, y in zip(c, s2.next()))


def test_schedule_warms_up_then_decays_to_zero():
    f = _schedule(TrainConfig(out="x", steps=100, warmup=0.1))
    assert f(0) == pytest.approx(0.1) and f(9) == pytest.approx(1.0) and f(10) == pytest.approx(1.0)
    assert f(55) == pytest.approx(0.5) and f(100) == 0.0
    g = _schedule(TrainConfig(out="x", steps=100, warmup=0, schedule="cosine"))
    assert g(0) == pytest.approx(1.0) and g(50) == pytest.approx(0.5) and g(100) == pytest.approx(0.0)


def test_weighted_training_draws_rows_by_weight(tmp_path, data, monkeypatch):
    seen = []
    orig = data.tokens

    def spy(tok, rows):
        if len(rows) == 8:  # the batches (not the start-of-run truncation check over all subset rows)
            seen.extend(int(r) for r in rows)
        return orig(tok, rows)

    r = tiny_recipe("bert", [data.texts[i] for i in data.train_rows])
    rows = data.train_rows[:4]
    monkeypatch.setattr(data, "tokens", spy)
    train(r, data, TrainConfig(out=str(tmp_path / "w"), steps=10, batch_size=8, weighted=True, log_every=0,
                               save_every=0, eval_batches=1), rows=rows, weights=np.array([1.0, 0.0, 0.0, 9.0]))
    drawn = [x for x in seen if x in set(rows.tolist())]
    counts = {int(x): drawn.count(int(x)) for x in rows}
    assert counts[int(rows[1])] == 0 and counts[int(rows[2])] == 0
    assert counts[int(rows[3])] > 4 * counts[int(rows[0])]


def test_gradient_accumulation_consumes_accum_batches_per_step(tmp_path, data):
    r = tiny_recipe("bert", [data.texts[i] for i in data.train_rows])
    res = train(r, data, TrainConfig(out=str(tmp_path / "a"), steps=3, batch_size=4, grad_accum=3, log_every=0,
                                     save_every=0, eval_batches=1))
    assert res.state.samples_seen == 3 * 4 * 3


def test_long_rows_are_cropped_to_a_random_window_in_training_and_the_first_in_evaluation(texts):
    import torch

    r = tiny_recipe("bert", texts)
    row = np.arange(1000, 1300, dtype=np.int32)  # 300 "tokens", window 62
    first = r.collate([row])["input_ids"][0, 1:-1].numpy()
    assert np.array_equal(first, row[:62])
    starts = set()
    g = torch.Generator().manual_seed(0)
    for _ in range(20):
        w = r.collate([row], g)["input_ids"][0, 1:-1].numpy()
        assert len(w) == 62 and np.array_equal(w, np.arange(w[0], w[0] + 62))  # a contiguous window of the row
        starts.add(int(w[0]))
    assert len(starts) > 10 and max(starts) <= 1300 - 62
