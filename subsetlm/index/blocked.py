"""The kNN graph from blocked low-precision products: exact-quality, faster than FAISS flat on CPU.

``IndexConfig(graph_method="blocked")`` (``subsetlm index --graph-method blocked``), and what
``auto`` picks when it is estimated cheaper (:func:`estimate_seconds`). Every row is compared
with every row, as exact search does, but the products run in bfloat16 (AMX / AVX-512 BF16
through torch's oneDNN, about 3x the float32 GEMM rate here) and the top-k is found in two
steps:

1. Row blocks x column blocks (2,048 x 2,048) of bfloat16 products, each thread its own rows
   with single-threaded torch; each block's scores are merged into a bounded heap of the
   ``k' = k + margin`` best candidates per row by a numba filter that reads the raw bfloat16
   bits and skips every 16-column chunk whose max cannot enter (``_blocked_kernels.merge_bits``),
   so no top-k sort of the whole block ever runs (FAISS's flat search spends about half its
   time there).
2. The k' candidates of a row are re-scored exactly (float64 sums in a fixed order, rounded to
   float32: the same similarities as every other graph builder), and the best k kept in the
   graph order (decreasing similarity, the row itself first among ties, then the smaller id).
   Rows whose candidates end in a tie with their k-th (duplicates) are resolved by an exact
   scan, as the exact FAISS path does (``knn._exact_rows``).

A neighbour is missed only when more than ``margin`` rows outrank it by the bfloat16 score
while falling below it exactly; the recall is measured on a sample and recorded in the graph
manifest (``build_store_graph``). CPUs without bfloat16 (no ``avx512_bf16`` / ``amx_bf16``
flag) use float32 blocks (``precision="fp32"``): the same two steps, candidates from float32
products. torch is imported only here, when the blocked method runs; ``auto`` counts its import
time, so small graphs stay on FAISS and a process that builds them never imports torch.

Example
-------
>>> import numpy as np
>>> from subsetlm.index import IndexConfig, knn_graph
>>> X = np.random.default_rng(0).standard_normal((300, 16)).astype(np.float32)
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> g = knn_graph(X, k=5, cfg=IndexConfig(graph_method="blocked"))
>>> g.params["kind"], g.params["recall"], bool((g.neighbors[:, 0] == np.arange(300)).all())
('blocked', 1.0, True)
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import Iterator

import numpy as np

from ._arrays import as_f32_block, take_f32

logger = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
IVF_MIN_ROWS = 200_000  # graph_method="blocked" restricts to IVF lists above this many rows (ivf_blocked)
CHUNK = 16  # columns per chunk of the filter (_blocked_kernels.merge_bits)
MARGIN = 16  # candidates per row beyond k, re-scored exactly (recall vs margin: docs/benchmarks.md)
_MASK = {"bf16": 0x7FFF, "fp32": 0x7FFFFFFF}  # magnitude bits of the score's raw bits (see _blocked_kernels)

# Cost model of ``auto`` (wall seconds), measured on this project's 2-core benchmark machine (Xeon
# with AMX; docs/benchmarks.md, section knn-blocked). Only the ratios matter for the choice.
_TORCH_IMPORT_S = 1.1
_FIXED_S = 0.5  # loading the numba kernels, oneDNN's first kernels, the recall check
_FAISS_FLAT = 7.5e10  # multiply-adds per second of knn_graph(kind="flat") (FAISS search + re-scoring), 2 cores
_FAISS_IVF = 3.5e9  # multiply-adds per second per core of FAISS IVF search (scan of the probed lists)
_FAISS_TRAIN = 2e10  # multiply-adds per second per core of FAISS k-means (BLAS)
_PRODUCTS = {"bf16": 3.7e11, "fp32": 7.5e10}  # multiply-adds per second per core (torch, one thread each)
_FILTER_PER_CORE = 0.9e9  # scores merged per second per core (merge_bits, with its share of the rest)
_RESCORE_PER_CORE = 4e6  # exact candidate dots (d = 384) per second per core


@lru_cache(maxsize=1)
def cpu_bf16() -> bool:
    """True when the CPU multiplies bfloat16 natively (``avx512_bf16`` or ``amx_bf16`` in /proc/cpuinfo)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        pass
    return False


