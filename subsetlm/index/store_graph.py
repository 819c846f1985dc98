"""kNN graphs and k-means partitions cached inside an EmbeddingStore directory.

Layout::

    STORE/graphs/knn-k{K}/                  neighbors.npy similarities.npy manifest.json stats.json _SUCCESS
    STORE/partitions/kmeans-{P}-seed{S}/    labels.npy centroids.npy manifest.json _SUCCESS

Each manifest records the store's ``fingerprint`` (sha256 of its embeddings) and the
config that changes the result, so a rerun skips finished work and a stale cache
(store re-embedded, or other settings) is rebuilt rather than silently reused. An exact
(``flat``) graph is keyed on ``k`` alone: the seed and the approximate-index settings do not
change it, so ``select --seed 1`` reuses the graph ``index`` built. Each manifest also records
the ``checksums`` of its arrays; a cache whose files were altered is rebuilt (with a warning)
by ``build_*`` and refused by ``load_store_graph``.

Example
-------
>>> from subsetlm.embed import EmbeddingStore                     # doctest: +SKIP
>>> store = EmbeddingStore.open("runs/pubmed.store")              # doctest: +SKIP
>>> build_store_graph(store, IndexConfig(k=32))                   # doctest: +SKIP
>>> graph = load_store_graph(store, k=32)                         # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import logging
import time
from pathlib import Path

import numpy as np

from .._io import IntegrityError, checksums, dumps_json, is_complete, load_npy, read_json, verify_checksums
from .._stage import Output
from ._arrays import check_k
from .faiss_index import IndexConfig, resolve_graph_params
from .knn import KNNGraph, estimate_recall, knn_graph
from .partitions import kmeans_partitions

logger = logging.getLogger(__name__)

# IndexConfig fields that change the graph (block_size, use_gpu, n_threads do not).
_RESULT_FIELDS = ("kind", "k", "nlist", "nprobe", "hnsw_m", "ef_search", "train_size", "seed",
                  "memory_gb", "flat_max", "ivf_storage", "graph_method")


def _open(store):
    if isinstance(store, (str, Path)):
        from ..embed import EmbeddingStore  # noqa: PLC0415 - embed imports torch lazily

        return EmbeddingStore.open(store)
    return store


def graph_dir(store, k: int) -> Path:
    """``STORE/graphs/knn-k{k}``."""
    return Path(_open(store).path) / "graphs" / f"knn-k{int(k)}"


def partitions_dir(store, n_partitions: int, seed: int = 0) -> Path:
    """``STORE/partitions/kmeans-{P}-seed{S}`` (labels.npy, centroids.npy)."""
    return Path(_open(store).path) / "partitions" / f"kmeans-{int(n_partitions)}-seed{int(seed)}"


def _config_key(cfg: IndexConfig, n: int, d: int) -> dict:
    """The settings a graph of ``n`` rows of dim ``d`` depends on: ``{kind: flat, k}`` for exact search
    (no seed: it changes nothing), every result field for approximate indexes."""
    k = check_k(cfg.k, n)
    p = resolve_graph_params(n, d, dataclasses.replace(cfg, k=k))
    if p["kind"] == "flat":
        return {"kind": "flat", "k": int(cfg.k)}
    if p["kind"] == "blocked":  # all pairs: only the products' dtype and the margin; IVF lists: + seed, nlist
        key = {"kind": "blocked", "k": int(cfg.k), "precision": p["precision"], "margin": p["margin"]}
        if p["partition"] == "ivf":
            key.update(partition="ivf", seed=cfg.seed, nlist=cfg.nlist, target_recall=p["target_recall"])
        return key
    return {f: getattr(cfg, f) for f in _RESULT_FIELDS}


def _intact(dest: Path, names: tuple[str, ...], what: str, fix: str) -> bool:
    """False (with a warning) when a finished cache's files do not match their checksums: rebuild it."""
    try:
        man = read_json(dest / "manifest.json")
        verify_checksums(dest, man.get("checksums") if isinstance(man, dict) else None, what=what, fix=fix)
        for f in names:
            load_npy(dest / f, "r", fix=fix)
    except (IntegrityError, ValueError, OSError) as e:
        logger.warning("%s; rebuilding it", e)
        return False
    return True


