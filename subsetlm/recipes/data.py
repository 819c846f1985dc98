"""Training data for the recipes: the corpus rows, a fixed validation split, token caches, batches.

The rows are those of an embedding store (``subsetlm embed`` keeps the texts in
``texts.parquet``, so row i is the sample a subset file's ``index`` points at) or, for
plain corpus files and source names, one row per document.

Validation split
----------------
A fixed held-out split that no subset may draw from: a document goes to validation when
``sha256("{seed}:{doc_id}")`` falls below ``val_fraction`` (all chunks of one document
together), at most ``max_val`` rows (the lowest hashes). The split depends only on the
ids and the seed, so full-data, random-subset and selected-subset runs share it. A subset
row in the validation split is dropped from training with a warning.

Batches
-------
:class:`BatchStream` draws store rows from a :class:`~subsetlm.subsets.SubsetSampler`
(epoch after epoch) and hands the recipe either ``batch_size`` rows per step (encoders;
each row becomes one sequence) or, with ``packed=True`` (GPT-2), a stream of rows joined
by an end-of-text token and cut into ``batch_size × seq_len`` blocks, the remainder kept
for the next step. Its ``state_dict`` (sampler position, epoch, carried tokens) makes a
resumed run see exactly the batches an uninterrupted one would.

Example
-------
>>> data = TrainData.from_texts(["a b c", "d e", "f g h i"], val_fraction=0.0)
>>> data.train_rows.tolist(), data.n
([0, 1, 2], 3)
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np

from subsetlm._io import hash_unit

logger = logging.getLogger(__name__)


def validation_split(doc_ids: Sequence[str], fraction: float, max_rows: int | None, seed: int = 0) -> np.ndarray:
    """Boolean (n,) mask of validation rows (whole documents, lowest hashes first, at most ``max_rows``)."""
    n = len(doc_ids)
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"val_fraction={fraction}; expected a value in [0, 1) (default 0.02)")
    mask = np.zeros(n, dtype=bool)
    if fraction == 0.0 or n < 2:
        return mask
    docs = np.asarray(doc_ids).astype(str)
    uniq, inv, counts = np.unique(docs, return_inverse=True, return_counts=True)
    u = np.array([hash_unit(seed, d) for d in uniq])
    order = np.argsort(u, kind="stable")
    chosen = order[u[order] < fraction]
    if len(chosen) == 0:
        chosen = order[:1]
    if max_rows is not None:
        within = np.cumsum(counts[chosen]) <= max_rows
        chosen = chosen[within] if within.any() else chosen[:1]
    mask = np.isin(inv.reshape(-1), chosen)
    if mask.all():  # never hold out everything
        mask[:] = False
    return mask


@dataclass
class TrainData:
    """Row-aligned texts plus the train / validation split.

    Attributes
    ----------
    texts : list of str, row i's text.
    ids, doc_ids : (n,) str arrays.
    train_rows, val_rows : int64 row indices (disjoint, sorted).
    store : the :class:`~subsetlm.embed.EmbeddingStore` the rows come from, or None.
    spec : what was loaded (for the run config).
    """

    texts: list[str]
    ids: np.ndarray
    doc_ids: np.ndarray
    train_rows: np.ndarray
    val_rows: np.ndarray
    store: Any = None
    spec: str = ""
    _tokens: dict = field(default_factory=dict, repr=False)

    @property
    def n(self) -> int:
        return len(self.texts)

    @property
    def fingerprint(self) -> str:
        """The store's embedding fingerprint, or the rows' ``(id, text)`` hash for a plain corpus."""
        from subsetlm.corpus.rows import rows_fingerprint

        return str(self.store.fingerprint) if self.store is not None else rows_fingerprint(self.ids, self.texts)

    @classmethod
    def from_texts(cls, texts: Sequence[str], ids: Sequence[str] | None = None, doc_ids: Sequence[str] | None = None,
                   *, val_fraction: float = 0.02, max_val: int | None = 1000, seed: int = 0, store: Any = None,
                   spec: str = "") -> "TrainData":
        texts = list(texts)
        if not texts:
            raise ValueError(f"the training corpus {spec or ''} has no texts; pass a non-empty corpus or store")
        ids_ = np.asarray(list(ids) if ids is not None else [f"row:{i}" for i in range(len(texts))]).astype(str)
        docs = np.asarray(list(doc_ids) if doc_ids is not None else ids_).astype(str)
        val = validation_split(docs, val_fraction, max_val, seed)
        return cls(texts, ids_, docs, np.flatnonzero(~val).astype(np.int64), np.flatnonzero(val).astype(np.int64),
                   store=store, spec=spec)

    def subset_rows(self, indices: np.ndarray, weights: np.ndarray | None = None) -> tuple[np.ndarray, Any]:
        """``(rows, weights)`` of a subset that may be trained on (validation rows removed, with a warning)."""
        idx = np.asarray(indices, dtype=np.int64)
        if weights is not None and len(weights) != len(idx):
            raise ValueError(f"{len(weights)} weights for {len(idx)} subset rows; pass one weight per row")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n):
            raise ValueError(f"subset rows lie in [{idx.min()}, {idx.max()}] but the corpus has {self.n} rows; "
                             f"was the subset selected from another store? (check its manifest's store path)")
        held = np.isin(idx, self.val_rows)
        if held.any():
            logger.warning("%d of %d subset rows are in the fixed validation split and are not trained on",
                           int(held.sum()), len(idx))
        out = idx[~held]
        if out.size == 0:
            raise ValueError("every subset row is in the validation split; nothing left to train on")
        return out, (None if weights is None else np.asarray(weights, dtype=np.float64)[~held])

    def tokens(self, tokenizer: Any, rows: Sequence[int] | np.ndarray) -> list[np.ndarray]:
        """Token ids (no special tokens) of ``rows``; encoded once per tokenizer and cached."""
        owner, cache = self._tokens.get(id(tokenizer), (None, None))
        if owner is not tokenizer:  # a new tokenizer (an id can be reused once the old one is gone)
            cache = {}
            self._tokens[id(tokenizer)] = (tokenizer, cache)
        rows = [int(r) for r in rows]
        todo = sorted({r for r in rows if r not in cache})
        for start in range(0, len(todo), 2048):
            part = todo[start:start + 2048]
            enc = tokenizer([self.texts[r] for r in part], add_special_tokens=False, truncation=False,
                            return_attention_mask=False, return_token_type_ids=False, verbose=False)["input_ids"]
            for r, e in zip(part, enc):
                cache[r] = np.asarray(e, dtype=np.int32)
        return [cache[r] for r in rows]


def load_corpus(inputs: Sequence[str], *, text_field: str = "text", id_field: str | None = None,
                limit: int | None = None, val_fraction: float = 0.02, max_val: int | None = 1000,
                seed: int = 0, verify: bool = True) -> TrainData:
    """Load training rows from an embedding store directory or from corpus inputs.

    Parameters
    ----------
    inputs : a single store directory (``subsetlm embed`` output; rows = the store's
        samples, as subset files index them), or corpus files / folders / source names
        (``pubmed``, ``sotu``) read with :mod:`subsetlm.corpus.readers`, one row per document.
    limit : read only the first N documents (corpus inputs) or rows (store).

    Returns
    -------
    TrainData
    """
    from subsetlm.corpus.rows import CorpusRows

    inputs = [str(x) for x in inputs]
    if not inputs:
        raise ValueError("no training corpus given: pass --corpus STORE_DIR or corpus files / a source name")
    from subsetlm.embed.store import EmbeddingStore

    if len(inputs) == 1 and EmbeddingStore.is_store(inputs[0]):
        store = EmbeddingStore.open(inputs[0], verify=verify)
        n = store.n if limit is None else min(store.n, int(limit))
        texts = store.texts(np.arange(n))
        logger.info("training corpus: %d rows of store %s", n, store.path)
        return TrainData.from_texts(texts, store.ids[:n], store.doc_ids[:n], val_fraction=val_fraction,
                                    max_val=max_val, seed=seed, store=store, spec=str(store.path))
    rows = CorpusRows.read(inputs, text_field=text_field, id_field=id_field, limit=limit)
    return TrainData.from_texts(rows.texts(range(rows.n)), rows.ids, rows.ids, val_fraction=val_fraction,
                                max_val=max_val, seed=seed, spec=rows.path)


class BatchStream:
    """Endless, resumable stream of training examples drawn through a sampler.

    Parameters
    ----------
    sampler : SubsetSampler over store rows.
    get_tokens : callable(rows) -> list of (len,) int arrays.
    batch_size : rows (unpacked) or sequences (packed) per step.
    packed : join rows with ``sep_id`` and cut ``seq_len`` blocks (GPT-2).

    ``next()`` returns a list of int arrays: one per row (unpacked, the recipe truncates)
    or ``batch_size`` blocks of exactly ``seq_len`` tokens (packed).
    """

    def __init__(self, sampler: Any, get_tokens: Any, batch_size: int, *, packed: bool = False,
                 seq_len: int = 128, sep_id: int | None = None) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size={batch_size}; expected >= 1")
        if packed and sep_id is None:
            raise ValueError("packed batches need sep_id (the end-of-text token id)")
        self.sampler, self.get_tokens, self.batch_size = sampler, get_tokens, int(batch_size)
        self.packed, self.seq_len, self.sep_id = packed, int(seq_len), sep_id
        self.epoch = 0
        self.rows_seen = 0
        self._buffer = np.zeros(0, dtype=np.int32)
        self._it = None

    def _next_row(self) -> int:
        for _ in range(2):
            if self._it is None:
                self.sampler.set_epoch(self.epoch)
                self._it = iter(self.sampler)
            try:
                r = next(self._it)
                self.rows_seen += 1
                return r
            except StopIteration:
                self._it = None
                self.epoch += 1
        raise ValueError("the sampler yields no rows; the subset is empty")

    def reset_iterator(self) -> None:
        """Forget the live iterator (after ``sampler.update(immediate=True)`` or a state load)."""
        self._it = None

    def next_rows(self) -> tuple[list[int], list[np.ndarray]]:
        """(rows, their token arrays) of the next unpacked batch."""
        if self.packed:
            raise ValueError("next_rows() is for unpacked streams; a packed block mixes rows")
        rows = [self._next_row() for _ in range(self.batch_size)]
        return rows, self.get_tokens(rows)

    def next(self) -> list[np.ndarray]:
        if not self.packed:
            return self.next_rows()[1]
        need = self.batch_size * self.seq_len
        parts = [self._buffer]
        have = len(self._buffer)
        while have < need:
            t = self.get_tokens([self._next_row()])[0]
            piece = np.concatenate([t, np.asarray([self.sep_id], dtype=np.int32)])
            parts.append(piece)
            have += len(piece)
        flat = np.concatenate(parts)
        self._buffer = flat[need:].copy()
        return list(flat[:need].reshape(self.batch_size, self.seq_len))

    def state_dict(self) -> dict:
        import torch

        return {"epoch": self.epoch, "rows_seen": self.rows_seen, "sampler": self.sampler.state_dict(),
                "buffer": torch.from_numpy(self._buffer.astype(np.int64))}

    def load_state_dict(self, state: dict) -> None:
        self.sampler.load_state_dict(state["sampler"])
        self.epoch = int(state["epoch"])
        self.rows_seen = int(state["rows_seen"])
        self._buffer = state["buffer"].numpy().astype(np.int32)
        self._it = None
