"""DSIR: importance resampling toward a target distribution on hashed n-grams (Xie et al., 2023).

"Data Selection for Language Models via Importance Resampling" (NeurIPS 2023; code:
``data-selection`` on PyPI, github p-lambda/dsir). Three steps, each a streaming pass
over blocks of texts; memory is O(n_features) for the models plus one block:

1. **Featurizer** (:class:`NgramHasher`): each document is a bag of hashed word unigrams and
   bigrams: sklearn's ``HashingVectorizer`` (MurmurHash3 of the n-gram, modulo
   ``n_features``, no sign flipping), lowercased ``\\b\\w+\\b`` words. DSIR's code hashes
   the same unigrams+bigrams with SHA-256 into 10,000 buckets over NLTK's ``wordpunct``
   tokens; the difference is the tokeniser (punctuation is not a token here) and the
   bucket count (2**18 by default: fewer collisions).
2. **Importance weights**: bag-of-n-grams (multinomial) models of the target texts, p_t,
   and of the raw corpus, p_r, with add-``smoothing`` (Laplace) pseudo-counts per bucket,
   ``p(f) = (c(f) + α) / (Σ c + F α)`` (DSIR's code adds 1e-8 to the normalised counts
   instead). A document x with n-gram counts c_x gets the log importance weight
   ``log w(x) = Σ_f c_x(f) (log p_t(f) − log p_r(f))``, not length-normalised (as DSIR).
3. **Resampling**: ``budget`` documents drawn without replacement with probability ∝ w by
   Gumbel top-k (:func:`~subsetlm.select.sampling.gumbel_top_k`), as DSIR's ``resample``.

**KL reduction** (the paper's data metric, Sec. 4): with p̂ the target's hashed n-gram
distribution, ``KL reduction = KL(p̂ ‖ q̂) − KL(p̂ ‖ p̂_S)`` where p̂_S is the selected
subset's distribution and q̂ the baseline: the paper takes the raw corpus (what random
selection gives in expectation). :func:`kl_reduction` reports it against the raw corpus and
against a random subset under the same budget; the latter is the number to read for small
subsets, since a subset's empirical distribution is sparser than the whole corpus's and
its KL to the target is larger for that reason alone. The KL is computed on the same
hashed n-grams folded to ``n_buckets`` = 2**14 buckets (index mod 2**14, which equals
hashing into 2**14 buckets directly; the paper uses 10,000), with 0.01 pseudo-counts per
bucket on every distribution (small next to the ~10**5 counts of a thousand documents,
enough to keep log q finite): ``KL(p ‖ q) = Σ_f p(f) log(p(f) / q(f))``, in nats.

:func:`overlap` (Σ_f min(p̂_t(f), p̂_r(f)), one minus the total-variation distance) is
how the stage refuses a target that shares almost no n-grams with the corpus (another
language; ``min_overlap`` 0.1). In a one-off measurement against the 33k PubMed abstracts of
the ``pubmed`` source (2**18 buckets; no script in the repository repeats it), English text
of other domains (Python source with its docstrings, editor and Perl manuals, presidential
speeches) scored 0.17-0.40 and help texts in other languages (German, French, Spanish,
Italian, Polish, Russian, Japanese, Chinese) 0.011-0.044, the top of that range with their
English licence header.

Example
-------
>>> target = ["protein binding assay", "gene expression in cells"] * 5
>>> raw = ["gene protein cells assay"] * 5 + ["football match score goal"] * 5
>>> sorted(dsir_select(raw, target, 5, seed=0).tolist())
[0, 1, 2, 3, 4]
>>> h = NgramHasher(2 ** 16)
>>> t, r = h.counts([target])[0], h.counts([raw])[0]
>>> s = h.counts([raw[:5]])[0]
>>> kl_reduction(t, s, raw_counts=r)["kl_reduction"] > 0
True
"""

from __future__ import annotations

import logging
from typing import Any, Iterable, Iterator

import numpy as np

from subsetlm.select.sampling import gumbel_top_k

logger = logging.getLogger(__name__)

DEFAULT_FEATURES = 2 ** 18
KL_BUCKETS = 2 ** 14
KL_SMOOTHING = 0.01
MIN_FEATURES, MAX_FEATURES = 2 ** 16, 2 ** 20


