"""Task-driven retrieval (TLM): the task's training examples are queries against the corpus.

``subsetlm retrieve CORPUS_OR_STORE --task TASK.jsonl --method bm25|dense|diverse``:

* **bm25** — every *training* example (never validation or test) is a BM25 query
  (``bm25s``, Lucene scoring, English stop words, Snowball stemming). A long query is cut
  to its ``max_query_terms`` key terms, ranked by (1 + log tf)·idf over the corpus. Works on a plain
  corpus (rows = documents) or on a store (rows = its samples).
* **dense** — the training examples are embedded with the store's own embedder and
  searched with FAISS (inner product = cosine) over the store's embeddings.
* **diverse** — what TLM lacks: a candidate pool is retrieved (``pool``: bm25 or dense,
  ``pool_factor`` × the budget), then facility-location mutual information with the task
  examples as the query set picks a subset that is relevant *and* not redundant
  (:mod:`subsetlm.select.mutual_information`, sparse, O(m·k) memory).

Top-K per query, ``K = auto``: 50 for tasks over 100k training examples, 500 over 5k,
5000 below (the paper's presets). The per-query lists are merged: each corpus row keeps
its best rank (and that rank's score), rows are ordered by best rank, then score, then
row, so a budget cap (``budget``: count, fraction of the corpus, or ``tokens:N``) takes
every query's first hit before anyone's second. Rows of the task's validation/test
documents (same document id, or the same text) are never retrieved (``decontaminate``).

Output: a subset file in the selection engine's format (``gain`` = the row's best
retrieval score; for ``diverse`` the marginal I(S;Q) gain) and ``provenance.parquet``
beside it: per selected row, the query that ranked it best (``query`` = position in the
task's train split, ``query_id``), that ``rank``, ``score`` and ``n_queries`` (how many
queries retrieved it).

Example
-------
>>> retrieve(RetrieveConfig(corpus=["pubmed"], task="pubmed-task", out="subset-bm25", k=50))  # doctest: +SKIP
PosixPath('subset-bm25')
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

log = logging.getLogger(__name__)

METHODS = ("bm25", "dense", "diverse")
PROVENANCE_FILE = "provenance.parquet"


def auto_k(n_queries: int) -> int:
    """The TLM paper's K by task size: 50 (> 100k examples), 500 (> 5k), else 5000."""
    return 50 if n_queries > 100_000 else 500 if n_queries > 5_000 else 5000


@dataclass
class Hits:
    """Flat query → row hits: ``query`` (h,) int64, ``rank`` (h,) int64 (0 = best), ``index`` (h,) int64, ``score`` (h,) float64."""

    query: np.ndarray
    rank: np.ndarray
    index: np.ndarray
    score: np.ndarray

    @classmethod
    def from_lists(cls, per_query: Sequence[tuple[np.ndarray, np.ndarray]]) -> "Hits":
        q, r, i, s = [], [], [], []
        for qi, (idx, sc) in enumerate(per_query):
            q.append(np.full(len(idx), qi, np.int64))
            r.append(np.arange(len(idx), dtype=np.int64))
            i.append(np.asarray(idx, np.int64))
            s.append(np.asarray(sc, np.float64))
        cat = (lambda xs, dt: np.concatenate(xs) if xs else np.zeros(0, dt))
        return cls(cat(q, np.int64), cat(r, np.int64), cat(i, np.int64), cat(s, np.float64))


