"""TLM on real data: task-driven retrieval + joint training vs random retrieval vs pretraining on everything.

One command, on a general corpus that mixes two domains — PubMed abstracts and U.S. State
of the Union speeches — and a real task, the PubMed publication-type classification
(``pubmed-task``: review / case_report / clinical_trial / research_article):

1. the task: ``--n-train`` training examples (all of them are TLM's queries), with
   ``--n-val`` / ``--n-test`` held-out examples, drawn by PMID hash from the task's own splits;
2. the corpus: ``--n-pubmed`` abstracts whose PMIDs are in **none** of the task's
   examples or held-out splits, plus the most recent State of the Union speeches up to
   ``--sotu-words`` words, embedded with MiniLM in chunks of ``seq_len - 2`` tokens;
3. three 25% subsets of the corpus rows: BM25 retrieval with the task's training
   examples as queries (TLM), a seeded random subset of the same size (the paper's random
   retrieval ablation), and diverse retrieval (BM25 pool of 2× the budget, then facility-
   location mutual information with the task examples as the query set);
4. the same number of pretraining steps for every arm: ``tlm`` joint training (ρ1 external
   batches per task batch, task batches (ρ2·MLM + CE)/(ρ2+1)) on each subset, and ``bert``
   MLM on the full corpus;
5. stage 2 for every arm: fine-tuning on the task alone with a fresh head, 3 seeds, test
   macro-F1 mean ± std, with pretraining FLOPs (6 × tokens × parameters) and wall times.

Everything is cached under ``$SUBSETLM_CACHE/bench/tlm/PRESET``; finished steps are skipped
on a re-run.

Run::

    .venv/bin/python benchmarks/tlm.py --preset tiny            # 2-core CPU, about 40 minutes
    .venv/bin/python benchmarks/tlm.py --quick --no-write       # smoke run, a few minutes
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import logging
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import machine, macro_f1_figure, publish, setup_logging  # noqa: E402

PRESETS = {
    "tiny": {"n_train": 2000, "n_val": 400, "n_test": 1000, "n_pubmed": 2000, "sotu_words": 800_000,
             "steps": 600, "ft_steps": 300, "ft_lr": 1e-3, "rho1": 3, "rho2": 20.0},
}
ARMS = ("tlm-bm25", "tlm-random", "tlm-diverse", "full-corpus-mlm")


def _h(key: str) -> float:
    return int.from_bytes(hashlib.sha256(f"tlm-bench:{key}".encode()).digest()[:8], "big") / 2.0 ** 64


def _root(preset: str, quick: bool) -> Path:
    from subsetlm._io import cache_dir

    p = cache_dir() / "bench" / "tlm" / (preset + ("-quick" if quick else ""))
    p.mkdir(parents=True, exist_ok=True)
    return p


def build_task_and_corpus(root: Path, cfg: dict) -> tuple[Path, Path, dict]:
    """The task JSONL (train/validation/test) and the two-domain corpus folder (pubmed.jsonl + sotu.jsonl)."""
    from subsetlm._io import write_bytes_atomic, write_json_atomic
    from subsetlm.corpus.sources import fetch_source

    task_p, corpus_d, meta_p = root / "task.jsonl", root / "corpus", root / "data.json"
    if task_p.is_file() and meta_p.is_file() and (corpus_d / "sotu.jsonl").is_file():
        return task_p, corpus_d, json.loads(meta_p.read_text())
    rows = [json.loads(x) for x in open(fetch_source("pubmed-task"), encoding="utf-8")]
    want = {"train": cfg["n_train"], "validation": cfg["n_val"], "test": cfg["n_test"]}
    chosen = []
    for split, n in want.items():
        part = sorted((r for r in rows if r["split"] == split), key=lambda r: _h(r["id"]))
        chosen += part[:n]
    in_task = {r["id"] for r in rows if r["split"] != "train"} | {r["id"] for r in chosen}
    write_bytes_atomic(task_p, "".join(json.dumps({k: r[k] for k in ("id", "text", "label", "split")},
                                                  ensure_ascii=False) + "\n" for r in chosen).encode())
    corpus_d.mkdir(exist_ok=True)
    pub = []
    with gzip.open(fetch_source("pubmed"), "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            if r["id"] not in in_task:
                pub.append(r)
    pub = sorted(pub, key=lambda r: _h(r["id"]))[:cfg["n_pubmed"]]
    write_bytes_atomic(corpus_d / "pubmed.jsonl", "".join(json.dumps({"id": r["id"], "text": r["text"]},
                                                                     ensure_ascii=False) + "\n" for r in pub).encode())
    with gzip.open(fetch_source("sotu"), "rt", encoding="utf-8") as fh:
        speeches = sorted((json.loads(x) for x in fh), key=lambda r: r["date"], reverse=True)
    sotu, words = [], 0
    for r in speeches:
        if words >= cfg["sotu_words"]:
            break
        sotu.append(r)
        words += len(r["text"].split())
    write_bytes_atomic(corpus_d / "sotu.jsonl", "".join(json.dumps({"id": "sotu:" + r["id"], "text": r["text"]},
                                                                   ensure_ascii=False) + "\n" for r in sotu).encode())
    meta = {"n_pubmed": len(pub), "n_speeches": len(sotu), "sotu_words": words,
            "sotu_years": [min(r["year"] for r in sotu), max(r["year"] for r in sotu)],
            "task_counts": {s: sum(r["split"] == s for r in chosen) for s in want}}
    write_json_atomic(meta_p, meta)
    return task_p, corpus_d, meta


def build_subsets(root: Path, store_path: Path, task: Path, seed: int) -> dict:
    from subsetlm.embed import EmbeddingStore
    from subsetlm.select.baselines import random_subset
    from subsetlm.retrieve import RetrieveConfig, retrieve
    from subsetlm.subsets import read_subset, write_subset

    out, secs = {}, {}
    for name, method in (("bm25", "bm25"), ("diverse", "diverse")):
        out[name] = retrieve(RetrieveConfig(corpus=[str(store_path)], task=str(task), out=str(root / f"subset-{name}"),
                                            method=method, budget="0.25", seed=seed), progress=True)
        secs[name] = json.loads((out[name] / "stats.json").read_text())["timings"]["total_s"]
    store = EmbeddingStore.open(store_path)
    size = read_subset(out["bm25"]).size
    rnd = root / "subset-random"
    if not (rnd / "_SUCCESS").exists():
        write_subset(rnd, store=store, indices=random_subset(store.n, size, seed), gains=np.zeros(size),
                     manifest={"config": {"selector": "random", "seed": seed}, "seed": seed, "function": "random",
                               "certificate": {"objective": None, "upper_bound": None, "ratio": None,
                                               "random_objective": None}}, overwrite=True)
    out["random"], secs["random"] = rnd, 0.0
    return {"paths": out, "seconds": secs}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--preset", default="tiny", choices=sorted(PRESETS))
    p.add_argument("--seeds", type=int, default=3)
    p.add_argument("--steps", type=int)
    p.add_argument("--quick", action="store_true", help="a few minutes: small task and corpus, 40 steps, 1 seed")
    p.add_argument("--no-write", action="store_true")
    a = p.parse_args()
    setup_logging()
    cfg = dict(PRESETS[a.preset])
    if a.quick:
        cfg.update(n_train=200, n_val=100, n_test=200, n_pubmed=300, sotu_words=60_000, steps=40, ft_steps=30)
        a.seeds = 1
    cfg["steps"] = a.steps or cfg["steps"]
    root = _root(a.preset, a.quick)

    from subsetlm.embed import EmbedConfig, embed_corpus
    from subsetlm.evaluate.run import EvalConfig, evaluate_model
    from subsetlm.recipes.presets import get_preset
    from subsetlm.recipes.run import TrainRunConfig, train_run
    from subsetlm.subsets import read_subset

    t0 = time.perf_counter()
    task, corpus, meta = build_task_and_corpus(root, cfg)
    seq_len = get_preset(a.preset).seq_len
    store_path = root / "store"
    t = time.perf_counter()
    store = embed_corpus(EmbedConfig(inputs=[str(corpus)], out=str(store_path), id_field="id",
                                     max_tokens=seq_len - 2), progress=True)
    embed_s = time.perf_counter() - t
    subs = build_subsets(root, store_path, task, seed=0)
    common = dict(preset=a.preset, steps=cfg["steps"], seed=0)
    tlm = dict(recipe="tlm", task=str(task), rho1=cfg["rho1"], rho2=cfg["rho2"], stage2_seeds=0)
    arms = {"tlm-bm25": dict(subset=str(subs["paths"]["bm25"]), **tlm),
            "tlm-random": dict(subset=str(subs["paths"]["random"]), **tlm),
            "tlm-diverse": dict(subset=str(subs["paths"]["diverse"]), **tlm),
            "full-corpus-mlm": dict(recipe="bert", corpus=[str(store_path)])}
    sources = np.asarray(store.sources).astype(str)
    rows = []
    for arm, kw in arms.items():
        run = root / f"run-{arm}"
        train_run(TrainRunConfig(out=str(run), **common, **kw), progress=True)
        res = json.loads((run / "results.json").read_text())
        ev = evaluate_model(EvalConfig(model=str(run), task=str(task), method="finetune",
                                       out=str(root / f"eval-{arm}.json"), seeds=a.seeds, max_steps=cfg["ft_steps"],
                                       min_steps=cfg["ft_steps"], lr=cfg["ft_lr"], balanced=True), progress=True)
        if "subset" in kw:
            idx = read_subset(kw["subset"]).indices
            key = arm.split("-")[1]
            sel_s = subs["seconds"][key]
        else:
            idx, sel_s = np.arange(store.n), 0.0
        rows.append({"arm": arm, "pretrain": res, "eval": ev, "pubmed_share": float(np.mean(sources[idx] == "pubmed")),
                     "select_s": sel_s})
        r = ev["results"]["all"]
        logging.info("%s: macro-F1 %.4f ± %.4f", arm, r["macro_f1"]["mean"], r["macro_f1"]["std"])
    report(a, cfg, meta, store, subs, rows, embed_s, time.perf_counter() - t0)


def report(a, cfg, meta, store, subs, rows, embed_s, total_s) -> None:
    from subsetlm.recipes.presets import get_preset

    from subsetlm.subsets import read_subset

    base = rows[0]["eval"]["majority_baseline"]
    div = read_subset(subs["paths"]["diverse"]).manifest
    share_all = float(np.mean(np.asarray(store.sources).astype(str) == "pubmed"))
    lines = [f"## TLM: task-driven retrieval and joint training (`benchmarks/tlm.py --preset {a.preset}`)", "",
             f"Machine: {machine()}. General corpus: {meta['n_pubmed']} PubMed abstracts (none of them in the task) + "
             f"{meta['n_speeches']} State of the Union speeches {meta['sotu_years'][0]}–{meta['sotu_years'][1]} "
             f"({meta['sotu_words']:,} words), embedded with MiniLM into {store.n:,} rows of at most "
             f"{get_preset(a.preset).seq_len - 2} tokens ({share_all:.0%} PubMed). Task: `pubmed-task` publication types, "
             f"{meta['task_counts']['train']} training examples (every one a query), {meta['task_counts']['validation']} "
             f"validation, {meta['task_counts']['test']} test; {base['accuracy']:.0%} of test is the majority class. "
             f"Subsets: 25% of the rows. BM25: bm25s, top-{div['selection']['k']} per query (the paper's preset for "
             f"< 5k examples), merged by best rank. Diverse: a BM25 pool of {div['selection'].get('n_pool')} rows, "
             f"then facility-location mutual information (η = {div['config']['eta']:g}) on the pool's kNN graph, "
             f"I(S;Q) certificate ratio {div['certificate']['ratio']:.3f}. Every arm: {cfg['steps']} pretraining steps "
             f"(tiny preset); TLM arms ρ1 = {cfg['rho1']}, ρ2 = {cfg['rho2']:g}; then the same stage 2 for all: "
             f"fine-tuning on the task alone with a fresh head, {cfg['ft_steps']} steps, lr {cfg['ft_lr']:g}, "
             f"class-balanced batches, model chosen on validation, {a.seeds} seeds (mean ± std). Embedding took "
             f"{embed_s:.0f} s (0 when cached), the whole benchmark {total_s / 60:.0f} min.", "",
             "| arm | selection | rows trained on | PubMed share | selection time | tokens | FLOPs (6·N·P) | "
             "pretrain wall | held-out MLM loss | test macro-F1 | test accuracy |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    desc = {"tlm-bm25": "BM25, task queries", "tlm-random": "random rows", "tlm-diverse": "BM25 pool + FL-MI",
            "full-corpus-mlm": "everything (BERT MLM)"}
    for r in rows:
        p, e = r["pretrain"], r["eval"]["results"]["all"]
        f1, acc = e["macro_f1"], e["accuracy"]
        lines.append(f"| {r['arm']} | {desc[r['arm']]} | {p['train_rows']:,} | {r['pubmed_share']:.0%} | "
                     f"{r['select_s']:.0f} s | {p['tokens']:,} | {p['flops_estimate']:.2e} | {p['wall_s']:.0f} s | "
                     f"{p['final_eval'].get('val_loss', float('nan')):.3f} | {f1['mean']:.4f} ± {f1['std']:.4f} | "
                     f"{acc['mean']:.4f} ± {acc['std']:.4f} |")
    lines.append(f"| majority class ({base['label']}) | – | – | – | – | – | – | – | – | {base['macro_f1']:.4f} | "
                 f"{base['accuracy']:.4f} |")
    fig = macro_f1_figure(rows, base, ["#48a", "#c96", "#4a8", "#777"],
                          f"TLM {a.preset}: {cfg['steps']} steps, PubMed + SOTU corpus, pubmed-task")
    name = f"tlm_{a.preset}.png"
    lines += ["", f"![macro-F1 by arm](figures/{name})", ""]
    publish("\n".join(lines), fig, name, f"tlm-{a.preset}", not a.no_write)



if __name__ == "__main__":
    main()