def check_features(n_features: int) -> int:
    """``n_features`` as an int in [2**16, 2**20], or a ValueError saying so."""
    if isinstance(n_features, bool) or not isinstance(n_features, (int, np.integer)) or not (
            MIN_FEATURES <= int(n_features) <= MAX_FEATURES):
        raise ValueError(f"n_features={n_features} must be in [2**16, 2**20] (65536 .. 1048576)")
    return int(n_features)


def check_smoothing(smoothing: float) -> float:
    """``smoothing`` as a float > 0 (finite), or a ValueError saying so."""
    if not (isinstance(smoothing, (int, float, np.floating)) and np.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing={smoothing} must be > 0 (add-one smoothing is 1.0)")
    return float(smoothing)


class NgramHasher:
    """The DSIR featurizer: hashed word unigram + bigram counts (see the module docstring).

    Parameters
    ----------
    n_features : int
        Hash buckets, 2**16 .. 2**20.

    Examples
    --------
    >>> h = NgramHasher(2 ** 16)
    >>> M = h.transform(["a b a"])          # a, b, a, "a b", "b a"
    >>> M.shape, float(M.sum())
    ((1, 65536), 5.0)
    """

    def __init__(self, n_features: int = DEFAULT_FEATURES) -> None:
        from sklearn.feature_extraction.text import HashingVectorizer

        self.n_features = check_features(n_features)
        self._vec = HashingVectorizer(n_features=self.n_features, ngram_range=(1, 2), alternate_sign=False,
                                      norm=None, lowercase=True, token_pattern=r"(?u)\b\w+\b", dtype=np.float32)

    def transform(self, texts: list[str]) -> Any:
        """(len(texts), n_features) scipy CSR matrix of n-gram counts (float32, exact integers)."""
        return self._vec.transform(texts)

    def counts(self, blocks: Iterable[list[str]]) -> tuple[np.ndarray, int]:
        """Summed n-gram counts of every text in ``blocks`` (lists of texts): ((n_features,) float64, n_docs)."""
        total = np.zeros(self.n_features, dtype=np.float64)
        n = 0
        for block in blocks:
            total += column_sums(self.transform(block))
            n += len(block)
        return total, n


def column_sums(M: Any) -> np.ndarray:
    """(n_features,) float64 column sums of a sparse count matrix."""
    return np.asarray(M.sum(axis=0), dtype=np.float64).ravel()


def iter_batches(texts: Iterable[str], batch_size: int) -> Iterator[list[str]]:
    """``texts`` in lists of ``batch_size``; a non-str item is a TypeError naming its position."""
    batch: list[str] = []
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"text {i} is {type(t).__name__}, expected str")
        batch.append(t)
        if len(batch) == batch_size:
            yield batch
            batch = []
    if batch:
        yield batch


def log_model(counts: np.ndarray, smoothing: float) -> np.ndarray:
    """log p(f) of the add-``smoothing`` bag-of-n-grams model of ``counts``: (F,) float64."""
    c = np.asarray(counts, dtype=np.float64) + smoothing
    return np.log(c) - np.log(c.sum())


def log_ratio(target_counts: np.ndarray, raw_counts: np.ndarray, smoothing: float = 1.0) -> np.ndarray:
    """Per-bucket log importance ``log p_t(f) − log p_r(f)``: (F,) float64; a document's weight is ``c_x @ it``."""
    smoothing = check_smoothing(smoothing)
    return log_model(target_counts, smoothing) - log_model(raw_counts, smoothing)


