"""``subsetlm retrieve``: the task's training examples are queries against the corpus (TLM).

``subsetlm retrieve CORPUS_OR_STORE --task TASK.jsonl --method bm25|dense|diverse``:

* **bm25** — every *training* example (never validation or test) is a BM25 query
  (:mod:`subsetlm.retrieve.bm25`). Works on a plain corpus (rows = documents) or on a
  store (rows = its samples).
* **dense** — the training examples are embedded with the store's own embedder and
  searched with FAISS (inner product = cosine) over the store's embeddings
  (:mod:`subsetlm.retrieve.dense`).
* **diverse** — what TLM lacks: a candidate pool is retrieved (``pool``: bm25 or dense,
  ``pool_factor`` × the budget), then facility-location mutual information with the task
  examples as the query set picks a subset that is relevant *and* not redundant
  (:mod:`subsetlm.select.mutual_information`, sparse, O(m·k) memory).

Top-K per query, ``K = auto``: 50 for tasks over 100k training examples, 500 over 5k,
5000 below (the paper's presets). The per-query lists are merged
(:mod:`subsetlm.retrieve.merge`): each corpus row keeps its best rank (and that rank's
score), rows are ordered by best rank, then score, then row, so a budget cap (``budget``:
count, fraction of the corpus, or ``tokens:N``) takes every query's first hit before
anyone's second. Rows of the task's validation/test documents (same document id, or the
same text) are never retrieved (``decontaminate``).

Output: a subset directory in the selection engine's format (``gain`` = the row's best
retrieval score; for ``diverse`` the marginal I(S;Q) gain; the manifest's ``config`` is
the stage's identity: a re-run with the same config is skipped, another one refused
without ``--force``) and ``provenance.parquet`` beside it: per selected row, the query
that ranked it best (``query`` = position in the task's train split, ``query_id``), that
``rank``, ``score`` and ``n_queries`` (how many queries retrieved it).

Example
-------
>>> retrieve(RetrieveConfig(corpus=["pubmed"], task="pubmed-task", out="subset-bm25", k=50))  # doctest: +SKIP
PosixPath('subset-bm25')
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subsetlm._stage import Output, Stage, check_out, identity, manifest_config
from subsetlm.retrieve.bm25 import bm25_search
from subsetlm.retrieve.dense import dense_search
from subsetlm.retrieve.merge import Merged, merge_hits

logger = logging.getLogger(__name__)

METHODS = ("bm25", "dense", "diverse")
PROVENANCE_FILE = "provenance.parquet"


def auto_k(n_queries: int) -> int:
    """The TLM paper's K by task size: 50 (> 100k examples), 500 (> 5k), else 5000.

    >>> auto_k(2_000), auto_k(25_000), auto_k(200_000)
    (5000, 500, 50)
    """
    return 50 if n_queries > 100_000 else 500 if n_queries > 5_000 else 5000


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

    VOLATILE: ClassVar[tuple[str, ...]] = ("out", "force", "device", "verify")  # where/how: not in the manifest's config

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
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

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


def _ground(cfg: RetrieveConfig) -> Any:
    """The rows to retrieve from: the store (one store directory given) or the corpus files read in order."""
    from subsetlm.embed.store import EmbeddingStore, open_rows

    if cfg.method != "bm25" and not (len(cfg.corpus) == 1 and EmbeddingStore.is_store(cfg.corpus[0])):
        raise ValueError(f"--method {cfg.method} needs embeddings: pass an embedding store (subsetlm embed "
                         f"{' '.join(cfg.corpus)} --out STORE), not corpus files")
    return open_rows(list(cfg.corpus), text_field=cfg.text_field, id_field=cfg.id_field, verify=cfg.verify)


def _contaminated(ground: Any, task: Any, texts: list[str]) -> np.ndarray:
    """(n,) bool: rows of the task's validation/test documents (same document id, or the same text)."""
    from subsetlm.task import HeldOut

    return HeldOut(task).rows(np.asarray(ground.doc_ids), texts)


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
            "ratio": res.ratio,
            "random_objective": res.random_objective,
            "scope": f"facility-location mutual information over the {len(pool.index)}-row candidate pool"}
    return picked, res.gains, res.weights, cert, {"n_pool": int(len(pool.index)), "budget": str(budget)}


def retrieve(cfg: RetrieveConfig, progress: bool = False) -> Path:
    """Run ``subsetlm retrieve``: task train examples → top-K per query → merged, capped subset directory.

    Returns the subset path; skips the work when it holds a subset of this config, and
    raises ``FileExistsError`` when it holds something else (unless ``cfg.force``).
    """
    import pyarrow as pa

    from subsetlm.subsets import write_subset
    from subsetlm.task import load_task

    cfg.validate()
    config = identity(cfg)
    out = Output(check_out(cfg.out), config, what="subset", read_identity=manifest_config)  # a URL: its mirror
    if out.up_to_date(cfg.force):
        return out.path
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    task = load_task(cfg.task, text_field=cfg.text_field, label_field=cfg.label_field)
    queries = task.train.texts
    ground = _ground(cfg)
    n = int(ground.n)
    source = cfg.pool if cfg.method == "diverse" else cfg.method
    # every row's text: BM25 searches them and decontamination compares them (dense search needs neither)
    texts = ground.texts(np.arange(n)) if source == "bm25" or cfg.decontaminate else None
    exclude = _contaminated(ground, task, texts) if cfg.decontaminate else None
    n_excluded = int(exclude.sum()) if exclude is not None else 0
    if n_excluded:
        logger.info("decontamination: %d of %d corpus rows belong to the task's validation/test documents and are "
                    "never retrieved", n_excluded, n)
    k = int(cfg.k or auto_k(len(queries)))
    n_tokens = np.asarray(ground.n_tokens, dtype=np.int64)
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
    manifest = {"config": config, "seed": cfg.seed, "function": f"retrieval-{cfg.method}",
                "certificate": cert, "selection": info}
    # write_subset writes PATH.tmp and renames it, _SUCCESS last (the contract's atomic directory)
    path = write_subset(out.path, store=ground, indices=union.index, gains=gains, weights=weights, manifest=manifest,
                        stats={"timings": timings}, overwrite=cfg.force,
                        extra_tables={PROVENANCE_FILE: prov})
    logger.info("retrieved %d of %d rows for %d task queries (k=%d, %s) in %.1fs -> %s", len(union.index), n,
                len(queries), k, cfg.method, timings["total_s"], path)
    return path


def read_provenance(subset: str | Path) -> Any:
    """The ``provenance.parquet`` table of a retrieved subset (index, query, query_id, rank, score, n_queries)."""
    import pyarrow.parquet as pq

    from subsetlm._mirror import local_copy

    p = local_copy(subset, "subset") / PROVENANCE_FILE  # a URL: its mirror
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no provenance; only subsets written by `subsetlm retrieve` have one")
    return pq.read_table(p)


def summary(path: str | Path) -> str:
    """The line ``subsetlm retrieve`` prints for the subset at ``path``."""
    from subsetlm._mirror import display  # a subset at a URL: shown as the URL, not its mirror
    from subsetlm.subsets import read_subset

    m = read_subset(path).manifest
    s = m["selection"]
    return (f"wrote {display(path)}: {m['size']} of {m['n_ground']} rows retrieved by {s['n_queries']} task queries "
            f"(k={s['k']}, {s['n_union']} distinct hits, {s['n_excluded']} validation/test rows excluded)")


STAGE = Stage("retrieve", RetrieveConfig, retrieve, summary)
