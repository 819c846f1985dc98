"""The ``subsetlm dedup`` stage: SemDeDup or D4 on an embedding store, written as a subset file.

An embedding store in; its k-means partitions (cached in the store,
:func:`subsetlm.index.build_store_partitions`) and, where one is cached and exact, its kNN
graph; :mod:`subsetlm.select.dedup` decides; the kept rows are written as a subset file plus
``assignment.parquet`` (every row's status ``kept`` / ``duplicate`` / ``pruned``, its
representative, the cosine to it, its duplicate group).

The subset file: ``indices`` are the kept rows, ascending for SemDeDup; for D4 the least
prototypical first (decreasing ``gain``), so a prefix is a stronger D4 pruning. ``gain`` is
the cosine distance to the partition centroid (D4: to the prototype centroid), ``weight``
the size of the row's duplicate group (itself included), ``partition`` its k-means partition
(D4: its prototype cluster). The manifest's ``selection`` records eps (or the eps found for
a target), the rule, the keep policy and the counts per status; ``config`` the stage config.

Example
-------
>>> DedupConfig(store="store", out="dedup", eps=0.05).validate()         # checked before any work
>>> DedupConfig(store="store", out="dedup", eps=2.5).validate()
Traceback (most recent call last):
...
ValueError: eps=2.5; expected 0 < eps < 2 (duplicates have cosine > 1 - eps; ...)
>>> print(summary(dedup(DedupConfig(store="store", out="dedup", eps=0.05))))   # doctest: +SKIP
wrote dedup: kept 7,132 of 7,134 samples (semdedup eps=0.05, rule semdedup, keep farthest, 1 partitions): ...
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from subsetlm._stage import Output, Stage, check_out, identity
from subsetlm.select.dedup import (KEEP_POLICIES, RULES, check_choice, check_eps, check_fraction, check_target, d4,
                                   default_partitions, semdedup)

logger = logging.getLogger(__name__)

METHODS = ("semdedup", "d4")


@dataclass
class DedupConfig:
    """Configuration of ``subsetlm dedup`` (one field per CLI flag).

    method : ``semdedup`` or ``d4`` (SemDeDup, then SSL-prototype pruning).
    eps : duplicates have cosine > 1 - eps, 0 < eps < 2 (semdedup: this or ``target``;
        d4: replaces ``dedup_ratio``).
    target : semdedup: keep exactly this many samples (eps found); d4: the final size
        (replaces ``ratio``).
    rule : ``semdedup`` (drop a sample a duplicate of any earlier one in keep order: the
        reference rule) or ``components`` (connected components); see :mod:`~.dedup`.
    keep : which sample of a group stays: farthest (from the centroid; SemDeDup's default),
        centroid, random, longest, score.
    partitions : k-means partitions (0 = ``ceil(n / 10,000)``).
    scores, score_column : ``keep="score"``: a ``.npy`` of n values aligned with the store
        rows, or a ``.parquet`` / ``.jsonl`` with ``id`` and the named column.
    dedup_ratio, ratio : D4's R_dedup (0.75) and final R (0.25), fractions of n.
    proto_partitions : D4's prototype clusters (0 = ``round(sqrt(kept))``).
    use_graph : use the store's cached exact (flat) kNN graph where it holds every
        duplicate; same result, fewer similarities computed.
    """

    VOLATILE: ClassVar[tuple[str, ...]] = ("out", "force", "use_graph", "verify")

    store: str = ""
    out: str = ""
    method: str = "semdedup"
    eps: float | None = None
    target: int | None = None
    rule: str = "semdedup"
    keep: str = "farthest"
    partitions: int = 0
    scores: str | None = None
    score_column: str | None = None
    dedup_ratio: float = 0.75
    ratio: float = 0.25
    proto_partitions: int = 0
    use_graph: bool = True
    seed: int = 0
    force: bool = False
    verify: bool = True  # check store / graph / subset checksums on open (--no-verify: trust them)

    def validate(self, n: int | None = None) -> None:
        """Check every field (and, given the store size ``n``, the target and partitions); ValueError otherwise."""
        for name, choices in (("method", METHODS), ("rule", RULES), ("keep", KEEP_POLICIES)):
            check_choice(name, getattr(self, name), choices)
        if not self.store:
            raise ValueError("no embedding store given: pass STORE (a directory written by `subsetlm embed`)")
        if self.eps is not None:
            check_eps(self.eps)
        if self.method == "semdedup" and (self.eps is None) == (self.target is None):
            raise ValueError(f"semdedup needs exactly one of --eps E (duplicates have cosine > 1 - E, e.g. 0.05) and "
                             f"--target N (keep N samples); got eps={self.eps}, target={self.target}")
        for name in ("dedup_ratio", "ratio"):
            check_fraction(name, getattr(self, name))
        if self.method == "d4" and self.eps is None and self.target is None and self.ratio > self.dedup_ratio:
            raise ValueError(f"ratio={self.ratio} > dedup_ratio={self.dedup_ratio}: D4 prunes after SemDeDup, so the "
                             f"final fraction cannot exceed what SemDeDup keeps")
        if (self.keep == "score") != bool(self.scores):
            raise ValueError("--keep score needs --scores FILE (and --score-column COL for a parquet/jsonl file)"
                             if self.keep == "score" else
                             f"--scores is only read with --keep score (got --keep {self.keep}); drop --scores")
        if self.scores and not str(self.scores).endswith(".npy") and not self.score_column:
            raise ValueError(f"--scores {self.scores} is a table: name its score column with --score-column COL")
        for name in ("partitions", "proto_partitions"):
            if int(getattr(self, name)) < 0 or (n is not None and int(getattr(self, name)) > n):
                raise ValueError(f"{name}={getattr(self, name)}; expected 0 (automatic) or 1..n={n}")
        if n is not None and self.target is not None:
            check_target(self.target, n)


def dedup(cfg: DedupConfig, progress: bool = False) -> Path:
    """Run ``subsetlm dedup``: store -> partitions -> SemDeDup (or D4) -> subset file. Returns its path.

    Skips the work when ``cfg.out`` holds a subset of this config and inputs; raises
    ``FileExistsError`` when it holds something else (unless ``cfg.force``). Bad input
    raises ``ValueError`` before anything is written.
    """
    from subsetlm.embed import EmbeddingStore

    cfg.validate()
    out_path = check_out(cfg.out, "--out")
    store = EmbeddingStore.open(cfg.store, verify=cfg.verify)
    n = int(store.n)
    cfg.validate(n)
    scores, scores_rec = _read_scores(cfg, store) if cfg.keep == "score" else (None, None)
    scores_fp = scores_rec["values_sha256"] if scores_rec else None
    config = _config_identity(cfg)
    out = Output(out_path, {"config": config, "store": store.fingerprint, "scores": scores_fp}, what="dedup subset",
                 read_identity=_identity_of)
    if out.up_to_date(cfg.force):
        return out_path

    t0 = time.perf_counter()
    P = int(cfg.partitions) or default_partitions(n)
    labels, centroids = _partitions(store, P, cfg.seed, progress)
    graph = _cached_graph(store) if cfg.use_graph and cfg.eps is not None else None
    timings = {"partitions_s": time.perf_counter() - t0}
    t = time.perf_counter()
    kw: dict[str, Any] = {"rule": cfg.rule, "keep": cfg.keep, "centroids": centroids, "scores": scores,
                          "graph": graph, "n_tokens": store.n_tokens if cfg.keep == "longest" else None,
                          "progress": progress}
    if cfg.method == "semdedup":
        res = semdedup(store.embeddings, labels, eps=cfg.eps, target=cfg.target, seed=cfg.seed, **kw)
        idx = res.indices
        gains = 1.0 - res.centroid_similarity[idx].astype(np.float64)
        parts = res.labels[idx]
    else:
        res = d4(store.embeddings, labels, dedup_ratio=cfg.dedup_ratio, ratio=cfg.ratio, eps=cfg.eps,
                 target=cfg.target, proto_partitions=cfg.proto_partitions or None, seed=cfg.seed, **kw)
        g = 1.0 - res.proto_similarity.astype(np.float64)
        idx = res.indices[np.lexsort((res.indices, -g[res.indices]))]  # least prototypical first
        gains, parts = g[idx], res.proto_labels[idx]
    timings["dedup_s"] = time.perf_counter() - t
    sizes = np.bincount(res.group[res.group >= 0], minlength=n)[idx].astype(np.float64)
    counts = {s: int((res.status == s).sum()) for s in ("kept", "duplicate", "pruned")}
    info = {"method": cfg.method, "eps": res.eps, "threshold": res.threshold, "rule": cfg.rule, "keep": cfg.keep,
            "n_partitions": P, "counts": counts, "groups_with_duplicates": int((sizes > 1).sum()),
            "graph_partitions": res.info["graph_partitions"], "block_partitions": res.info["block_partitions"],
            "gain": "cosine distance to the " + ("prototype" if cfg.method == "d4" else "partition") + " centroid",
            "weight": "rows in the duplicate group (itself included)"}
    if "target" in res.info:  # D4: the SemDeDup step's target (dedup_ratio · n)
        info["target" if cfg.method == "semdedup" else "dedup_target"] = res.info["target"]
    if "d4" in res.info:
        info["d4"] = res.info["d4"]
    if scores_rec:
        info["scores"] = scores_rec
    cert = {"objective": None, "upper_bound": None, "ratio": None, "random_objective": None,
            "note": "deduplication (no submodular objective): see selection.counts"}
    manifest = {"config": config, "seed": int(cfg.seed), "function": cfg.method, "certificate": cert,
                "selection": info}
    table = _assignment(n, res)
    timings["total_s"] = time.perf_counter() - t0
    from subsetlm.subsets import write_subset
    from subsetlm.subsets.assignment import ASSIGNMENT_FILE

    path = write_subset(out_path, store=store, indices=idx, gains=gains, weights=sizes, partitions=parts,
                        manifest=manifest, stats={"timings": timings}, overwrite=cfg.force,
                        extra_tables={ASSIGNMENT_FILE: table})
    logger.info("%s: kept %d of %d (eps=%.6g, %s rule, keep %s; %s) in %.1fs -> %s", cfg.method, len(idx), n,
                res.eps, cfg.rule, cfg.keep, counts, timings["total_s"], path)
    return path


def summary(path: Path) -> str:
    """The line ``subsetlm dedup`` prints: kept count, eps, rule and the counts per status."""
    from subsetlm._mirror import display  # a subset at a URL: shown as the URL, not its mirror
    from subsetlm._io import read_json

    m = read_json(Path(path) / "manifest.json")
    s = m["selection"]
    c = s["counts"]
    line = (f"wrote {display(path)}: kept {c['kept']:,} of {m['n_ground']:,} samples ({s['method']} "
            f"eps={s['eps']:.6g}, "
            f"rule {s['rule']}, keep {s['keep']}, {s['n_partitions']} partitions): {c['duplicate']:,} duplicates")
    if s["method"] == "d4":
        line += f", {c['pruned']:,} pruned as prototypical"
    if s.get("target") and not s["target"]["exact"]:
        line += f"; target {s['target']['requested']:,} not reachable exactly ({s['target']['note']})"
    return line


STAGE = Stage("dedup", DedupConfig, dedup, summary)


# ---------------------------------------------------------------------------- helpers

def _config_identity(cfg: DedupConfig) -> dict[str, Any]:
    """The config a dedup manifest records: the fields that change the result (no D4 ratios for SemDeDup, ...)."""
    drop = {"dedup_ratio", "ratio", "proto_partitions"} if cfg.method == "semdedup" else set()
    if cfg.method == "d4":
        drop |= ({"dedup_ratio"} if cfg.eps is not None else set()) | ({"ratio"} if cfg.target is not None else set())
    return identity(cfg, drop=drop)


def _identity_of(path: Path) -> Any:
    """The identity a finished dedup subset recorded: its config, its store's and score file's fingerprints."""
    from subsetlm._io import read_json

    m = read_json(Path(path) / "manifest.json")
    if "config" not in m:
        return None
    return {"config": m["config"], "store": (m.get("store") or {}).get("fingerprint"),
            "scores": ((m.get("selection") or {}).get("scores") or {}).get("values_sha256")}


def _partitions(store: Any, P: int, seed: int, progress: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """The store's cached k-means labels and centroids (P = 1: one partition, its mean as centroid)."""
    if P <= 1:
        return np.zeros(int(store.n), np.int32), None
    from subsetlm.index import build_store_partitions
    from subsetlm.index.store_graph import partitions_dir

    labels = build_store_partitions(store, P, seed=seed, progress=progress)
    cfile = partitions_dir(store, P, seed) / "centroids.npy"
    return labels, (np.load(cfile) if cfile.is_file() else None)


def _cached_graph(store: Any) -> Any:
    """The store's largest cached kNN graph if it is exact (flat), else None (blocks are exact anyway)."""
    from subsetlm._io import is_complete
    from subsetlm.index import load_store_graph

    ks = sorted((int(p.name[5:]) for p in (Path(store.path) / "graphs").glob("knn-k*")
                 if p.name[5:].isdigit() and is_complete(p)), reverse=True)
    for k in ks:
        try:
            g = load_store_graph(store, k)
        except (ValueError, FileNotFoundError) as exc:
            logger.info("not using the cached kNN graph k=%d: %s", k, exc)
            continue
        if g.params.get("kind") == "flat":
            logger.info("using the store's exact kNN graph (k=%d) where it holds every duplicate", k)
            return g
        logger.info("the cached kNN graph k=%d is approximate (%s); computing similarities in blocks", k,
                    g.params.get("kind"))
    return None


def _read_scores(cfg: DedupConfig, store: Any) -> tuple[np.ndarray, dict[str, Any]]:
    """(n,) float64 scores aligned with the store rows (any sign: only ranked), and the manifest's record."""
    from subsetlm.select.scores import read_scores

    return read_scores(cfg.scores, np.asarray(store.ids), column=cfg.score_column, doc_ids=np.asarray(store.doc_ids),
                       what="--scores", nonnegative=False, column_flag="--score-column")


def _assignment(n: int, res: Any) -> Any:
    from subsetlm.subsets.assignment import assignment_table

    return assignment_table(n, res.indices, representative=res.representative, similarity=res.similarity,
                            status=res.status, group=res.group, duplicate_of=res.duplicate_of)
