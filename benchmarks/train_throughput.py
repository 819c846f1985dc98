"""Training throughput: subsetlm's loop vs the Hugging Face ``Trainer``, and MLM vs the light objectives.

1. ``bert`` and ``gpt2`` recipes: tokens/s of ``subsetlm.recipes.train`` against
   ``transformers.Trainer`` on the same model (same config, same initial weights), the same
   sequences (PubMed abstracts, one ``[CLS] … [SEP]`` sequence per abstract for BERT, packed
   ``seq_len`` blocks for GPT-2), the same batch size and optimizer settings, fp32, CPU,
   no evaluation or saving inside the timed window. The first ``--warm`` steps are not timed.
2. Time per step of MLM (``bert``) vs ``slm``, ``rts`` and ``crts`` in subsetlm's loop.

Repeats alternate the contenders so that machine load hits them alike; the tables give the
median and the min-max spread.

Run::

    .venv/bin/python benchmarks/train_throughput.py                 # writes the "train-throughput" section
    .venv/bin/python benchmarks/train_throughput.py --steps 20 --repeats 1 --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, update_section  # noqa: E402
from subsetlm.recipes.base import build_recipe  # noqa: E402
from subsetlm.recipes.callbacks import Callback  # noqa: E402
from subsetlm.recipes.data import load_corpus  # noqa: E402
from subsetlm.recipes.loop import TrainConfig, train  # noqa: E402


class Timer(Callback):
    """Wall time and tokens between the start of step ``warm`` and the end of the last step."""

    def __init__(self, warm: int):
        self.warm, self.t0, self.tok0, self.t1, self.tok1 = warm, None, 0, None, 0

    def on_step_begin(self, state, control, ctx):
        if state.step == self.warm:
            self.t0, self.tok0 = time.perf_counter(), state.tokens_seen

    def on_step_end(self, state, control, ctx):
        if state.step == state.max_steps:
            self.t1, self.tok1 = time.perf_counter(), state.tokens_seen

    def result(self, steps: int) -> dict:
        dt = self.t1 - self.t0
        return {"tokens_per_s": (self.tok1 - self.tok0) / dt, "ms_per_step": 1000 * dt / (steps - self.warm)}


def ours(name, data, recipe_kw, a) -> dict:
    r = build_recipe(name, a.texts, **recipe_kw)
    timer = Timer(a.warm)
    with tempfile.TemporaryDirectory() as d:
        train(r, data, TrainConfig(out=d, steps=a.steps, batch_size=a.batch_size, lr=a.lr, log_every=0, save_every=0,
                                   eval_every=0, eval_batches=1, device="cpu", precision="fp32"), callbacks=[timer])
    return timer.result(a.steps)


def hf_trainer(name, data, recipe_kw, a) -> dict:
    from transformers import DataCollatorForLanguageModeling, Trainer, TrainerCallback, TrainingArguments

    r = build_recipe(name, a.texts, **recipe_kw)  # same seed -> same initial weights as ours()
    tok = r.tokenizer
    rows = data.train_rows
    toks = data.tokens(tok, rows)
    if r.packed:
        eos = tok.eos_token_id
        flat = np.concatenate([np.concatenate([t, [eos]]) for t in toks])
        n = len(flat) // r.seq_len
        seqs = [x.tolist() for x in flat[: n * r.seq_len].reshape(n, r.seq_len)]
    else:
        seqs = [[tok.cls_token_id, *t[: r.seq_len - 2].tolist(), tok.sep_token_id] for t in toks]
    dataset = [{"input_ids": s} for s in seqs]
    base = DataCollatorForLanguageModeling(tok, mlm=not r.packed, mlm_probability=0.15)
    counts: list[int] = []

    def collate(features):
        batch = base(features)
        counts.append(int(batch["attention_mask"].sum()) if "attention_mask" in batch else batch["input_ids"].numel())
        return batch

    times: dict = {}

    class T(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == a.warm:
                times["t0"] = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == a.steps:
                times["t1"] = time.perf_counter()

    with tempfile.TemporaryDirectory() as d:
        args = TrainingArguments(output_dir=d, per_device_train_batch_size=a.batch_size, max_steps=a.steps,
                                 learning_rate=a.lr, warmup_steps=int(0.06 * a.steps), weight_decay=0.01, adam_beta2=0.98,
                                 adam_epsilon=1e-6, max_grad_norm=1.0, logging_strategy="no", save_strategy="no",
                                 report_to=[], dataloader_num_workers=0, use_cpu=True, seed=0, disable_tqdm=True)
        Trainer(model=r.model, args=args, train_dataset=dataset, data_collator=collate, callbacks=[T()]).train()
    dt = times["t1"] - times["t0"]
    timed = a.steps - a.warm
    return {"tokens_per_s": float(np.mean(counts)) * timed / dt, "ms_per_step": 1000 * dt / timed}


def spread(xs: list[float], fmt: str = "{:,.0f}") -> str:
    return f"{fmt.format(statistics.median(xs))} ({fmt.format(min(xs))}–{fmt.format(max(xs))})"


def _one(spec: str, a) -> dict:
    """Measure one (recipe, contender) in this process."""
    name, who = spec.split(":")
    data = load_corpus(["pubmed"], limit=a.n_docs)
    a.texts = [data.texts[i] for i in data.train_rows]
    fn = ours if who == "subsetlm" else hf_trainer
    return fn(name, data, {"preset": a.preset, "seed": 0}, a)


def _isolated(spec: str, a) -> dict:
    """Run one measurement in a fresh Python process, so no contender inherits another's memory or caches."""
    import json
    import subprocess

    cmd = [sys.executable, __file__, "--one", spec, "--n-docs", str(a.n_docs), "--preset", a.preset,
           "--steps", str(a.steps), "--warm", str(a.warm), "--batch-size", str(a.batch_size), "--lr", str(a.lr)]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    import json

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--n-docs", type=int, default=2000)
    p.add_argument("--preset", default="tiny")
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warm", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--no-write", action="store_true")
    p.add_argument("--one", help=argparse.SUPPRESS)
    a = p.parse_args()
    logging.basicConfig(level=logging.ERROR)
    if a.one:
        print(json.dumps(_one(a.one, a)))
        return
    from subsetlm.corpus.sources import fetch_source

    fetch_source("pubmed")  # fetch once, before the timed processes
    res: dict = {}
    for rep in range(a.repeats):
        for name in ("bert", "gpt2"):
            pair = ("subsetlm", "hf") if rep % 2 == 0 else ("hf", "subsetlm")
            for who in pair:
                r = _isolated(f"{name}:{who}", a)
                res.setdefault((name, who), []).append(r)
                print(f"{name:5s} {who:9s} {r['tokens_per_s']:9.0f} tokens/s {r['ms_per_step']:7.1f} ms/step", flush=True)
        for name in ("slm", "rts", "crts"):
            r = _isolated(f"{name}:subsetlm", a)
            res.setdefault((name, "subsetlm"), []).append(r)
            print(f"{name:5s} subsetlm  {r['ms_per_step']:7.1f} ms/step", flush=True)
    n_texts = len(load_corpus(["pubmed"], limit=a.n_docs).train_rows)

    lines = ["## Training throughput (`benchmarks/train_throughput.py`)", "",
             f"Machine: {machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, fp32, CPU.",
             f"Data: {n_texts} PubMed abstracts (training split of the first {a.n_docs}); preset "
             f"`{a.preset}`, batch {a.batch_size}, {a.steps} steps of which the first {a.warm} are not timed; "
             f"{a.repeats} repeats, alternating order, each measurement in its own process; median (min–max).", "",
             "| recipe | subsetlm tokens/s | HF Trainer tokens/s | ratio (median) |", "|---|---|---|---|"]
    for name in ("bert", "gpt2"):
        o = [r["tokens_per_s"] for r in res[(name, "subsetlm")]]
        h = [r["tokens_per_s"] for r in res[(name, "hf")]]
        lines.append(f"| {name} | {spread(o)} | {spread(h)} | {statistics.median(o) / statistics.median(h):.2f}x |")
    lines += ["", "Time per step of the pretraining objectives in subsetlm's loop (same model size and batches):", "",
              "| objective | ms/step | vs MLM |", "|---|---|---|"]
    mlm = statistics.median(r["ms_per_step"] for r in res[("bert", "subsetlm")])
    for name, label in (("bert", "MLM (bert)"), ("slm", "SLM"), ("rts", "RTS"), ("crts", "C-RTS")):
        ms = [r["ms_per_step"] for r in res[(name, "subsetlm")]]
        lines.append(f"| {label} | {spread(ms, '{:.1f}')} | {statistics.median(ms) / mlm - 1:+.0%} |")
    lines += ["", "Tokens are the real (non-pad) input tokens per batch. HF's count is the mean over the batches its "
              "collator built times the timed steps. RTS/C-RTS replace the vocabulary-sized MLM output layer by a "
              "2-way head, which is where their saving comes from. In the tiny preset that projection "
              "(128 x 4,096 per token) costs more than both encoder layers together, so the saving is larger "
              "than at BERT-base size, where it is about a fifth of the forward FLOPs (768 x 30,522 against "
              "12 layers of 7.1M multiply-adds per token)."]
    md = "\n".join(lines)
    print(md)
    if not a.no_write:
        print("wrote", update_section("train-throughput", md))


if __name__ == "__main__":
    main()
