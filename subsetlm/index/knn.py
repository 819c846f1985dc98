"""The cosine kNN graph: every row's top-k neighbours (itself included), searched in blocks.

Memory is O(n * k) for the graph plus one ``block_size x d`` query block; never n x n.

Example
-------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X = rng.standard_normal((200, 8)).astype(np.float32)
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> g = knn_graph(X, k=5)
>>> g.neighbors.shape, bool((g.neighbors[:, 0] == np.arange(200)).all())
((200, 5), True)
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .._io import atomic_dir, checksums, dumps_json, is_complete, load_npy, read_json, verify_checksums
from ._arrays import (as_f32_block, check_k, check_matrix, iter_f32_blocks, sample_rows, take_f32,
                      task_spans)
from .faiss_index import IndexConfig, _build, faiss_threads, resolve_graph_params
from .ivf_join import ivf_join_knn

logger = logging.getLogger(__name__)

GRAPH_FORMAT = "subsetlm.knn_graph"
GRAPH_VERSION = 1
GRAPH_FILES = ("neighbors.npy", "similarities.npy")
_MARGIN = 8  # exact search: extra candidates per row, so ties at the k-th place are seen whole
_EPS32 = 2.0 ** -24


@dataclass
class KNNGraph:
    """Top-k cosine neighbours of every row.

    Attributes
    ----------
    neighbors : ndarray (n, k) int32
        Row i = ids of the k nearest neighbours of i (i itself included), by decreasing
        similarity; -1 where fewer than k were found (always last in the row).
    similarities : ndarray (n, k) float32
        Matching inner products (cosines), computed in float64 in a fixed order and rounded
        to float32 (the same bits on any number of threads); 0.0 for missing neighbours.
    params : dict
        How the graph was built (resolved index params, ``recall`` if estimated).
    """

    neighbors: np.ndarray
    similarities: np.ndarray
    params: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.neighbors.ndim != 2 or self.neighbors.shape != self.similarities.shape:
            raise ValueError(
                f"KNNGraph needs neighbors and similarities of the same (n, k) shape; got "
                f"{self.neighbors.shape} and {self.similarities.shape}."
            )

    @property
    def n(self) -> int:
        return int(self.neighbors.shape[0])

    @property
    def k(self) -> int:
        return int(self.neighbors.shape[1])

    def to_csr(self):
        """The graph as a ``scipy.sparse.csr_matrix`` (n, n) float32; row i = neighbours of i.

        Missing neighbours (-1) have no entry. The reverse lists (who lists j) are the
        columns, i.e. ``to_csr().T.tocsr()``.
        """
        import scipy.sparse as sp  # noqa: PLC0415

        nb = np.asarray(self.neighbors)
        mask = nb >= 0
        indptr = np.zeros(self.n + 1, dtype=np.int64)
        np.cumsum(mask.sum(axis=1), out=indptr[1:])
        indices = nb[mask].astype(np.int32, copy=False)
        data = np.asarray(self.similarities)[mask].astype(np.float32, copy=False)
        return sp.csr_matrix((data, indices, indptr), shape=(self.n, self.n))

    def manifest(self) -> dict:
        return {"format": GRAPH_FORMAT, "version": GRAPH_VERSION, "n": self.n, "k": self.k,
                "kind": self.params.get("kind"), "params": self.params,
                "recall": self.params.get("recall")}

    def save(self, path, overwrite: bool = False, extra: dict | None = None,
             stats: dict | None = None) -> Path:
        """Write ``neighbors.npy``, ``similarities.npy``, ``manifest.json`` and ``_SUCCESS``.

        The directory is written atomically (``path.tmp`` then a rename). ``extra`` entries
        are merged into the manifest (e.g. the store fingerprint); ``stats`` (timings, not
        byte-stable) go to ``stats.json``. The manifest records the ``checksums`` of the two
        arrays, verified by :meth:`load`.
        """
        path = Path(path)
        with atomic_dir(path, overwrite=overwrite) as tmp:
            self.write_into(tmp, extra=extra, stats=stats)
        return path

    def write_into(self, directory, extra: dict | None = None, stats: dict | None = None) -> None:
        """Write the graph's files into ``directory`` (no ``_SUCCESS``: the caller's stage finishes it)."""
        directory = Path(directory)
        man = self.manifest()
        man.update(extra or {})
        np.save(directory / "neighbors.npy", np.ascontiguousarray(self.neighbors, dtype=np.int32))
        np.save(directory / "similarities.npy", np.ascontiguousarray(self.similarities, dtype=np.float32))
        man["checksums"] = checksums(directory, GRAPH_FILES)
        (directory / "manifest.json").write_text(dumps_json(man))
        if stats is not None:
            (directory / "stats.json").write_text(dumps_json(stats))

    @classmethod
    def load(cls, path, mmap: bool = True, verify: bool = True) -> "KNNGraph":
        """Read a graph written by :meth:`save` (arrays memory-mapped when ``mmap``).

        ``verify``: check the arrays against the manifest's checksums first (once per process);
        a graph altered after ``_SUCCESS`` raises :class:`~subsetlm._io.IntegrityError`.
        """
        path = Path(path)
        if not is_complete(path):
            raise FileNotFoundError(
                f"no complete kNN graph at {path} (missing {path / '_SUCCESS'}); "
                f"build it with `subsetlm index STORE --k K` or KNNGraph.save()."
            )
        fix = rebuild_hint(path)
        try:
            man = read_json(path / "manifest.json")
        except (ValueError, UnicodeDecodeError) as e:
            raise ValueError(f"{path / 'manifest.json'}: not valid JSON ({e}); {fix}") from None
        if not isinstance(man, dict) or man.get("format") != GRAPH_FORMAT:
            fmt = man.get("format") if isinstance(man, dict) else None
            raise ValueError(f"{path / 'manifest.json'}: format={fmt!r}, expected {GRAPH_FORMAT!r}.")
        if verify:
            verify_checksums(path, man.get("checksums"), what="kNN graph", fix=fix)
        mode = "r" if mmap else None
        nb = load_npy(path / "neighbors.npy", mode, fix=fix)
        sim = load_npy(path / "similarities.npy", mode, fix=fix)
        if nb.shape != (man["n"], man["k"]) or sim.shape != nb.shape:
            raise ValueError(
                f"{path}: arrays {nb.shape}/{sim.shape} disagree with manifest n={man['n']} k={man['k']}; "
                f"the directory is corrupt, rebuild it with --force."
            )
        params = dict(man.get("params") or {})
        return cls(nb, sim, params)


def rebuild_hint(path: Path) -> str:
    """How to rebuild the graph directory ``path`` (a store's ``graphs/knn-kK`` or a saved graph)."""
    path = Path(path)
    if path.parent.name == "graphs" and path.name.startswith("knn-k"):
        return (f"rebuild it with `subsetlm index {path.parent.parent} --k {path.name[5:]} --force` "
                f"(or pass --no-verify to skip this check)")
    return "rebuild it (KNNGraph.save with overwrite=True), or pass verify=False to skip this check"

def _fix_rows(I: np.ndarray, D: np.ndarray, start, self_sim: np.ndarray):
    """Insert self where missing (replacing the last neighbour), sort rows, zero missing sims.

    The rows are ``start, start + 1, ...``, or the ids in ``start`` when it is an array.

    Order within a row: decreasing similarity, self first among ties, then smaller id;
    missing (-1) last.
    """
    b, k = I.shape
    if np.ndim(start):  # the rows' own ids, when they are not start, start + 1, ...
        rows = np.asarray(start, dtype=np.int64)[:, None]
    else:
        rows = np.arange(start, start + b, dtype=np.int64)[:, None]
    is_self = I == rows
    missing_self = ~is_self.any(axis=1)
    if missing_self.any():
        I[missing_self, k - 1] = rows[missing_self, 0]
        D[missing_self, k - 1] = self_sim[missing_self]
    key = np.where(I < 0, -np.inf, D)
    order = np.lexsort((I, I != rows, -key), axis=-1)
    I = np.take_along_axis(I, order, axis=1)
    D = np.take_along_axis(D, order, axis=1)
    D[I < 0] = 0.0
    return I.astype(np.int32), D.astype(np.float32), int(missing_self.sum())


def _exact_sims(X, xq: np.ndarray, I: np.ndarray) -> np.ndarray:
    """Inner products of the candidate ids ``I`` (b, c) against queries ``xq`` (b, d), accumulated in
    float64 in index order and rounded to float32 (:func:`~subsetlm.index._topk.exact_dots`, reading
    ``X``'s rows in place); -inf where ``I`` is -1.

    Bit-identical whatever the BLAS / FAISS thread count that chose the candidates, and on any
    machine (no SIMD reassociation).
    """
    from ._topk import exact_dots, exact_dots_half, half_table

    D = np.empty(I.shape, dtype=np.float32)
    q = np.ascontiguousarray(xq, dtype=np.float32)
    I = np.ascontiguousarray(I, dtype=np.int64)
    A = np.asarray(X)
    if A.dtype == np.float16:
        exact_dots_half(A.view(np.uint16), I, q, D, half_table())
    elif A.dtype == np.float32:
        exact_dots(A, I, q, D)
    else:  # other dtypes: the candidate rows as float32 first
        flat = np.unique(I[I >= 0])
        if flat.size == 0:
            D[:] = -np.inf
            return D
        pos = np.where(I >= 0, np.searchsorted(flat, np.where(I >= 0, I, flat[0])), -1).astype(np.int64)
        exact_dots(np.ascontiguousarray(take_f32(X, flat)), pos, q, D)
    return D


def _self_sims(xq: np.ndarray) -> np.ndarray:
    """``|x|^2`` of each query row, as :func:`_exact_sims` computes it."""
    q = np.ascontiguousarray(xq, dtype=np.float32)
    return _exact_sims(q, q, np.arange(len(q), dtype=np.int64)[:, None])[:, 0]


def _exact_rows(X, xq: np.ndarray, I: np.ndarray, D: np.ndarray, start: int, k: int):
    """Exact search: rows whose k+margin candidates end in a (near) tie with the k-th (duplicates,
    all-zero rows) get every row within ``tol`` of the k-th similarity as candidates, so the kept
    top-k is the same whatever order FAISS's threads found the tied candidates in.

    ``tol`` (8 d 2^-24 |q|^2) bounds float32 rounding of a dot product many times over: a row
    FAISS ranked outside the candidates is then strictly below the k-th, on any thread count.
    """
    n, d = X.shape
    if I.shape[1] >= n:
        return I, D
    kth = -np.partition(-np.where(I < 0, -np.inf, D), k - 1, axis=1)[:, k - 1]
    tol = 8.0 * d * _EPS32 * np.maximum(1.0, _self_sims(xq))
    worst = np.where(I < 0, np.inf, D).min(axis=1)
    amb = np.flatnonzero((worst >= kth - tol) & np.isfinite(kth))
    if not amb.size:
        return I, D
    I, D = I.copy(), D.copy()
    for s0 in range(0, len(amb), 256):
        rows = amb[s0:s0 + 256]
        q = np.ascontiguousarray(xq[rows])
        radius = (kth - 2 * tol)[rows]
        cands: list[list[np.ndarray]] = [[] for _ in rows]
        for b0, xb in iter_f32_blocks(X, 16384):
            hit_r, hit_c = np.nonzero(q @ xb.T > radius[:, None])
            for j in np.unique(hit_r):
                cands[j].append(hit_c[hit_r == j] + b0)
        for j, r in enumerate(rows):
            cand = np.union1d(np.concatenate(cands[j]) if cands[j] else np.zeros(0, np.int64), [start + r])
            sims = np.concatenate([_exact_sims(X, xq[r:r + 1], cand[None, c:c + 8192])[0]
                                   for c in range(0, len(cand), 8192)])
            order = np.lexsort((cand, cand != start + r, -sims))[:I.shape[1]]
            m = len(order)
            I[r, :m], D[r, :m] = cand[order], sims[order]
            I[r, m:], D[r, m:] = -1, -np.inf
    return I, D


def _rescore(X, neighbors: np.ndarray, block_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The similarities of a graph's rows by :func:`_exact_sims`, rows re-sorted (thread-count independent)."""
    nb = np.empty(neighbors.shape, dtype=np.int32)
    sims = np.empty(neighbors.shape, dtype=np.float32)
    for start, xq in iter_f32_blocks(X, block_size):
        I = np.asarray(neighbors[start:start + len(xq)], dtype=np.int64)
        I, D, _ = _fix_rows(I, _exact_sims(X, xq, I), start, _self_sims(xq))
        nb[start:start + len(xq)], sims[start:start + len(xq)] = I, D
    return nb, sims


def _search_block(index, X, xq: np.ndarray, start: int, kind: str, k: int):
    """One query block's sorted top-k rows (ids, sims, rows where self was inserted).

    Similarities are recomputed by :func:`_exact_sims` (thread-count independent); exact
    search (``flat``) looks at ``k + 8`` candidates and resolves ties at the k-th place
    (:func:`_exact_rows`), so its rows are the same on any thread count.
    """
    n = X.shape[0]
    k_search = min(n, 2 * k) if kind == "ivfpq" else min(n, k + _MARGIN) if kind == "flat" else k
    _, I = index.search(xq, k_search)
    I = I.astype(np.int64)
    D = _exact_sims(X, xq, I)
    if kind == "flat":
        I, D = _exact_rows(X, xq, I, D, start, k)
    if k_search > k:  # keep the best k (self is never dropped here: _fix_rows puts it first among ties)
        I, D, ins = _fix_rows(I, D, start, _self_sims(xq))
        return I[:, :k], D[:, :k], ins
    return _fix_rows(I, D, start, _self_sims(xq))


def _search_task(task: dict):
    """Executor task: search rows ``start:stop`` of the .npy against the saved index (IVF lists memory-mapped)."""
    from .faiss_index import _faiss, set_search_params

    faiss = _faiss()
    X = np.load(task["x"], mmap_mode="r")
    flags = faiss.IO_FLAG_MMAP if task["p"]["kind"] in ("ivf", "ivfpq") else 0
    index = faiss.read_index(task["index"], flags)
    set_search_params(index, task["p"])
    parts = [_search_block(index, X, as_f32_block(X, s, min(task["stop"], s + task["block_size"])), s,
                           task["p"]["kind"], task["k"])
             for s in range(task["start"], task["stop"], task["block_size"])]
    return (np.concatenate([q[0] for q in parts]), np.concatenate([q[1] for q in parts]),
            sum(q[2] for q in parts))


def _search_distributed(X, index, p: dict, k: int, block_size: int, executor):
    """The blocks of the local search, 16 per executor task, against a copy of ``index`` on disk
    next to the embeddings (so every node reads it). The same neighbours as the local search;
    similarities can differ in the last float32 bit when the workers run FAISS on another
    number of threads (its IVF scan sums in a thread-dependent order)."""
    import os
    import uuid

    from .faiss_index import _faiss

    path = Path(X.filename).with_name(f".knn-index-{uuid.uuid4().hex[:12]}.faiss")
    _faiss().write_index(index, str(path))
    try:
        tasks = [{"x": str(X.filename), "index": str(path), "p": p, "k": k, "block_size": block_size,
                  "start": a, "stop": b} for a, b in task_spans(X.shape[0], block_size)]
        logger.info("kNN search: %d task(s) on the executor", len(tasks))
        out = executor(_search_task, tasks)
    finally:
        os.unlink(path)
    return np.concatenate([o[0] for o in out]), np.concatenate([o[1] for o in out]), sum(o[2] for o in out)


def _distributable(X, p: dict, executor) -> bool:
    return (executor is not None and p.get("device") != "gpu" and isinstance(X, np.memmap)
            and str(X.filename or "").endswith(".npy"))


def _knn_faiss(X, k: int, cfg: IndexConfig, progress: bool, executor=None):
    """Build a FAISS index and search every row against it, block by block (on ``executor`` if given)."""
    n = X.shape[0]
    t0 = time.perf_counter()
    index, p, _ = _build(X, cfg, progress)
    t_build = time.perf_counter() - t0
    if _distributable(X, p, executor):
        neighbors, sims, n_inserted = _search_distributed(X, index, p, k, cfg.block_size, executor)
        del index
        return neighbors, sims, n_inserted, p, t_build
    if executor is not None:
        logger.info("kNN search runs locally: the executor needs a CPU index and a store's embeddings.npy")
    neighbors = np.empty((n, k), dtype=np.int32)
    sims = np.empty((n, k), dtype=np.float32)
    n_inserted = 0
    blocks = iter_f32_blocks(X, cfg.block_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        blocks = tqdm(blocks, total=-(-n // cfg.block_size), desc="kNN search", unit="block")
    for start, xq in blocks:
        I, D, ins = _search_block(index, X, xq, start, p["kind"], k)
        neighbors[start:start + len(xq)] = I
        sims[start:start + len(xq)] = D
        n_inserted += ins
    del index
    return neighbors, sims, n_inserted, p, t_build


def knn_graph(X, k: int | None = None, cfg: IndexConfig | None = None, progress: bool = False,
              executor=None) -> KNNGraph:
    """Every row's top-``k`` cosine neighbours, itself included.

    Parameters
    ----------
    X : ndarray or memmap, shape (n, d), float16 or float32
        L2-normalised embeddings; read in ``cfg.block_size`` row blocks (never copied whole).
    k : int, optional
        Neighbours per row (self included); default ``cfg.k`` (32). Must be in ``1..n``.
    cfg : IndexConfig, optional
        Index choice and parameters. ``auto``: on CPU, the blocked bfloat16 method
        (``graph_method="blocked"``) where it is estimated faster (it imports torch), else
        exact FAISS search up to 50k rows and FAISS IVF beyond; on GPU, FAISS.
    progress : bool
        tqdm bars over the add and search blocks.
    executor : optional ``run(func, tasks) -> results`` (the Ray backend's): the index is
        built here, saved next to ``X`` (a memory-mapped ``.npy``, on storage every worker
        reads) and the search blocks run as tasks of 16 blocks, IVF lists memory-mapped:
        the same neighbours as locally, similarities to within float32 rounding (FAISS's
        thread count). Ignored for GPU indexes, in-memory ``X`` and the IVF join (it runs
        here).

    Returns
    -------
    KNNGraph
        ``neighbors`` (n, k) int32 and ``similarities`` (n, k) float32, rows sorted by
        decreasing similarity. Approximate indexes that miss a row itself get it inserted
        (exact self inner product, replacing the last neighbour). For ``ivfpq`` the 2k
        candidates are re-scored exactly against ``X``, so similarities are exact cosines.

    Raises
    ------
    TypeError, ValueError
        Non-float dtype, not 2-D, ``k`` outside ``1..n``, NaN/inf rows (the row is named).

    Example
    -------
    >>> import numpy as np
    >>> X = np.eye(3, dtype=np.float32)
    >>> knn_graph(X, k=2, cfg=IndexConfig(kind="flat")).neighbors[:, 0].tolist()
    [0, 1, 2]
    """
    cfg = (cfg or IndexConfig()).validate()
    X = check_matrix(X)
    n, _ = X.shape
    k = check_k(cfg.k if k is None else k, n)
    cfg = dataclasses.replace(cfg, k=k)  # auto settings (ef_search) follow the k actually used
    t0 = time.perf_counter()
    with faiss_threads(cfg.n_threads):
        p = resolve_graph_params(n, X.shape[1], cfg)
        if p["kind"] == "blocked":
            if p["partition"] == "ivf":
                from .ivf_blocked import ivf_blocked_knn  # noqa: PLC0415 - imports torch

                neighbors, sims, info = ivf_blocked_knn(X, k, target_recall=p["target_recall"], nlist=cfg.nlist,
                                                        train_size=cfg.train_size, seed=cfg.seed,
                                                        precision=p["precision"], margin=p["margin"],
                                                        n_threads=cfg.n_threads, progress=progress)
            else:
                from .blocked import blocked_knn  # noqa: PLC0415 - imports torch

                neighbors, sims, info = blocked_knn(X, k, precision=p["precision"], margin=p["margin"],
                                                    n_threads=cfg.n_threads, seed=cfg.seed, progress=progress)
            n_inserted = info.pop("self_inserted")
            p.update(info, device="cpu")
            t_build = 0.0
        elif p.get("graph_method") == "join":
            if executor is not None:
                logger.info("the IVF join runs here, not on the executor (%d rows); "
                            "--graph-method search distributes the search", n)
            neighbors, sims, info = ivf_join_knn(X, k, p["nlist"], p["nprobe"], p["train_size"],
                                                 seed=cfg.seed, block_size=cfg.block_size, progress=progress,
                                                 n_threads=cfg.n_threads)
            neighbors, sims = _rescore(X, neighbors, cfg.block_size)
            n_inserted = 0  # a row's own list is always probed
            p.update(info, device="cpu")
            t_build = 0.0
        else:
            method = p.get("graph_method")  # ("search" for IVF) kept in the params _build returns
            neighbors, sims, n_inserted, p, t_build = _knn_faiss(X, k, cfg, progress, executor)
            if method:
                p["graph_method"] = method
    p = dict(p, k=k, self_inserted=n_inserted)
    logger.info("kNN graph n=%d k=%d (%s) in %.1fs (index %.1fs, search %.1fs); self inserted in %d rows",
                n, k, p["kind"], time.perf_counter() - t0, t_build, time.perf_counter() - t0 - t_build,
                n_inserted)
    return KNNGraph(neighbors, sims, p)


def exact_topk(X, queries: np.ndarray, k: int, block_size: int = 16384) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k inner products of ``queries`` (m, d) against all rows of ``X`` (numpy, blocked).

    Returns ``(ids (m, k) int64, sims (m, k) float32)``, sorted by decreasing similarity.
    """
    q = np.ascontiguousarray(queries, dtype=np.float32)
    best_s = np.full((len(q), 0), -np.inf, dtype=np.float32)
    best_i = np.zeros((len(q), 0), dtype=np.int64)
    for start, xb in iter_f32_blocks(X, block_size):
        s = q @ xb.T
        ids = np.broadcast_to(np.arange(start, start + len(xb)), s.shape)
        cs, ci = np.concatenate([best_s, s], 1), np.concatenate([best_i, ids], 1)
        kk = min(k, cs.shape[1])
        part = np.argpartition(-cs, kk - 1, axis=1)[:, :kk]
        best_s, best_i = np.take_along_axis(cs, part, 1), np.take_along_axis(ci, part, 1)
    order = np.argsort(-best_s, axis=1, kind="stable")
    return np.take_along_axis(best_i, order, 1), np.take_along_axis(best_s, order, 1)


def estimate_recall(X, graph: KNNGraph, n_queries: int = 1000, seed: int = 0) -> float:
    """Mean recall@k of ``graph`` against exact search for a seeded sample of rows.

    Recall of row i = |graph neighbours of i ∩ exact top-k of i| / k (self counts on both
    sides). Costs ``n_queries * n * d`` flops.

    Example
    -------
    >>> import numpy as np
    >>> X = np.eye(4, dtype=np.float32)
    >>> estimate_recall(X, knn_graph(X, k=1, cfg=IndexConfig(kind="flat")))
    1.0
    """
    X = check_matrix(X)
    if graph.n != X.shape[0]:
        raise ValueError(f"graph has n={graph.n} rows but X has {X.shape[0]}; pass the X it was built from.")
    rows = sample_rows(graph.n, n_queries, seed)
    # exact_topk's temporaries are queries x block_size floats and ids (~50 MB at 1,000 x 4,096)
    truth, _ = exact_topk(X, take_f32(X, rows), graph.k, block_size=4096)
    got = np.asarray(graph.neighbors[rows])
    hits = sum(len(np.intersect1d(a[a >= 0], b)) for a, b in zip(got, truth))
    return float(hits / (len(rows) * graph.k))


__all__ = ["KNNGraph", "knn_graph", "estimate_recall", "exact_topk"]
