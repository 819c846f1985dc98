"""Quality scores for ``subsetlm select --quality``: a classifier of "looks like the target" (DCLM in miniature).

DCLM (Li et al., 2024) keeps the web documents that a fastText classifier scores as most
like a high-quality reference set (positives) against random web text (negatives). This
script does the same on a laptop with scikit-learn: hashed word uni- and bigram counts
(``HashingVectorizer``: no vocabulary to fit or store, like fastText's hashed n-grams), a
logistic regression trained on the target examples (label 1) against a random sample of
the corpus (label 0), and ``q = P(target | text)`` for every corpus sample, written as a
score file (``.parquet`` or ``.jsonl`` with ``id`` and ``score``, or ``.npy`` aligned with
a store's rows) that ``subsetlm select --quality`` reads:

    python examples/quality_scores.py --target target.jsonl --store store/ --out scores.parquet
    python examples/quality_scores.py --target target.jsonl --corpus corpus.jsonl --out scores.parquet
    subsetlm select store/ --budget 0.25 --quality scores.parquet --quality-weight 2 --out subset/

    python examples/quality_scores.py --smoke --out /tmp/qs/scores.parquet   # seconds, generated data

``--store`` scores every sample of an embedding store (the ids then match the store's
exactly, chunks included); ``--corpus`` scores the documents of a corpus file (ids: its
``--id-field``; a chunked store's samples share their document's score). The held-out AUC
printed at the end says whether the classifier separates target from corpus at all; the
negatives are a random corpus sample, so corpus documents like the target also score high,
which is the point. ``--smoke`` generates a corpus over four topics and a target set of one
(``astro``) beside ``--out`` (``corpus.jsonl``, ``target.jsonl``) and prints the next commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

logger = logging.getLogger("quality_scores")

#: --smoke: four topics of generated text; the target is ``astro``
TOPICS = dict((line.split(":")[0], line.split(":")[1].split()) for line in """
astro: galaxy telescope orbit planet nebula comet redshift supernova quasar exoplanet
cook: recipe oven flour simmer garlic butter whisk saucepan roast dough
money: market interest inflation bond equity dividend portfolio lender budget tariff
sport: match goal referee league striker tournament coach sprint medal stadium
""".strip().splitlines())
FILLER = "the a of in with and was for to on by this that from at".split()


def _doc(rng: np.random.Generator, topic: str) -> str:
    words = rng.choice(TOPICS[topic], size=int(rng.integers(12, 40))).tolist()
    words += rng.choice(FILLER, size=len(words) // 2).tolist()
    # a little of another topic in every document: the classes overlap, as real text does
    other = [t for t in TOPICS if t != topic][int(rng.integers(0, 3))]
    words += rng.choice(TOPICS[other], size=int(rng.integers(1, 6))).tolist()
    rng.shuffle(words)
    return " ".join(words).capitalize() + "."


def make_smoke_data(folder: Path, n_corpus: int = 400, n_target: int = 60, seed: int = 0) -> tuple[Path, Path]:
    """Write ``corpus.jsonl`` (``id``, ``text``, ``topic``; four topics) and ``target.jsonl`` (``astro``)."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    names = sorted(TOPICS)
    corpus, target = folder / "corpus.jsonl", folder / "target.jsonl"
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(n_corpus):
            topic = names[i % len(names)]
            fh.write(json.dumps({"id": f"doc{i:05d}", "text": _doc(rng, topic), "topic": topic}) + "\n")
    with open(target, "w", encoding="utf-8") as fh:
        for i in range(n_target):
            fh.write(json.dumps({"id": f"target{i:04d}", "text": _doc(rng, "astro")}) + "\n")
    return corpus, target


def read_texts(path: Path, text_field: str = "text") -> list[str]:
    """Target examples: ``.jsonl`` (``text_field``) or ``.txt`` (one example per non-empty line)."""
    if path.suffix == ".txt":
        return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    with open(path, encoding="utf-8") as fh:
        return [json.loads(ln)[text_field] for ln in fh if ln.strip()]


def read_corpus(args: argparse.Namespace) -> tuple[np.ndarray, list[str], str]:
    """``(ids, texts, what)`` of the samples to score: a store's samples or a corpus file's documents."""
    if args.store:
        from subsetlm.embed import EmbeddingStore

        store = EmbeddingStore.open(args.store)
        return np.asarray(store.ids, dtype=object), store.texts(np.arange(store.n)), f"store {args.store}"
    from subsetlm.corpus import CorpusConfig, iter_documents

    cfg = CorpusConfig([str(args.corpus)], text_field=args.text_field, id_field=args.id_field, max_tokens=None)
    docs = [d for block in iter_documents(cfg) for d in block]
    if any(d.id is None for d in docs):
        raise SystemExit(f"{args.corpus}: documents need an id to be joined with a store (give --id-field)")
    return np.asarray([d.id for d in docs], dtype=object), [d.text for d in docs], f"corpus {args.corpus}"


