"""A model-free embedder: hashed word n-grams -> sublinear TF-IDF -> random projection.

No weights, no GPU, thousands of texts per second on one core; the embedding DSIR-style
baselines and quick experiments use. Steps:

1. ``sklearn.feature_extraction.text.HashingVectorizer`` counts word 1-2-grams into
   ``n_features`` (2**20) buckets (lower-cased, no sign flipping).
2. Sublinear TF-IDF: ``(1 + log tf) * idf`` with the smoothed IDF
   ``log((1 + n) / (1 + df)) + 1`` fitted by :meth:`HashingEmbedder.fit` on a corpus
   sample (``embed_corpus`` uses the first ``fit_samples`` samples, a deterministic
   choice, and stores the fitted state in the store), then rows L2-normalised.
3. Projection to ``dim`` (256): ``"sparse"`` (default) a seeded sparse JL matrix with
   ``nnz_per_feature`` (4) entries ±1/sqrt(4) per hashed feature (so the projection of
   a unit vector keeps its norm in expectation, and cosines are preserved up to
   O(1/sqrt(dim)) distortion); ``"svd"`` TruncatedSVD fitted on the sample (LSA).
4. L2-normalise. A text without a single hashed word (punctuation only, one-letter words:
   ``"."``, ``"a"``, ``"—"``) embeds to one fixed unit vector, :meth:`HashingEmbedder.wordless`
   (a function of ``seed`` and ``dim``): such texts are duplicates of each other and
   near-orthogonal to texts with words, and every row has unit norm as the store's
   ``normalized: true`` says.

Example
-------
>>> emb = HashingEmbedder(dim=64).fit(["the cat sat", "the dog sat", "stocks fell"])
>>> X = emb.embed(["the cat sat", "the cat sat down", "stocks fell sharply"])
>>> bool(X[0] @ X[1] > X[0] @ X[2])
True
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from subsetlm._io import read_json, write_json_atomic
from subsetlm.embed.base import Embedder, embed_in_steps, package_version, seeded_unit
from subsetlm.registry import register

logger = logging.getLogger(__name__)

PROJECTIONS = ("sparse", "svd")


class HashingEmbedder(Embedder):
    """Hashed n-gram TF-IDF with a random (or SVD) projection to ``dim``.

    Parameters
    ----------
    device : str
        Ignored (CPU only); accepted so ``get_embedder`` treats all backends alike.
    dim : int, default 256
    ngram_range : tuple of int, default (1, 2)
    n_features : int, default 2**20
    projection : {"sparse", "svd"}, default "sparse"
    seed : int, default 0
        Seeds the projection matrix (and the SVD).
    fit_samples : int, default 20000
        How many leading corpus samples ``embed_corpus`` passes to :meth:`fit`.
    nnz_per_feature : int, default 4
        Non-zeros per row of the sparse projection matrix.

    Attributes
    ----------
    idf_ : np.ndarray (n_features,) float32, set by :meth:`fit`
    components_ : np.ndarray (dim, n_features) float32, ``projection="svd"`` only
    n_fit_ : int, number of texts :meth:`fit` saw
    """

    name = "hashing"
    pooling = "tfidf"
    requires_fit = True

    def __init__(self, device: str = "auto", dim: int = 256, ngram_range: tuple[int, int] = (1, 2),
                 n_features: int = 2**20, projection: str = "sparse", seed: int = 0, fit_samples: int = 20000,
                 nnz_per_feature: int = 4) -> None:
        if projection not in PROJECTIONS:
            raise ValueError(f"projection={projection!r}; expected one of {', '.join(PROJECTIONS)}")
        if int(dim) < 1:
            raise ValueError(f"dim={dim}; expected a positive integer")
        self.dim = int(dim)
        self.ngram_range = (int(ngram_range[0]), int(ngram_range[1]))
        self.n_features = int(n_features)
        self.projection = projection
        self.seed = int(seed)
        self.fit_samples = int(fit_samples)
        self.nnz_per_feature = int(nnz_per_feature)
        self.max_length = None
        self.idf_: np.ndarray | None = None
        self.components_: np.ndarray | None = None
        self.n_fit_ = 0
        self._proj = None
        from sklearn.feature_extraction.text import HashingVectorizer

        self._hv = HashingVectorizer(n_features=self.n_features, ngram_range=self.ngram_range,
                                     alternate_sign=False, norm=None, lowercase=True, dtype=np.float32)

    # -- fitted state ---------------------------------------------------------------
    def _counts(self, texts: Sequence[str]) -> Any:
        X = self._hv.transform(list(texts))
        X.sum_duplicates()
        return X

    def _tfidf(self, X: Any, idf: np.ndarray) -> Any:
        X = X.astype(np.float32, copy=False)
        np.log(X.data, out=X.data)
        X.data += 1.0
        X.data *= idf[X.indices]
        norms = np.sqrt(np.asarray(X.multiply(X).sum(axis=1)).ravel())
        np.maximum(norms, 1e-12, out=norms)
        X.data /= np.repeat(norms, np.diff(X.indptr)).astype(np.float32)
        return X

    def fit(self, texts: Sequence[str]) -> "HashingEmbedder":
        """Fit the IDF (and the SVD for ``projection="svd"``) on ``texts``.

        Parameters
        ----------
        texts : sequence of str
            A representative sample; deterministic input gives a deterministic state.
        """
        texts = list(texts)
        if not texts:
            raise ValueError("HashingEmbedder.fit got no texts; expected a non-empty corpus sample")
        X = self._counts(texts)
        df = np.bincount(X.indices, minlength=self.n_features).astype(np.float64)
        n = len(texts)
        self.idf_ = (np.log((1.0 + n) / (1.0 + df)) + 1.0).astype(np.float32)
        self.n_fit_ = n
        if self.projection == "svd":
            from sklearn.decomposition import TruncatedSVD

            k = min(self.dim, max(1, min(X.shape) - 1))
            if k < self.dim:
                raise ValueError(f"projection='svd' with dim={self.dim} needs more than {self.dim} fit texts "
                                 f"(got {n}); lower dim or use projection='sparse'")
            svd = TruncatedSVD(n_components=self.dim, algorithm="randomized", n_iter=5, random_state=self.seed)
            svd.fit(self._tfidf(X, self.idf_))
            self.components_ = svd.components_.astype(np.float32)
        logger.info("hashing embedder fitted on %d texts (%d non-empty buckets)", n, int((df > 0).sum()))
        return self

    def save_state(self, path: Path) -> None:
        """Write ``idf.npy`` (+ ``svd_components.npy``) and ``hashing_state.json`` into ``path``."""
        self._check_fitted()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        np.save(path / "idf.npy", self.idf_)
        if self.components_ is not None:
            np.save(path / "svd_components.npy", self.components_)
        write_json_atomic(path / "hashing_state.json", {"n_fit": self.n_fit_, "params": self._params()})

    def load_state(self, path: Path) -> "HashingEmbedder":
        path = Path(path)
        meta = read_json(path / "hashing_state.json")
        if meta["params"] != self._params():
            raise ValueError(f"{path}: hashing state was fitted with {meta['params']}, but this embedder has "
                             f"{self._params()}; use matching options or pass --force to refit")
        self.idf_ = np.load(path / "idf.npy")
        if self.projection == "svd":
            self.components_ = np.load(path / "svd_components.npy")
        self.n_fit_ = int(meta["n_fit"])
        return self

    def _check_fitted(self) -> None:
        if self.idf_ is None:
            raise RuntimeError("HashingEmbedder is not fitted; call .fit(sample_texts) first "
                               "(embed_corpus does it on the first samples of the corpus)")

    def _params(self) -> dict[str, Any]:
        return {"dim": self.dim, "ngram_range": list(self.ngram_range), "n_features": self.n_features,
                "projection": self.projection, "seed": self.seed, "nnz_per_feature": self.nnz_per_feature,
                "fit_samples": self.fit_samples}

    def _projection_matrix(self) -> Any:
        """Sparse (n_features, dim) float32 CSR matrix, a function of (seed, sizes) only."""
        if self._proj is None:
            import scipy.sparse as sp

            rng = np.random.default_rng(self.seed)
            s, F = self.nnz_per_feature, self.n_features
            cols = rng.integers(0, self.dim, size=F * s, dtype=np.int32)
            vals = np.where(rng.integers(0, 2, size=F * s, dtype=np.int8) > 0, 1.0, -1.0).astype(np.float32)
            vals /= np.float32(np.sqrt(s))
            # exactly s entries per row: build the CSR arrays directly (a repeated column just adds up)
            indptr = np.arange(0, F * s + 1, s, dtype=np.int64)
            P = sp.csr_matrix((vals, cols, indptr), shape=(F, self.dim))
            self._proj = P
        return self._proj

    # -- Embedder API -------------------------------------------------------------------
    def splitter(self) -> Any:
        from subsetlm.corpus.chunking import WhitespaceSplitter

        return WhitespaceSplitter()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update({"model": "hashed-ngram-tfidf", **self._params(), "wordless": "fixed-unit-vector",
                  "sklearn_version": package_version("scikit-learn"), "n_fit": self.n_fit_,
                  "idf_sha256": (hashlib.sha256(self.idf_.tobytes()).hexdigest()
                                 if self.idf_ is not None else None)})
        return d

    def wordless(self) -> np.ndarray:
        """(dim,) float32 unit vector: the embedding of every text without a hashed word (e.g. ``"."``)."""
        return seeded_unit(self.dim, [self.seed, 0x776F72646C657373])

    def embed(self, texts: Sequence[str], batch_size: int = 4096, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> (n, dim) float32, rows of unit L2 norm (:meth:`wordless` for texts without words).

        ``batch_size`` bounds the sparse intermediate; results do not depend on it.
        """
        self._check_fitted()

        def batch(chunk: list[str]) -> np.ndarray:
            X = self._tfidf(self._counts(chunk), self.idf_)
            if self.projection == "svd":
                return np.asarray(X @ self.components_.T, dtype=np.float32)
            return (X @ self._projection_matrix()).toarray().astype(np.float32, copy=False)

        return embed_in_steps(texts, self.dim, batch_size, progress, batch, self.wordless)


@register("embedder", "hashing")
def _make_hashing(device: str = "auto", **kw: Any) -> HashingEmbedder:
    return HashingEmbedder(device=device, **kw)
