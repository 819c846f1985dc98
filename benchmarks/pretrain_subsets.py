"""End-to-end: does a selected 25% subset match the full corpus and beat a random 25%, at equal steps?

On real data — PubMed abstracts (pretraining) and the PubMed publication-type task
(``pubmed-task``: review / case_report / clinical_trial / research_article), evaluated on
held-out PMIDs — one command:

1. builds the pretraining corpus: the first ``--n-docs`` abstracts (by PMID hash) whose PMID is
   **not** in the task's validation or test split, embedded with MiniLM in chunks of at most
   ``seq_len - 2`` tokens (so a chunk fits one training sequence);
2. writes two 25% subset files: a seeded random one, and facility location on the kNN graph;
3. pretrains the same recipe (default ``bert``) for the same number of steps on (a) the full
   corpus, (b) the random subset, (c) the facility-location subset, (d) INGENIOUS
   re-selection (warm-up on all data, then re-selection with the model's own layer);
4. fine-tunes each on the task with 3 seeds and reports test macro-F1 mean ± std, with
   pretraining wall time and a FLOPs estimate (6 × tokens × parameters).

Everything is cached under ``$SUBSETLM_CACHE/bench/pretrain-subsets/PRESET`` and re-used on a
re-run (finished runs are skipped), so an interrupted benchmark resumes.

Run::

    .venv/bin/python benchmarks/pretrain_subsets.py --preset tiny        # 2-core CPU, under an hour
    .venv/bin/python benchmarks/pretrain_subsets.py --preset small       # a GPU
    .venv/bin/python benchmarks/pretrain_subsets.py --preset tiny --quick --no-write   # smoke run
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, macro_f1_figure, publish, setup_logging  # noqa: E402

PRESETS = {  # per preset: corpus size, pretraining steps, fine-tuning steps, INGENIOUS schedule
    "tiny": {"n_docs": 4000, "steps": 1000, "ft_steps": 300, "ft_lr": 1e-3, "warmup_steps": 200,
             "reselect_every": 400},
    "small": {"n_docs": 30000, "steps": 20000, "ft_steps": 2000, "ft_lr": 5e-4, "warmup_steps": 2000,
              "reselect_every": 6000},
}
ARMS = ("full", "random-25%", "facility-location-25%", "ingenious-25%")


def _root(preset: str, quick: bool) -> Path:
    from subsetlm._io import cache_dir

    p = cache_dir() / "bench" / "pretrain-subsets" / (preset + ("-quick" if quick else ""))
    p.mkdir(parents=True, exist_ok=True)
    return p


def build_corpus(root: Path, n_docs: int) -> Path:
    """PubMed abstracts minus the task's validation/test PMIDs (no test text in pretraining)."""
    from subsetlm._io import write_bytes_atomic
    from subsetlm.corpus.sources import fetch_source

    out = root / f"pubmed-pretrain-{n_docs}.jsonl"
    if out.is_file():
        return out
    held = set()
    with open(fetch_source("pubmed-task"), encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["split"] != "train":
                held.add(r["id"])
    lines = []
    with gzip.open(fetch_source("pubmed"), "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["id"] in held:
                continue
            lines.append(json.dumps({"id": r["id"], "text": r["text"]}, ensure_ascii=False) + "\n")
            if len(lines) >= n_docs:
                break
    write_bytes_atomic(out, "".join(lines).encode("utf-8"))
    logging.info("pretraining corpus: %d abstracts (%d task validation/test PMIDs held out)", len(lines), len(held))
    return out


def build_subsets(root: Path, store_path: Path, seed: int) -> dict:
    from subsetlm.embed import EmbeddingStore
    from subsetlm.select.api import SelectConfig, select
    from subsetlm.select.baselines import random_subset
    from subsetlm.subsets import read_subset, write_subset

    fl = select(SelectConfig(store=str(store_path), out=str(root / "subset-fl"), budget="0.25", seed=seed),
                progress=True)
    store = EmbeddingStore.open(store_path)
    sub = read_subset(fl, store=store)
    rnd_path = root / "subset-random"
    if not (rnd_path / "_SUCCESS").exists():
        idx = random_subset(store.n, sub.size, seed)  # the random subset the FL certificate compares against
        c = sub.manifest["certificate"]
        write_subset(rnd_path, store=store, indices=idx, gains=np.zeros(len(idx)),
                     manifest={"config": {"selector": "random", "seed": seed}, "seed": seed, "function": "random",
                               "certificate": {"objective": c["random_objective"], "upper_bound": None,
                                               "ratio": None, "random_objective": c["random_objective"]}},
                     overwrite=True)
    return {"fl": fl, "random": rnd_path, "fl_certificate": sub.manifest["certificate"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--recipe", default="bert")
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--n-docs", type=int)
    p.add_argument("--steps", type=int)
    p.add_argument("--quick", action="store_true", help="a few minutes: 600 docs, 60 steps, 1 seed")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    setup_logging()
    cfg = dict(PRESETS[a.preset])
    if a.quick:
        cfg.update(n_docs=600, steps=60, ft_steps=40, warmup_steps=20, reselect_every=20)
        a.seeds = 1
    cfg["n_docs"] = a.n_docs or cfg["n_docs"]
    cfg["steps"] = a.steps or cfg["steps"]
    root = _root(a.preset, a.quick)

    from subsetlm.embed import EmbedConfig, embed_corpus
    from subsetlm.evaluate.run import EvalConfig, evaluate_model
    from subsetlm.recipes.presets import get_preset
    from subsetlm.recipes.run import TrainRunConfig, train_run

    t0 = time.perf_counter()
    corpus = build_corpus(root, cfg["n_docs"])
    seq_len = get_preset(a.preset).seq_len
    store_path = root / "store"
    t = time.perf_counter()
    store = embed_corpus(EmbedConfig(inputs=[str(corpus)], out=str(store_path), id_field="id",
                                     max_tokens=seq_len - 2), progress=True)
    embed_s = time.perf_counter() - t
    t = time.perf_counter()
    subs = build_subsets(root, store_path, seed=0)
    select_s = time.perf_counter() - t
    arms = {
        "full": dict(corpus=[str(store_path)]),
        "random-25%": dict(subset=str(subs["random"])),
        "facility-location-25%": dict(subset=str(subs["fl"])),
        "ingenious-25%": dict(corpus=[str(store_path)], warmup_steps=cfg["warmup_steps"],
                              reselect_every=cfg["reselect_every"]),
    }
    rows = []
    for arm, kw in arms.items():
        run = root / f"run-{a.recipe}-{arm.replace('%', 'pct')}"
        train_run(TrainRunConfig(recipe=a.recipe, out=str(run), preset=a.preset, steps=cfg["steps"], seed=0,
                                 **kw), progress=True)
        res = json.loads((run / "results.json").read_text())
        ev = evaluate_model(EvalConfig(model=str(run), task="pubmed-task", method="finetune",
                                       out=str(root / f"eval-{run.name}.json"), seeds=a.seeds,
                                       max_steps=cfg["ft_steps"], min_steps=cfg["ft_steps"], lr=cfg["ft_lr"],
                                       balanced=True), progress=True)
        rows.append({"arm": arm, "pretrain": res, "eval": ev})
        r = ev["results"]["all"]
        logging.info("%s: macro-F1 %.4f ± %.4f", arm, r["macro_f1"]["mean"], r["macro_f1"]["std"])
    total_s = time.perf_counter() - t0
    report(a, cfg, store, subs, rows, embed_s, select_s, total_s)


def report(a, cfg, store, subs, rows, embed_s, select_s, total_s) -> None:
    from subsetlm.recipes.presets import get_preset

    base = rows[0]["eval"]["majority_baseline"]
    full_f1 = rows[0]["eval"]["results"]["all"]["macro_f1"]["mean"]
    c = subs["fl_certificate"]
    lines = [f"## Pretraining on subsets, end to end (`benchmarks/pretrain_subsets.py --preset {a.preset}`)", "",
             f"Machine: {machine()}. Recipe `{a.recipe}`, preset `{a.preset}`, {cfg['steps']} pretraining steps in "
             f"every arm (same batch size, so the same number of sequences and about the same tokens). Pretraining "
             f"corpus: {cfg['n_docs']} PubMed abstracts whose PMIDs are not in the task's validation/test splits, "
             f"embedded with MiniLM into {store.n} chunks of at most {get_preset(a.preset).seq_len - 2} tokens. Task: `pubmed-task` "
             f"(4 publication types, {base['accuracy']:.0%} of test in the majority class), fine-tuned for "
             f"{cfg['ft_steps']} steps (lr {cfg['ft_lr']:g}, class-balanced batches) on the full train split, model chosen on "
             f"validation, scored on the held-out test PMIDs; {a.seeds} fine-tuning seeds (mean ± std). "
             f"Subsets: 25% of the chunks; facility location f(S) = {c['objective']:.1f} vs random "
             f"{c['random_objective']:.1f} (certificate ratio {c['ratio']:.3f}). INGENIOUS: warm-up "
             f"{cfg['warmup_steps']} steps on all data, re-selection every {cfg['reselect_every']} steps with the "
             f"model's own layer (Taylor-softmax sampling). Embedding took {embed_s:.0f} s and selection "
             f"{select_s:.0f} s (cached on re-runs: 0 s); the whole benchmark {total_s / 60:.0f} min.", "",
             "| pretraining data | rows trained on | tokens | FLOPs (6·N·P) | pretrain wall | held-out MLM loss | "
             "test macro-F1 | test accuracy | Δ macro-F1 vs full |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p, e = r["pretrain"], r["eval"]["results"]["all"]
        f1, acc = e["macro_f1"], e["accuracy"]
        lines.append(f"| {r['arm']} | {p['train_rows']:,} | {p['tokens']:,} | {p['flops_estimate']:.2e} | "
                     f"{p['wall_s']:.0f} s | {p['final_eval'].get('val_loss', float('nan')):.3f} | "
                     f"{f1['mean']:.4f} ± {f1['std']:.4f} | {acc['mean']:.4f} ± {acc['std']:.4f} | "
                     f"{f1['mean'] - full_f1:+.4f} |")
    lines.append(f"| majority class ({base['label']}) | – | – | – | – | – | {base['macro_f1']:.4f} | "
                 f"{base['accuracy']:.4f} | |")
    fig = macro_f1_figure(rows, base, ["#777", "#c96", "#48a", "#4a8"], f"{a.recipe} {a.preset}, {cfg['steps']} pretraining steps, pubmed-task")
    name = f"pretrain_subsets_{a.preset}.png"
    lines += ["", f"![macro-F1 by pretraining data](figures/{name})", ""]
    publish("\n".join(lines), fig, name, f"pretrain-subsets-{a.preset}", not a.no_write)



if __name__ == "__main__":
    main()
