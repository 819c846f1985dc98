"""INGENIOUS re-selection during pretraining, as a training callback.

Schedule: the run warms up on all training rows for ``warmup_steps``; at that step the
callback embeds the ground set (every training row, never the validation split) with
the model's own layer ``layer`` through the ``hf:`` embedder code path
(:meth:`subsetlm.embed.hf.HFEmbedder.from_model`: mean pooling over real tokens for
encoders, the last real token for GPT-2), selects ``budget`` of it with the selection
engine (:func:`subsetlm.select.api.select_array`: facility location on the kNN graph,
k-means partitions, Taylor-softmax gain sampling by default) and hands the new rows to
the loop through ``control.new_subset``. Every ``every`` steps after that it selects
again:

* ``mode="reembed"`` (default): re-embed with the current model, then select;
* ``mode="reuse"``: keep the first round's embeddings (what the INGENIOUS code does with
  its gains) and only draw a new sample (seed ``seed + round``).

Each round is logged to ``RUN/reselection/rounds.jsonl`` (step, size, objective, bound,
ratio, random-subset objective, seconds) and, when the rows come from an embedding store,
written as a subset file ``RUN/reselection/round-NNN/`` in the usual format.

In your own training loop, build a ``TrainContext(model, tokenizer, recipe=None,
data=TrainData.from_texts(texts), config=None, run_dir=OUT)`` and call
``on_step_end(state, control, ctx)`` after each step; when ``control.new_subset`` is set,
hand its ``(rows, weights)`` to your sampler (``SubsetSampler.update``). Without a recipe
the pooling is the last token for GPT-2 and the mean otherwise
(``examples/reselect_loop.py`` does exactly this).

Example
-------
>>> cb = ReselectCallback(ReselectConfig(warmup_steps=100, every=500, budget="0.25"))  # doctest: +SKIP
>>> train(recipe, data, TrainConfig(out="runs/ing", steps=2000), callbacks=[cb])       # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from subsetlm.recipes.callbacks import Callback, Control, TrainContext, TrainState

logger = logging.getLogger(__name__)

MODES = ("reembed", "reuse")


@dataclass
class ReselectConfig:
    """Settings of the INGENIOUS callback.

    warmup_steps : steps on all training rows before the first selection (W).
    every : re-select every R steps after W (0 = select once, at W).
    budget : fraction, count or ``tokens:N`` of the ground set (default 0.25, the paper's).
    layer : hidden-state layer to embed with; default 3/4 of the depth for encoders
        (BERT-base: 9, as in the paper), the last layer for GPT-2.
    partitions : k-means partitions of the ground set (0 = one per 10,000 rows, at least 1).
    sampling : ``taylor-softmax`` (INGENIOUS) or ``topk``.
    mode : ``reembed`` or ``reuse`` (see the module docstring).
    """

    warmup_steps: int = 100
    every: int = 0
    budget: str = "0.25"
    layer: int | None = None
    partitions: int = 0
    sampling: str = "taylor-softmax"
    optimizer: str = "lazy"
    k: int = 32
    mode: str = "reembed"
    seed: int = 0
    n_jobs: int = 1
    batch_size: int = 64

    def validate(self) -> None:
        if self.warmup_steps < 1:
            raise ValueError(f"warmup_steps={self.warmup_steps}; the model needs >= 1 warm-up step on all data "
                             f"before its hidden states can select (INGENIOUS warms up for an epoch)")
        if self.every < 0:
            raise ValueError(f"reselect every={self.every}; expected >= 0 (0 = select once)")
        if self.mode not in MODES:
            raise ValueError(f"reselect mode={self.mode!r}; choose one of {', '.join(MODES)}")
        if self.sampling not in ("taylor-softmax", "topk"):
            raise ValueError(f"reselect sampling={self.sampling!r}; choose taylor-softmax or topk")


def _is_main() -> bool:
    import torch.distributed as td

    return not (td.is_available() and td.is_initialized()) or td.get_rank() == 0


def _pooling(ctx: TrainContext) -> str:
    """The recipe's pooling; without a recipe (your own loop): last token for GPT-2, mean otherwise."""
    if ctx.recipe is not None:
        return ctx.recipe.pooling
    return "last" if getattr(ctx.model.config, "model_type", "") == "gpt2" else "mean"


def _max_length(ctx: TrainContext) -> int | None:
    """The recipe's sequence length; without a recipe, the model's position limit."""
    if ctx.recipe is not None:
        return ctx.recipe.seq_len
    cfg = ctx.model.config
    return getattr(cfg, "n_positions", None) or getattr(cfg, "max_position_embeddings", None)


def default_layer(model: Any) -> int:
    """INGENIOUS's layer: 3/4 of an encoder's depth (9 of 12), the last layer of a causal LM."""
    cfg = model.config
    n = int(getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer"))
    if getattr(cfg, "model_type", "") == "gpt2":
        return n
    return max(1, int(round(0.75 * n)))


class ReselectCallback(Callback):
    """Warm up, embed with the model's own layer, select, re-select every R steps."""

    def __init__(self, config: ReselectConfig) -> None:
        config.validate()
        self.cfg = config
        self.rounds = 0
        self._X: np.ndarray | None = None
        self._x_path: str | None = None
        self.history: list[dict] = []

    def due(self, step: int) -> bool:
        w, r = self.cfg.warmup_steps, self.cfg.every
        return step == w or (r > 0 and step > w and (step - w) % r == 0)

    def on_step_end(self, state: TrainState, control: Control, ctx: TrainContext) -> None:
        if not self.due(state.step) or state.step >= state.max_steps:
            return
        rows, weights = self.select(state, ctx)
        control.new_subset = (rows, weights)

    # ------------------------------------------------------------------ one round
    def embed(self, ctx: TrainContext) -> np.ndarray:
        from subsetlm.embed.hf import HFEmbedder

        layer = self.cfg.layer if self.cfg.layer is not None else default_layer(ctx.model)
        emb = HFEmbedder.from_model(ctx.model, ctx.tokenizer, layer=layer, pooling=_pooling(ctx),
                                    max_length=_max_length(ctx))
        texts = [ctx.data.texts[int(r)] for r in ctx.data.train_rows]
        return emb.embed(texts, batch_size=self.cfg.batch_size)

    def select(self, state: TrainState, ctx: TrainContext) -> tuple[np.ndarray, np.ndarray]:
        from subsetlm.select.api import select_array

        t0 = time.perf_counter()
        reuse = self.cfg.mode == "reuse" and self._X is not None
        X = self._X if reuse else self.embed(ctx)
        t_embed = time.perf_counter() - t0
        ground = ctx.data.train_rows
        parts = self.cfg.partitions or max(1, int(round(len(ground) / 10_000)))
        t1 = time.perf_counter()
        sel = select_array(X, self.cfg.budget, k=min(self.cfg.k, len(ground)), optimizer=self.cfg.optimizer,
                           sampling=self.cfg.sampling, partitions=parts if parts > 1 else 0,
                           n_tokens=self._token_counts(ctx, ground),
                           n_jobs=self.cfg.n_jobs, seed=self.cfg.seed + self.rounds)
        rows = ground[sel.indices]
        rec = {"round": self.rounds, "step": state.step, "size": int(len(rows)), "ground": int(len(ground)),
               "mode": self.cfg.mode, "reused_embeddings": bool(reuse),
               "layer": self.cfg.layer if self.cfg.layer is not None else default_layer(ctx.model),
               "partitions": int(parts), "sampling": self.cfg.sampling,
               **{k: v for k, v in sel.certificate.items() if k != "scope"},
               "embed_s": round(t_embed, 3), "select_s": round(time.perf_counter() - t1, 3)}
        self._write_round(ctx, rec, rows, sel, X if self.cfg.mode == "reuse" and not reuse else None)
        if self.cfg.mode == "reuse" and self._X is None:
            self._X = X
        self.history.append(rec)
        self.rounds += 1
        logger.info("re-selection round %d at step %d: %d of %d rows, f(S)=%.4g (%.2fx random), embed %.1fs, "
                 "select %.1fs", rec["round"], state.step, len(rows), len(ground), rec["objective"],
                 rec.get("lift_over_random") or float("nan"), rec["embed_s"], rec["select_s"])
        return rows, sel.weights

    def _token_counts(self, ctx: TrainContext, ground: np.ndarray) -> np.ndarray | None:
        """Tokens per ground row, needed only for a ``tokens:N`` budget."""
        if not str(self.cfg.budget).startswith("tokens:"):
            return None
        return np.asarray([len(t) for t in ctx.data.tokens(ctx.tokenizer, ground)], dtype=np.int64)

    def _write_round(self, ctx: TrainContext, rec: dict, rows: np.ndarray, sel: Any, X: np.ndarray | None) -> None:
        d = Path(ctx.run_dir) / "reselection"
        if X is not None:
            self._x_path = str(d / "embeddings-round-000.npy")
        if not _is_main():  # torchrun: every process selects the same subset; rank 0 writes it
            return
        d.mkdir(parents=True, exist_ok=True)
        if X is not None:
            np.save(self._x_path, X)
        store = getattr(ctx.data, "store", None)
        if store is not None:
            from subsetlm.subsets import write_subset

            manifest = {"config": {"selector": "ingenious-reselection", **asdict(self.cfg)}, "seed": self.cfg.seed +
                        rec["round"], "function": "facility-location",
                        "certificate": {k: rec.get(k) for k in ("objective", "upper_bound", "ratio",
                                                                "random_objective")},
                        "selection": {"step": rec["step"], "round": rec["round"], "layer": rec["layer"]}}
            write_subset(d / f"round-{rec['round']:03d}", store=store, indices=rows, gains=sel.gains,
                         weights=sel.weights, partitions=sel.partitions, manifest=manifest, overwrite=True)
        else:
            np.save(d / f"round-{rec['round']:03d}-rows.npy", rows)
        with open(d / "rounds.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(rec, sort_keys=True, default=float) + "\n")

    # ------------------------------------------------------------------ resume
    def state_dict(self) -> dict:
        return {"rounds": self.rounds, "embeddings": self._x_path, "history": self.history}

    def load_state_dict(self, state: dict) -> None:
        self.rounds = int(state.get("rounds", 0))
        self.history = list(state.get("history", []))
        self._x_path = state.get("embeddings")
        self._X = np.load(self._x_path) if self._x_path and self.cfg.mode == "reuse" else None

    def on_train_begin(self, state: TrainState, control: Control, ctx: TrainContext) -> None:
        # a resumed run: drop round records written after the checkpoint it resumes from
        f = Path(ctx.run_dir) / "reselection" / "rounds.jsonl"
        if f.is_file() and _is_main():
            lines = [ln for ln in f.read_text(encoding="utf-8").splitlines() if ln.strip()]
            f.write_text("".join(ln + "\n" for ln in lines[: self.rounds]), encoding="utf-8")
