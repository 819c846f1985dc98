"""Does a selected subset beat a random one, and how close does it come to the full corpus? Held-out loss, paired seeds.

Every selector against random and full data on four corpora built from real text at run
time (``benchmarks/_quality_data.py``): PubMed as it comes (``natural``), the same with 50%
and 75% of the rows heavy-tailed near-duplicates (``redundant-50``, ``redundant-75``), and a
PubMed-dominated mixture with three small sources (``imbalanced``, held-out loss per
source). Arms (``benchmarks/_quality_arms.py``): ``full``, ``random``, facility location on
hashed n-grams and on MiniLM, SemDeDup + random fill, D4, DSIR toward a sample of the
held-out distribution, weighted facility location (coverage + DSIR quality term), and
INGENIOUS re-selection with the model's own hidden states.

Design (what buys the power to separate arms on a CPU):

* **equal tokens and steps**: every arm of a (corpus, budget) gets the same BPE-token cap
  and trains the same number of steps with the library's GPT-2 recipe and loop;
* **regimes**: ``compute`` (default) trains one pass over the cap (no row repeats; full =
  a random share of the full corpus, seen once), ``data`` trains one pass over the *full*
  corpus's tokens (a 25% subset is seen four times);
* **paired seeds**: seed s fixes the initial weights (identical in every arm) and the data
  order; differences between arms are taken per seed; the random arm draws a new subset
  per seed (its spread includes the luck of the draw);
* **less noise**: no dropout, cosine decay to zero, the same held-out text for every arm;
* **parallel single-thread runs**: ``--workers`` processes (default: the core count).

Primary metric: held-out loss (nats per token). For every comparison the report gives the
paired mean difference with its 95% CI, the paired t-test p-value, and, when the CI covers
zero, the minimum detectable effect at this many seeds (80% power) and the seeds the
observed difference would need. Results are cached per run under
``$SUBSETLM_CACHE/bench/selection-quality/PRESET``; a re-run resumes where it stopped.

Run::

    .venv/bin/python benchmarks/selection_quality.py --preset cpu                 # everything, tier by tier
    .venv/bin/python benchmarks/selection_quality.py --preset cpu --tiers 1 2     # the headline and the 4 corpora
    .venv/bin/python benchmarks/selection_quality.py --preset cpu --report-only   # tables from finished runs
    .venv/bin/python benchmarks/selection_quality.py --preset gpu                 # GPT-2-small scale, on a GPU
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import sys
import time
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import setup_logging  # noqa: E402

PRESETS = {
    # 2-core CPU: GPT-2 tiny (0.9M parameters), 8,000-row corpora of ~2.9M BPE tokens; a 25% run is 355 steps
    "cpu": {"rows": 8000, "heldout": 1000, "eval_rows": 600, "target": 500, "seeds": 10, "seeds_other": 5,
            "model": {"hidden": 128, "layers": 2, "heads": 2, "seq_len": 128, "vocab": 4096, "batch": 16,
                      "lr": 1e-3, "warmup": 0.05, "schedule": "cosine", "precision": "bf16"},
            "ingenious": {"warmup": 0.2, "every": 0.4}},
    # one GPU: GPT-2 small (12 layers x 768, 124M parameters) on 24,000-row corpora (~8.7M tokens; PubMed holds
    # ~33k abstracts). Not run yet (no GPU lent so far); estimated from 6 x parameters x tokens at ~100 TFLOP/s:
    # a 25% run (~2.2M tokens, 530 steps) ~30 s plus evaluation, the six tiers (~300 runs) ~3-4 h on one GPU.
    "gpu": {"rows": 24000, "heldout": 2000, "eval_rows": 2000, "target": 1000, "seeds": 10, "seeds_other": 5,
            "model": {"hidden": 768, "layers": 12, "heads": 12, "seq_len": 128, "vocab": 16384, "batch": 32,
                      "lr": 3e-4, "warmup": 0.05, "schedule": "cosine", "precision": "bf16", "device": "cuda"},
            "ingenious": {"warmup": 0.2, "every": 0.4}},
}
CORPORA = ("natural", "redundant-50", "redundant-75", "imbalanced")
OTHER_ARMS = ("fl-minilm", "semdedup", "d4", "dsir", "weighted-fl", "ingenious")


def tiers(p: dict) -> dict[int, list[tuple]]:
    """Priority tiers of (corpus, budget, arm, n_seeds, regime); a run does tier 1 first, seeds interleaved."""
    s, so = p["seeds"], p["seeds_other"]
    return {
        1: [("redundant-75", 0.25, a, s, "compute") for a in ("random", "fl-hashing", "full")],
        2: [(c, 0.25, a, s, "compute") for c in ("natural", "redundant-50", "imbalanced") for a in ("random", "fl-hashing")],
        3: [("redundant-75", 0.25, "fl-minilm", s, "compute")]
        + [("redundant-75", 0.25, a, so, "compute") for a in OTHER_ARMS[1:]],
        4: [("redundant-75", b, a, s, "compute") for b in (0.10, 0.50) for a in ("random", "fl-hashing")],
        5: [(c, 0.25, a, so, "compute") for c in ("natural", "redundant-50", "imbalanced")
            for a in ("full",) + OTHER_ARMS],
        6: [("redundant-75", 0.25, a, so, "data") for a in ("random", "fl-hashing", "full")],
    }


def root_dir(preset: str) -> Path:
    from subsetlm._io import cache_dir

    p = cache_dir() / "bench" / "selection-quality" / preset
    p.mkdir(parents=True, exist_ok=True)
    return p


class Setup:
    """Corpora, tokenizer, token counts and (lazily) embeddings of one preset."""

    def __init__(self, preset: str):
        from benchmarks import _quality_data as D
        from subsetlm.recipes.tokenizer import load_tokenizer

        self.name, self.p, self.root = preset, PRESETS[preset], root_dir(preset)
        self.corpora = D.build_corpora(self.root, self.p["rows"], self.p["heldout"], self.p["target"])
        self.tok_path = D.tokenizer_dir(self.root, self.corpora, self.p["model"]["vocab"], self.p["model"]["seq_len"])
        tok = load_tokenizer(self.tok_path)
        self.n_tokens, self.tok_paths = {}, {}
        for name, c in self.corpora.items():
            path = self.root / f"ntok-{name}.npy"
            if not path.is_file():
                np.save(path, D.token_counts(tok, c.texts))
            self.n_tokens[name], self.tok_paths[name] = np.load(path), path
        self.entropy = {name: D.unigram_entropy(tok, c.heldout[: self.p["eval_rows"]] if name != "imbalanced"
                                                else c.heldout) for name, c in self.corpora.items()}

    def emb(self, corpus: str) -> dict:
        from benchmarks._quality_data import embeddings

        c = self.corpora[corpus]
        return {m: (lambda m=m: embeddings(self.root, c, m)) for m in ("hashing", "minilm")}

    def cap(self, corpus: str, budget: float) -> int:
        return int(budget * self.n_tokens[corpus].sum())

    def steps(self, corpus: str, budget: float, regime: str) -> int:
        m = self.p["model"]
        tokens = self.n_tokens[corpus].sum() if regime == "data" else self.cap(corpus, budget)
        return int(tokens // (m["batch"] * m["seq_len"]))

    def job(self, corpus: str, budget: float, arm: str, seed: int, regime: str) -> dict:
        from benchmarks._quality_arms import FIXED_ARMS, cached_rows

        c = self.corpora[corpus]
        cap = self.cap(corpus, budget)
        rows = None
        if arm in FIXED_ARMS:
            rows = str(cached_rows(self.root, arm, c, self.n_tokens[corpus], cap, budget, self.emb(corpus)))
        tag = f"{corpus}-{budget:g}-{arm}-{regime}-s{seed}"
        return {"corpus": corpus, "budget": budget, "arm": arm, "seed": seed, "regime": regime,
                "steps": self.steps(corpus, budget, regime), "cap": cap, "model": self.p["model"],
                "ingenious": self.p["ingenious"], "corpus_path": str(self.root / f"corpus-{corpus}.json.gz"),
                "tokens_path": str(self.tok_paths[corpus]), "tokenizer": str(self.tok_path),
                "eval_rows": self.p["eval_rows"], "rows_path": rows, "step0": arm == "random",
                "out": str(self.root / "runs" / f"{tag}.json")}


def plan(setup: Setup, want: list[int]) -> list[tuple]:
    """(corpus, budget, arm, seed, regime) in run order: tier by tier, seed-major inside a tier."""
    out = []
    for t in want:
        specs = tiers(setup.p)[t]
        for seed in range(max(s[3] for s in specs)):
            out += [(c, b, a, seed, r) for c, b, a, n, r in specs if seed < n]
    return out


def run(setup: Setup, todo: list[tuple], workers: int, max_hours: float | None) -> None:
    """Run the jobs not yet done, ``workers`` at a time; stop launching after ``max_hours``."""
    from benchmarks._quality_train import init_worker, run_job

    (setup.root / "runs").mkdir(exist_ok=True)
    t0 = time.time()
    pending = [k for k in todo if not Path(setup.job(*k)["out"]).is_file()]
    logging.info("%d runs planned, %d already done, %d to run on %d workers", len(todo), len(todo) - len(pending),
                 len(pending), workers)
    done = 0
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn"), initializer=init_worker) as ex:
        live = {}
        while pending or live:
            while pending and len(live) < workers and (max_hours is None or time.time() - t0 < max_hours * 3600):
                k = pending.pop(0)
                live[ex.submit(run_job, setup.job(*k))] = k
            if not live:
                break
            fin, _ = wait(list(live), return_when=FIRST_COMPLETED)
            for f in fin:
                k = live.pop(f)
                r = f.result()
                done += 1
                logging.info("[%d/%d] %s: held-out loss %.4f (%.0f s)", done, done + len(pending) + len(live),
                             "/".join(map(str, k)), r["heldout_loss"], r["wall_s"])
    logging.info("%d runs in %.1f min", done, (time.time() - t0) / 60)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu", choices=sorted(PRESETS))
    ap.add_argument("--tiers", type=int, nargs="+", default=[1, 2, 3, 4, 5, 6],
                    help="priority tiers to run (1: redundant-75 headline; 2: four corpora; 3: other arms; "
                         "4: budgets 10/50%%; 5: other arms on every corpus; 6: the data-bound regime)")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="parallel single-thread runs")
    ap.add_argument("--max-hours", type=float, help="stop launching new runs after this long (finished runs are kept)")
    ap.add_argument("--report-only", action="store_true", help="write the tables from the finished runs")
    ap.add_argument("--no-write", action="store_true", help="print the report, do not touch docs/")
    a = ap.parse_args()
    setup_logging()
    t0 = time.time()
    setup = Setup(a.preset)
    if not a.report_only:
        run(setup, plan(setup, a.tiers), a.workers, a.max_hours)
    from benchmarks._quality_report import report

    report(setup, plan(setup, sorted(tiers(setup.p))), write=not a.no_write, elapsed_s=time.time() - t0)


if __name__ == "__main__":
    main()
