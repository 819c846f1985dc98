"""Data and the shared evaluator for ``benchmarks/selection.py`` (private helper).

* :func:`synthetic_embeddings` writes a seeded, clustered, L2-normalised float32
  ``(n, d)`` array to a ``.npy`` file in blocks (memory stays O(block * d)).
* :func:`pubmed_embeddings` embeds PubMed abstracts with subsetlm's own pipeline
  (MiniLM) once and caches the ``(n, 384)`` float32 array as ``.npy``.
* :func:`facility_objective` is the ONE evaluator every method is scored with: the exact
  dense facility-location objective ``f(S) = sum_i max_{j in S} max(0, x_i . x_j)``,
  computed blockwise (never an n x n matrix), optionally on a seeded sample of ground
  points.

Example
-------
>>> import numpy as np, tempfile, pathlib
>>> p = pathlib.Path(tempfile.mkdtemp()) / "x.npy"
>>> _ = synthetic_embeddings(p, n=1000, d=16, seed=0)
>>> X = np.load(p)
>>> X.shape, X.dtype.name, bool(np.allclose(np.linalg.norm(X, axis=1), 1, atol=1e-5))
((1000, 16), 'float32', True)
>>> f = facility_objective(X, np.arange(1000))      # every point covers itself
>>> round(f["mean"], 4)
1.0
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

#: generator parameters, recorded in the docs
SYNTH = dict(points_per_topic=500, points_per_subtopic=20, shared_weight=0.35, sub_weight=1.0,
             spread_low=0.6, spread_high=1.0, dirichlet_alpha=1.0)


def bench_cache() -> Path:
    """``$SUBSETLM_CACHE/bench`` or ``~/.cache/subsetlm/bench`` (created on demand)."""
    root = os.environ.get("SUBSETLM_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "subsetlm")
    p = Path(root) / "bench"
    p.mkdir(parents=True, exist_ok=True)
    return p


def _atomic_save_npy(path: Path, writer) -> None:
    tmp = path.with_name(path.name + ".tmp.npy")
    writer(tmp)
    os.replace(tmp, path)


def synthetic_embeddings(path: Path, n: int, d: int = 384, seed: int = 0,
                         block: int = 65536) -> Path:
    """Write a clustered, L2-normalised float32 ``(n, d)`` mixture to ``path`` (.npy).

    Two-level Gaussian mixture (parameters in :data:`SYNTH`): ``n // 500`` topic centres
    ``t_k = normalize(0.35 * m + normalize(g_k))`` around a shared direction ``m`` (sentence
    embeddings are anisotropic: two random MiniLM vectors have a small positive cosine);
    ``n // 20`` sub-topic centres ``u = normalize(t_k + normalize(h))``, assigned to topics
    with Dirichlet(1) weights (uneven, like real topics); points are assigned to sub-topics
    with Dirichlet(1) weights and drawn as ``normalize(u + s * e)``, ``e ~ N(0, I/d)``, with a
    per-sub-topic spread ``s ~ U(0.6, 1.0)``. Points of one sub-topic are the most similar,
    then points of one topic, then the rest (tests/benchmarks checks tight neighbours over a
    loose background).

    Parameters
    ----------
    path : Path
        Destination ``.npy``; written through a temporary file and a rename. Reused when
        it exists.
    n, d : int
        Shape.
    seed : int
        Everything random comes from ``np.random.default_rng(seed)``: same seed, same bytes.
    block : int
        Rows generated at a time.
    """
    path = Path(path)
    if path.exists():
        return path
    rng = np.random.default_rng(seed)

    def unit(a):
        return a / np.linalg.norm(a, axis=-1, keepdims=True)

    n_t = max(1, n // SYNTH["points_per_topic"])
    n_s = max(1, n // SYNTH["points_per_subtopic"])
    shared = unit(rng.standard_normal(d).astype(np.float32))
    topics = unit(SYNTH["shared_weight"] * shared + unit(rng.standard_normal((n_t, d)).astype(np.float32)))
    sub_topic = rng.choice(n_t, size=n_s, p=rng.dirichlet(np.full(n_t, SYNTH["dirichlet_alpha"])))
    centres = unit(topics[sub_topic] + SYNTH["sub_weight"] * unit(
        rng.standard_normal((n_s, d)).astype(np.float32))).astype(np.float32)
    labels = rng.choice(n_s, size=n, p=rng.dirichlet(np.full(n_s, SYNTH["dirichlet_alpha"])))
    spread = rng.uniform(SYNTH["spread_low"], SYNTH["spread_high"], n_s).astype(np.float32)
    n_c = n_s

    def write(tmp: Path) -> None:
        out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n, d))
        for s in range(0, n, block):
            lab = labels[s:s + block]
            e = rng.standard_normal((len(lab), d), dtype=np.float32) / np.float32(np.sqrt(d))
            x = centres[lab] + spread[lab, None] * e
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:s + len(lab)] = x
        out.flush()
        del out

    t0 = time.perf_counter()
    _atomic_save_npy(path, write)
    logger.info("synthetic %d x %d (%d centres) -> %s in %.1fs", n, d, n_c, path, time.perf_counter() - t0)
    return path


def pubmed_embeddings(path: Path, n: int = 20000, partial: bool = False) -> tuple[Path, dict]:
    """MiniLM embeddings of the first ``n`` PubMed abstract chunks, cached as ``.npy``.

    Uses subsetlm's own pipeline (``subsetlm.embed.embed_corpus`` with
    ``inputs=["pubmed"]``, ``model="minilm"``) into a store next to ``path`` and keeps the
    first ``n`` rows (chunks of at most 256 tokens) as float32 (all rows when the corpus has
    fewer; the caller reports the real n). When an earlier run was stopped once its finished
    shards held ``n`` rows, those shards are used as they are (they are the same first ``n``
    rows). ``partial=True`` takes whatever finished shards exist (fewer than ``n`` rows) instead
    of embedding the rest. Returns the path and a small description for the docs.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        import json

        meta = json.loads(meta_path.read_text())
        if partial or not meta.get("from_shards") or meta["n"] >= n:
            return path, meta
        path.unlink()  # an earlier partial run: finish the embedding (it resumes) and rebuild
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from subsetlm._io import is_complete, write_json_atomic
    from subsetlm.embed import EmbedConfig, EmbeddingStore, embed_corpus

    store_dir = path.with_name(path.stem + "-store")
    t0 = time.perf_counter()
    shards = _finished_shards(store_dir)
    have = sum(len(np.load(a, mmap_mode="r")) for a, _ in shards)
    if not is_complete(store_dir) and have < n and not (partial and have):
        embed_corpus(EmbedConfig(inputs=["pubmed"], out=str(store_dir), model="minilm", limit=n,
                                 dtype="float32"))
    if is_complete(store_dir):
        store = EmbeddingStore.open(store_dir)
        m = min(n, store.n)
        X = np.array(store.embeddings[:m], dtype=np.float32)  # a copy: the store is read-only
        meta = {"store_rows": int(store.n), "model": str(store.manifest.get("model", "minilm"))}
    else:
        # an embed run stopped early: its finished shards (STORE.tmp/shards/NNNNN.npy +
        # .parquet, see docs/internals.md) already hold the first n rows in order
        import pyarrow.parquet as pq

        rows, used = 0, []
        for a, b in shards:  # only as many shards as needed (a later one may be half-written)
            used.append((a, b))
            rows += len(np.load(a, mmap_mode="r"))
            if rows >= n:
                break
        shards = used
        X = np.concatenate([np.load(a) for a, _ in shards]).astype(np.float32)[:n]
        ids = np.concatenate([pq.read_table(b, columns=["doc_id"]).column(0).to_numpy(zero_copy_only=False)
                              for _, b in shards])[:n]
        m = len(X)
        meta = {"store_rows": int(m), "model": "minilm", "documents": int(len(set(ids.tolist()))),
                "from_shards": len(shards)}
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    _atomic_save_npy(path, lambda tmp: np.save(tmp, X))
    meta.update(n=int(m), dim=int(X.shape[1]), seconds=round(time.perf_counter() - t0, 1))
    write_json_atomic(meta_path, meta)
    return path, meta


