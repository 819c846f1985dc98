"""FAISS inner-product indexes over L2-normalised embeddings (CPU, or GPU when available).

``build_index`` picks an index from :class:`IndexConfig`, trains it on a seeded sample,
adds the rows block by block (float16 memmaps are converted one block at a time) and
sets the search parameters. ``kind="auto"`` chooses

- ``flat`` (exact ``IndexFlatIP``) when ``n <= IndexConfig.flat_max`` (50,000),
- ``ivfpq`` when the float32 vectors (``n * d * 4`` bytes) exceed the memory budget,
- ``ivf`` otherwise (IVF with float16 storage, ``IndexIVFScalarQuantizer`` QT_fp16, or
  ``IndexIVFFlat`` with ``ivf_storage="float32"``).

``hnsw`` (``IndexHNSWFlat``) is used only on request. ``knn_graph`` (every row's
neighbours) can instead use the blocked bfloat16 method (``graph_method="blocked"``, also
what ``auto`` picks on CPU where it is estimated faster; see ``blocked``) or the IVF
self-join (``graph_method="join"``, see :func:`resolve_graph_params` and ``ivf_join``).

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).standard_normal((500, 16)).astype(np.float32)
>>> X /= np.linalg.norm(X, axis=1, keepdims=True)
>>> index = build_index(X, IndexConfig(kind="flat"))
>>> index.ntotal
500
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import time
from dataclasses import dataclass
from typing import Any, Iterator

import numpy as np

from ._arrays import as_f32_block, check_matrix, sample_rows, take_f32, warn_if_not_normalised

logger = logging.getLogger(__name__)

KINDS = ("auto", "flat", "ivf", "ivfpq", "hnsw")
GRAPH_METHODS = ("auto", "blocked", "join", "search")


@dataclass
class IndexConfig:
    """How to build the FAISS index behind the kNN graph.

    Parameters
    ----------
    kind : {"auto", "flat", "ivf", "ivfpq", "hnsw"}
        Index type; ``auto`` = flat up to ``flat_max`` rows, IVF beyond, IVF-PQ when
        the float32 vectors do not fit in ``memory_gb``.
    k : int
        Neighbours per row of the kNN graph (itself included). Default 32.
    nlist : int or None
        IVF lists; None = ``round(4 * sqrt(n))`` capped at 65,536 and at n / 39.
    nprobe : int or None
        IVF lists visited per query; None = ``max(12, nlist // 512)``, at most ``nlist``.
        Recall@k per nprobe is measured by ``benchmarks/index_knn.py --nprobes``
        (docs/benchmarks.md, section index-knn).
    hnsw_m : int
        HNSW graph degree. Default 32.
    ef_search : int or None
        HNSW search breadth; None = ``max(128, 4 * k)``.
    train_size : int or None
        Rows sampled (seeded) to train IVF centroids / PQ codebooks; None =
        ``min(n, max(16 * nlist, 65,536))``.
    block_size : int
        Rows per add/query block (bounds memory at ``block_size * (d + 2k)`` floats).
    use_gpu : {"auto", True, False}
        ``auto`` uses all GPUs when faiss reports ``get_num_gpus() > 0``; True requires one.
    seed : int
        Seed for the training sample and FAISS k-means.
    memory_gb : float or None
        Budget for the index vectors used by ``auto``; None = half the available RAM.
    n_threads : int or None
        ``faiss.omp_set_num_threads`` during the build/search; None leaves FAISS's default.
    flat_max : int
        Largest n for which ``auto`` uses exact search. Default 50,000.
    ivf_storage : {"fp16", "float32"}
        How ``ivf`` stores vectors: ``fp16`` (``IndexIVFScalarQuantizer`` QT_fp16: half the
        memory, lossless for float16 stores; other inputs are rounded to float16) or
        ``float32`` (``IndexIVFFlat``).
    graph_method : {"auto", "blocked", "join", "search"}
        How ``knn_graph`` finds the neighbours. ``blocked`` (CPU): every row against every
        row in blocked bfloat16 products, k + 16 candidates per row re-scored exactly (see
        ``blocked``; exact quality, recall measured). ``search``: FAISS search of every row
        in the index ``kind`` gives. ``join`` (``kind="ivf"``): IVF self-join, one BLAS
        product per pair of neighbouring lists (see ``ivf_join``; exact similarities, CPU
        only). ``auto``: with ``kind="auto"`` on CPU, ``blocked`` where its estimated time
        (torch's import included) beats FAISS's exact or IVF search
        (``blocked.estimate_seconds``), else ``search``; with another kind, ``search``.
        ``join`` with ``kind="auto"`` joins at any n (unset nlist / nprobe / train_size:
        round(sqrt n) / 4 / 32 rows per list). It is faster than exact search, but its recall
        depends on how clustered the data is: far lower on MiniLM embeddings of PubMed than
        on clustered synthetic data, with a lower facility-location objective of the
        selected subset (``benchmarks/selection.py``, the subsetlm-join rows of
        docs/benchmarks.md, section selection); so it is opt-in.
    precision : {"auto", "bf16", "fp32"}
        Product dtype of ``graph_method="blocked"``: ``auto`` = bf16 where the CPU has
        ``avx512_bf16`` / ``amx_bf16``, else fp32.
    """

    kind: str = "auto"
    k: int = 32
    nlist: int | None = None
    nprobe: int | None = None
    hnsw_m: int = 32
    ef_search: int | None = None
    train_size: int | None = None
    block_size: int = 16384
    use_gpu: Any = "auto"
    seed: int = 0
    memory_gb: float | None = None
    n_threads: int | None = None
    flat_max: int = 50_000
    ivf_storage: str = "fp16"
    graph_method: str = "auto"
    precision: str = "auto"

    def validate(self) -> "IndexConfig":
        """Raise ValueError naming the offending field; return self."""
        if self.kind not in KINDS:
            raise ValueError(f"IndexConfig.kind={self.kind!r}; expected one of {', '.join(KINDS)}.")
        if self.graph_method not in GRAPH_METHODS:
            raise ValueError(f"IndexConfig.graph_method={self.graph_method!r}; expected one of "
                             f"{', '.join(GRAPH_METHODS)}.")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"IndexConfig.precision={self.precision!r}; expected 'auto', 'bf16' or 'fp32'.")
        if self.ivf_storage not in ("fp16", "float32"):
            raise ValueError(f"IndexConfig.ivf_storage={self.ivf_storage!r}; expected 'fp16' or 'float32'.")
        if self.use_gpu not in ("auto", True, False):
            raise ValueError(f"IndexConfig.use_gpu={self.use_gpu!r}; expected 'auto', True or False.")
        for name in ("nlist", "nprobe", "ef_search", "train_size", "n_threads"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0):
                raise ValueError(f"IndexConfig.{name}={v!r}; expected a positive int or None (auto).")
        for name in ("hnsw_m", "block_size", "flat_max"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
                raise ValueError(f"IndexConfig.{name}={v!r}; expected a positive int.")
        if self.memory_gb is not None and not self.memory_gb > 0:
            raise ValueError(f"IndexConfig.memory_gb={self.memory_gb!r}; expected a positive number or None.")
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _faiss():
    try:
        import faiss  # noqa: PLC0415
    except ImportError as e:  # pragma: no cover - faiss is a core dependency
        raise ImportError("subsetlm.index needs FAISS: pip install faiss-cpu (or faiss-gpu)") from e
    return faiss


def num_gpus() -> int:
    """GPUs visible to FAISS (0 for faiss-cpu or when the query fails)."""
    faiss = _faiss()
    try:
        return int(faiss.get_num_gpus()) if hasattr(faiss, "get_num_gpus") else 0
    except Exception:  # noqa: BLE001 - a broken CUDA install must not break CPU use
        return 0


def resolve_graph_params(n: int, d: int, cfg: IndexConfig) -> dict:
    """The parameters ``knn_graph`` will use: :func:`resolve_params` plus the graph method.

    IVF params get ``graph_method`` (``join`` or ``search``). ``graph_method="join"`` with
    ``kind="auto"`` or ``"ivf"`` joins (CPU only, any n); unset ``nlist`` / ``nprobe`` /
    ``train_size`` then default to round(sqrt n) / 4 / 32 rows per list.
    ``graph_method="blocked"`` (``kind`` auto or flat; CPU) gives ``kind="blocked"`` with the
    resolved ``precision`` and ``margin``; ``auto`` picks it by estimated time (:func:`_auto_blocked`).
    """
    cfg.validate()
    method = cfg.graph_method
    if method == "blocked" and cfg.kind in ("auto", "flat"):
        if cfg.use_gpu is True:
            raise ValueError("IndexConfig.graph_method='blocked' runs on CPU only, but use_gpu=True. "
                             "Fix: use_gpu='auto'/False, or graph_method='auto' for a FAISS GPU search.")
        return _blocked_params(n, d, cfg)
    if method == "blocked":
        raise ValueError(f"IndexConfig.graph_method='blocked' compares every pair of rows; kind={cfg.kind!r} "
                         f"is an approximate index. Fix: kind='auto' (or 'flat') with graph_method='blocked'.")
    if method == "auto" and cfg.kind == "auto" and _auto_blocked(n, d, cfg):
        return _blocked_params(n, d, cfg)
    if method == "join" and cfg.kind in ("auto", "ivf"):
        if cfg.use_gpu is True:
            raise ValueError("IndexConfig.graph_method='join' runs on CPU only, but use_gpu=True. "
                             "Fix: use_gpu='auto'/False, or graph_method='auto' for a FAISS GPU search.")
        cfg = dataclasses.replace(cfg, kind="ivf")
        nlist = cfg.nlist or max(1, int(round(math.sqrt(n))))
        cfg = dataclasses.replace(cfg, nlist=nlist, nprobe=cfg.nprobe or 4,
                                  train_size=cfg.train_size or 32 * nlist)
    p = resolve_params(n, d, cfg)
    if p["kind"] == "ivf" and method == "join":
        p.pop("storage", None)  # the join keeps its own sorted copy of the rows
        p["graph_method"] = "join"
    elif p["kind"] == "ivf":
        p["graph_method"] = "search"
    return p


def _blocked_params(n: int, d: int, cfg: IndexConfig) -> dict:
    """``partition``: ``none`` (all pairs) up to ``blocked.IVF_MIN_ROWS``, ``ivf`` beyond (probes chosen
    for recall 0.99 on a sample, ``ivf_blocked``; it compares all pairs when they would cover most)."""
    from .blocked import IVF_MIN_ROWS, MARGIN, resolve_precision  # noqa: PLC0415 - no torch import

    p = {"kind": "blocked", "n": int(n), "d": int(d), "graph_method": "blocked",
         "precision": resolve_precision(cfg.precision), "margin": MARGIN,
         "partition": "ivf" if n > IVF_MIN_ROWS else "none"}
    if p["partition"] == "ivf":
        p.update(target_recall=0.99, seed=int(cfg.seed))
    return p


def _auto_blocked(n: int, d: int, cfg: IndexConfig) -> bool:
    """``auto`` on CPU: True when the blocked method is estimated faster than the FAISS choice.

    Never on a GPU, without torch, or when IVF-PQ is chosen for memory (the blocked method
    keeps a bfloat16 copy of every row). Counts torch's import when it is not yet imported,
    so small graphs stay on FAISS (no torch in the process).
    """
    from . import blocked  # noqa: PLC0415 - no torch import

    if cfg.use_gpu is True or not blocked.torch_available():
        return False
    p = resolve_params(n, d, cfg)  # called for kind="auto" only
    if p["kind"] == "ivfpq":
        return False
    prec = blocked.resolve_precision(cfg.precision)
    t_blocked = blocked.estimate_seconds("blocked", n, d, cfg.k, cfg.n_threads, precision=prec)
    extra = {f: p[f] for f in ("nlist", "nprobe", "train_size") if f in p}
    t_faiss = blocked.estimate_seconds("flat" if p["kind"] == "flat" else "ivf", n, d, cfg.k, cfg.n_threads, **extra)
    return t_blocked < t_faiss and not (cfg.use_gpu == "auto" and num_gpus() > 0)  # (faiss imported last)


def _memory_budget_bytes(cfg: IndexConfig) -> float:
    if cfg.memory_gb is not None:
        return cfg.memory_gb * 2**30
    try:
        import psutil  # noqa: PLC0415

        return psutil.virtual_memory().available / 2
    except Exception:  # noqa: BLE001
        return 4 * 2**30


def _pq_m(d: int) -> int:
    """PQ sub-quantizers: about 4 dims each (d/4 bytes per vector), a divisor of d."""
    for m in range(max(1, d // 4), 0, -1):
        if d % m == 0:
            return m
    return 1


def default_nlist(n: int) -> int:
    """The auto IVF list count: round(4 sqrt n), at most n / 39 (FAISS's training minimum) and 65,536."""
    return int(min(65536, max(1, n // 39), max(1, round(4 * math.sqrt(n)))))


def resolve_params(n: int, d: int, cfg: IndexConfig) -> dict:
    """The concrete index parameters ``build_index`` will use for ``n`` rows of dim ``d``.

    Returns a JSON-able dict with ``kind`` resolved (never ``auto``) and the auto
    values filled in; it goes into the graph manifest.
    """
    cfg.validate()
    kind = cfg.kind
    budget = _memory_budget_bytes(cfg)
    if kind == "auto":
        if n <= cfg.flat_max:
            kind = "flat"
        elif n * d * 4 > budget:
            kind = "ivfpq"
        else:
            kind = "ivf"
    p: dict[str, Any] = {"kind": kind, "n": int(n), "d": int(d)}
    if kind in ("ivf", "ivfpq"):
        nlist = cfg.nlist or default_nlist(n)
        if nlist > n:
            raise ValueError(
                f"IndexConfig.nlist={nlist} > n={n}; IVF needs at least one training point per list. "
                f"Fix: lower --nlist or use kind='flat'."
            )
        nprobe = min(nlist, cfg.nprobe or max(12, nlist // 512))
        train = min(n, cfg.train_size or max(16 * nlist, 65536))
        if train < nlist:
            raise ValueError(f"IndexConfig.train_size={train} < nlist={nlist}; raise train_size.")
        p.update(nlist=nlist, nprobe=nprobe, train_size=int(train))
        if kind == "ivf":
            p.update(storage=cfg.ivf_storage)
        if kind == "ivfpq":
            p.update(pq_m=_pq_m(d), pq_nbits=8)
    elif kind == "hnsw":
        p.update(hnsw_m=cfg.hnsw_m, ef_construction=max(40, 2 * cfg.hnsw_m),
                 ef_search=cfg.ef_search or max(128, 4 * cfg.k))
    return p


@contextlib.contextmanager
def faiss_threads(n_threads: int | None) -> Iterator[None]:
    """Temporarily set FAISS's OpenMP threads (no-op when ``n_threads`` is None)."""
    faiss = _faiss()
    if n_threads is None:
        yield
        return
    old = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(int(n_threads))
    try:
        yield
    finally:
        faiss.omp_set_num_threads(old)


def _new_cpu_index(p: dict, seed: int):
    faiss = _faiss()
    d, ip = p["d"], faiss.METRIC_INNER_PRODUCT
    kind = p["kind"]
    if kind == "flat":
        return faiss.IndexFlatIP(d)
    if kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, p["hnsw_m"], ip)
        index.hnsw.efConstruction = p["ef_construction"]
        return index
    quantizer = faiss.IndexFlatIP(d)
    if kind == "ivf" and p.get("storage") == "fp16":
        index = faiss.IndexIVFScalarQuantizer(quantizer, d, p["nlist"], faiss.ScalarQuantizer.QT_fp16, ip)
    elif kind == "ivf":
        index = faiss.IndexIVFFlat(quantizer, d, p["nlist"], ip)
    else:
        index = faiss.IndexIVFPQ(quantizer, d, p["nlist"], p["pq_m"], p["pq_nbits"], ip)
        index.pq.cp.min_points_per_centroid = 1  # no FAISS warning for small training samples
    index.cp.seed = int(seed)
    index.cp.spherical = True  # centroids on the sphere: cosine clusters
    index.cp.min_points_per_centroid = 1  # we choose train_size; no FAISS warning below 39/list
    return index


def _want_gpu(cfg: IndexConfig, kind: str) -> bool:
    ngpu = num_gpus()
    if cfg.use_gpu is True and ngpu == 0:
        raise ValueError(
            "IndexConfig.use_gpu=True but FAISS sees no GPU (faiss-cpu build or no CUDA device). "
            "Fix: install faiss-gpu on a CUDA machine, or use use_gpu='auto'/False."
        )
    if cfg.use_gpu is False or ngpu == 0:
        return False
    if kind == "hnsw":
        if cfg.use_gpu is True:
            raise ValueError("IndexConfig.use_gpu=True but kind='hnsw' has no FAISS GPU implementation. "
                             "Fix: kind='flat'/'ivf'/'ivfpq' on the GPU, or use_gpu='auto'/False for HNSW on CPU.")
        logger.info("HNSW has no FAISS GPU implementation; building it on CPU")
        return False
    return True


def _to_gpu(index, strict: bool = False):
    """The index on every GPU; ``use_gpu='auto'`` keeps a CPU index FAISS cannot move, ``True`` (strict) refuses."""
    faiss = _faiss()
    try:
        gpu = faiss.index_cpu_to_all_gpus(index)
        logger.info("FAISS index on %d GPU(s)", num_gpus())
        return gpu, True
    except Exception as e:  # noqa: BLE001 - e.g. an unsupported PQ layout on GPU
        if strict:
            raise ValueError(f"IndexConfig.use_gpu=True but FAISS could not move the index to the GPU ({e}). "
                             "Fix: another kind (flat, ivf), or use_gpu='auto' to fall back to the CPU.") from e
        logger.warning("could not move the FAISS index to GPU (%s); using CPU (use_gpu='auto')", e)
        return index, False


def set_search_params(index, p: dict, on_gpu: bool = False) -> None:
    """Apply ``nprobe`` / ``efSearch`` from resolved params ``p`` to a (CPU or GPU) index."""
    faiss = _faiss()
    if p["kind"] in ("ivf", "ivfpq"):
        if on_gpu and hasattr(faiss, "GpuParameterSpace"):
            faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", p["nprobe"])
        else:
            faiss.ParameterSpace().set_index_parameter(index, "nprobe", p["nprobe"])
    elif p["kind"] == "hnsw":
        index.hnsw.efSearch = p["ef_search"]


def _build(X, cfg: IndexConfig, progress: bool = False):
    """Build the index; return ``(index, params, on_gpu)``."""
    X = check_matrix(X)
    n, d = X.shape
    p = resolve_params(n, d, cfg)
    t0 = time.perf_counter()
    index = _new_cpu_index(p, cfg.seed)
    on_gpu = False
    if _want_gpu(cfg, p["kind"]):
        index, on_gpu = _to_gpu(index, strict=cfg.use_gpu is True)
    p["device"] = "gpu" if on_gpu else "cpu"
    if p["kind"] in ("ivf", "ivfpq"):
        rows = sample_rows(n, p["train_size"], cfg.seed)
        xt = take_f32(X, rows)
        warn_if_not_normalised(xt)
        index.train(xt)
        del xt
        logger.info("trained %s (nlist=%d) on %d rows in %.1fs", p["kind"], p["nlist"], len(rows),
                    time.perf_counter() - t0)
    blocks = range(0, n, cfg.block_size)
    if progress:
        from tqdm.auto import tqdm  # noqa: PLC0415

        blocks = tqdm(blocks, desc=f"add {p['kind']}", unit="block")
    for start in blocks:
        xb = as_f32_block(X, start, min(n, start + cfg.block_size))
        if start == 0 and p["kind"] not in ("ivf", "ivfpq"):
            warn_if_not_normalised(xb)
        index.add(xb)
    set_search_params(index, p, on_gpu)
    logger.info("built FAISS %s index on %s: n=%d d=%d in %.1fs (%s)", p["kind"], p["device"], n, d,
                time.perf_counter() - t0, {k: v for k, v in p.items() if k not in ("kind", "n", "d")})
    return index, p, on_gpu


def build_index(X, cfg: IndexConfig | None = None, progress: bool = False):
    """Build a FAISS inner-product index over the rows of ``X``.

    Parameters
    ----------
    X : ndarray or memmap, shape (n, d), float16 or float32
        L2-normalised embeddings (inner product = cosine). Read in ``cfg.block_size`` blocks.
    cfg : IndexConfig, optional
        Index choice and parameters; default ``IndexConfig()`` (kind="auto").
    progress : bool
        Show a tqdm bar over the add blocks.

    Returns
    -------
    faiss.Index
        Trained, filled, with ``nprobe``/``efSearch`` set; on GPU when ``cfg.use_gpu`` allows
        and FAISS sees a GPU. Row ids are the row numbers of ``X``.

    Raises
    ------
    TypeError, ValueError
        Wrong dtype/ndim, NaN rows (the row is named), invalid config fields.

    Example
    -------
    >>> import numpy as np
    >>> X = np.eye(4, dtype=np.float32)
    >>> build_index(X, IndexConfig(kind="flat")).search(X[:1], 1)[1].tolist()
    [[0]]
    """
    cfg = cfg or IndexConfig()
    with faiss_threads(cfg.n_threads):
        index, _, _ = _build(X, cfg, progress)
    return index
