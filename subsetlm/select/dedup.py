"""SemDeDup and D4: semantic deduplication within k-means partitions (arrays in, arrays out; no I/O).

**SemDeDup** (Abbas et al. 2023, arXiv 2303.09540; reference code facebookresearch/SemDeDup
``semdedup.py``; NeMo Curator's ``SemanticDeduplicationWorkflow``). Within each k-means
partition the samples are ranked by a *keep policy*; two samples are duplicates when their
cosine is ``> 1 - eps``. Two rules turn duplicate pairs into drops (``rule=``):

``semdedup`` (default)
    The reference rule: sample j is dropped when *any* sample ranked before it in its
    partition is a duplicate of it, kept or not (``max_{i<j} cos(i, j) > 1 - eps``: the
    column max of the upper-triangular similarity matrix, as ``semdedup.py`` and NeMo's
    ``pairwise_cosine_similarity_batched`` compute it). It is the default because it is
    what users compare against (the same partitions and order give the same kept set), the
    kept count is monotone in eps (so ``target=N`` is exact from the sorted column maxima),
    and it streams in one pass with O(p) state. A dropped sample's group is the kept sample
    at the end of its chain of most-similar earlier samples.
``components``
    Connected components of the duplicate graph (single linkage); the first sample of each
    component in keep order is kept. Groups do not depend on the order, but they chain:
    at large eps a component can join samples far apart. Computed from the maximum
    spanning forest (Borůvka rounds over row blocks), so ``target=N`` is exact too:
    components at threshold t = p - #(forest edges with similarity > t).

Both rules leave no duplicate pair among the kept samples. Keep policies (which sample of a
group stays): ``farthest`` (lowest cosine to the partition centroid: SemDeDup's default,
``which_to_keep="hard"``, paper §6.3), ``centroid`` (highest: ``"easy"``), ``random``
(seeded), ``longest`` (most tokens), ``score`` (highest score); ties by store row.

**D4** (Tirumala et al. 2023, arXiv 2308.12284): SemDeDup down to ``dedup_ratio`` of the
samples (the paper's R_dedup = 0.75), then SSL-prototype pruning (Sorscher et al. 2022): the
kept samples are re-clustered with k-means and those most similar to their centroid (the
most prototypical) are dropped until ``ratio`` of the samples remain.

Memory: a partition of p rows is computed in blocks of ``BLOCK_ELEMS // p`` columns (at most
2**24 float32 similarities, 64 MiB, plus a boolean mask of at most 16 MiB) and its (p, d)
float32 rows; a partition of up to 4,096 rows (4096**2 == BLOCK_ELEMS) is one block, a
larger one never holds a (p, p) matrix. An exact kNN graph (``graph=``) replaces the blocks
for every partition whose rows all have their k-th neighbour at or below the threshold (the
lists then hold every duplicate); the others fall back to blocks.

Example
-------
>>> import numpy as np
>>> X = np.eye(4, dtype=np.float32)[[0, 0, 1, 2, 2, 3]]     # rows 0,1 and 3,4 are duplicates
>>> r = semdedup(X, eps=0.05)
>>> r.kept.tolist(), r.group.tolist()
([True, False, True, True, False, True], [0, 0, 2, 3, 3, 5])
>>> semdedup(X, target=5).info["target"]["exact"]        # two pairs tie at cosine 1: 5 is not reachable
False
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from subsetlm.select._dedup_kernels import (
    centroid_similarity,
    chains,
    components,
    forest,
    graph_partitions,
    max_earlier,
    pair_similarity,
    prototype_similarity,
)

logger = logging.getLogger(__name__)

RULES = ("semdedup", "components")
KEEP_POLICIES = ("farthest", "centroid", "random", "longest", "score")
BLOCK_ELEMS = 1 << 24  # similarities per block (64 MiB of float32)
PARTITION_SIZE = 10_000  # default partitions: ceil(n / PARTITION_SIZE)


def default_partitions(n: int) -> int:
    """Default number of k-means partitions for SemDeDup: ``ceil(n / 10,000)`` (at least 1).

    SemDeDup's recall of duplicates grows with the partition size (paper §6.1 and Table A1:
    ~9k rows per cluster on LAION, ~33k on C4) while the cost is O(n · n/P · d); 10,000 rows
    per partition keeps most duplicates together at O(10⁴ · n · d) work, and the memory
    stays bounded by the row blocks whatever P is.
    """
    return max(1, math.ceil(int(n) / PARTITION_SIZE))


@dataclass
class DedupResult:
    """What SemDeDup (or D4) decided, per ground-set sample (store row).

    Attributes
    ----------
    kept : (n,) bool
    status : (n,) object: ``kept``, ``duplicate`` (SemDeDup drop), ``pruned`` (D4 prototype drop)
    representative : (n,) int64: the kept row standing for the sample (itself when kept; -1
        when none: D4 pruned it, or the row that stood for it)
    similarity : (n,) float32: cosine to ``representative`` (1 when kept, NaN when none); a
        chained drop can be below ``1 - eps``
    group : (n,) int64: duplicate group = the row SemDeDup kept for it
    labels : (n,) int32: k-means partition of each row
    centroid_similarity : (n,) float32: cosine to its partition centroid
    eps, threshold : the eps used (or found for a target) and ``1 - eps``
    info : counts, rule, keep, target report, paths taken
    proto_similarity : (n,) float32, D4 only: cosine to the prototype centroid (NaN for
        SemDeDup drops); proto_labels : (n,) int32, D4 only: prototype cluster (-1 likewise)
    """

    kept: np.ndarray
    status: np.ndarray
    representative: np.ndarray
    similarity: np.ndarray
    group: np.ndarray
    labels: np.ndarray
    centroid_similarity: np.ndarray
    eps: float
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)
    proto_similarity: np.ndarray | None = None
    proto_labels: np.ndarray | None = None
    duplicate_of: np.ndarray | None = None

    @property
    def indices(self) -> np.ndarray:
        """(b,) int64: the kept rows, ascending."""
        return np.flatnonzero(self.kept).astype(np.int64)


def semdedup(X, labels=None, *, eps: float | None = None, target: int | None = None, rule: str = "semdedup",
             keep: str = "farthest", centroids=None, n_tokens=None, scores=None, seed: int = 0, graph=None,
             block_elems: int = BLOCK_ELEMS, progress: bool = False) -> DedupResult:
    """SemDeDup within the partitions ``labels`` of ``X``: drop the samples with cosine > 1 - eps.

    Parameters
    ----------
    X : (n, d) float16/float32 array or memmap, rows L2-normalised.
    labels : (n,) int partition of each row (0..P-1); None = one partition.
    eps : duplicates have cosine > 1 - eps; 0 < eps < 2. Exactly one of ``eps``, ``target``.
    target : keep exactly this many samples (1 <= target <= n): the eps is found from the
        sorted per-sample maxima (``semdedup``) or forest edges (``components``). When ties
        make N unreachable, the reachable count closest to N is kept (more on a tie) and
        ``info["target"]`` says so.
    rule : ``semdedup`` (default) or ``components``; see the module docstring.
    keep : keep policy, one of :data:`KEEP_POLICIES` (default ``farthest``, SemDeDup's).
    centroids : (P, d) partition centroids (default: the normalised mean of each partition).
    n_tokens : (n,) for ``keep="longest"``. scores : (n,) finite, for ``keep="score"``.
    seed : seeds ``keep="random"``.
    graph : an *exact* kNN graph of X (``.neighbors``, ``.similarities``, (n, k), itself
        included); used for the partitions it covers at the threshold (fixed eps only).
    block_elems : similarities per block (memory bound; see the module docstring).

    Returns
    -------
    DedupResult
    """
    t0 = time.perf_counter()
    X, lab, P = _check(X, labels)
    n = len(lab)
    check_choice("rule", rule, RULES)
    check_choice("keep", keep, KEEP_POLICIES)
    if (eps is None) == (target is None):
        raise ValueError(f"pass exactly one of eps and target (got eps={eps}, target={target}); e.g. eps=0.05")
    if eps is not None:
        check_eps(eps)
    else:
        check_target(target, n)
    csim = centroid_similarity(X, lab, P, centroids)
    key = _priority(keep, csim, n_tokens, scores, seed)
    perm = np.lexsort((np.arange(n), -key, lab))  # partition by partition, each in keep order
    bounds = np.searchsorted(lab[perm], np.arange(P + 1))
    t = None if eps is None else 1.0 - float(eps)
    use_graph = graph_partitions(graph, lab, P, t) if (graph is not None and t is not None) else np.zeros(P, bool)
    floor = t if t is not None else -1.0
    if rule == "semdedup":
        M, A = max_earlier(X, perm, bounds, use_graph, graph, lab, floor, block_elems, progress)
        values = M
    else:
        ei, ej, ew = forest(X, perm, bounds, use_graph, graph, lab, floor, block_elems, progress)
        values = ew
    report = None
    if t is None:
        t, report = pick_threshold(values, n, int(target))
    cause = np.full(n, -1, np.int64)
    if rule == "semdedup":
        rep_g = chains(M <= t, A)
        dropped = np.flatnonzero(M > t)  # positions in keep order
        cause[perm[dropped]] = perm[A[dropped]]
    else:
        rep_g = components(n, ei[ew > t], ej[ew > t])
    rep = np.empty(n, np.int64)
    rep[perm] = perm[rep_g]
    kept = rep == np.arange(n)
    sim = pair_similarity(X, rep)
    status = np.where(kept, "kept", "duplicate").astype(object)
    info = {"rule": rule, "keep": keep, "n": n, "n_partitions": P, "n_kept": int(kept.sum()),
            "n_duplicate": int(n - kept.sum()), "graph_partitions": int(use_graph.sum()),
            "block_partitions": int(P - use_graph.sum()), "seconds": round(time.perf_counter() - t0, 3)}
    if report is not None:
        info["target"] = report
    logger.info("semdedup (%s rule, keep %s): kept %d of %d in %d partitions at cosine > %.6g in %.1fs", rule,
                keep, info["n_kept"], n, P, t, info["seconds"])
    eps_used = float(eps) if eps is not None else float(1.0 - t)
    return DedupResult(kept, status, rep, sim, rep.copy(), lab, csim, eps_used, float(t), info, duplicate_of=cause)


def d4(X, labels=None, *, dedup_ratio: float = 0.75, ratio: float = 0.25, eps: float | None = None,
       target: int | None = None, proto_partitions: int | None = None, seed: int = 0, **semdedup_kw) -> DedupResult:
    """D4: SemDeDup to ``dedup_ratio`` of the samples, then SSL-prototype pruning to ``ratio``.

    Parameters
    ----------
    X, labels : as :func:`semdedup` (the partitions of the SemDeDup step).
    dedup_ratio : fraction of the n samples SemDeDup keeps (R_dedup; default 0.75, the value
        Tirumala et al. recommend); ignored when ``eps`` is given.
    ratio : final fraction of the n samples (R; default 0.25, ours — the fraction INGENIOUS and
        ``select`` default to; the paper sweeps R); ``ratio <= dedup_ratio``.
    eps : SemDeDup by threshold instead of by ``dedup_ratio``.
    target : final number of samples instead of ``ratio``.
    proto_partitions : k-means clusters of the SemDeDup-kept samples for the prototype step
        (default ``round(sqrt(m))`` for m kept samples: SSL prototypes used about √n clusters,
        1,000 for ImageNet).
    seed : seeds both k-means fits and ``keep="random"``.
    **semdedup_kw : ``rule``, ``keep``, ``centroids``, ``n_tokens``, ``scores``, ``graph``,
        ``block_elems``, ``progress`` for the SemDeDup step.

    Returns
    -------
    DedupResult with ``status`` ``pruned`` for the prototype drops, ``proto_similarity``
    and ``proto_labels`` set; ``info["d4"]`` holds the ratios, the counts after each step
    and the number of prototype clusters.
    """
    n = int(np.shape(X)[0])
    check_fraction("dedup_ratio", dedup_ratio)
    check_fraction("ratio", ratio)
    if target is not None:
        check_target(target, n)
    n_final = int(target) if target is not None else max(1, round(ratio * n))
    n_dedup = None
    if eps is None:
        n_dedup = max(1, round(dedup_ratio * n))
        if n_final > n_dedup:
            raise ValueError(f"the final size ({n_final} = {'target' if target is not None else 'ratio'}) exceeds "
                             f"what SemDeDup keeps (dedup_ratio={dedup_ratio} -> {n_dedup}); lower the ratio or raise "
                             f"dedup_ratio")
    res = semdedup(X, labels, eps=eps, target=n_dedup, seed=seed, **semdedup_kw)
    kept = res.indices
    m = len(kept)
    n_prune = max(0, m - n_final)
    if n_prune == 0:
        logger.warning("d4: SemDeDup kept %d <= the final size %d; nothing to prune", m, n_final)
    P2 = int(proto_partitions) if proto_partitions else max(1, round(math.sqrt(m)))
    P2 = max(1, min(P2, m))
    psim, plab = prototype_similarity(X, kept, P2, seed)
    order = np.lexsort((kept, -psim))  # most prototypical first, ties by row
    pruned = kept[order[:n_prune]]
    res.kept[pruned] = False
    res.status[pruned] = "pruned"
    orphan = np.isin(res.representative, pruned)
    res.representative[orphan] = -1
    res.similarity[orphan] = np.nan
    res.info.update(n_kept=int(res.kept.sum()), n_pruned=int(n_prune),
                    d4={"dedup_ratio": None if eps is not None else dedup_ratio,
                        "ratio": ratio if target is None else None, "target": n_final, "kept_after_dedup": m,
                        "proto_partitions": P2})
    res.proto_similarity = np.full(n, np.nan, np.float32)
    res.proto_similarity[kept] = psim
    res.proto_labels = np.full(n, -1, np.int32)
    res.proto_labels[kept] = plab
    logger.info("d4: SemDeDup kept %d of %d, prototype pruning (%d clusters) dropped %d -> %d", m, n, P2, n_prune,
                int(res.kept.sum()))
    return res


# ---------------------------------------------------------------------------- checks

def check_eps(eps: Any) -> float:
    """``eps`` as a float in (0, 2) (cosine threshold 1 - eps in (-1, 1)), else ValueError."""
    if isinstance(eps, bool) or not isinstance(eps, (int, float, np.floating)) or not 0 < float(eps) < 2:
        raise ValueError(f"eps={eps!r}; expected 0 < eps < 2 (duplicates have cosine > 1 - eps; SemDeDup uses "
                         f"0.001-0.3, e.g. --eps 0.05)")
    return float(eps)


def check_target(target: Any, n: int) -> int:
    """``target`` as an int in [1, n], else ValueError."""
    if isinstance(target, bool) or not isinstance(target, (int, np.integer)) or not 1 <= int(target) <= n:
        raise ValueError(f"target={target!r}; expected a whole number of samples in [1, n={n}]")
    return int(target)


def check_fraction(name: str, value: Any) -> float:
    """``value`` (a D4 ratio) as a float in (0, 1], else ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value <= 1:
        raise ValueError(f"{name}={value!r}; expected a fraction in (0, 1]")
    return float(value)


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``choices`` (the message names ``name`` and the choices)."""
    if value not in choices:
        raise ValueError(f"{name}={value!r}; choose one of {', '.join(choices)}")


def _check(X, labels) -> tuple[Any, np.ndarray, int]:
    if getattr(X, "ndim", 0) != 2 or X.shape[0] < 1:
        raise ValueError(f"X must be a non-empty (n, d) array; got shape {getattr(X, 'shape', None)}")
    n = int(X.shape[0])
    if labels is None:
        return X, np.zeros(n, np.int32), 1
    lab = np.asarray(labels)
    if lab.shape != (n,) or not np.issubdtype(lab.dtype, np.integer) or (n and lab.min() < 0):
        raise ValueError(f"labels must be (n,)={n} non-negative ints (partition of each row); got {lab.dtype} "
                         f"{lab.shape}")
    return X, lab.astype(np.int32), int(lab.max()) + 1


def _per_row(name: str, arr, n: int) -> np.ndarray:
    if arr is None:
        need = "n_tokens" if name == "longest" else "scores"
        raise ValueError(f"keep={name!r} needs a value per sample: pass {need}")
    a = np.asarray(arr, dtype=np.float64).reshape(-1)
    if a.shape != (n,) or not np.isfinite(a).all():
        raise ValueError(f"keep={name!r}: expected {n} finite values, one per sample; got shape {a.shape}"
                         + ("" if a.shape != (n,) else f" with {int((~np.isfinite(a)).sum())} non-finite"))
    return a


def _priority(keep: str, csim: np.ndarray, n_tokens, scores, seed: int) -> np.ndarray:
    """(n,) float64: a higher value is kept first within its partition."""
    n = len(csim)
    if keep == "farthest":
        return -csim.astype(np.float64)
    if keep == "centroid":
        return csim.astype(np.float64)
    if keep == "random":
        return np.random.default_rng([int(seed), 1]).random(n)
    return _per_row(keep, n_tokens if keep == "longest" else scores, n)


def pick_threshold(values: np.ndarray, n: int, target: int) -> tuple[float, dict[str, Any]]:
    """The cosine threshold t at which ``n - #(values > t)`` samples stay, closest to ``target``.

    ``values`` are the per-sample maxima (``semdedup`` rule) or the forest edge weights
    (``components``): each one above t removes one sample. Returns t (the midpoint between
    the neighbouring values, so the cut does not sit on a similarity) and a report
    ``{requested, kept, exact, note}``.
    """
    v = np.sort(np.asarray(values, np.float64)[np.isfinite(values)])[::-1]
    want = n - int(target)  # samples to drop

    def cut(d: int) -> float:  # a t with exactly d values above it (v[d-1] > v[d] assumed)
        hi = v[d - 1] if d > 0 else np.inf
        lo = v[d] if d < len(v) else -np.inf
        if np.isfinite(hi) and np.isfinite(lo):
            return float((hi + lo) / 2)
        return float(lo) if np.isfinite(lo) else float(hi - 1e-6) if np.isfinite(hi) else 1.0

    note = None
    if want > len(v):
        d = len(v)
        note = (f"at most {len(v)} samples can be dropped (the others have no duplicate candidate in their "
                f"partition); kept {n - d}")
    elif 0 < want < len(v) and v[want - 1] == v[want]:
        w = v[want]
        d_lo, d_hi = int((v > w).sum()), int((v >= w).sum())
        d = d_lo if want - d_lo <= d_hi - want else d_hi
        note = (f"{d_hi - d_lo} samples tie at cosine {w:.7g}: {n - d_hi} or {n - d_lo} samples can be kept, not "
                f"{target}; kept {n - d}")
    else:
        d = want
    if note:
        logger.warning("target %d is not reachable exactly: %s", target, note)
    return cut(d), {"requested": int(target), "kept": int(n - d), "exact": note is None, "note": note}
