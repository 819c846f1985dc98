"""A plain PyTorch training loop that re-selects its data while it trains (INGENIOUS), through subsetlm's callback.

    python examples/reselect_loop.py --out runs/ex-ing                 # 2,000 abstracts, 400 steps
    python examples/reselect_loop.py --smoke --out /tmp/ex-ing         # under a minute

INGENIOUS (Renduchintala et al., 2023) warms a model up on all the data, then every R steps
embeds the corpus with the model's *own* hidden states, selects a representative subset by
facility location (with Taylor-softmax sampling so rounds differ) and trains on it until
the next round. Here the loop is yours (model, optimizer, batches); subsetlm supplies:

- ``TrainData.from_texts``: the rows, and a fixed validation split never selected from;
- ``SubsetSampler``: which rows each epoch visits; ``update`` swaps in a new subset;
- ``ReselectCallback``: decides when a round is due, embeds with the model, selects, and
  logs each round (objective, upper bound, lift over a random subset) to
  ``OUT/reselection/rounds.jsonl``.

``OUT/result.json`` holds the rounds and the held-out loss at step 0 and at the end.
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from _common import corpus_and_heldout, heldout_loss, lm_batch, read_jsonl, tiny_gpt2, write_result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="work folder: reselection/, result.json")
    ap.add_argument("--corpus", help="JSONL(.gz) with id and text (default: PubMed abstracts, fetched and cached)")
    ap.add_argument("--n-docs", type=int, default=2000, help="training documents (default 2000)")
    ap.add_argument("--heldout", type=int, default=300, help="documents after them, for held-out loss (default 300)")
    ap.add_argument("--steps", type=int, default=400, help="training steps (default 400)")
    ap.add_argument("--warmup-steps", type=int, default=100, help="steps on all rows before round 0 (default 100)")
    ap.add_argument("--every", type=int, default=100, help="re-select every R steps after that (default 100)")
    ap.add_argument("--budget", default="0.25", help="fraction of the rows each round keeps (default 0.25)")
    ap.add_argument("--batch-size", type=int, default=16, help="rows per step (default 16)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--smoke", action="store_true", help="300 documents, 40 steps, rounds at 10, 25")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        args.n_docs, args.heldout, args.steps, args.warmup_steps, args.every = 300, 60, 40, 10, 15

    import torch

    from subsetlm.recipes.callbacks import Control, TrainContext, TrainState
    from subsetlm.recipes.data import TrainData
    from subsetlm.recipes.reselect import ReselectCallback, ReselectConfig
    from subsetlm.recipes.tokenizer import train_byte_bpe
    from subsetlm.subsets import SubsetSampler

    corpus, heldout = corpus_and_heldout(args.out, args.corpus, args.n_docs, args.heldout)
    docs = read_jsonl(corpus)
    data = TrainData.from_texts([d["text"] for d in docs], ids=[d["id"] for d in docs], seed=args.seed)
    tok = train_byte_bpe([data.texts[i] for i in data.train_rows], vocab_size=2048, model_max_length=128)
    model = tiny_gpt2(tok, seed=args.seed)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    # The callback and the context it reads (recipe=None: your own loop, not a subsetlm recipe).
    callback = ReselectCallback(ReselectConfig(warmup_steps=args.warmup_steps, every=args.every, budget=args.budget,
                                               seed=args.seed, k=16))
    ctx = TrainContext(model=model, tokenizer=tok, recipe=None, data=data, config=None, run_dir=args.out)
    sampler = SubsetSampler(data.train_rows, seed=args.seed)  # warm-up: every training row
    state = TrainState(max_steps=args.steps)
    callback.on_train_begin(state, Control(), ctx)  # a re-run starts a fresh round log
    rows_iter = iter(sampler)
    before = heldout_loss(model, tok, heldout)

    model.train()
    for step in range(1, args.steps + 1):
        batch_rows = []
        while len(batch_rows) < args.batch_size:
            try:
                batch_rows.append(next(rows_iter))
            except StopIteration:  # epoch done: the next one is reshuffled
                state.epoch += 1
                sampler.set_epoch(state.epoch)
                rows_iter = iter(sampler)
        loss = model(**lm_batch(tok, [data.texts[r] for r in batch_rows])).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        state.step, state.last_loss = step, float(loss)

        control = Control()
        callback.on_step_end(state, control, ctx)  # embeds and selects when a round is due
        if control.new_subset is not None:
            rows, weights = control.new_subset
            sampler.update(rows, weights, immediate=True)  # train on the new subset from now on
            rows_iter = iter(sampler)
            logging.info("step %d: now training on %d of %d rows", step, len(rows), len(data.train_rows))

    after = heldout_loss(model, tok, heldout)
    rounds = [json.loads(ln) for ln in (args.out / "reselection" / "rounds.jsonl").read_text().splitlines()]
    active = np.sort(np.asarray(sampler.indices))
    write_result(args.out, {
        "train_rows": int(len(data.train_rows)), "steps": args.steps, "heldout_loss_step0": round(before, 4),
        "heldout_loss": round(after, 4), "active_subset_rows": int(len(active)),
        "active_subset_in_validation": int(np.isin(active, data.val_rows).sum()),
        "rounds": [{k: r[k] for k in ("round", "step", "size", "objective", "ratio", "lift_over_random") if k in r}
                   for r in rounds]})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