def dsir_importance(texts: Iterable[str], target_texts: Iterable[str], *, n_features: int = DEFAULT_FEATURES,
                    smoothing: float = 1.0, batch_size: int = 8192) -> np.ndarray:
    """DSIR log importance weight of every raw document toward the target distribution.

    Parameters
    ----------
    texts : iterable of str
        The raw corpus (n documents). A list (or any re-iterable) is read twice, a block
        at a time; a one-shot iterator is read once and its sparse n-gram rows are kept in
        memory (about 8 bytes per distinct n-gram per document).
    target_texts : iterable of str
        Texts from the target distribution (e.g. the downstream task's training inputs).
    n_features : int
        Hash buckets, 2**16 .. 2**20 (DSIR uses 10k; more buckets, fewer collisions).
    smoothing : float
        Add-``smoothing`` (Laplace) pseudo-count per bucket, > 0.
    batch_size : int
        Documents vectorised at a time.

    Returns
    -------
    np.ndarray
        (n,) float64 log weights Σ_f c_x(f) (log p_t(f) − log p_r(f)).

    Raises
    ------
    ValueError
        Empty corpus or target, ``n_features`` outside [2**16, 2**20], ``smoothing <= 0``.

    Examples
    --------
    >>> w = dsir_importance(["heart blood", "goal match"], ["blood heart artery"], n_features=2 ** 16)
    >>> bool(w[0] > w[1])
    True
    """
    hasher = NgramHasher(n_features)
    smoothing = check_smoothing(smoothing)
    t_counts, n_target = hasher.counts(iter_batches(target_texts, batch_size))
    if n_target == 0:
        raise ValueError("target_texts is empty; DSIR needs example texts of the target distribution")
    one_shot = iter(texts) is texts
    kept = []
    r_counts = np.zeros(hasher.n_features, dtype=np.float64)
    n = 0
    for batch in iter_batches(texts, batch_size):
        M = hasher.transform(batch)
        r_counts += column_sums(M)
        n += len(batch)
        if one_shot:
            kept.append(M)
    if n == 0:
        raise ValueError("texts is empty; nothing to select from")
    delta = log_ratio(t_counts, r_counts, smoothing)
    logger.info("DSIR: %d raw documents, %d target documents, %d hash buckets", n, n_target, hasher.n_features)
    parts = kept if one_shot else (hasher.transform(b) for b in iter_batches(texts, batch_size))
    out = np.concatenate([np.asarray(M @ delta, dtype=np.float64).ravel() for M in parts])
    if out.shape[0] != n:
        raise ValueError(f"texts yielded {out.shape[0]} documents on the second pass but {n} on the first; "
                         "pass a list or a one-shot iterator, not an iterable that changes between passes")
    return out


def dsir_select(texts: Iterable[str], target_texts: Iterable[str], budget: int, seed: int = 0, *,
                n_features: int = DEFAULT_FEATURES, smoothing: float = 1.0, batch_size: int = 8192) -> np.ndarray:
    """Select ``budget`` raw documents by DSIR hashed n-gram importance resampling.

    Parameters
    ----------
    texts, target_texts, n_features, smoothing, batch_size
        See :func:`dsir_importance`.
    budget : int
        Number of documents, 0 <= budget <= n.
    seed : int
        Seed for the Gumbel noise (``np.random.default_rng``); same seed, same indices.

    Returns
    -------
    np.ndarray
        (budget,) int64 distinct indices into ``texts``, in draw order (the most
        "target-like" tend to come first).

    Examples
    --------
    >>> dsir_select(["a b", "c d"], ["a b"], 1, seed=0).tolist()
    [0]
    """
    from subsetlm.select.baselines import _check_count

    logw = dsir_importance(texts, target_texts, n_features=n_features, smoothing=smoothing,
                           batch_size=batch_size)
    budget = _check_count("budget", budget, 0, logw.size, f"lower --budget (n={logw.size} documents)")
    return gumbel_top_k(logw, budget, seed)


def fold(counts: np.ndarray, n_buckets: int) -> np.ndarray:
    """Counts over ``F`` hash buckets folded to ``n_buckets`` (a power of two dividing F): bucket ``f mod n_buckets``.

    HashingVectorizer's bucket is ``|h| mod F``; for powers of two ``(|h| mod F) mod B = |h| mod B``,
    so the result equals hashing into ``n_buckets`` buckets directly.

    >>> fold(np.arange(8.0), 4).tolist()
    [4.0, 6.0, 8.0, 10.0]
    """
    c = np.asarray(counts, dtype=np.float64).reshape(-1)
    nb = int(n_buckets)
    if nb < 1 or nb & (nb - 1) or c.size % nb:
        raise ValueError(f"n_buckets={n_buckets} must be a power of two dividing the {c.size} hash buckets")
    return c.reshape(-1, nb).sum(axis=0)


def _distribution(counts: np.ndarray, smoothing: float) -> np.ndarray:
    c = np.asarray(counts, dtype=np.float64) + smoothing
    total = c.sum()
    if not total > 0:
        raise ValueError("an n-gram distribution with no counts (an empty text set) and no smoothing")
    return c / total


