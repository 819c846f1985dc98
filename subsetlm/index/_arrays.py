"""Private helpers: validate (n, d) embedding arrays and read them in float32 blocks.

Inputs may be float16/float32 ndarrays or read-only memmaps (``np.load(mmap_mode="r")``);
they are never copied whole, only converted block by block.
"""

from __future__ import annotations

import logging
from typing import Iterator

import numpy as np

logger = logging.getLogger(__name__)

_FLOAT_KINDS = (np.float16, np.float32, np.float64)


def check_matrix(X, name: str = "X") -> np.ndarray:
    """Check that ``X`` is a 2-D float16/32/64 array with at least one row; return it as is.

    Raises
    ------
    TypeError
        Not an array, or a non-float dtype.
    ValueError
        Wrong number of dimensions or an empty matrix.
    """
    if not hasattr(X, "dtype") or not hasattr(X, "shape"):
        raise TypeError(
            f"{name} must be a numpy array or memmap of shape (n, d); got {type(X).__name__}. "
            f"Fix: pass np.asarray(...) or EmbeddingStore.embeddings."
        )
    if X.dtype.type not in _FLOAT_KINDS:
        raise TypeError(
            f"{name} has dtype {X.dtype}; expected float16 or float32 (L2-normalised embeddings). "
            f"Fix: convert with {name}.astype(np.float32)."
        )
    if X.ndim != 2:
        raise ValueError(
            f"{name} has shape {tuple(X.shape)} (ndim={X.ndim}); expected a 2-D (n, d) matrix. "
            f"Fix: reshape to (n_samples, dim), e.g. {name}.reshape(len({name}), -1)."
        )
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{name} has shape {tuple(X.shape)}; expected n >= 1 rows and d >= 1 columns.")
    return X


def check_k(k, n: int, name: str = "k") -> int:
    """Validate a neighbour count against the number of rows ``n``."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)):
        raise TypeError(f"{name} must be an int; got {k!r} ({type(k).__name__}).")
    k = int(k)
    if k <= 0:
        raise ValueError(f"{name}={k}; expected a positive number of neighbours (e.g. {name}=32).")
    if k > n:
        raise ValueError(
            f"{name}={k} > n={n} rows; a row cannot have more neighbours than there are points. "
            f"Fix: lower {name} to at most {n} (--k {n})."
        )
    return k


def as_f32_block(X: np.ndarray, start: int, stop: int, name: str = "X") -> np.ndarray:
    """Rows ``[start, stop)`` of ``X`` as a C-contiguous float32 array, checked for NaN/inf."""
    block = np.ascontiguousarray(X[start:stop], dtype=np.float32)
    _check_finite(block, start, name)
    return block


def take_f32(X: np.ndarray, rows: np.ndarray, name: str = "X") -> np.ndarray:
    """Rows ``rows`` (sorted int array) of ``X`` as float32, checked for NaN/inf."""
    block = np.ascontiguousarray(X[np.asarray(rows)], dtype=np.float32)
    if not np.isfinite(block).all():
        bad = np.asarray(rows)[int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])]
        _raise_nonfinite(int(bad), name)
    return block


def iter_f32_blocks(X: np.ndarray, block_size: int, name: str = "X") -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(start, float32 block)`` over the rows of ``X``."""
    if block_size <= 0:
        raise ValueError(f"block_size={block_size}; expected a positive number of rows (e.g. 16384).")
    n = X.shape[0]
    for start in range(0, n, block_size):
        yield start, as_f32_block(X, start, min(n, start + block_size), name)


def _check_finite(block: np.ndarray, start: int, name: str) -> None:
    if not np.isfinite(block).all():
        row = start + int(np.flatnonzero(~np.isfinite(block).all(axis=1))[0])
        _raise_nonfinite(row, name)


def _raise_nonfinite(row: int, name: str) -> None:
    raise ValueError(
        f"{name} row {row} contains NaN or inf; expected finite L2-normalised embeddings. "
        f"Fix: drop or re-embed that sample (check the embedder output for empty texts)."
    )


def warn_if_not_normalised(block: np.ndarray, name: str = "X", tol: float = 1e-2) -> bool:
    """Log one warning if rows of ``block`` are far from unit norm (cosine needs normalised rows).

    Returns True when a warning was emitted.
    """
    norms = np.sqrt(np.einsum("ij,ij->i", block, block))
    nz = norms[norms > 0]
    if nz.size and float(np.abs(nz - 1.0).max()) > tol:
        logger.warning(
            "%s rows are not L2-normalised (norms in [%.3f, %.3f]); inner products are not cosines. "
            "Normalise with X / np.linalg.norm(X, axis=1, keepdims=True).",
            name, float(nz.min()), float(nz.max()),
        )
        return True
    return False


def sample_rows(n: int, size: int, seed: int) -> np.ndarray:
    """A seeded, sorted sample of ``min(size, n)`` distinct row indices (all rows if size >= n)."""
    if size >= n:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(n, size=size, replace=False)).astype(np.int64)


def task_spans(n: int, block_size: int, blocks_per_task: int = 16) -> list[tuple[int, int]]:
    """Row ranges ``(start, stop)`` of ``blocks_per_task`` blocks each: the unit of work of an executor task.

    A task walks its range in ``block_size`` blocks from ``start``, so it sees exactly the
    blocks the local loop sees and gives the same results.
    """
    span = blocks_per_task * block_size
    return [(s, min(n, s + span)) for s in range(0, n, span)]