def train_and_score(target: list[str], texts: list[str], *, negatives: int, n_features: int, C: float,
                    seed: int) -> tuple[np.ndarray, float]:
    """Fit target (1) vs a random corpus sample (0) on hashed n-grams; return ``(P(target) per text, held-out AUC)``."""
    from sklearn.feature_extraction.text import HashingVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import train_test_split

    if not target:
        raise SystemExit("no target examples: give a non-empty --target file")
    rng = np.random.default_rng(seed)
    n_neg = min(len(texts), negatives if negatives > 0 else 4 * len(target))
    neg = [texts[i] for i in rng.choice(len(texts), n_neg, replace=False)]
    vec = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm="l2",
                            lowercase=True)
    X = vec.transform(target + neg)
    y = np.r_[np.ones(len(target)), np.zeros(n_neg)]
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=seed, stratify=y)
    clf = LogisticRegression(C=C, max_iter=1000, class_weight="balanced").fit(Xtr, ytr)
    auc = float(roc_auc_score(yte, clf.predict_proba(Xte)[:, 1]))
    clf.fit(X, y)  # the final model sees every example
    q = np.concatenate([clf.predict_proba(vec.transform(texts[s:s + 8192]))[:, 1]
                        for s in range(0, len(texts), 8192)])
    return q.astype(np.float64), auc


def write_scores(path: Path, ids: np.ndarray, q: np.ndarray, column: str) -> None:
    """``.parquet`` / ``.jsonl`` (``id`` + ``column``) or ``.npy`` (aligned with the scored rows)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".npy":
        np.save(path, q)
    elif path.suffix == ".parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.table({"id": pa.array([str(i) for i in ids]), column: pa.array(q)}), path)
    elif path.suffix == ".jsonl":
        with open(path, "w", encoding="utf-8") as fh:
            for i, v in zip(ids, q):
                fh.write(json.dumps({"id": str(i), column: float(v)}) + "\n")
    else:
        raise SystemExit(f"--out {path}: expected a .parquet, .jsonl or .npy file")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--target", type=Path, help="target examples: .jsonl (--text-field) or .txt (one per line)")
    src = ap.add_mutually_exclusive_group()
    src.add_argument("--store", help="score every sample of this embedding store (ids match it exactly)")
    src.add_argument("--corpus", type=Path, help="score the documents of this corpus file (.jsonl, .parquet, ...)")
    ap.add_argument("--out", type=Path, required=True, help="score file to write: .parquet | .jsonl | .npy")
    ap.add_argument("--column", default="score", help="score column name (default score: select's --quality-column)")
    ap.add_argument("--text-field", default="text", help="text field of --target/--corpus .jsonl (default text)")
    ap.add_argument("--id-field", default="id", help="id field of --corpus (default id)")
    ap.add_argument("--negatives", type=int, default=0, help="corpus sample size for label 0 (default 4 x targets)")
    ap.add_argument("--n-features", type=int, default=2**18, help="hashed feature dimension (default 2^18)")
    ap.add_argument("--C", type=float, default=1.0, help="inverse L2 regularisation of the logistic regression")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="generate a small corpus and target beside --out, score it")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    if args.smoke:
        args.corpus, args.target = make_smoke_data(args.out.parent)
        args.store = None
    if args.target is None or not (args.store or args.corpus):
        ap.error("give --target and one of --store / --corpus (or --smoke)")
    if args.out.suffix == ".npy" and not args.store:
        ap.error("a .npy score file is aligned with a store's rows: use it with --store (or write .parquet)")
    ids, texts, what = read_corpus(args)
    q, auc = train_and_score(read_texts(args.target, args.text_field), texts, negatives=args.negatives,
                             n_features=args.n_features, C=args.C, seed=args.seed)
    write_scores(args.out, ids, q, args.column)
    report = {"out": str(args.out), "scored": len(q), "source": what, "heldout_auc": round(auc, 4),
              "score_quantiles": {p: round(float(np.quantile(q, p / 100)), 4) for p in (10, 50, 90)}}
    if args.smoke:
        topics = [json.loads(ln)["topic"] for ln in open(args.corpus, encoding="utf-8")]
        report["mean_score_by_topic"] = {t: round(float(q[np.array(topics) == t].mean()), 4) for t in TOPICS}
        store = args.out.parent / "store"
        report["next"] = [f"subsetlm embed {args.corpus} --id-field id --model hashing --out {store}",
                          f"subsetlm select {store} --budget 0.1 --quality {args.out} --quality-weight 2 "
                          f"--out {args.out.parent / 'subset'}"]
    print(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
