"""Tokenizers trained on the training corpus with ``tokenizers`` (nothing is downloaded).

* :func:`train_wordpiece` — BERT-family: lower-cased WordPiece with ``[PAD] [UNK] [CLS]
  [SEP] [MASK]`` and the ``[CLS] A [SEP]`` template, wrapped as ``BertTokenizerFast``.
* :func:`train_byte_bpe` — GPT-2: byte-level BPE with ``<|endoftext|>`` as bos/eos/unk (and
  as the pad token, which collators mask out), wrapped as ``GPT2TokenizerFast``.

Both are saved with ``save_pretrained`` so ``AutoTokenizer.from_pretrained(RUN/tokenizer)``
loads them, and both are deterministic for the same texts and vocabulary size.

Example
-------
>>> tok = train_wordpiece(["the cell divides", "the cell grows"] * 20, vocab_size=120)
>>> tok.convert_ids_to_tokens(tok("the cell")["input_ids"])
['[CLS]', 'the', 'cell', '[SEP]']
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Iterable, Sequence

logger = logging.getLogger(__name__)

BERT_SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
GPT2_EOS = "<|endoftext|>"


def _check_texts(texts: Sequence[str], vocab_size: int) -> None:
    if len(texts) == 0:
        raise ValueError("cannot train a tokenizer on 0 texts; the training corpus is empty")
    if vocab_size < 64:
        raise ValueError(f"vocab_size={vocab_size}; expected at least 64 (the tiny preset uses 4096)")


def _batches(texts: Sequence[str], size: int = 1000) -> Iterable[list[str]]:
    for i in range(0, len(texts), size):
        yield list(texts[i:i + size])


def train_wordpiece(texts: Sequence[str], vocab_size: int = 30522, min_frequency: int = 2,
                    lowercase: bool = True, model_max_length: int = 512) -> Any:
    """Train a BERT WordPiece tokenizer on ``texts``.

    Parameters
    ----------
    texts : sequence of str
    vocab_size : int
        Target vocabulary (specials included); a small corpus may give fewer.
    min_frequency : int
        Pairs seen fewer times are not merged.
    model_max_length : int
        Stored in the tokenizer config (the recipe's sequence length).

    Returns
    -------
    transformers.BertTokenizerFast
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertTokenizerFast

    _check_texts(texts, vocab_size)
    normalizer = normalizers.BertNormalizer(lowercase=lowercase, clean_text=True, handle_chinese_chars=True)
    # What tokenizers' WordPieceTrainer does (a BPE trainer with the "##" prefix, whose vocabulary
    # becomes the WordPiece vocabulary), made deterministic: that trainer numbers the "##c"
    # continuation characters in hash-map order, so ties between equally frequent pairs break
    # differently from run to run. Registering every "##c" up front in sorted order fixes the ids.
    chars = sorted({c for t in texts for c in normalizer.normalize_str(t) if not c.isspace()})
    bpe = Tokenizer(models.BPE(unk_token="[UNK]", continuing_subword_prefix="##"))
    bpe.normalizer = normalizer
    bpe.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                  special_tokens=list(BERT_SPECIALS) + ["##" + c for c in chars],
                                  initial_alphabet=chars, continuing_subword_prefix="##", show_progress=False)
    bpe.train_from_iterator(_batches(texts), trainer=trainer, length=len(texts))
    tok = Tokenizer(models.WordPiece(vocab=bpe.get_vocab(), unk_token="[UNK]", continuing_subword_prefix="##"))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tok.add_special_tokens(list(BERT_SPECIALS))
    cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1", special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    tok.decoder = decoders.WordPiece(prefix="##")
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                             sep_token="[SEP]", mask_token="[MASK]", do_lower_case=lowercase,
                             model_max_length=model_max_length)
    logger.info("trained WordPiece tokenizer: %d tokens from %d texts", len(fast), len(texts))
    return fast


def train_byte_bpe(texts: Sequence[str], vocab_size: int = 50257, min_frequency: int = 2,
                   model_max_length: int = 1024) -> Any:
    """Train a GPT-2 byte-level BPE tokenizer on ``texts``.

    Returns
    -------
    transformers.GPT2TokenizerFast
        ``<|endoftext|>`` is bos, eos, unk and pad (padding is masked out by the collators).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import GPT2TokenizerFast

    _check_texts(texts, vocab_size)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency, special_tokens=[GPT2_EOS],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_batches(texts), trainer=trainer, length=len(texts))
    fast = GPT2TokenizerFast(tokenizer_object=tok, bos_token=GPT2_EOS, eos_token=GPT2_EOS, unk_token=GPT2_EOS,
                             pad_token=GPT2_EOS, model_max_length=model_max_length)
    logger.info("trained byte-level BPE tokenizer: %d tokens from %d texts", len(fast), len(texts))
    return fast


def load_tokenizer(path: str | Path) -> Any:
    """Load a tokenizer saved by a run (``RUN/tokenizer`` or ``RUN/model``), never from a hub."""
    from transformers import AutoTokenizer

    p = Path(path)
    if not (p / "tokenizer.json").is_file() and not (p / "tokenizer_config.json").is_file():
        raise ValueError(f"{p}: no tokenizer.json / tokenizer_config.json there; expected a tokenizer saved "
                         f"with save_pretrained (a run's tokenizer/ or model/ folder)")
    return AutoTokenizer.from_pretrained(str(p), local_files_only=True)


def special_ids(tokenizer: Any) -> list[int]:
    """Ids of every special token of ``tokenizer`` (never masked, replaced or sampled)."""
    return sorted({int(i) for i in tokenizer.all_special_ids})
