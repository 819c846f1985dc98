"""Select a subset with the Python API, then pretrain a GPT-2 on it with the Hugging Face ``Trainer``.

    python examples/hf_trainer.py --out runs/ex-hf                 # 3,000 PubMed abstracts, MiniLM, 600 steps
    python examples/hf_trainer.py --smoke --out /tmp/ex-hf         # under a minute: 400 abstracts, hashing
    python examples/hf_trainer.py --corpus my.jsonl.gz --n-docs 50000 --out runs/mine

What it shows, in order:
1. ``embed_corpus`` writes an embedding store of the corpus (one row per sample);
2. ``select`` picks ``--budget`` of it by facility location on the kNN graph and writes a
   subset file (indices, gains, and a *weight* per row: how many corpus samples it represents);
3. ``to_hf_dataset`` gives the subset as a ``datasets.Dataset`` (id, text, weight, ...);
4. a byte-level BPE tokenizer and a small GPT-2 are built from configs (nothing downloaded);
5. a ``Trainer`` whose training sampler is subsetlm's ``SubsetSampler`` in weighted mode, so a
   row is drawn in proportion to the part of the corpus it stands for (``--unweighted``: each
   row once per epoch);
6. held-out loss (on abstracts not in the corpus) before and after, in ``OUT/result.json``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np

from _common import corpus_and_heldout, heldout_loss, tiny_gpt2, write_result


def make_trainer_class(weights: np.ndarray | None, seed: int):
    """A ``Trainer`` that draws training rows with subsetlm's sampler instead of a uniform shuffle."""
    from transformers import Trainer

    from subsetlm.subsets import SubsetSampler

    class SubsetTrainer(Trainer):
        def _get_train_sampler(self, train_dataset=None):
            ds = train_dataset if train_dataset is not None else self.train_dataset
            rows = np.arange(len(ds))  # the Dataset holds exactly the subset's rows
            if weights is None:
                return SubsetSampler(rows, seed=seed)  # every row once per epoch, reshuffled per epoch
            return SubsetSampler(rows, weights=weights, weighted=True, seed=seed)  # P(row) ∝ weight

    return SubsetTrainer


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="work folder: store/, subset/, trainer/, result.json")
    ap.add_argument("--corpus", help="JSONL(.gz) with id and text (default: PubMed abstracts, fetched and cached)")
    ap.add_argument("--n-docs", type=int, default=3000, help="documents to select from (default 3000)")
    ap.add_argument("--heldout", type=int, default=300, help="documents after them, for held-out loss (default 300)")
    ap.add_argument("--model", default="minilm", help="embedder: minilm (default) | hashing | hf:PATH")
    ap.add_argument("--budget", default="0.25", help="fraction, count or tokens:N (default 0.25)")
    ap.add_argument("--steps", type=int, default=600, help="training steps (default 600)")
    ap.add_argument("--unweighted", action="store_true", help="sample every subset row once per epoch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="400 documents, hashing embedder, 30 steps")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        args.n_docs, args.heldout, args.model, args.steps = 400, 60, "hashing", 30

    from transformers import DataCollatorForLanguageModeling, TrainingArguments

    from subsetlm.embed import EmbedConfig, embed_corpus
    from subsetlm.recipes.tokenizer import train_byte_bpe
    from subsetlm.select.api import SelectConfig, select
    from subsetlm.subsets import to_hf_dataset

    corpus, heldout = corpus_and_heldout(args.out, args.corpus, args.n_docs, args.heldout)
    # 1-2. embed, select: each call resumes or skips finished work on a re-run
    store = embed_corpus(EmbedConfig(inputs=[str(corpus)], out=str(args.out / "store"), model=args.model))
    subset = select(SelectConfig(store=str(args.out / "store"), out=str(args.out / "subset"), budget=args.budget,
                                 seed=args.seed))
    # 3. the subset as a Hugging Face Dataset (text and weight among its columns)
    ds = to_hf_dataset(subset, store)
    weights = None if args.unweighted else np.asarray(ds["weight"], dtype=np.float64)

    # 4. tokenizer and model from configs
    tok = train_byte_bpe(ds["text"], vocab_size=2048, model_max_length=128)
    model = tiny_gpt2(tok, seed=args.seed)
    train_ds = ds.map(lambda b: tok(b["text"], truncation=True, max_length=128), batched=True,
                      remove_columns=ds.column_names)

    # 5. the Trainer, sampling the subset by weight
    targs = TrainingArguments(output_dir=str(args.out / "trainer"), max_steps=args.steps,
                              per_device_train_batch_size=16, learning_rate=1e-3, warmup_steps=args.steps // 10,
                              logging_steps=max(1, args.steps // 10), save_strategy="no", report_to=[],
                              use_cpu=True, seed=args.seed, dataloader_num_workers=0, disable_tqdm=args.smoke)
    trainer = make_trainer_class(weights, args.seed)(
        model=model, args=targs, train_dataset=train_ds,
        data_collator=DataCollatorForLanguageModeling(tok, mlm=False))
    before = heldout_loss(model, tok, heldout)
    out = trainer.train()
    after = heldout_loss(model, tok, heldout)

    # 6. what the run bought
    write_result(args.out, {
        "corpus_samples": int(store.n), "subset_rows": len(ds), "budget": args.budget, "weighted": weights is not None,
        "weight_sum": float(np.sum(ds["weight"])), "steps": int(out.global_step),
        "train_loss": round(float(out.training_loss), 4),
        "heldout_loss_step0": round(before, 4), "heldout_loss": round(after, 4),
        "subset": str(subset)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