def build_store_graph(store, cfg: IndexConfig | None = None, progress: bool = False,
                      force: bool = False, recall_queries: int = 1000, executor=None) -> Path:
    """Build (or reuse) the kNN graph of a store under ``STORE/graphs/knn-k{cfg.k}/``.

    Parameters
    ----------
    store : EmbeddingStore or path
        Needs ``.path``, ``.n``, ``.fingerprint`` and ``.embeddings`` ((n, d) memmap).
    cfg : IndexConfig, optional
        Index settings; ``cfg.k`` names the directory. Default ``IndexConfig()``.
    progress : bool
        tqdm bars.
    force : bool
        Rebuild even when a matching complete graph exists.
    recall_queries : int
        Rows used to estimate recall@k for approximate indexes (0 to skip).
    executor : optional ``run(func, tasks)`` (``--backend ray``): the search blocks run as
        its tasks (:func:`~subsetlm.index.knn.knn_graph`): the same neighbours, similarities to
        within float32 rounding.

    Returns
    -------
    Path
        The graph directory. Skipped (returned as is) when complete and its manifest
        matches the store fingerprint and the result-relevant config; rebuilt otherwise.
    """
    store = _open(store)
    cfg = (cfg or IndexConfig()).validate()
    dest = graph_dir(store, cfg.k)
    key = _config_key(cfg, store.n, store.dim)
    out = _cache(dest, {"store_fingerprint": store.fingerprint, "config": key}, "kNN graph")
    if out.up_to_date(force):
        if not getattr(store, "verify", True) or _intact(dest, ("neighbors.npy", "similarities.npy"), "kNN graph",
                                                          f"it is a cache of {store.path}"):
            return dest
    t0 = time.perf_counter()
    graph = knn_graph(store.embeddings, cfg.k, cfg, progress=progress, executor=executor)
    t_graph = time.perf_counter() - t0
    recall = graph.params.get("recall")  # the blocked method measures it while it builds
    if recall is None and graph.params.get("kind") != "flat" and recall_queries > 0:
        recall = estimate_recall(store.embeddings, graph, n_queries=min(recall_queries, graph.n), seed=cfg.seed)
        graph.params["recall"] = round(recall, 4)
        graph.params["recall_queries"] = int(min(recall_queries, graph.n))
        logger.info("estimated recall@%d = %.4f on %d rows", cfg.k, recall, min(recall_queries, graph.n))
        if recall < 0.9:
            logger.warning("kNN graph recall@%d is only %.3f; raise --nprobe (now %s) or --ef-search, "
                           "or use --kind flat", cfg.k, recall, graph.params.get("nprobe", graph.params.get("ef_search")))
    stats = {"seconds_graph": round(t_graph, 3), "seconds_total": round(time.perf_counter() - t0, 3)}
    with out.writing(force=True) as tmp:
        graph.write_into(tmp, stats=stats, extra=out.identity)
    logger.info("wrote %s (n=%d k=%d) in %.1fs", dest, graph.n, graph.k, time.perf_counter() - t0)
    return dest


def _cache_identity(path: Path) -> dict:
    man = read_json(Path(path) / "manifest.json")
    config = man.get("config")
    if man.get("kind") == "flat" and isinstance(config, dict) and "k" in config:
        config = {"kind": "flat", "k": config["k"]}  # an exact graph cached before its key dropped the seed
    return {"store_fingerprint": man.get("store_fingerprint"), "config": config}


def _cache(dest: Path, ident: dict, what: str) -> Output:
    """A cache kept inside a store: rebuilt (with a warning) when the store or the settings changed."""
    return Output(dest, ident, what=what, read_identity=_cache_identity, on_mismatch="rebuild")


