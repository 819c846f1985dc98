"""A plain corpus as a ground set: one row per document, with a fingerprint.

Subset files index the rows of a ground set. Usually that is an embedding store (row =
sample); for selections that need no embeddings (BM25 retrieval) a corpus read in order
is one too: row ``i`` is the ``i``-th non-empty document, its ``id`` the corpus id (or a
content hash), and :attr:`CorpusRows.fingerprint` hashes every ``(id, text)`` pair in
order, so a subset written against it is checked against the same documents when it is
used (``subsetlm train --corpus CORPUS --subset SUBSET``).

Example
-------
>>> rows = CorpusRows.from_texts(["a b", "c d"], ["x", "y"], spec="toy")
>>> rows.n, rows.ids.tolist(), rows.fingerprint[:8] == CorpusRows.from_texts(["a b", "c d"], ["x", "y"]).fingerprint[:8]
(2, ['x', 'y'], True)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

logger = logging.getLogger(__name__)


def rows_fingerprint(ids: Sequence[str], texts: Sequence[str]) -> str:
    """SHA-256 of the ``(id, text)`` rows in order (what a corpus subset is checked against)."""
    h = hashlib.sha256(b"subsetlm.corpus-rows.v1\n")
    for i, t in zip(ids, texts):
        h.update(str(i).encode("utf-8") + b"\x00" + t.encode("utf-8") + b"\x01")
    return h.hexdigest()


@dataclass
class CorpusRows:
    """Documents of a corpus in reading order, usable where a store is expected for writing subsets.

    Attributes
    ----------
    path : the input spec (``pubmed``, ``a.jsonl,b.jsonl``), recorded in subset manifests.
    ids : (n,) str array of row ids. ``doc_ids`` is the same array (a row is a document).
    n_tokens : (n,) whitespace token counts (what a token budget spends).
    dim : 0 (no embeddings).
    ids_rule : the id rule applied (``{"rule", "source", "field"}``, :func:`subsetlm.corpus.ids.id_rule`).
    """

    path: str
    ids: np.ndarray
    _texts: list[str] = field(repr=False)
    sources: np.ndarray | None = None
    dim: int = 0
    ids_rule: dict | None = None  # where the ids came from (subsetlm.corpus.ids.id_rule), when read from files

    @classmethod
    def from_texts(cls, texts: Sequence[str], ids: Sequence[str], *, spec: str = "",
                   sources: Sequence[str] | None = None) -> "CorpusRows":
        if len(texts) != len(ids):
            raise ValueError(f"{len(texts)} texts but {len(ids)} ids; pass one id per text")
        return cls(spec, np.asarray(list(ids)).astype(str), list(texts),
                   None if sources is None else np.asarray(list(sources)).astype(str))

    @classmethod
    def read(cls, inputs: Sequence[str], *, text_field: str = "text", id_field: str | None = None,
             limit: int | None = None) -> "CorpusRows":
        """Read corpus files / folders / source names (``pubmed``, ``sotu``) as whole documents."""
        from subsetlm.corpus.chunking import doc_id_for
        from subsetlm.corpus.readers import CorpusConfig, iter_documents

        from subsetlm.corpus.ids import id_rule
        from subsetlm.corpus.readers import input_files

        texts, ids, sources = [], [], []
        cfg = CorpusConfig([str(x) for x in inputs], text_field=text_field, id_field=id_field, max_tokens=None,
                           limit=limit)
        files = input_files(cfg)
        for block in iter_documents(cfg, files):
            for d in block:
                texts.append(d.text)
                ids.append(doc_id_for(d))
                sources.append(d.source)
        logger.info("corpus: %d documents from %s", len(texts), ", ".join(map(str, inputs)))
        rows = cls.from_texts(texts, ids, spec=",".join(map(str, inputs)), sources=sources)
        rows.ids_rule = id_rule(cfg, files)
        return rows

    @property
    def n(self) -> int:
        return len(self._texts)

    @property
    def doc_ids(self) -> np.ndarray:
        return self.ids

    @property
    def fingerprint(self) -> str:
        if not hasattr(self, "_fp"):
            self._fp = rows_fingerprint(self.ids, self._texts)
        return self._fp

    @property
    def n_tokens(self) -> np.ndarray:
        """(n,) int64 whitespace token counts of the rows (a store's ``n_tokens`` column), computed once."""
        if not hasattr(self, "_n_tokens"):
            self._n_tokens = np.fromiter((len(t.split()) for t in self._texts), dtype=np.int64, count=self.n)
        return self._n_tokens

    @property
    def manifest(self) -> dict:
        out = {"corpus_fingerprint": self.fingerprint, "model": None}
        if self.ids_rule is not None:
            out["ids"] = self.ids_rule
        return out

    def texts(self, indices: Sequence[int] | np.ndarray) -> list[str]:
        return [self._texts[int(i)] for i in indices]

    def __len__(self) -> int:
        return self.n