def torch_available() -> bool:
    """torch can be imported (without importing it)."""
    return torch_imported() or importlib.util.find_spec("torch") is not None


def torch_imported() -> bool:
    return "torch" in sys.modules


def resolve_precision(precision: str) -> str:
    """``auto`` -> ``bf16`` where the CPU has it, else ``fp32``."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}; expected one of {', '.join(PRECISIONS)}.")
    if precision == "auto":
        return "bf16" if cpu_bf16() else "fp32"
    return precision


def n_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def estimate_seconds(method: str, n: int, d: int, k: int, n_threads: int | None = None, **p) -> float:
    """A rough wall-time estimate of building the graph of ``n`` rows of dim ``d`` by ``method``.

    ``method``: ``flat`` (FAISS exact search), ``blocked`` (``precision`` in ``p``; counts
    torch's import unless it is already imported), ``ivf`` (``nlist``, ``nprobe`` in ``p``).
    Used by ``auto`` only to rank the methods; constants in this module.
    """
    cores = max(1, n_threads or n_cores())
    pairs = float(n) * float(n)
    if method == "flat":
        return pairs * d / _FAISS_FLAT
    if method == "blocked":
        prec = p.get("precision", "bf16")
        t = pairs * d / (_PRODUCTS[prec] * cores) + pairs / (_FILTER_PER_CORE * cores)
        t += n * (k + MARGIN) * (d / 384) / (_RESCORE_PER_CORE * cores)
        return t + _FIXED_S + (0.0 if torch_imported() else _TORCH_IMPORT_S)
    if method == "ivf":
        scanned = float(n) * n * p["nprobe"] / p["nlist"]
        train = float(p.get("train_size", 0)) * p["nlist"] * d * 10  # 10 k-means iterations
        return (scanned * d / _FAISS_IVF + train / _FAISS_TRAIN) / cores
    raise ValueError(f"estimate_seconds: unknown method {method!r}")


@contextlib.contextmanager
def torch_threads(n_threads: int | None) -> Iterator[object]:
    """Import torch (here, lazily) and run its CPU ops on ``n_threads`` (None: torch's default).

    The blocked method sets 1 and runs its own threads (see :class:`Blocks`)."""
    import torch  # noqa: PLC0415 - the one place subsetlm.index imports torch

    old = torch.get_num_threads()
    if n_threads:
        torch.set_num_threads(int(n_threads))
    try:
        yield torch
    finally:
        torch.set_num_threads(old)


class Products:
    """Low-precision score blocks ``A @ B.T`` as raw bits (int16 for bfloat16, int32 for float32).

    ``encode`` turns float32 rows into the product dtype (round to nearest even); ``scores``
    returns a numpy view of the bits of the product block, written into a reused buffer.
    """

    def __init__(self, torch, precision: str):
        self.torch = torch
        self.precision = precision
        self.dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        self.bits = np.int16 if precision == "bf16" else np.int32
        self.mask = _MASK[precision]
        self._buf = self._a = self._b = None

    def encode(self, xb: np.ndarray):
        xb = np.ascontiguousarray(xb, dtype=np.float32)
        if not xb.flags.writeable:  # a read-only memmap: torch wants writable memory, even to read it
            xb = xb.copy()
        return self.torch.from_numpy(xb).to(self.dtype)

    def encode_all(self, X, block: int = 16384):
        """All rows of ``X`` (checked for NaN/inf) in the product dtype, one (n, d) tensor."""
        n, d = X.shape
        out = self.torch.empty((n, d), dtype=self.dtype)
        for s in range(0, n, block):
            out[s:s + block] = self.encode(as_f32_block(X, s, min(n, s + block)))
        return out

    def scores(self, A, B) -> tuple[np.ndarray, np.ndarray]:
        """The bits of ``A @ B.T`` (m, c) and the max bits of each full chunk of ``CHUNK`` columns.

        The operands are padded to multiples of 128 rows / 64 columns (rows of a reused buffer, not
        zeroed: their scores are never read), so oneDNN sees few distinct shapes: creating its
        kernel for a new shape costs ~10x a small product.
        """
        torch = self.torch
        m, c = A.shape[0], B.shape[0]
        mp, cp = -(-m // 128) * 128, -(-c // 64) * 64
        A, B = self._padded(A, mp, "_a"), self._padded(B, cp, "_b")
        if self._buf is None or self._buf.numel() < mp * cp:
            self._buf = torch.empty(mp * cp, dtype=self.dtype)
        out = self._buf[:mp * cp].view(mp, cp)
        torch.matmul(A, B.T, out=out)
        bits = out.view(torch.int16 if self.precision == "bf16" else torch.int32)
        nch = c // CHUNK
        cm = torch.as_strided(bits, (m, nch, CHUNK), (cp, CHUNK, 1)).amax(dim=2) if nch else bits[:m, :0]
        return bits[:m, :c].numpy(), cm.numpy()

    def _padded(self, T, rows: int, name: str):
        if T.shape[0] == rows:
            return T
        buf = getattr(self, name, None)
        if buf is None or buf.shape[0] < rows or buf.shape[1] != T.shape[1]:
            buf = self.torch.empty((rows, T.shape[1]), dtype=self.dtype)
            setattr(self, name, buf)
        buf[:T.shape[0]] = T
        return buf[:rows]


def _spans(m: int, parts: int) -> list[tuple[int, int]]:
    step = -(-m // max(1, parts))
    return [(a, min(m, a + step)) for a in range(0, m, step)]


class Blocks:
    """The blocked method's working state: the product dtype, a thread pool, timers.

    ``candidates`` finds each query row's k' best columns by low-precision products;
    ``finish`` re-scores them exactly and keeps the best k in the graph order. torch runs
    single-threaded inside each of our threads (``torch_threads(1)``): each thread takes
    its own rows, multiplies them by the column block and filters its own product (no
    OpenMP barrier per product: cheap small products, and no stalls when other jobs load the
    cores). ``seconds`` adds up the threads' CPU time per step (``exact``: wall time).
    """

    def __init__(self, torch, precision: str, n_threads: int, pool, block_cols: int = 2048):
        self.prod = Products(torch, precision)
        self.torch, self.nt, self.pool, self.block_cols = torch, n_threads, pool, block_cols
        self._local = threading.local()
        self.seconds = {"products": 0.0, "filter": 0.0, "exact": 0.0}
        self.tie_rows = self.inserted = 0

    def _products(self) -> Products:
        prod = getattr(self._local, "prod", None)
        if prod is None:
            prod = self._local.prod = Products(self.torch, self.prod.precision)
        return prod

    def candidates(self, Q, C, col_ids: np.ndarray, kc: int) -> np.ndarray:
        """(m, kc) int64: for each row of ``Q`` (tensor), the ids (``col_ids``) of its kc best rows of ``C``."""
        blocks = ((C[c0:c0 + self.block_cols], col_ids[c0:c0 + self.block_cols])
                  for c0 in range(0, C.shape[0], self.block_cols))
        return self.candidates_from(Q, blocks, min(kc, C.shape[0]))

    def candidates_from(self, Q, blocks, kc: int) -> np.ndarray:
        """:meth:`candidates` over ``(C block tensor, its ids)`` pairs (e.g. encoded as they are read)."""
        from ._blocked_kernels import empty_heaps  # noqa: PLC0415

        hk, hi = empty_heaps(Q.shape[0], kc)
        rows = np.arange(Q.shape[0], dtype=np.int64)
        for C, cols in blocks:
            self.merge(Q, C, cols, hk, hi, rows)
        return hi.astype(np.int64)

    def merge(self, Q, C, col_ids: np.ndarray, hk: np.ndarray, hi: np.ndarray, heap_rows: np.ndarray,
              q_rows: np.ndarray | None = None) -> None:
        """Merge the products of ``Q`` and ``C`` (columns ``col_ids``) into the heap rows ``heap_rows``.

        The query rows are ``Q``, or ``Q[q_rows]`` (gathered by each thread for its own rows).
        """
        from ._blocked_kernels import merge_bits  # noqa: PLC0415

        m = len(heap_rows)

        def work(span):
            r0, r1 = span
            prod = self._products()
            t1 = time.thread_time()
            q = Q[r0:r1] if q_rows is None else Q[self.torch.from_numpy(q_rows[r0:r1])]
            bits, cm = prod.scores(q, C)
            t2 = time.thread_time()
            merge_bits(bits, cm, CHUNK, prod.mask, col_ids, hk, hi, heap_rows[r0:r1], 0, r1 - r0)
            return t2 - t1, time.thread_time() - t2

        spans = _spans(m, self.nt) if m >= 64 * self.nt else [(0, m)]
        for tp, tf in (self.pool.map(work, spans) if len(spans) > 1 else map(work, spans)):
            self.seconds["products"] += tp
            self.seconds["filter"] += tf

    def finish(self, X, xq: np.ndarray, I: np.ndarray, rows, k: int, tie_scan: bool = True):
        """Exact similarities of the candidates ``I`` of rows ``rows`` (int start, or ids), best ``k`` kept.

        ``tie_scan``: rows whose candidates end in a tie with their k-th are resolved by an
        exact scan of all of ``X`` (``knn._exact_rows``; needs ``rows`` = an int start).
        """
        from .knn import _exact_rows, _fix_rows, _self_sims  # noqa: PLC0415

        t1 = time.perf_counter()
        D = exact_sims(X, xq, I, self.pool, self.nt)
        if tie_scan:
            I2, D = _exact_rows(X, xq, I, D, rows, k)
            self.tie_rows += int((I2 != I).any(axis=1).sum()) if I2 is not I else 0
            I = I2
        I, D, ins = _fix_rows(I, D, rows, _self_sims(xq))
        self.inserted += ins
        self.seconds["exact"] += time.perf_counter() - t1
        return I[:, :k], D[:, :k]

    def topk(self, X, L, rows: np.ndarray, k: int, kc: int, col_ids: np.ndarray | None = None):
        """Top-``k`` (ids, sims) of the rows ``rows`` of ``X`` against all rows, from their encoding ``L``.

        ``L`` holds every row of ``X``, row ``i`` of ``L`` being row ``col_ids[i]`` of ``X``
        (default: the same order); the queries are read from ``X`` and encoded.
        """
        n = L.shape[0]
        xq = take_f32(X, rows)
        cols = np.arange(n, dtype=np.int32) if col_ids is None else col_ids.astype(np.int32, copy=False)
        I = self.candidates(self.prod.encode(xq), L, cols, kc)
        return self.finish(X, xq, I, rows, k, tie_scan=False)


def check_recall(X, neighbors: np.ndarray, n_queries: int, seed: int, pool, n_threads: int,
                 block: int = 65536) -> tuple[float, int]:
    """Recall@k of ``neighbors`` on a seeded sample of rows against float32 search (torch, blocks of ``X``).

    The float32 products give k + 16 candidates per sampled row, re-scored exactly, the best
    k kept: exact search as ``kind="flat"`` does it. Returns ``(recall, rows sampled)``.
    """
    import torch  # noqa: PLC0415 - only called where torch is already imported

    from ._arrays import sample_rows  # noqa: PLC0415

    n, k = neighbors.shape
    rows = sample_rows(n, n_queries, seed)
    bl = Blocks(torch, "fp32", n_threads, pool)
    xq = take_f32(X, rows)
    blocks = ((bl.prod.encode(as_f32_block(X, c0, min(n, c0 + block))), np.arange(c0, min(n, c0 + block),
                                                                                dtype=np.int32))
              for c0 in range(0, n, block))
    I = bl.candidates_from(bl.prod.encode(xq), blocks, min(n, k + MARGIN))
    truth, _ = bl.finish(X, xq, I, rows, k, tie_scan=False)
    got = np.asarray(neighbors[rows])
    hits = sum(len(np.intersect1d(g[g >= 0], t)) for g, t in zip(got, truth))
    return float(hits / (len(rows) * k)), int(len(rows))


def exact_sims(X, xq: np.ndarray, I: np.ndarray, pool=None, parts: int = 1) -> np.ndarray:
    """:func:`subsetlm.index.knn._exact_sims` (the same bits), its rows split over ``pool``."""
    from .knn import _exact_sims  # noqa: PLC0415

    if pool is None or parts <= 1 or len(I) < 2 * parts:
        return _exact_sims(X, xq, I)
    spans = _spans(len(I), parts)
    return np.concatenate(list(pool.map(lambda s: _exact_sims(X, xq[s[0]:s[1]], I[s[0]:s[1]]), spans)))


def blocked_knn(X, k: int, precision: str = "auto", margin: int = MARGIN, block_rows: int = 2048,
                block_cols: int = 2048, n_threads: int | None = None, recall_queries: int = 1000,
                seed: int = 0, progress: bool = False):
    """Top-``k`` neighbours of every row of ``X`` (self included) from blocked low-precision products.

    Parameters
    ----------
    X : ndarray or memmap (n, d), float16 or float32
        L2-normalised rows (validated by the caller, ``knn_graph``); converted block by block.
    k : int
        Neighbours per row, ``1 <= k <= n``.
    precision : {"auto", "bf16", "fp32"}
        Product dtype; ``auto`` = bf16 where the CPU has it (:func:`cpu_bf16`).
    margin : int
        Extra candidates per row, re-scored exactly with the k best.
    block_rows, block_cols : int
        Rows x columns per product block (the block is ``block_rows * block_cols`` scores).
    n_threads : int, optional
        Threads (each runs its rows' products, single-threaded torch, and their filter);
        default all cores this process may use.
    recall_queries, seed : int
        Rows (seeded sample) on which the recall is measured against exact search
        (:func:`check_recall`); 0 to skip.

    Returns
    -------
    (neighbors (n, k) int32, similarities (n, k) float32, info dict)
        Rows sorted as every graph builder sorts them; similarities exact (float64 sums,
        rounded); ``info``: ``precision``, ``margin`` (the ones used), ``self_inserted`` (rows
        whose own index was not among the candidates, e.g. more than k' duplicates: put in last)
        and ``recall`` / ``recall_queries`` (the measured recall@k, when sampled).
    """
    n, d = X.shape
    prec = resolve_precision(precision)
    kc = min(n, k + max(0, int(margin)))
    nt = n_threads or n_cores()
    neighbors = np.empty((n, k), dtype=np.int32)
    sims = np.empty((n, k), dtype=np.float32)
    t0 = time.perf_counter()
    with torch_threads(1) as torch, ThreadPoolExecutor(nt) as pool:
        t_import = time.perf_counter() - t0
        bl = Blocks(torch, prec, nt, pool, block_cols)
        L = bl.prod.encode_all(X)
        cols = np.arange(n, dtype=np.int32)
        starts = range(0, n, block_rows)
        if progress:
            from tqdm.auto import tqdm  # noqa: PLC0415

            starts = tqdm(starts, desc=f"kNN ({prec} blocks)", unit="block")
        for a in starts:
            b = min(n, a + block_rows)
            I = bl.candidates(L[a:b], L, cols, kc)
            neighbors[a:b], sims[a:b] = bl.finish(X, as_f32_block(X, a, b), I, a, k)
        t1 = time.perf_counter()
        recall, nq = check_recall(X, neighbors, recall_queries, seed, pool, nt) if recall_queries else (None, 0)
        t_check = time.perf_counter() - t1
    info = {"precision": prec, "margin": int(kc - k), "self_inserted": bl.inserted}
    if recall is not None:
        info.update(recall=round(recall, 4), recall_queries=nq)
    logger.info("blocked kNN n=%d k=%d (%s, k'=%d): %.1fs (torch import %.2fs, seconds %s, recall check %.2fs: "
                "%s; %d rows changed by the tie scan)", n, k, prec, kc, time.perf_counter() - t0, t_import,
                {a: round(b, 2) for a, b in bl.seconds.items()}, t_check, recall, bl.tie_rows)
    return neighbors, sims, info