def load_store_graph(store, k: int = 32, mmap: bool = True, verify: bool | None = None) -> KNNGraph:
    """Load the store's kNN graph with ``k`` neighbours per row.

    When only a graph with more neighbours exists (e.g. knn-k64 for k=32), its first ``k``
    columns are returned (rows are sorted, so that is the top-k graph). ``verify`` (default:
    as the store was opened) checks the arrays against their checksums.

    Raises
    ------
    IntegrityError
        A graph file was altered after it was written (rebuild with ``index --force``).
    FileNotFoundError
        No complete graph: build it with ``subsetlm index STORE --k K``.
    ValueError
        The graph was built for another version of the store (fingerprint mismatch).
    """
    store = _open(store)
    dest = graph_dir(store, k)
    if not is_complete(dest):
        larger = sorted(
            (int(p.name[5:]), p) for p in (Path(store.path) / "graphs").glob("knn-k*")
            if p.name[5:].isdigit() and int(p.name[5:]) > k and is_complete(p)
        )
        if not larger:
            raise FileNotFoundError(
                f"no kNN graph with k={k} for store {store.path} (expected {dest}/_SUCCESS). "
                f"Fix: run `subsetlm index {store.path} --k {k}` (or build_store_graph(store, IndexConfig(k={k})))."
            )
        dest = larger[0][1]
    man = read_json(dest / "manifest.json")
    if man.get("store_fingerprint") != store.fingerprint:
        raise ValueError(
            f"{dest} was built for store fingerprint {str(man.get('store_fingerprint'))[:12]}… but "
            f"{store.path} has {str(store.fingerprint)[:12]}… (the embeddings changed). "
            f"Fix: rebuild with `subsetlm index {store.path} --k {k} --force`."
        )
    graph = KNNGraph.load(dest, mmap=mmap, verify=getattr(store, "verify", True) if verify is None else verify)
    if graph.n != store.n:
        raise ValueError(f"{dest} has n={graph.n} rows but the store has n={store.n}; rebuild with --force.")
    if graph.k > k:
        graph = KNNGraph(graph.neighbors[:, :k], graph.similarities[:, :k], dict(graph.params, k=k))
    return graph


def build_store_partitions(store, n_partitions: int, seed: int = 0, force: bool = False,
                           progress: bool = False, **kmeans_kw) -> np.ndarray:
    """k-means labels of a store, cached under ``STORE/partitions/kmeans-{P}-seed{S}/``.

    Parameters
    ----------
    store : EmbeddingStore or path
    n_partitions, seed : int
        As in :func:`kmeans_partitions`.
    force : bool
        Recompute even when a matching cache exists.
    **kmeans_kw
        ``sample_size``, ``niter``, ``nredo``, ``use_gpu`` for :func:`kmeans_partitions`.

    Returns
    -------
    ndarray (n,) int32
        Labels (no empty partition); ``centroids.npy`` is saved beside ``labels.npy``.
    """
    store = _open(store)
    dest = partitions_dir(store, n_partitions, seed)
    key = {"n_partitions": int(n_partitions), "seed": int(seed),
           **{k: v for k, v in kmeans_kw.items() if k in ("sample_size", "niter", "nredo")}}
    out = _cache(dest, {"store_fingerprint": store.fingerprint, "config": key}, "k-means partitions")
    if out.up_to_date(force):
        if not getattr(store, "verify", True) or _intact(dest, ("labels.npy", "centroids.npy"), "k-means partitions",
                                                          f"it is a cache of {store.path}"):
            return np.asarray(load_npy(dest / "labels.npy", None, fix=f"rebuild it with `subsetlm index "
                                                                      f"{store.path} --partitions {n_partitions} "
                                                                      f"--force`"))
    res = kmeans_partitions(store.embeddings, n_partitions, seed=seed, progress=progress,
                            return_centroids=True, **kmeans_kw)
    man = {"format": "subsetlm.partitions", "version": 1, "method": "kmeans", "n": int(len(res.labels)),
           "n_partitions": int(len(res.sizes)), "n_dropped": res.n_dropped, "config": key,
           "store_fingerprint": store.fingerprint}
    with out.writing(force=True) as tmp:
        np.save(tmp / "labels.npy", res.labels)
        np.save(tmp / "centroids.npy", res.centroids)
        man["checksums"] = checksums(tmp, ("centroids.npy", "labels.npy"))
        (tmp / "manifest.json").write_text(dumps_json(man))
    return res.labels
