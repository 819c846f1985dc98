"""k-means partitions: determinism, label range, no empty partition, blob recovery, errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import adjusted_rand_score

from subsetlm.index import KMeansResult, kmeans_partitions

from _data import clustered, gaussian


@pytest.fixture(scope="module")
def blobs():
    return clustered(4000, d=16, n_centres=8, sigma=0.15, seed=5)


def test_recovers_separated_blobs(blobs):
    X, truth = blobs
    labels = kmeans_partitions(X, 8, seed=0)
    assert labels.dtype == np.int32 and labels.shape == (4000,)
    assert adjusted_rand_score(truth, labels) >= 0.95


def test_deterministic_for_a_seed(blobs):
    X, _ = blobs
    a = kmeans_partitions(X, 12, seed=3, sample_size=2000)
    b = kmeans_partitions(X, 12, seed=3, sample_size=2000)
    np.testing.assert_array_equal(a, b)


def test_labels_in_range_and_none_empty():
    X = gaussian(3000, 8, seed=1)
    res = kmeans_partitions(X, 50, seed=0, return_centroids=True)
    assert isinstance(res, KMeansResult)
    P = len(res.centroids)
    assert res.labels.min() == 0 and res.labels.max() == P - 1
    assert (np.bincount(res.labels, minlength=P) > 0).all()
    np.testing.assert_array_equal(np.bincount(res.labels, minlength=P), res.sizes)
    # labels are the most similar centroid (blocked assignment = brute force)
    best = np.argmax(X @ res.centroids.T, axis=1)
    assert (best == res.labels).mean() > 0.999
    np.testing.assert_allclose(np.linalg.norm(res.centroids, axis=1), 1.0, atol=1e-4)


def test_empty_partitions_dropped_and_relabelled():
    # 5 distinct points repeated: at most 5 non-empty clusters out of 8 requested
    base = gaussian(5, 6, seed=2)
    X = np.repeat(base, 40, axis=0)
    res = kmeans_partitions(X, 8, seed=0, return_centroids=True)
    P = len(res.sizes)
    assert P <= 5 and res.n_dropped == 8 - P
    assert set(np.unique(res.labels)) == set(range(P))
    for i in range(5):  # identical rows share a label
        assert len(np.unique(res.labels[i * 40:(i + 1) * 40])) == 1


def test_float16_memmap_input(tmp_path, blobs):
    X, truth = blobs
    np.save(tmp_path / "x.npy", X.astype(np.float16))
    X16 = np.load(tmp_path / "x.npy", mmap_mode="r")
    labels = kmeans_partitions(X16, 8, seed=0, block_size=333)
    assert adjusted_rand_score(truth, labels) >= 0.95


@pytest.mark.parametrize("P", [0, 4001])
def test_bad_partition_count(blobs, P):
    with pytest.raises(ValueError, match="n_partitions"):
        kmeans_partitions(blobs[0], P)


def test_sample_smaller_than_partitions(blobs):
    with pytest.raises(ValueError, match="sample_size=5 < n_partitions=8"):
        kmeans_partitions(blobs[0], 8, sample_size=5)
