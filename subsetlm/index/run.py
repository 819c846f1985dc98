"""``subsetlm index``: a store's kNN graph and/or k-means partitions, cached inside the store.

Both outputs are caches keyed by their settings (``STORE/graphs/knn-k{K}/``,
``STORE/partitions/kmeans-{P}-seed{S}/``, see :mod:`~subsetlm.index.store_graph`): a re-run
with the same settings skips them, other settings or a re-embedded store rebuild them, and
``force`` rebuilds both.

Example
-------
>>> res = run_index(IndexRunConfig(store="runs/store", k=32, partitions=8))   # doctest: +SKIP
>>> print(summary(res))                                                     # doctest: +SKIP
kNN graph (k=32) of 20480 samples: runs/store/graphs/knn-k32; 8 k-means partitions, sizes 1911..3020
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from subsetlm._stage import Stage

logger = logging.getLogger(__name__)

GPU_CHOICES = ("auto", "yes", "no")


@dataclass
class IndexRunConfig:
    """Configuration of ``subsetlm index`` (one field per CLI flag).

    store : the embedding store directory.
    k : neighbours per sample, itself included.
    kind : ``auto`` (exact up to 50,000 samples, IVF beyond, IVF-PQ when memory is short),
        ``flat``, ``ivf``, ``ivfpq``, ``hnsw``.
    graph_method : ``search`` (FAISS search), ``blocked`` (all pairs in bfloat16 blocks, re-scored
        exactly; CPU, torch), ``join`` (IVF self-join, CPU) or ``auto`` (blocked where estimated
        faster, else search).
    nprobe, nlist, ef_search : approximate-index settings (None: chosen from n).
    partitions : also fit P k-means partitions (P > 1); ``partitions_only``: only those.
    use_gpu : ``auto`` | ``yes`` | ``no``.
    backend, ray_address : ``ray`` runs the kNN search blocks and the k-means assignment as Ray
        tasks (the store on a path every node reads).
    force : rebuild even when a matching graph / partitions exist.
    verify : check the store's files (and a cached graph's) against their checksums first; a
        cache that fails is rebuilt (``--no-verify``: trust them).
    """

    store: str = ""
    k: int = 32
    kind: str = "auto"
    graph_method: str = "auto"
    nprobe: int | None = None
    nlist: int | None = None
    ef_search: int | None = None
    partitions: int = 0
    partitions_only: bool = False
    seed: int = 0
    use_gpu: str = "auto"
    backend: str = "local"
    ray_address: str | None = None
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    def index_config(self):
        """The :class:`~subsetlm.index.IndexConfig` of the graph (validated)."""
        from subsetlm.index import IndexConfig

        if self.use_gpu not in GPU_CHOICES:
            raise ValueError(f"use_gpu={self.use_gpu!r}; choose one of {', '.join(GPU_CHOICES)}")
        gpu = {"auto": "auto", "yes": True, "no": False}[self.use_gpu]
        return IndexConfig(k=self.k, kind=self.kind, graph_method=self.graph_method, nprobe=self.nprobe,
                           nlist=self.nlist, ef_search=self.ef_search, seed=self.seed, use_gpu=gpu).validate()

    def validate(self) -> None:
        if not self.store:
            raise ValueError("no store given: pass STORE (a directory written by `subsetlm embed`)")
        if self.partitions < 0 or self.partitions == 1:
            raise ValueError(f"partitions={self.partitions}; use 0 for none or P > 1")
        if self.partitions_only and self.partitions <= 1:
            raise ValueError("--partitions-only needs --partitions P (P > 1)")
        if self.k < 1:
            raise ValueError(f"k={self.k}; the kNN graph needs k >= 1 (32 is a good default)")
        from subsetlm.distributed import BACKENDS

        if self.backend not in BACKENDS:
            raise ValueError(f"backend={self.backend!r}; choose one of {', '.join(BACKENDS)}")
        self.index_config()


@dataclass
class IndexResult:
    """What ``subsetlm index`` built (or found up to date)."""

    store: Path
    n: int
    k: int
    graph: Path | None
    partition_sizes: np.ndarray | None


def run_index(cfg: IndexRunConfig, progress: bool = False) -> IndexResult:
    """Build (or reuse) the store's kNN graph and, with ``partitions``, its k-means partitions."""
    from subsetlm.distributed import executor_for
    from subsetlm.embed import EmbeddingStore
    from subsetlm.index.store_graph import build_store_graph, build_store_partitions

    cfg.validate()
    store = EmbeddingStore.open(cfg.store, verify=cfg.verify)
    executor = executor_for(cfg.backend, cfg.ray_address)
    graph = None
    if not cfg.partitions_only:
        graph = build_store_graph(store, cfg.index_config(), progress=progress, force=cfg.force, executor=executor)
    sizes = None
    if cfg.partitions > 1:
        labels = build_store_partitions(store, cfg.partitions, seed=cfg.seed, progress=progress, force=cfg.force,
                                        executor=executor)
        sizes = np.bincount(labels)
    return IndexResult(Path(store.path), int(store.n), int(cfg.k), graph, sizes)


def summary(res: IndexResult) -> str:
    """The line ``subsetlm index`` prints."""
    from subsetlm._mirror import display  # a store at a URL: the graph shown at the URL, not in the mirror

    parts = []
    if res.graph is not None:
        parts.append(f"kNN graph (k={res.k}) of {res.n} samples: {display(res.graph)}")
    if res.partition_sizes is not None:
        s = res.partition_sizes
        parts.append(f"{len(s)} k-means partitions, sizes {s.min()}..{s.max()}")
    return "; ".join(parts)


STAGE = Stage("index", IndexRunConfig, run_index, summary)
