"""One training run of ``benchmarks/selection_quality.py`` (private helper), in a worker process.

A run is a dict (a *job*): corpus, budget, arm, seed, regime, steps and the model settings.
:func:`run_job` trains the library's GPT-2 recipe (``subsetlm.recipes``: the same model,
packing, sampler and loop ``subsetlm train`` uses) on the arm's rows for exactly
``steps`` steps and writes ``RESULT.json`` atomically: held-out loss (overall and per
source), the training curve, tokens seen and passes over the subset, wall time.

Pairing: the seed fixes the initial weights (identical in every arm) and the order the
sampler draws rows in; the random arm also draws its subset with it. Everything else is
deterministic, so two arms of one seed differ only in the data they train on.

Each worker runs one thread (``torch.set_num_threads(1)``): small models on a CPU get
more runs per hour from parallel single-thread runs than from one run on all cores.

Example
-------
>>> cap_prefix(__import__("numpy").array([3, 1, 2]), __import__("numpy").array([5, 5, 5]), 10).tolist()
[3, 1]
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


def init_worker() -> None:
    """One thread per worker process (set before torch is used)."""
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
        os.environ[var] = "1"
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import torch

    torch.set_num_threads(1)
    logging.getLogger("transformers").setLevel(logging.ERROR)
    logging.getLogger("subsetlm").setLevel(logging.WARNING)


def cap_prefix(order: np.ndarray, n_tokens: np.ndarray, cap: int) -> np.ndarray:
    """The longest prefix of ``order`` whose tokens fit ``cap``."""
    c = np.cumsum(n_tokens[order])
    return order[: int(np.searchsorted(c, cap, side="right"))]


def random_rows(n_tokens: np.ndarray, cap: int, seed: int) -> np.ndarray:
    """A seeded random subset under the token cap (a random order's prefix), sorted."""
    rng = np.random.default_rng([seed, 17])
    return np.sort(cap_prefix(rng.permutation(len(n_tokens)), n_tokens, cap))


@functools.lru_cache(maxsize=4)
def _corpus(path: str):
    from benchmarks._quality_data import Corpus

    return Corpus.load(Path(path))


@functools.lru_cache(maxsize=2)
def _tokenizer(path: str):
    from subsetlm.recipes.tokenizer import load_tokenizer

    return load_tokenizer(path)


def _data(corpus, eval_rows: int):
    """TrainData whose validation rows are the corpus's held-out texts (never sampled for training)."""
    from subsetlm.recipes.data import TrainData

    held = corpus.heldout[:eval_rows] if corpus.name != "imbalanced" else corpus.heldout
    texts = corpus.texts + held
    n, h = corpus.n, len(held)
    ids = np.asarray([f"r{i}" for i in range(n + h)])
    return TrainData(texts, ids, ids, np.arange(n, dtype=np.int64), np.arange(n, n + h, dtype=np.int64),
                     spec=corpus.name)


def _per_source(recipe, data, model, corpus, cfg, amp, dev: str) -> dict:
    """Held-out loss of each source (imbalanced corpus) and their unweighted mean."""
    import torch

    from subsetlm.recipes.loop import evaluate

    src = corpus.heldout_source[: len(data.val_rows)]
    out = {}
    for s in sorted(set(src.tolist())):
        view = replace(data, val_rows=data.val_rows[src == s])
        m = evaluate(recipe, view, model, torch.device(dev), batch_size=cfg.batch_size, n_batches=10**6,
                     seed=cfg.seed, amp=amp)
        out[s] = m.get("val_loss")
    out["macro"] = float(np.mean([v for v in out.values()]))
    return out


def run_job(job: dict) -> dict:
    """Train one arm/seed; write and return its result (skipped when ``job["out"]`` exists)."""
    out = Path(job["out"])
    if out.is_file():
        return json.loads(out.read_text())
    import torch

    from subsetlm.recipes.base import build_recipe
    from subsetlm.recipes.loop import TrainConfig, _amp, evaluate, train
    from subsetlm.recipes.presets import Preset
    from subsetlm.recipes.reselect import ReselectCallback, ReselectConfig

    t0 = time.perf_counter()
    corpus = _corpus(job["corpus_path"])
    data = _data(corpus, job["eval_rows"])
    n_tokens = np.load(job["tokens_path"])
    m = job["model"]
    dev = m.get("device", "cpu")
    preset = Preset("bench", hidden=m["hidden"], layers=m["layers"], heads=m["heads"], intermediate=4 * m["hidden"],
                    seq_len=m["seq_len"], vocab_size=m["vocab"], gpt2_vocab_size=m["vocab"], batch_size=m["batch"],
                    lr=m["lr"], steps=job["steps"], warmup=m["warmup"], dropout=0.0)
    recipe = build_recipe("gpt2", [], preset=preset, seq_len=m["seq_len"], tokenizer=_tokenizer(job["tokenizer"]),
                          seed=job["seed"])
    callbacks, rows = [], None
    arm = job["arm"]
    if arm == "random":
        rows = random_rows(n_tokens, job["cap"], job["seed"])
    elif arm == "ingenious":
        w = max(1, int(job["steps"] * job["ingenious"]["warmup"]))
        every = max(1, int(job["steps"] * job["ingenious"]["every"]))
        callbacks = [ReselectCallback(ReselectConfig(warmup_steps=w, every=every, budget=f"tokens:{job['cap']}",
                                                     seed=job["seed"], n_jobs=1, batch_size=32))]
    elif arm != "full":
        rows = np.load(job["rows_path"])
    run_dir = out.with_name(out.stem + ".run")
    shutil.rmtree(run_dir, ignore_errors=True)
    cfg = TrainConfig(out=str(run_dir), steps=job["steps"], batch_size=m["batch"], lr=m["lr"], warmup=m["warmup"],
                      schedule=m["schedule"], seed=job["seed"], device=dev, precision=m["precision"],
                      save_every=0, eval_every=0, eval_batches=10**6, log_every=max(1, job["steps"] // 20),
                      keep_checkpoints=1)
    amp = _amp(cfg.precision, torch.device(dev))
    step0 = None
    if job.get("step0"):
        recipe.model.to(dev)
        step0 = evaluate(recipe, data, recipe.model, torch.device(dev), batch_size=cfg.batch_size,
                         n_batches=10**6, seed=cfg.seed, amp=amp).get("val_loss")
    res = train(recipe, data, cfg, callbacks, rows=rows)
    curve = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    result = {k: job[k] for k in ("corpus", "budget", "arm", "seed", "regime", "steps", "cap")}
    result.update({
        "heldout_loss": res.final_eval.get("val_loss"),
        "heldout_targets": res.final_eval.get("val_targets"),
        "step0_loss": step0,
        "train_rows": None if rows is None else int(len(rows)),
        "subset_tokens": None if rows is None else int(n_tokens[rows].sum()),
        "tokens_seen": int(res.state.tokens_seen),
        "passes": res.state.epoch,
        "curve": [{"step": c["step"], "loss": round(c["loss"], 5)} for c in curve if "loss" in c],
        "wall_s": round(time.perf_counter() - t0, 1),
    })
    if corpus.name == "imbalanced":
        result["per_source"] = _per_source(recipe, data, recipe.model, corpus, cfg, amp, dev)
    if callbacks:
        result["reselect"] = [{k: h.get(k) for k in ("step", "size", "objective", "lift_over_random", "embed_s",
                                                     "select_s")} for h in callbacks[0].history]
    from subsetlm._io import write_bytes_atomic

    write_bytes_atomic(out, json.dumps(result, indent=1).encode("utf-8"))
    shutil.rmtree(run_dir, ignore_errors=True)
    return result
