"""A data-curation pipeline from YAML configs: embed -> dedup -> select -> export, as four ``subsetlm`` commands.

    python examples/curation_pipeline.py --out runs/ex-curate                 # 3,000 abstracts + copies, MiniLM
    python examples/curation_pipeline.py --smoke --out /tmp/ex-curate         # under a minute, hashing embedder
    python examples/curation_pipeline.py --corpus crawl.jsonl.gz --no-inject --out runs/crawl

Each stage is one command whose settings live in ``examples/configs/STAGE.yaml`` (the way
datatrove and NeMo Curator users keep pipelines in config files); this script only chains
them and passes the paths, exactly as a shell script would::

    subsetlm embed  CORPUS --config examples/configs/embed.yaml  --out STORE
    subsetlm dedup  STORE  --config examples/configs/dedup.yaml  --out DEDUP
    subsetlm select STORE  --config examples/configs/select.yaml --within DEDUP --out SUBSET
    subsetlm export SUBSET --config examples/configs/export.yaml --out OUT/curated.jsonl.gz

Every stage writes through a temporary name, marks its output finished last, and skips
finished work on a re-run, so the pipeline resumes where a killed run stopped. Web crawls
are heavily redundant (SemDeDup measured ~50% semantic duplicates in LAION-440M), so by
default the script makes that visible: it adds near-copies (one word changed, a sentence
dropped) of a third of the abstracts and reports how many of them survive each stage.
"""

from __future__ import annotations

import argparse
import gzip
import json
import random
from collections import Counter
from pathlib import Path

from _common import corpus_and_heldout, read_jsonl, write_jsonl, write_result

CONFIGS = Path(__file__).resolve().parent / "configs"


def near_copy(text: str, rng: random.Random) -> str:
    """A near-duplicate: one word replaced and, for longer texts, the last sentence dropped."""
    words = text.split()
    words[rng.randrange(len(words))] = rng.choice(["data", "results", "patients", "study", "cells"])
    out = " ".join(words)
    if out.count(". ") >= 3:
        out = out[: out.rstrip(". ").rfind(". ") + 1]
    return out


def inject_copies(raw: Path, corpus: Path, fraction: float, seed: int) -> int:
    """Write ``corpus``: ``raw`` plus near-copies of ``fraction`` of its documents (ids ``COPY:ORIGINAL:j``)."""
    rng = random.Random(seed)
    docs = read_jsonl(raw)
    picked = rng.sample(docs, int(fraction * len(docs)))
    copies = [{"id": f"COPY:{d['id']}:{j}", "text": near_copy(d["text"], rng)}
              for d in picked for j in range(rng.choice([1, 1, 2, 3]))]  # heavy-ish tail of multiplicities
    docs += copies
    rng.shuffle(docs)
    write_jsonl(corpus, docs)  # a temporary name, then a rename: a re-run finds it whole or not at all
    return len(copies)


def run(argv: list[str]) -> None:
    """One ``subsetlm`` command, in this process (the same as running it in a shell)."""
    from subsetlm.cli import main

    print("$ subsetlm " + " ".join(argv), flush=True)
    rc = main(argv)
    if rc != 0:
        raise SystemExit(f"`subsetlm {' '.join(argv)}` failed with exit status {rc}; see the message above")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="work folder: store/, dedup/, subset/, curated.jsonl.gz")
    ap.add_argument("--corpus", help="JSONL(.gz) with id and text (default: PubMed abstracts, fetched and cached)")
    ap.add_argument("--n-docs", type=int, default=3000, help="documents before the copies (default 3000)")
    ap.add_argument("--no-inject", action="store_true", help="use the corpus as it is (no near-copies added)")
    ap.add_argument("--configs", type=Path, default=CONFIGS, help="folder of embed/dedup/select/export.yaml")
    ap.add_argument("--smoke", action="store_true", help="500 documents, hashing embedder")
    args = ap.parse_args(argv)
    if args.smoke:
        args.n_docs = 500

    raw, _ = corpus_and_heldout(args.out / "raw", args.corpus, args.n_docs, 0)
    corpus = args.out / "corpus.jsonl"
    if args.no_inject:
        corpus = raw
    elif not corpus.exists():  # a re-run keeps the corpus (and so the stores) of the first run
        inject_copies(raw, corpus, 1 / 3, seed=0)
    n_copies = sum(1 for r in read_jsonl(corpus) if r["id"].startswith("COPY:"))
    store, dedup, subset, out = (args.out / n for n in ("store", "dedup", "subset", "curated.jsonl.gz"))
    quiet = ["-q"] if args.smoke else []
    run(["embed", str(corpus), "--config", str(args.configs / "embed.yaml"), "--out", str(store),
         *(["--model", "hashing"] if args.smoke else []), *quiet])
    run(["dedup", str(store), "--config", str(args.configs / "dedup.yaml"), "--out", str(dedup), *quiet])
    run(["select", str(store), "--config", str(args.configs / "select.yaml"), "--within", str(dedup),
         "--out", str(subset), *quiet])
    run(["export", str(subset), "--config", str(args.configs / "export.yaml"), "--out", str(out), "--force", *quiet])

    # What each stage kept. A near-copy's document id is COPY:ORIGINAL:j; a group is an
    # original with its copies, and a row is redundant when its group already has as many
    # rows as the original document alone (chunks included).
    from subsetlm.embed import EmbeddingStore
    from subsetlm.subsets import read_subset

    st = EmbeddingStore.open(store)
    doc_ids = [str(d) for d in st.doc_ids]
    group = [d.split(":")[1] if d.startswith("COPY:") else d for d in doc_ids]
    own = Counter(g for g, d in zip(group, doc_ids) if not d.startswith("COPY:"))

    def redundant(rows) -> int:
        kept = Counter(group[i] for i in rows)
        return sum(max(0, c - own.get(g, 0)) for g, c in kept.items())

    kept = read_subset(dedup, store=st).indices
    chosen = read_subset(subset, store=st).indices
    with gzip.open(out, "rt", encoding="utf-8") as fh:
        exported = [json.loads(line) for line in fh]
    write_result(args.out, {
        "documents": len(set(doc_ids)), "injected_copies": n_copies, "store_rows": int(st.n),
        "store_redundant_rows": redundant(range(st.n)), "dedup_kept": int(len(kept)),
        "dedup_redundant_rows": redundant(kept), "selected": int(len(chosen)),
        "selected_redundant_rows": redundant(chosen), "exported": len(exported),
        "exported_distinct_texts": len({r["text"] for r in exported}),
        "groups_covered": {"store": len(set(group)), "selected": len({group[i] for i in chosen})},
        "export": str(out)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
