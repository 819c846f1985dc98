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

#: generator parameters, recorded in the docs table caption
SYNTH = dict(points_per_centre=500, shared_weight=0.35, spread_low=0.6, spread_high=1.0,
             dirichlet_alpha=1.0)


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

    Model (parameters in :data:`SYNTH`): ``c = max(1, n // 500)`` centres, each
    ``normalize(0.35 * m + normalize(g_k))`` with a shared direction ``m`` (real sentence
    embeddings are anisotropic: two random MiniLM vectors have a small positive cosine);
    cluster sizes are multinomial with Dirichlet(1) weights (uneven, like topics); a point
    of cluster k is ``normalize(c_k + s_k * e)`` with ``e ~ N(0, I/d)`` and a per-cluster
    spread ``s_k ~ U(0.6, 1.0)``, so two points of one cluster have cosine about
    ``1 / (1 + s_k^2)`` (0.5-0.74) and points of different clusters about 0.1.

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
    n_c = max(1, n // SYNTH["points_per_centre"])
    shared = rng.standard_normal(d).astype(np.float32)
    shared /= np.linalg.norm(shared)
    g = rng.standard_normal((n_c, d)).astype(np.float32)
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    centres = SYNTH["shared_weight"] * shared + g
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    weights = rng.dirichlet(np.full(n_c, SYNTH["dirichlet_alpha"]))
    labels = rng.choice(n_c, size=n, p=weights).astype(np.int64)
    spread = rng.uniform(SYNTH["spread_low"], SYNTH["spread_high"], n_c).astype(np.float32)

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


def pubmed_embeddings(path: Path, n: int = 20000) -> tuple[Path, dict]:
    """MiniLM embeddings of the first ``n`` PubMed abstract chunks, cached as ``.npy``.

    Uses subsetlm's own pipeline (``subsetlm.embed.embed_corpus`` with
    ``inputs=["pubmed"]``, ``model="minilm"``) into a store next to ``path`` and keeps the
    first ``n`` rows as float32 (all rows when the corpus has fewer; the caller reports the
    real n). Returns the path and a small description for the docs.
    """
    path = Path(path)
    meta_path = path.with_suffix(".json")
    if path.exists() and meta_path.exists():
        import json
        return path, json.loads(meta_path.read_text())
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from subsetlm._io import is_complete, write_json_atomic
    from subsetlm.embed import EmbedConfig, EmbeddingStore, embed_corpus

    store_dir = path.with_name(path.stem + "-store")
    t0 = time.perf_counter()
    if not is_complete(store_dir):
        embed_corpus(EmbedConfig(inputs=["pubmed"], out=str(store_dir), model="minilm", limit=n))
    store = EmbeddingStore.open(store_dir)
    m = min(n, store.n)
    X = np.asarray(store.embeddings[:m], dtype=np.float32)
    X /= np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)
    _atomic_save_npy(path, lambda tmp: np.save(tmp, X))
    meta = {"n": int(m), "dim": int(X.shape[1]), "store_rows": int(store.n),
            "model": str(store.manifest.get("model", "minilm")),
            "embed_seconds": round(time.perf_counter() - t0, 1)}
    write_json_atomic(meta_path, meta)
    return path, meta


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
    rows = np.arange(n) if not sample or sample >= n else np.sort(
        np.random.default_rng(seed).choice(n, size=sample, replace=False))
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