def _finished_shards(store_dir: Path) -> list[tuple[Path, Path]]:
    """(npy, parquet) pairs of the finished shards of an unfinished embed run, in order."""
    d = Path(str(store_dir) + ".tmp") / "shards"
    if not d.is_dir():
        return []
    return [(a, a.with_suffix(".parquet")) for a in sorted(d.glob("*.npy"))
            if a.with_suffix(".parquet").exists()]


def facility_objective(X: np.ndarray, S: np.ndarray, sample: int | None = None, seed: int = 0,
                       ground_block: int = 4096, cand_block: int = 16384) -> dict:
    """Exact dense facility location ``f(S) = sum_i max_{j in S} max(0, x_i . x_j)``.

    Parameters
    ----------
    X : (n, d) float array or memmap
        L2-normalised rows (cosine = dot product).
    S : (b,) int array
        Selected row indices.
    sample : int or None
        Evaluate on a seeded uniform sample of this many ground points (rows ``i``) and
        scale up; the candidates ``S`` are always all used. ``None`` = every point.
    ground_block, cand_block : int
        Block sizes; peak extra memory is ``ground_block * cand_block * 4`` bytes.

    Returns
    -------
    dict
        ``value`` (f(S), an estimate when sampled), ``mean`` (value / n, the average best
        similarity), ``n_ground`` (points summed), ``sampled`` (bool).
    """
    n = X.shape[0]
    S = np.unique(np.asarray(S, dtype=np.int64))
    if S.size == 0:
        return {"value": 0.0, "mean": 0.0, "n_ground": 0, "sampled": False}
    if S.min() < 0 or S.max() >= n:
        raise ValueError(f"subset indices must lie in [0, {n}); got min {S.min()}, max {S.max()}")
    XS = np.asarray(X[S], dtype=np.float32)
    # own stream (seed, 1): a random subset drawn with default_rng(seed) must not be the sample
    rows = np.arange(n) if not sample or sample >= n else np.sort(
        np.random.default_rng((seed, 1)).choice(n, size=sample, replace=False))
    total = 0.0
    for s in range(0, len(rows), ground_block):
        idx = rows[s:s + ground_block]
        G = np.asarray(X[idx] if sample else X[idx[0]:idx[-1] + 1], dtype=np.float32)
        best = np.zeros(len(idx), dtype=np.float32)
        for c in range(0, len(XS), cand_block):
            np.maximum(best, (G @ XS[c:c + cand_block].T).max(axis=1), out=best)
        total += float(best.astype(np.float64).sum())
    mean = total / len(rows)
    return {"value": mean * n, "mean": mean, "n_ground": int(len(rows)),
            "sampled": bool(len(rows) < n)}