def kl_divergence(p_counts: np.ndarray, q_counts: np.ndarray, smoothing: float = KL_SMOOTHING) -> float:
    """``KL(p ‖ q) = Σ_f p(f) log(p(f) / q(f))`` in nats, p and q the add-``smoothing`` distributions of the counts.

    >>> kl_divergence(np.array([3.0, 1.0]), np.array([3.0, 1.0]))
    0.0
    """
    p, q = _distribution(p_counts, smoothing), _distribution(q_counts, smoothing)
    if p.shape != q.shape:
        raise ValueError(f"count vectors of different lengths: {p.shape[0]} and {q.shape[0]} buckets")
    nz = p > 0
    return float(max(0.0, np.sum(p[nz] * (np.log(p[nz]) - np.log(q[nz])))))


def overlap(p_counts: np.ndarray, q_counts: np.ndarray) -> float:
    """``Σ_f min(p̂(f), q̂(f))`` of the two normalised count vectors (no smoothing): 1 − total variation, in [0, 1].

    0 when no bucket is shared (empty inputs give 0).

    >>> overlap(np.array([2.0, 2.0, 0.0]), np.array([0.0, 1.0, 1.0]))
    0.5
    """
    p, q = np.asarray(p_counts, dtype=np.float64), np.asarray(q_counts, dtype=np.float64)
    sp, sq = p.sum(), q.sum()
    if not (sp > 0 and sq > 0):
        return 0.0
    return float(np.minimum(p / sp, q / sq).sum())


def kl_reduction(target_counts: np.ndarray, selected_counts: np.ndarray, *, raw_counts: np.ndarray | None = None,
                 random_counts: np.ndarray | None = None, n_buckets: int = KL_BUCKETS,
                 smoothing: float = KL_SMOOTHING) -> dict[str, Any]:
    """DSIR's KL reduction of a selected subset toward the target, against the raw corpus and/or a random subset.

    Parameters
    ----------
    target_counts, selected_counts : (F,) summed hashed n-gram counts (:meth:`NgramHasher.counts`)
        of the target texts and of the selected documents.
    raw_counts : (F,) counts of the whole raw corpus: the paper's baseline.
    random_counts : (F,) counts of a random subset under the same budget (same size).
    n_buckets : the counts are folded to this many buckets first (:func:`fold`; 2**14, the
        paper's scale: 10,000). With F buckets kept, subsets are too sparse and the KL
        mostly measures their size.
    smoothing : pseudo-count added to every bucket of every distribution (0.01: the
        empirical distributions, with log q kept finite).

    Returns
    -------
    dict
        ``kl_target_selected`` = KL(p̂_t ‖ p̂_S); ``kl_target_raw`` / ``kl_target_random``
        (when given); ``kl_reduction_vs_raw`` = KL(p̂_t ‖ q̂_raw) − KL(p̂_t ‖ p̂_S) (the paper's
        formula); ``kl_reduction_vs_random`` = KL(p̂_t ‖ p̂_random) − KL(p̂_t ‖ p̂_S);
        ``kl_reduction``: the random one when a random subset is given, else the raw one;
        ``baseline`` ("random" or "raw"), ``n_buckets``, ``smoothing``. In nats; > 0 means
        the subset is closer to the target than the baseline.

    Examples
    --------
    >>> t, s, r = np.array([8.0, 2, 0, 0]), np.array([7.0, 3, 0, 0]), np.array([4.0, 4, 4, 4])
    >>> out = kl_reduction(t, s, raw_counts=r, n_buckets=4)
    >>> out["baseline"], out["kl_reduction"] > 0
    ('raw', True)
    """
    if raw_counts is None and random_counts is None:
        raise ValueError("kl_reduction needs a baseline: raw_counts (the paper's) and/or random_counts")
    smoothing = check_smoothing(smoothing)
    t = fold(target_counts, n_buckets)
    s = fold(selected_counts, n_buckets)
    out: dict[str, Any] = {"kl_target_selected": kl_divergence(t, s, smoothing)}
    if raw_counts is not None:
        out["kl_target_raw"] = kl_divergence(t, fold(raw_counts, n_buckets), smoothing)
        out["kl_reduction_vs_raw"] = out["kl_target_raw"] - out["kl_target_selected"]
    if random_counts is not None:
        out["kl_target_random"] = kl_divergence(t, fold(random_counts, n_buckets), smoothing)
        out["kl_reduction_vs_random"] = out["kl_target_random"] - out["kl_target_selected"]
    out["baseline"] = "random" if random_counts is not None else "raw"
    out["kl_reduction"] = out[f"kl_reduction_vs_{out['baseline']}"]
    out.update(n_buckets=int(n_buckets), smoothing=smoothing)
    return out
