"""BM25 retrieval (``bm25s``, Lucene scoring, English stop words, Snowball stemming).

Every query is cut to its ``max_query_terms`` key terms, ranked by (1 + log tf)·idf over
the corpus, and scored against every corpus row; a row that shares no term with a query
is not a hit. Works on any list of texts: a plain corpus (rows = documents) or a store's
samples.

Example
-------
>>> h = bm25_search(["cats purr", "stocks fell", "a cat sat"], ["my cat"], k=2)
>>> h.index.tolist(), h.rank.tolist()
([0, 2], [0, 1])
"""

from __future__ import annotations

import logging
import re
from typing import Any, Sequence

import numpy as np

from subsetlm.retrieve.merge import Hits

logger = logging.getLogger(__name__)

_TERM = re.compile(r"(?u)\b\w\w+\b")


def _ranked(scores: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows of ``scores`` (n,) by score (> 0), ties by row id; ``exclude`` (n,) bool rows never returned."""
    if exclude is not None:
        scores = np.where(exclude, 0.0, scores)
    kk = min(k, scores.shape[0])
    top = np.argpartition(-scores, kk - 1)[:kk] if kk < scores.shape[0] else np.arange(scores.shape[0])
    top = top[scores[top] > 0]
    order = np.lexsort((top, -scores[top]))
    return top[order], scores[top[order]].astype(np.float64)


def _bm25_tokenizer() -> Any:
    from bm25s.tokenization import Tokenizer

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is a dependency; tolerate its absence with a warning
        logger.warning("PyStemmer is not installed; BM25 runs without stemming (pip install PyStemmer)")
        stemmer = None
    return Tokenizer(splitter=_TERM.findall, stopwords="en", stemmer=stemmer)


def bm25_search(corpus: Sequence[str], queries: Sequence[str], k: int, *, max_query_terms: int = 32,
                exclude: np.ndarray | None = None, k1: float = 1.5, b: float = 0.75,
                progress: bool = False) -> Hits:
    """Top-``k`` BM25 hits of every query over ``corpus`` (bm25s, Lucene scoring).

    Parameters
    ----------
    corpus : n texts. queries : q texts.
    max_query_terms : a query keeps this many key terms (highest (1 + log tf)·idf, ties by term),
        each once; 0 = all terms.
    exclude : (n,) bool, rows never to return.

    Returns
    -------
    Hits, at most ``k`` per query (rows sharing no term with a query are not hits).

    Example
    -------
    >>> h = bm25_search(["cats purr", "stocks fell", "a cat sat"], ["my cat"], k=2)
    >>> h.index.tolist()
    [0, 2]
    """
    import bm25s

    if len(corpus) == 0:
        raise ValueError("the corpus is empty; nothing to retrieve from")
    tok = _bm25_tokenizer()
    doc_ids = tok.tokenize(list(corpus), return_as="ids", show_progress=progress)
    vocab = tok.get_vocab_dict()
    retriever = bm25s.BM25(k1=k1, b=b, method="lucene")
    retriever.index((doc_ids, vocab), show_progress=progress)
    n = len(corpus)
    df = np.bincount(np.concatenate([np.unique(d) for d in doc_ids if len(d)] or [np.zeros(0, np.int64)]),
                     minlength=len(vocab)).astype(np.float64)
    idf = np.log(1.0 + (n - df + 0.5) / (df + 0.5))
    empty = vocab.get("")
    q_ids = tok.tokenize(list(queries), return_as="ids", update_vocab=False, show_progress=False)
    it = range(len(q_ids))
    if progress:
        from tqdm.auto import tqdm

        it = tqdm(it, desc="bm25 queries", unit="query")
    out = []
    for qi in it:
        terms, tf = np.unique(np.asarray([t for t in q_ids[qi] if t != empty], dtype=np.int64), return_counts=True)
        if max_query_terms and len(terms) > max_query_terms:
            keep = np.lexsort((terms, -((1.0 + np.log(tf)) * idf[terms])))[:max_query_terms]
            terms = np.sort(terms[keep])
        if len(terms) == 0:
            out.append((np.zeros(0, np.int64), np.zeros(0)))
            continue
        scores = np.asarray(retriever.get_scores_from_ids(terms.astype(np.int32).tolist()), dtype=np.float64)
        out.append(_ranked(scores, k, exclude))
    return Hits.from_lists(out)
