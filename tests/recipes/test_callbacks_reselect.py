"""Callback event order, and the INGENIOUS re-selection callback firing on schedule."""

from __future__ import annotations

import json

import numpy as np

from _recipe_data import tiny_recipe
from subsetlm.recipes.callbacks import Callback
from subsetlm.recipes.loop import TrainConfig, train
from subsetlm.recipes.reselect import ReselectCallback, ReselectConfig, default_layer


class Recorder(Callback):
    def __init__(self):
        self.events = []

    def on_train_begin(self, state, control, ctx):
        self.events.append(("begin", state.step))

    def on_step_begin(self, state, control, ctx):
        self.events.append(("step_begin", state.step))

    def on_step_end(self, state, control, ctx):
        self.events.append(("step_end", state.step))

    def on_log(self, state, control, ctx, logs):
        self.events.append(("log", state.step))

    def on_evaluate(self, state, control, ctx, metrics):
        self.events.append(("evaluate", state.step))

    def on_save(self, state, control, ctx, path):
        self.events.append(("save", state.step))

    def on_train_end(self, state, control, ctx):
        self.events.append(("end", state.step))


def test_callback_events_come_in_order(tmp_path, data):
    rec = Recorder()
    r = tiny_recipe("bert", [data.texts[i] for i in data.train_rows])
    train(r, data, TrainConfig(out=str(tmp_path / "r"), steps=4, batch_size=4, log_every=2, eval_every=2,
                               save_every=2, eval_batches=1), callbacks=[rec])
    assert rec.events == [
        ("begin", 0),
        ("step_begin", 0), ("step_end", 1),
        ("step_begin", 1), ("step_end", 2), ("log", 2), ("evaluate", 2), ("save", 2),
        ("step_begin", 2), ("step_end", 3),
        ("step_begin", 3), ("step_end", 4), ("log", 4), ("save", 4),
        ("evaluate", 4), ("end", 4),
    ]


class Watch(Callback):
    """Records the sampler's active subset after every step (runs after the re-selection callback)."""

    def __init__(self):
        self.subsets = {}

    def on_step_end(self, state, control, ctx):
        if control.new_subset is not None:
            self.subsets[state.step] = np.asarray(control.new_subset[0]).copy()

    def on_step_begin(self, state, control, ctx):
        self.subsets.setdefault("active", []).append((state.step, ctx.sampler.indices.copy()))


def test_reselection_fires_on_schedule_and_changes_the_sampler(tmp_path, data):
    cb = ReselectCallback(ReselectConfig(warmup_steps=3, every=4, budget="0.25", k=8, seed=0))
    watch = Watch()
    r = tiny_recipe("bert", [data.texts[i] for i in data.train_rows])
    train(r, data, TrainConfig(out=str(tmp_path / "ing"), steps=12, batch_size=4, log_every=0, save_every=0,
                               eval_batches=1), callbacks=[cb, watch])
    assert [h["step"] for h in cb.history] == [3, 7, 11]
    assert sorted(k for k in watch.subsets if k != "active") == [3, 7, 11]
    active = dict(watch.subsets["active"])
    n_train = len(data.train_rows)
    assert len(active[0]) == n_train  # warm-up on all training rows
    from subsetlm.select.budget import parse_budget

    assert len(active[3]) == parse_budget("0.25").resolve(n_train, None).count and np.array_equal(active[3], watch.subsets[3])
    assert not np.isin(active[3], data.val_rows).any()  # never the validation split
    assert not np.array_equal(np.sort(active[3]), np.sort(active[7]))  # re-embedding changed the subset
    lines = [json.loads(x) for x in (tmp_path / "ing" / "reselection" / "rounds.jsonl").read_text().splitlines()]
    assert [x["round"] for x in lines] == [0, 1, 2]
    assert all(x["objective"] <= x["upper_bound"] + 1e-9 for x in lines)
    assert lines[0]["layer"] == default_layer(r.model) == 2


def test_reuse_mode_embeds_once(tmp_path, data, monkeypatch):
    cb = ReselectCallback(ReselectConfig(warmup_steps=2, every=2, mode="reuse", k=8))
    calls = []
    orig = cb.embed
    monkeypatch.setattr(cb, "embed", lambda ctx: calls.append(1) or orig(ctx))
    r = tiny_recipe("gpt2", [data.texts[i] for i in data.train_rows])
    train(r, data, TrainConfig(out=str(tmp_path / "reuse"), steps=7, batch_size=4, log_every=0, save_every=0,
                               eval_batches=1), callbacks=[cb])
    assert len(calls) == 1 and [h["step"] for h in cb.history] == [2, 4, 6]
    assert [h["reused_embeddings"] for h in cb.history] == [False, True, True]
    assert default_layer(r.model) == r.model.config.n_layer  # GPT-2: the last layer