def _ranked(scores: np.ndarray, k: int, exclude: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    """Top-k rows by score (> 0), ties by row id; excluded rows never returned."""
    if exclude is not None:
        scores = np.where(exclude, 0.0, scores)
    kk = min(k, scores.shape[0])
    top = np.argpartition(-scores, kk - 1)[:kk] if kk < scores.shape[0] else np.arange(scores.shape[0])
    top = top[scores[top] > 0]
    order = np.lexsort((top, -scores[top]))
    return top[order], scores[top[order]].astype(np.float64)


# ----------------------------------------------------------------------------- BM25

_TERM = re.compile(r"(?u)\b\w\w+\b")


def _bm25_tokenizer() -> Any:
    from bm25s.tokenization import Tokenizer

    try:
        import Stemmer

        stemmer = Stemmer.Stemmer("english")
    except ImportError:  # PyStemmer is a dependency; tolerate its absence with a warning
        log.warning("PyStemmer is not installed; BM25 runs without stemming (pip install PyStemmer)")
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


# ----------------------------------------------------------------------------- dense

def dense_search(X: np.ndarray, queries: np.ndarray, k: int, *, exclude: np.ndarray | None = None,
                 index_kind: str = "auto", seed: int = 0, block_size: int = 4096, progress: bool = False) -> Hits:
    """Top-``k`` cosine hits of every query (q, d) over the rows of ``X`` (n, d) through a FAISS index.

    Excluded rows are dropped after the search (each query asks for ``k`` + their count), or,
    when there are more of them than ``k``, left out of the index.
    """
    from subsetlm.index import IndexConfig, build_index

    Q = np.ascontiguousarray(queries, dtype=np.float32)
    if Q.ndim != 2 or Q.shape[1] != X.shape[1]:
        raise ValueError(f"queries have shape {Q.shape}; expected (q, {X.shape[1]}) like the store's embeddings")
    n_ex = int(exclude.sum()) if exclude is not None else 0
    rows = None
    if n_ex > k:  # many excluded rows: index only the others rather than over-fetch k + n_ex per query
        rows = np.flatnonzero(~exclude)
        X, exclude, n_ex = np.asarray(X[rows], dtype=np.float32), None, 0
    kk = min(int(X.shape[0]), k + n_ex)
    index = build_index(X, IndexConfig(k=kk, kind=index_kind, seed=seed), progress=progress)
    out = []
    starts = range(0, len(Q), block_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="dense queries", unit="block")
    for s in starts:
        D, I = index.search(Q[s:s + block_size], kk)
        for d, i in zip(D, I):
            ok = i >= 0
            if exclude is not None:
                ok &= ~exclude[np.maximum(i, 0)]
            i, d = i[ok].astype(np.int64), d[ok].astype(np.float64)
            if rows is not None:
                i = rows[i]
            order = np.lexsort((i, -d))[:k]
            out.append((i[order], d[order]))
    return Hits.from_lists(out)


# ----------------------------------------------------------------------------- merge

@dataclass
class Merged:
    """Rows retrieved by any query, in merge order (best rank, then score, then row).

    ``index`` (u,) rows; ``rank``/``score``/``query`` their best hit; ``n_queries`` how many queries hit them.
    """

    index: np.ndarray
    rank: np.ndarray
    score: np.ndarray
    query: np.ndarray
    n_queries: np.ndarray

    def take(self, m: int) -> "Merged":
        return Merged(*(getattr(self, f)[:m] for f in ("index", "rank", "score", "query", "n_queries")))


def merge_hits(h: Hits) -> Merged:
    """De-duplicate hits: each row keeps its best rank (highest score at that rank, then lowest query).

    Example
    -------
    >>> h = Hits(np.array([0, 0, 1, 1]), np.array([0, 1, 0, 1]), np.array([7, 3, 3, 9]), np.array([2., 1., 5., .5]))
    >>> u = merge_hits(h)
    >>> u.index.tolist(), u.rank.tolist(), u.n_queries.tolist()
    ([3, 7, 9], [0, 0, 1], [2, 1, 1])
    """
    if h.index.size == 0:
        z = np.zeros(0, np.int64)
        return Merged(z, z, np.zeros(0), z, z)
    o = np.lexsort((h.query, -h.score, h.rank, h.index))  # by row, then its best hit first
    idx = h.index[o]
    first = np.flatnonzero(np.r_[True, idx[1:] != idx[:-1]])
    counts = np.diff(np.r_[first, len(idx)])
    best = o[first]
    rows, rank, score, query = h.index[best], h.rank[best], h.score[best], h.query[best]
    order = np.lexsort((rows, -score, rank))
    return Merged(rows[order], rank[order], score[order], query[order], counts[order].astype(np.int64))


# ----------------------------------------------------------------------------- the stage

@dataclass
class RetrieveConfig:
    """``subsetlm retrieve`` (one field per flag).

    corpus : a store directory (any method) or corpus files / source names (bm25 only).
    task : the task JSONL (or ``pubmed-task``); only its train split becomes queries.
    k : hits per query, ``None`` = :func:`auto_k` of the number of training examples.
    budget : cap on the subset (count, fraction of the corpus rows, ``tokens:N``);
        ``None`` = every retrieved row (bm25/dense); diverse needs one (default 0.25).
    pool / pool_factor : diverse only: candidates from ``bm25`` or ``dense``, the first
        ``pool_factor × budget`` rows of their merged list.
    eta, graph_k : diverse only: relevance magnification η (default 2: with submodlib's 1, a
        pool row that nearly copies a query covers every row up to its whole relevance and
        the greedy gains collapse after the first picks) and the pool graph's k.
    decontaminate : drop rows of the task's validation/test documents (id or text).
    embedder : query embedder spec for dense/diverse (default: the store's own).
    """

    corpus: list[str] = field(default_factory=list)
    task: str = ""
    out: str = ""
    method: str = "bm25"
    k: int | None = None
    budget: str | None = None
    max_query_terms: int = 32
    pool: str = "bm25"
    pool_factor: float = 2.0
    eta: float = 2.0
    graph_k: int = 32
    text_field: str = "text"
    id_field: str | None = None
    label_field: str = "label"
    decontaminate: bool = True
    embedder: str | None = None
    index_kind: str = "auto"
    device: str = "auto"
    seed: int = 0
    force: bool = False

    def validate(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method={self.method!r}; choose one of {', '.join(METHODS)}")
        if self.pool not in ("bm25", "dense"):
            raise ValueError(f"pool={self.pool!r}; the diverse candidate pool comes from bm25 or dense")
        if not self.corpus:
            raise ValueError("no corpus given: pass a store directory or corpus files / a source name")
        if not self.task:
            raise ValueError("no task given: pass --task TASK.jsonl (its train split are the queries)")
        if not self.out:
            raise ValueError("no output given: pass --out SUBSET_DIR")
        if self.k is not None and self.k < 1:
            raise ValueError(f"k={self.k}; expected >= 1 hits per query (or leave it unset for the paper's preset)")
        if self.pool_factor < 1:
            raise ValueError(f"pool_factor={self.pool_factor}; the diverse pool must be >= the budget (>= 1)")


def _normalise(text: str) -> str:
    return hashlib.sha1(" ".join(text.lower().split()).encode("utf-8")).hexdigest()


def _ground(cfg: RetrieveConfig) -> Any:
    from subsetlm.corpus.rows import CorpusRows

    if len(cfg.corpus) == 1 and (Path(cfg.corpus[0]) / "manifest.json").is_file() \
            and (Path(cfg.corpus[0]) / "embeddings.npy").exists():
        from subsetlm.embed import EmbeddingStore

        return EmbeddingStore.open(cfg.corpus[0])
    if cfg.method != "bm25":
        raise ValueError(f"--method {cfg.method} needs embeddings: pass an embedding store (subsetlm embed "
                         f"{' '.join(cfg.corpus)} --out STORE), not corpus files")
    return CorpusRows.read(cfg.corpus, text_field=cfg.text_field, id_field=cfg.id_field)


def _n_tokens(ground: Any) -> np.ndarray:
    if hasattr(ground, "n_tokens"):
        return np.asarray(ground.n_tokens, dtype=np.int64)
    return np.array([len(t.split()) for t in ground.texts(range(ground.n))], dtype=np.int64)


def _contaminated(ground: Any, task: Any, texts: list[str]) -> np.ndarray:
    held = task.validation.groups + task.test.groups
    groups = set(map(str, held))
    hashes = {_normalise(t) for t in task.validation.texts + task.test.texts}
    by_doc = np.isin(np.asarray(ground.doc_ids).astype(str), np.array(sorted(groups), dtype=str))
    by_text = np.fromiter((_normalise(t) in hashes for t in texts), dtype=bool, count=len(texts))
    return by_doc | by_text


def _cap(u: Merged, budget: str | None, n: int, n_tokens: np.ndarray | None) -> tuple[Merged, dict]:
    if budget is None:
        return u, {}
    from subsetlm.select.budget import parse_budget

    r = parse_budget(budget).resolve(n, n_tokens)
    m = min(int(r.count), len(u.index))
    if getattr(r, "tokens", None) is not None:
        m = int(np.searchsorted(np.cumsum(n_tokens[u.index]), float(r.tokens), side="right"))
    return u.take(m), {"budget": str(budget), "budget_count": int(r.count)}


def _query_embeddings(cfg: RetrieveConfig, store: Any, texts: list[str], progress: bool) -> np.ndarray:
    from subsetlm.embed.run import store_embedder

    emb = store_embedder(store, device=cfg.device, model=cfg.embedder)
    return emb.embed(texts, progress=progress)


def _diverse(cfg: RetrieveConfig, ground: Any, union: Merged, Q: np.ndarray, n: int, n_tokens: np.ndarray,
             progress: bool) -> tuple:
    """FL mutual information over the first ``pool_factor × budget`` merged rows."""
    from subsetlm.select.budget import parse_budget
    from subsetlm.select.mutual_information import flmi_select, query_relevance

    budget = cfg.budget or "0.25"
    b = parse_budget(budget)
    if b.kind == "tokens":
        raise ValueError(f"--method diverse takes a count or a fraction budget, got {budget!r}; use bm25/dense "
                         f"for token budgets")
    count = min(int(b.resolve(n, n_tokens).count), len(union.index))
    pool = union.take(min(len(union.index), max(count, int(round(cfg.pool_factor * count)))))
    by_row = np.argsort(pool.index, kind="stable")  # read the pool's embeddings in row order
    Xp = np.asarray(ground.embeddings[pool.index[by_row]], dtype=np.float32)
    res = flmi_select(Xp, query_relevance(Xp, Q), count, k=cfg.graph_k, eta=cfg.eta, seed=cfg.seed,
                      progress=progress)
    at = by_row[res.order]
    picked = Merged(pool.index[at], pool.rank[at], pool.score[at], pool.query[at], pool.n_queries[at])
    cert = {"objective": float(res.objective), "upper_bound": float(res.upper_bound),
            "ratio": float(res.objective / res.upper_bound) if res.upper_bound > 0 else 1.0,
            "random_objective": res.random_objective,
            "scope": f"facility-location mutual information over the {len(pool.index)}-row candidate pool"}
    return picked, res.gains, res.weights, cert, {"n_pool": int(len(pool.index)), "budget": str(budget)}


def retrieve(cfg: RetrieveConfig, progress: bool = False) -> Path:
    """Run ``subsetlm retrieve``: task train examples → top-K per query → merged, capped subset file."""
    import pyarrow as pa

    from subsetlm import _io
    from subsetlm.evaluate.task import load_task
    from subsetlm.subsets import read_subset, write_subset

    cfg.validate()
    out = Path(cfg.out)
    config = {k: v for k, v in asdict(cfg).items() if k not in ("out", "force", "device")}
    if out.exists() and not cfg.force:
        if _io.is_complete(out) and read_subset(out).manifest.get("config") == _portable(config):
            log.info("subset %s is complete and matches this config; skipping (use --force to redo)", out)
            return out
        raise FileExistsError(f"{out} already exists with a different retrieval; pass --force to replace it")
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    task = load_task(cfg.task, text_field=cfg.text_field, label_field=cfg.label_field)
    queries = task.train.texts
    ground = _ground(cfg)
    n = int(ground.n)
    texts = ground.texts(np.arange(n))
    exclude = _contaminated(ground, task, texts) if cfg.decontaminate else None
    n_excluded = int(exclude.sum()) if exclude is not None else 0
    if n_excluded:
        log.info("decontamination: %d of %d corpus rows belong to the task's validation/test documents and are "
                 "never retrieved", n_excluded, n)
    k = int(cfg.k or auto_k(len(queries)))
    n_tokens = _n_tokens(ground)
    source = cfg.pool if cfg.method == "diverse" else cfg.method
    Q = None
    t = time.perf_counter()
    if source == "bm25":
        hits = bm25_search(texts, queries, k, max_query_terms=cfg.max_query_terms, exclude=exclude, progress=progress)
    else:
        Q = _query_embeddings(cfg, ground, queries, progress)
        hits = dense_search(ground.embeddings, Q, k, exclude=exclude, index_kind=cfg.index_kind, seed=cfg.seed,
                            progress=progress)
    timings["search_s"] = time.perf_counter() - t
    union = merge_hits(hits)
    if len(union.index) == 0:
        raise ValueError(f"no corpus row matched any of the {len(queries)} task queries; is the corpus in the "
                         f"task's language/domain (check --text-field)?")
    info: dict[str, Any] = {"n_queries": len(queries), "k": k, "n_hits": int(hits.index.size),
                            "n_union": int(len(union.index)), "n_excluded": n_excluded}
    weights = gains = None
    if cfg.method == "diverse":
        if Q is None:
            Q = _query_embeddings(cfg, ground, queries, progress)
        t = time.perf_counter()
        union, gains, weights, cert, extra = _diverse(cfg, ground, union, Q, n, n_tokens, progress)
        timings["select_s"] = time.perf_counter() - t
        info.update(extra)
    else:
        union, capinfo = _cap(union, cfg.budget, n, n_tokens)
        info.update(capinfo)
        cert = {"objective": float(union.score.sum()), "upper_bound": None, "ratio": None, "random_objective": None,
                "note": "retrieval (no submodular objective): objective = sum of the selected rows' best scores"}
    if gains is None:
        gains = union.score
    prov = pa.table({"index": pa.array(union.index, pa.int64()),
                     "query": pa.array(union.query, pa.int64()),
                     "query_id": pa.array([str(task.train.groups[int(q)]) for q in union.query], pa.string()),
                     "rank": pa.array(union.rank, pa.int64()),
                     "score": pa.array(union.score, pa.float64()),
                     "n_queries": pa.array(union.n_queries, pa.int64())})
    timings["total_s"] = time.perf_counter() - t0
    manifest = {"config": _portable(config), "seed": cfg.seed, "function": f"retrieval-{cfg.method}",
                "certificate": cert, "selection": info}
    path = write_subset(out, store=ground, indices=union.index, gains=gains, weights=weights, manifest=manifest,
                        stats={"timings": timings}, overwrite=cfg.force,
                        extra_tables={PROVENANCE_FILE: prov})
    log.info("retrieved %d of %d rows for %d task queries (k=%d, %s) in %.1fs -> %s", len(union.index), n,
             len(queries), k, cfg.method, timings["total_s"], path)
    return path


def read_provenance(subset: str | Path) -> Any:
    """The ``provenance.parquet`` table of a retrieved subset (index, query, query_id, rank, score, n_queries)."""
    import pyarrow.parquet as pq

    p = Path(subset) / PROVENANCE_FILE
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no provenance; only subsets written by `subsetlm retrieve` have one")
    return pq.read_table(p)


def _portable(config: dict) -> dict:
    from subsetlm.select.api import _portable as portable

    return portable(config)
