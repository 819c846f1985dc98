"""Model-size presets shared by every recipe: ``tiny`` (2 CPU cores, minutes), ``small``, ``base``.

A preset fixes the architecture (hidden size, layers, heads, feed-forward width), the
sequence length, the tokenizer's vocabulary size and the default optimisation settings
(batch size, learning rate, steps). ``base`` is BERT-base / GPT-2-small.

Example
-------
>>> p = get_preset("tiny")
>>> p.hidden, p.layers, p.seq_len
(128, 2, 128)
>>> get_preset("huge")
Traceback (most recent call last):
...
ValueError: unknown preset 'huge'; choose one of: base, small, tiny
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Preset:
    """Architecture and default optimisation settings of one size.

    vocab_size : WordPiece vocabulary of BERT-family recipes; ``gpt2_vocab_size`` for GPT-2's byte-level BPE.
    seq_len : tokens per training sequence (special tokens included).
    batch_size, lr, steps, warmup : defaults for :class:`~subsetlm.recipes.loop.TrainConfig`.
    """

    name: str
    hidden: int
    layers: int
    heads: int
    intermediate: int
    seq_len: int
    vocab_size: int
    gpt2_vocab_size: int
    batch_size: int
    lr: float
    steps: int
    warmup: float = 0.06
    dropout: float = 0.1


PRESETS: dict[str, Preset] = {
    # runs in minutes on 2 CPU cores
    "tiny": Preset("tiny", hidden=128, layers=2, heads=2, intermediate=512, seq_len=128, vocab_size=4096,
                   gpt2_vocab_size=4096, batch_size=16, lr=1e-3, steps=200),
    # a single GPU in an hour, or a long CPU run
    "small": Preset("small", hidden=256, layers=4, heads=4, intermediate=1024, seq_len=128, vocab_size=16384,
                    gpt2_vocab_size=16384, batch_size=64, lr=5e-4, steps=10_000),
    # BERT-base / GPT-2-small sizes (GPUs)
    "base": Preset("base", hidden=768, layers=12, heads=12, intermediate=3072, seq_len=512, vocab_size=30522,
                   gpt2_vocab_size=50257, batch_size=256, lr=1e-4, steps=100_000, warmup=0.01),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``; unknown names list the valid ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of: {', '.join(sorted(PRESETS))}")
    return PRESETS[name]
