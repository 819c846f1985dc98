"""Task-driven pretraining (TLM): retrieve a slice of a general corpus with the task's examples, then train jointly.

    python examples/tlm_task.py --out runs/ex-tlm                  # 5,000 abstracts, the whole pubmed task
    python examples/tlm_task.py --smoke --out /tmp/ex-tlm          # about a minute: 600 abstracts, 48 examples
    python examples/tlm_task.py --task my_task.jsonl --corpus my_corpus.jsonl.gz --n-docs 100000 --out runs/mine

TLM (Yao et al., ICML 2022) trains a model from scratch on a task's labelled data plus the
part of a general corpus that the task's own training examples retrieve, and matches large
pretrained models at a fraction of the compute. The two library calls:

1. ``retrieve``: every *training* example of the task is a BM25 query over the corpus; the
   top hits are merged by best rank, rows of the task's validation/test documents are
   dropped (decontamination), and a subset file is written with ``provenance.parquet``
   (which query retrieved each row);
2. ``train_with_stage2(recipe="tlm")``: stage 1 trains a BERT from scratch on MLM over the
   retrieved rows jointly with the task's classification loss (``rho1`` corpus batches per
   task batch, task loss weight ``rho2``); stage 2 fine-tunes it on the task alone with a
   fresh head and reports test macro-F1.

The task is a JSONL file with ``text``, ``label`` and ``split`` (train / validation / test),
the format of ``subsetlm eval``; by default the built-in PubMed publication-type task.
``OUT/result.json`` has the retrieval and both stages' numbers.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
from pathlib import Path

from _common import corpus_and_heldout, read_jsonl, write_jsonl, write_result


def small_task(task: Path, out: Path, per_label: int, n_eval: int, seed: int, in_corpus: set[str]) -> Path:
    """A few-shot copy of ``task``: ``per_label`` training examples per label, ``n_eval`` validation and test.

    Half of the validation and test examples are documents of the corpus (``in_corpus``
    ids), so the run shows decontamination at work: retrieval must never return them.
    """
    import random

    rng = random.Random(seed)
    recs = read_jsonl(task)
    by_split = collections.defaultdict(list)
    for r in recs:
        by_split[r.get("split", "train")].append(r)
    train = []
    for label in sorted({r["label"] for r in by_split["train"]}):
        rows = [r for r in by_split["train"] if r["label"] == label]
        train += rng.sample(rows, min(per_label, len(rows)))
    keep = list(train)
    for split in ("validation", "test"):
        inside = [r for r in by_split[split] if r["id"] in in_corpus]
        picked = rng.sample(inside, min(n_eval // 2, len(inside)))
        rest = [r for r in by_split[split] if r["id"] not in in_corpus]
        keep += picked + rng.sample(rest, n_eval - len(picked))
    return write_jsonl(out / "task.jsonl", keep)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="work folder: subset/, run/, result.json")
    ap.add_argument("--task", type=Path, help="task JSONL (text, label, split); default: the built-in pubmed task")
    ap.add_argument("--corpus", help="general corpus JSONL(.gz) with id and text (default: PubMed abstracts)")
    ap.add_argument("--n-docs", type=int, default=5000, help="corpus documents to retrieve from (default 5000)")
    ap.add_argument("--k", type=int, default=None, help="hits per query (default: the TLM paper's, by task size)")
    ap.add_argument("--budget", default="0.25", help="cap on the retrieved slice (default 0.25 of the corpus)")
    ap.add_argument("--steps", type=int, default=400, help="stage-1 steps (default 400)")
    ap.add_argument("--stage2-steps", type=int, default=200, help="stage-2 fine-tuning steps (default 200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="600 documents, 12 examples per label, 30 + 20 steps")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    from subsetlm.corpus import pubmed_task
    from subsetlm.recipes.run import TrainRunConfig
    from subsetlm.retrieve.run import RetrieveConfig, read_provenance, retrieve
    from subsetlm.train import train_with_stage2

    task = args.task or pubmed_task(seed=args.seed)
    if args.smoke:
        args.n_docs, args.steps, args.stage2_steps, args.k = 600, 30, 20, 20
    corpus, _ = corpus_and_heldout(args.out, args.corpus, args.n_docs, 0)
    if args.smoke:
        ids = {r["id"] for r in read_jsonl(corpus)}
        task = small_task(Path(task), args.out, per_label=12, n_eval=40, seed=args.seed, in_corpus=ids)

    # 1. retrieval: the task's training examples are the queries
    subset = retrieve(RetrieveConfig(corpus=[str(corpus)], task=str(task), method="bm25", k=args.k,
                                     budget=args.budget, out=str(args.out / "subset"), id_field="id"))
    prov = read_provenance(subset)
    # 2. stage 1 (joint MLM + task) and stage 2 (task alone)
    run = train_with_stage2(TrainRunConfig(recipe="tlm", corpus=[str(corpus)], subset=str(subset), task=str(task),
                                           id_field="id", steps=args.steps, stage2_steps=args.stage2_steps,
                                           eval_every=args.steps, seed=args.seed, out=str(args.out / "run")))
    res = json.loads((run / "results.json").read_text())
    n_train = sum(1 for r in read_jsonl(task) if r.get("split", "train") == "train")
    write_result(args.out, {
        "corpus_docs": args.n_docs, "task_train_examples": n_train, "retrieved_rows": int(len(prov)),
        "heldout_task_docs_in_corpus": len({r["id"] for r in read_jsonl(task) if r.get("split") in
                                            ("validation", "test")} & {r["id"] for r in read_jsonl(corpus)}),
        "queries_with_hits": len(set(prov.column("query").to_pylist())),
        "stage1_steps": res["steps"], "stage1_final_eval": res["final_eval"],
        "stage2_test_macro_f1": res["stage2"]["macro_f1"], "stage2_test_accuracy": res["stage2"]["accuracy"],
        "run": str(run)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
