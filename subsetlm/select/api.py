"""The selection stage end to end: an embedding store in, a subset file out.

Two public entry points:

* :func:`select_array` — library call on an in-memory (or memmapped) ``(n, d)`` array;
  returns a :class:`Selection` (indices in selection order, gains, weights, certificate).
* :func:`select` — the CLI's stage function: opens an :class:`~subsetlm.embed.EmbeddingStore`,
  builds or reuses its kNN graph / partitions, selects, and writes a subset file.

Example
-------
>>> cfg = SelectConfig(store="runs/store", out="runs/subset", budget="0.25")     # doctest: +SKIP
>>> print(summary(select(cfg)))                                                 # doctest: +SKIP
wrote runs/subset: 1232 of 4928 samples; f(S)=3433, >= 0.8766 of optimal (certificate), ...
>>> SelectConfig(budget=0.25, kernel="sparce").validate()
Traceback (most recent call last):
...
ValueError: kernel='sparce'; choose one of auto, sparse, dense
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subsetlm._stage import Output, Stage, check_out, identity, portable
from subsetlm.select.objectives import KERNELS, OBJECTIVES
from subsetlm.subsets.assignment import ASSIGNMENT_FILE
from subsetlm.select.array_api import Selection, select_array  # noqa: F401 - the array entry point, re-exported
from subsetlm.select.selector import SAMPLINGS, Selector, certificate  # noqa: F401 - certificate re-exported

logger = logging.getLogger(__name__)

FUNCTIONS = tuple(OBJECTIVES)
BACKENDS = ("local", "ray")
WITHIN_WEIGHTS = ("none", "group-size")


@dataclass
class SelectConfig:
    """Configuration of ``subsetlm select`` (one field per CLI flag).

    budget : ``"0.25"`` (fraction), ``"5000"`` (count) or ``"tokens:2e6"`` (token budget,
        cost-aware greedy with each sample's token count as its cost).
    function : one of :data:`FUNCTIONS` (the selector's objective; see
        :mod:`subsetlm.select.objectives` for the kernels each takes).
    kernel : ``auto`` (the function's default: sparse for facility location and fl-mi,
        dense for the others), ``sparse`` (kNN graph, O(n·k) memory) or ``dense`` (exact
        similarities; facility location computes them on the fly, O(n·d) memory).
    optimizer : ``naive`` | ``lazy`` | ``stochastic`` | ``lazier-than-lazy`` (token budgets
        and source proportions take ``naive`` or ``lazy``).
    partitions : 0 or 1 = one global problem; P > 1 = FAISS k-means partitions, budget
        split by partition size (a token budget by partition tokens), solved in ``n_jobs`` processes.
    sampling : ``topk`` (greedy order) or ``taylor-softmax`` (INGENIOUS gain sampling).
    queries : for ``fl-mi``: a store directory or ``.npy`` file of query embeddings.
    source_proportions : optional ``{source: share}``: per-source quotas of the budget
        (largest-remainder counts), one global facility-location problem under them.
    merge : with partitions: 0 = none, F >= 1 = GreeDi merge (each partition picks F × its
        share, one round over the winners picks the final subset).
    within : a subset of the same store (e.g. ``subsetlm dedup``'s output): select only among
        its rows (a fraction budget is a fraction of them); recorded in the manifest's
        ``provenance``, and its rows' fingerprint is part of the output's identity.
    quality, quality_column, quality_weight : a per-sample score file (``.npy`` aligned with
        the store's rows, or ``.parquet`` / ``.jsonl`` with ``id`` and the column
        ``quality_column``, default ``score``; :mod:`subsetlm.select.scores`) and ``λ``
        (default 1.0, used only with a file): adds ``λ Σ_{j∈S} q_j`` to facility location.
    coverage_weights, coverage_column : a score file (same formats, column default
        ``weight``) of per-sample weights ``w_i >= 0`` of the coverage term
        ``Σ_i w_i max_{j∈S} s_ij``.
    within_weights : ``none`` (default) or ``group-size``: with ``within`` a dedup subset,
        weight each kept sample by its duplicate group's size (times the coverage weights,
        summed over the group), read from the subset's ``assignment.parquet`` (``group``).
        The files used (path, column, sha256 of the file and of the values) are recorded in
        the manifest's ``weighting``; the values' hashes are part of the output's identity.
    backend : ``local`` (worker processes) or ``ray`` (one Ray task per partition, on the
        cluster at ``ray_address``: ``auto``, ``HOST:PORT``, or None for ``RAY_ADDRESS`` / a
        local instance); needs ``partitions > 1``. Same subset file either way.
    verify : check the store / graph / subset files against their checksums when opened (``--no-verify``: trust them).
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("force", "out", "n_jobs", "backend", "ray_address", "verify")

    store: str = ""
    out: str = ""
    budget: str | float | int = "0.25"
    function: str = "facility-location"
    optimizer: str = "lazy"
    sampling: str = "topk"
    kernel: str = "auto"
    k: int = 32
    index_kind: str = "auto"
    partitions: int = 0
    n_jobs: int = 2
    epsilon: float = 0.01
    seed: int = 0
    queries: str | None = None
    source_proportions: dict[str, float] | None = None
    merge: float = 0.0
    within: str | None = None
    quality: str | None = None
    quality_column: str = "score"
    quality_weight: float = 1.0
    coverage_weights: str | None = None
    coverage_column: str = "weight"
    within_weights: str = "none"
    backend: str = "local"
    ray_address: str | None = None
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    def __post_init__(self) -> None:
        if isinstance(self.budget, (int, float)) and not isinstance(self.budget, bool):
            self.budget = str(self.budget)  # a YAML number (0.25, 5000) reads like the same flag

    def validate(self) -> None:
        """Check every field and their combination up front (ValueError naming the valid choices)."""
        from subsetlm.select.budget import parse_budget

        for name, choices in (("function", FUNCTIONS), ("sampling", SAMPLINGS), ("kernel", KERNELS),
                              ("backend", BACKENDS), ("within_weights", WITHIN_WEIGHTS)):
            if getattr(self, name) not in choices:
                raise ValueError(f"{name}={getattr(self, name)!r}; choose one of {', '.join(choices)}")
        if self.partitions < 0:
            raise ValueError(f"partitions={self.partitions}; use 0 for none or a positive count")
        if self.backend == "ray" and self.partitions <= 1:
            raise ValueError("the ray backend runs one task per partition: pass --partitions P (P > 1), or use "
                             "--backend local")
        if self.merge and self.partitions <= 1:
            raise ValueError(f"merge={self.merge}: the GreeDi merge combines partitions; pass --partitions P (P > 1) "
                             "or drop --merge")
        if self.within_weights != "none" and not self.within:
            raise ValueError(f"within_weights={self.within_weights!r} weights the rows of a --within dedup subset by "
                             "their duplicate groups: pass --within SUBSET, or drop --within-weights")
        lam = self.quality_weight
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not np.isfinite(lam) or lam < 0:
            raise ValueError(f"quality_weight={lam!r}; expected a finite number >= 0 (λ of the quality term)")
        if self.function == "fl-mi" and not self.queries:
            raise ValueError("function='fl-mi' selects samples that cover a query set: pass --queries STORE_OR_NPY")
        kind = {"tokens": "knapsack"}.get(parse_budget(self.budget).kind, "count")
        if self.source_proportions:
            kind = "quotas" if kind == "count" else "quotas+tokens"
            if kind == "quotas+tokens":
                raise ValueError("a token budget and source_proportions cannot be combined; give a count or "
                                 "fraction budget with source_proportions, or drop them")
        sel = self.selector()
        weighted = bool(self.quality or self.coverage_weights or self.within_weights != "none")
        if self.partitions > 1:
            self.partitioned(sel).check(kind, queries_given=bool(self.queries), weighting_given=weighted)
        else:
            sel.check(kind, queries_given=bool(self.queries), weighting_given=weighted)

    def selector(self, queries: np.ndarray | None = None, progress: bool = False) -> Selector:
        """The :class:`~subsetlm.select.selector.Selector` this config describes (score files not read:
        ``select`` reads them and passes the arrays to ``select_array``)."""
        return Selector(budget=self.budget, objective=self.function, kernel=self.kernel, optimizer=self.optimizer,
                        sampling=self.sampling, k=self.k, index_kind=self.index_kind, epsilon=self.epsilon,
                        seed=self.seed, source_proportions=self.source_proportions or None, queries=queries,
                        progress=progress, quality_weight=float(self.quality_weight) if self.quality else 0.0)

    def partitioned(self, selector: Selector, labels: Any = None, executor: Any = None) -> Any:
        from subsetlm.select.partitioned import Partitioned

        return Partitioned(selector, partitions=self.partitions if labels is None else labels, merge=self.merge,
                           n_jobs=self.n_jobs, executor=executor)


def _subset_identity(path: Path) -> dict[str, Any]:
    from subsetlm._io import read_json

    m = read_json(Path(path) / "manifest.json")
    ident = {"config": m.get("config"), "store": (m.get("store") or {}).get("fingerprint")}
    if "provenance" in m and "within" in m["provenance"]:
        ident["within"] = m["provenance"]["within"].get("rows_sha256")
    if m.get("weighting"):
        ident["weighting"] = {k: v.get("values_sha256") for k, v in m["weighting"].items()}
    return ident


def _within(spec: str | None, store: Any) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The ground rows a ``--within`` subset kept, and the provenance the manifest records."""
    if not spec:
        return None, {}
    import hashlib

    from subsetlm.subsets import read_subset

    sub = read_subset(spec, store=store)  # refuses a subset of another store, naming both
    rows = np.sort(np.asarray(sub.indices, dtype=np.int64))
    digest = hashlib.sha256(rows.tobytes()).hexdigest()
    return rows, {"provenance": {"within": {"path": str(spec), "size": int(rows.size), "rows_sha256": digest,
                                            "function": sub.manifest.get("function"),
                                            "config": sub.manifest.get("config")}}}


def _assignment(store: Any, sel: Any, within: str | None, ground: np.ndarray | None) -> Any:
    """``assignment.parquet``: the selection's representatives; rows outside a ``--within`` ground set keep
    their status there (e.g. ``duplicate``) and are represented through their representative there."""
    from subsetlm.subsets.assignment import assignment_table

    n = int(store.n)
    rep = np.asarray(sel.representative, dtype=np.int64).copy()
    sim = np.asarray(sel.similarity, dtype=np.float32).copy()
    status = group = None
    if within:
        from subsetlm.select._dedup_kernels import row_cosines
        from subsetlm.subsets.assignment import read_assignment

        try:
            prev = read_assignment(within)
        except FileNotFoundError:
            prev = None
        outside = np.setdiff1d(np.arange(n), ground)
        status = np.where(rep >= 0, "covered", "uncovered").astype(object)
        if prev is not None and outside.size:
            status[outside] = np.asarray(prev.column("status").to_pylist(), dtype=object)[outside]
            group = prev.column("group").to_numpy()
            via = prev.column("representative").to_numpy()[outside]  # their representative in the ground set ...
            hop = np.where(via >= 0, rep[np.maximum(via, 0)], -1)  # ... and its representative here
            rep[outside] = hop
            has = outside[hop >= 0]
            sim[has] = row_cosines(store.embeddings, has, rep[has])
            status[outside[(hop < 0) & (status[outside] == "covered")]] = "uncovered"
    return assignment_table(n, sel.indices, representative=rep, similarity=sim, status=status, group=group)


def select(cfg: SelectConfig, progress: bool = False) -> Path:
    """Run ``subsetlm select``: store -> (kNN graph, partitions) -> subset file. Returns its path."""
    from subsetlm.distributed import executor_for
    from subsetlm.embed import EmbeddingStore
    from subsetlm.subsets import write_subset

    cfg.validate()
    out_path = check_out(cfg.out, "--out")
    store = EmbeddingStore.open(cfg.store, verify=cfg.verify)  # its graphs and --within subset: checked alike
    config = _config_identity(cfg)
    rows, provenance = _within(cfg.within, store)
    coverage, quality, weighting = _weighting(cfg, store)
    ident = {"config": config, "store": store.fingerprint}
    if provenance:
        ident["within"] = provenance["provenance"]["within"]["rows_sha256"]
    if weighting:
        ident["weighting"] = {k: v["values_sha256"] for k, v in weighting.items()}
    out = Output(out_path, ident, what="subset", read_identity=_subset_identity)
    if out.up_to_date(cfg.force):
        return out_path

    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    kernel = config["kernel"]
    queries = _load_queries(cfg.queries) if cfg.queries else None
    executor = executor_for(cfg.backend, cfg.ray_address)
    graph, labels = None, 0
    if kernel == "sparse" and cfg.partitions <= 1 and rows is None:
        # one global problem: the store's cached graph (partitions build their own, smaller ones)
        from subsetlm.index import IndexConfig, build_store_graph, load_store_graph

        t = time.perf_counter()
        build_store_graph(store, IndexConfig(k=cfg.k, kind=cfg.index_kind, seed=cfg.seed), progress=progress)
        graph = load_store_graph(store, cfg.k)
        timings["knn_graph_s"] = time.perf_counter() - t
    elif cfg.partitions > 1:
        from subsetlm.index import build_store_partitions

        t = time.perf_counter()
        labels = build_store_partitions(store, cfg.partitions, seed=cfg.seed, executor=executor)
        timings["partitions_s"] = time.perf_counter() - t
    t = time.perf_counter()
    sel = select_array(store.embeddings, cfg.budget, k=cfg.k, optimizer=cfg.optimizer, kernel=cfg.kernel,
                       sampling=cfg.sampling, partitions=labels, n_tokens=store.n_tokens, n_jobs=cfg.n_jobs,
                       epsilon=cfg.epsilon, seed=cfg.seed, index_kind=cfg.index_kind, graph=graph,
                       progress=progress, executor=executor, merge=cfg.merge, function=cfg.function,
                       queries=queries, sources=store.sources if cfg.source_proportions else None,
                       source_proportions=cfg.source_proportions or None, rows=rows, coverage_weights=coverage,
                       quality=quality, quality_weight=float(cfg.quality_weight) if quality is not None else 0.0)
    timings["select_s"] = time.perf_counter() - t
    timings["total_s"] = time.perf_counter() - t0

    manifest = {
        "config": config,
        "seed": cfg.seed,
        "function": cfg.function,
        "certificate": sel.certificate,
        "selection": {k: v for k, v in sel.info.items() if not isinstance(v, float) or np.isfinite(v)},
        **provenance,
    }
    if weighting:
        manifest["weighting"] = weighting
        if quality is not None:  # what the quality term did: mean q of the subset vs its ground set
            ground = quality if rows is None else quality[rows]
            weighting["quality"].update(mean_selected=float(quality[sel.indices].mean()),
                                        mean_ground=float(ground.mean()))
    path = write_subset(out_path, store=store, indices=sel.indices, gains=sel.gains, weights=sel.weights,
                        partitions=sel.partitions, manifest=manifest, stats={"timings": timings},
                        overwrite=cfg.force,
                        extra_tables={ASSIGNMENT_FILE: _assignment(store, sel, cfg.within, rows)})
    c = sel.certificate
    lift = c.get("lift_over_random")
    logger.info("selected %d of %d samples: f(S)=%.4g, bound ratio %s, %s random, in %.1fs -> %s",
                len(sel.indices), store.n, c["objective"], "n/a" if c.get("ratio") is None else f"{c['ratio']:.4f}",
                "n/a x" if not lift else f"{lift:.2f}x", timings["total_s"], path)
    return path


def summary(path: Path) -> str:
    """The line ``subsetlm select`` prints: size, objective and certificate of the subset at ``path``."""
    from subsetlm._mirror import display  # a subset at a URL: shown as the URL, not its mirror
    from subsetlm.subsets import read_subset

    sub = read_subset(path)
    c = sub.manifest.get("certificate", {})
    ratio = c.get("ratio")
    q = (sub.manifest.get("weighting") or {}).get("quality") or {}
    return (f"wrote {display(path)}: {sub.size} of {sub.manifest.get('n_ground')} samples; "
            f"f(S)={c.get('objective', float('nan')):.4g}"
            + (f", >= {ratio:.4f} of optimal (certificate), random subset f={c.get('random_objective'):.4g}"
               if ratio is not None and c.get("random_objective") is not None else "")
            + (f"; quality (λ={q['quality_weight']:g}): mean q {q['mean_selected']:.4g} in the subset vs "
               f"{q['mean_ground']:.4g} in the ground set" if "mean_selected" in q else ""))


STAGE = Stage("select", SelectConfig, select, summary)


# ---------------------------------------------------------------------------- helpers

def _config_identity(cfg: SelectConfig) -> dict[str, Any]:
    """The config a subset manifest records: no paths or workers; the kernel resolved; no merge when off."""
    from subsetlm.select.objectives import resolve_kernel

    config = identity(cfg)
    config["kernel"] = resolve_kernel(cfg.function, cfg.kernel)
    if not cfg.merge:  # added after schema 1 subsets were written: keep their configs comparable
        config.pop("merge")
    unused = [] if cfg.quality else ["quality", "quality_column", "quality_weight"]  # likewise: weighting
    unused += [] if cfg.coverage_weights else ["coverage_weights", "coverage_column"]
    unused += ["within_weights"] if cfg.within_weights == "none" else []
    unused += [] if cfg.within else ["within"]
    for key in unused:
        config.pop(key)
    return portable(config)


def _weighting(cfg: SelectConfig, store: Any) -> tuple[np.ndarray | None, np.ndarray | None, dict[str, Any]]:
    """``(coverage weights (n,), quality (n,), manifest record)`` from the config's score files (None when unused)."""
    from subsetlm._io import sha256_file
    from subsetlm.select.scores import group_size_weights, read_scores, values_sha256

    record: dict[str, Any] = {}
    coverage = quality = None
    if cfg.quality:
        quality, rec = read_scores(cfg.quality, store.ids, column=cfg.quality_column, doc_ids=store.doc_ids,
                                   what="--quality")
        record["quality"] = dict(rec, quality_weight=float(cfg.quality_weight))
    if cfg.coverage_weights:
        coverage, rec = read_scores(cfg.coverage_weights, store.ids, column=cfg.coverage_column,
                                    doc_ids=store.doc_ids, what="--coverage-weights")
        record["coverage_weights"] = rec
    if cfg.within_weights == "group-size":
        from subsetlm.subsets.assignment import ASSIGNMENT_FILE, read_assignment

        table = read_assignment(cfg.within)
        if table.num_rows != store.n:
            raise ValueError(f"--within {cfg.within}: its {ASSIGNMENT_FILE} has {table.num_rows} rows, the store "
                             f"{store.n}; re-run the dedup on this store")
        coverage = group_size_weights(table, coverage, where=f"--within {cfg.within}")
        path = Path(cfg.within) / ASSIGNMENT_FILE
        rec = dict(record.get("coverage_weights", {"path": None, "column": None, "sha256": None}))
        rec.update(values_sha256=values_sha256(coverage),
                   within_group_sizes={"path": str(path), "sha256": sha256_file(path)})
        record["coverage_weights"] = rec
    return coverage, quality, record


def _load_queries(spec: str) -> np.ndarray:
    p = Path(spec)
    if p.suffix == ".npy":
        if not p.is_file():
            raise FileNotFoundError(f"--queries {p}: no such file")
        return np.load(p).astype(np.float32)
    from subsetlm.embed import EmbeddingStore

    qs = EmbeddingStore.open(p)
    return qs.block(0, qs.n)
