"""Hashed n-gram TF-IDF embedder: determinism, similarity, state, TF-IDF oracle."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm.embed import get_embedder
from subsetlm.embed.hashing import HashingEmbedder

CORPUS = [
    "aspirin inhibits platelet aggregation and reduces myocardial infarction risk",
    "statins lower cholesterol and the risk of heart attack",
    "the telescope observed a distant galaxy with strong redshift",
    "chemotherapy shrinks the tumor in patients with lymphoma",
    "a new vaccine prevents infection by the influenza virus",
    "the football team won the championship after extra time",
] * 5


def fitted(**kw):
    return HashingEmbedder(**kw).fit(CORPUS)


def test_deterministic_and_normalised():
    a = fitted(dim=64).embed(CORPUS[:6])
    b = fitted(dim=64).embed(CORPUS[:6])
    np.testing.assert_array_equal(a, b)
    assert a.shape == (6, 64) and a.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    c = fitted(dim=64, seed=1).embed(CORPUS[:6])
    assert not np.allclose(a, c)


def test_batch_size_does_not_change_result():
    emb = fitted(dim=32)
    texts = CORPUS * 70  # > 1024 => several internal batches
    np.testing.assert_array_equal(emb.embed(texts, batch_size=1024), emb.embed(texts, batch_size=10**6))


@pytest.mark.parametrize("projection", ["sparse", "svd"])
def test_similar_texts_are_closer(projection):
    emb = fitted(dim=256 if projection == "sparse" else 5, projection=projection)
    q, near, far = emb.embed([
        "aspirin inhibits platelet aggregation",
        "aspirin reduces platelet aggregation and infarction",
        "the telescope observed a distant galaxy",
    ])
    assert q @ near > q @ far + 0.2


def test_tfidf_oracle_before_projection():
    """Cosines after the sparse projection approximate the exact sublinear TF-IDF cosines."""
    from sklearn.feature_extraction.text import HashingVectorizer

    emb = fitted(dim=1024, nnz_per_feature=8)
    texts = CORPUS[:6]
    hv = HashingVectorizer(n_features=2**20, ngram_range=(1, 2), alternate_sign=False, norm=None)
    X = hv.transform(texts).toarray()
    df = (hv.transform(CORPUS).toarray() > 0).sum(0)
    idf = np.log((1 + len(CORPUS)) / (1 + df)) + 1
    T = np.where(X > 0, 1 + np.log(np.maximum(X, 1)), 0) * idf
    T /= np.linalg.norm(T, axis=1, keepdims=True)
    exact = T @ T.T
    np.testing.assert_allclose(emb.idf_[np.flatnonzero(df)], idf[np.flatnonzero(df)], rtol=1e-6)
    Y = emb.embed(texts)
    np.testing.assert_allclose(Y @ Y.T, exact, atol=0.15)


def test_state_round_trip(tmp_path):
    emb = fitted(dim=32)
    emb.save_state(tmp_path / "st")
    other = HashingEmbedder(dim=32).load_state(tmp_path / "st")
    np.testing.assert_array_equal(other.embed(CORPUS[:3]), emb.embed(CORPUS[:3]))
    assert other.describe()["idf_sha256"] == emb.describe()["idf_sha256"]
    with pytest.raises(ValueError, match="fitted with.*'dim': 32.*--force"):
        HashingEmbedder(dim=16).load_state(tmp_path / "st")


def test_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        HashingEmbedder().embed(["x"])
    with pytest.raises(ValueError, match="projection='pca'"):
        get_embedder("hashing", projection="pca")
    with pytest.raises(ValueError, match="no texts"):
        HashingEmbedder().fit([])


def test_splitter_is_whitespace():
    (chunks,) = get_embedder("hashing").splitter().split(["a b c d e"], 2)
    assert [n for _, n in chunks] == [2, 2, 1]
