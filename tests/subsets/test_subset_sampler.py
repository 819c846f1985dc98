"""SubsetSampler: exact coverage, per-epoch order, weighted frequencies, resume, update."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from scipy import stats
from torch.utils.data import DataLoader, Dataset

from subsetlm.subsets import SubsetSampler, read_subset, write_subset

from .conftest import example_inputs


class StoreRows(Dataset):
    """A dataset over the whole store: item i is row i."""

    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


def epoch_indices(loader) -> list[int]:
    return [int(i) for batch in loader for i in batch]


@pytest.fixture
def subset(store, tmp_path):
    return read_subset(write_subset(tmp_path / "s", store=store, **example_inputs()), store=store)


def test_dataloader_yields_exactly_the_subset_each_epoch(subset, store):
    s = SubsetSampler(subset, seed=5)
    loader = DataLoader(StoreRows(store.n), sampler=s, batch_size=5)
    orders = []
    for epoch in range(4):
        s.set_epoch(epoch)
        got = epoch_indices(loader)
        assert sorted(got) == sorted(subset.indices.tolist())  # each index exactly once
        orders.append(got)
    assert len(s) == subset.size
    assert len({tuple(o) for o in orders}) == 4  # a different order per epoch
    # same seed and epoch -> same order, in a fresh sampler
    s2 = SubsetSampler(subset, seed=5)
    s2.set_epoch(2)
    assert list(s2) == orders[2]
    # another seed -> another order
    s3 = SubsetSampler(subset, seed=6)
    s3.set_epoch(2)
    assert list(s3) != orders[2]
    # without set_epoch every pass repeats the same order
    assert list(s2) == list(s2)


def test_no_shuffle_is_selection_order(subset):
    s = SubsetSampler(subset, shuffle=False)
    assert list(s) == subset.indices.tolist()
    assert list(SubsetSampler(subset.path, shuffle=False)) == subset.indices.tolist()


def test_num_samples_truncates_and_chains_permutations():
    idx = np.array([10, 20, 30, 40])
    short = list(SubsetSampler(idx, num_samples=3, seed=0))
    assert len(short) == 3 and len(set(short)) == 3
    long = list(SubsetSampler(idx, num_samples=10, seed=0))
    assert len(long) == 10
    assert sorted(long[:4]) == sorted(long[4:8]) == [10, 20, 30, 40]


def test_weighted_frequencies_proportional_to_weights():
    idx = np.array([3, 7, 11, 19, 23])
    w = np.array([1.0, 2.0, 4.0, 8.0, 0.0])
    s = SubsetSampler(idx, weights=w, weighted=True, num_samples=20000, seed=0)
    draws = np.array(list(s))
    assert len(draws) == len(s) == 20000
    counts = np.array([(draws == i).sum() for i in idx])
    assert counts[-1] == 0  # weight 0 is never drawn
    expected = w[:4] / w[:4].sum() * draws.size
    chi2 = ((counts[:4] - expected) ** 2 / expected).sum()
    assert chi2 < stats.chi2.ppf(0.999, df=3), (counts, expected)
    np.testing.assert_allclose(counts[:4] / draws.size, w[:4] / w[:4].sum(), atol=0.015)


def test_weighted_from_subset_file_defaults(subset):
    s = SubsetSampler(subset, weighted=True, seed=1)
    draws = list(s)
    assert len(draws) == subset.size and set(draws) <= set(subset.indices.tolist())
    assert s.replacement is True
    # without replacement: distinct draws
    s = SubsetSampler(subset, weighted=True, replacement=False, seed=1)
    assert sorted(s) == sorted(subset.indices.tolist())


def test_weighted_errors():
    with pytest.raises(ValueError, match="all weights are 0"):
        SubsetSampler(np.array([1, 2]), weights=np.zeros(2), weighted=True)
    with pytest.raises(ValueError, match=r"num_samples=3 distinct draws .* only 2 indices"):
        SubsetSampler(np.array([1, 2, 3]), weights=np.array([1.0, 1.0, 0.0]), weighted=True,
                      replacement=False, num_samples=3)
    with pytest.raises(ValueError, match=r"weights has shape \(1,\) but indices has shape \(2,\)"):
        SubsetSampler(np.array([1, 2]), weights=np.ones(1))
    with pytest.raises(ValueError, match="1-D integer array"):
        SubsetSampler(np.array([0.5, 1.0]))


@pytest.mark.parametrize("weighted", [False, True])
def test_resume_mid_epoch_gives_the_same_remaining_sequence(weighted):
    idx = np.arange(100, 150)
    w = np.arange(1, 51, dtype=float)
    ref = SubsetSampler(idx, weights=w, weighted=weighted, seed=3)
    ref.set_epoch(2)
    full = list(ref)

    s = SubsetSampler(idx, weights=w, weighted=weighted, seed=3)
    s.set_epoch(2)
    it = iter(s)
    head = [next(it) for _ in range(17)]
    state = s.state_dict()
    assert state["epoch"] == 2 and state["position"] == 17
    # round-trip through torch.save / torch.load(weights_only=True) like a checkpoint
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)

    resumed = SubsetSampler(idx, weights=w, weighted=weighted, seed=3)
    resumed.load_state_dict(state)
    resumed.set_epoch(2)  # a resumed loop calls set_epoch(epoch) again: keeps the position
    tail = list(resumed)
    assert head + tail == full
    # and the next epoch continues normally
    resumed.set_epoch(3)
    ref.set_epoch(3)
    assert list(resumed) == list(ref)


def test_resume_with_consumed_behind_dataloader_prefetch():
    idx = np.arange(40)
    s = SubsetSampler(idx, seed=0)
    full = list(s)
    loader = DataLoader(StoreRows(40), sampler=s, batch_size=4)
    it = iter(loader)
    seen = [int(i) for _ in range(3) for i in next(it)]  # 3 batches trained on
    state = s.state_dict(consumed=len(seen))
    r = SubsetSampler(idx, seed=0)
    r.load_state_dict(state)
    assert seen + list(r) == full
    with pytest.raises(ValueError, match="outside"):
        s.state_dict(consumed=41)


def test_load_state_without_indices_checks_fingerprint():
    s = SubsetSampler(np.arange(10), seed=0)
    state = {k: v for k, v in s.state_dict().items() if k not in ("indices", "weights")}
    SubsetSampler(np.arange(10), seed=0).load_state_dict(state)
    with pytest.raises(ValueError, match="fingerprint mismatch"):
        SubsetSampler(np.arange(11), seed=0).load_state_dict(state)


def test_update_next_epoch_and_immediate():
    s = SubsetSampler(np.array([1, 2, 3, 4]), seed=0)
    it = iter(s)
    first = [next(it), next(it)]
    s.update(np.array([50, 60, 70]))  # default: at the next epoch
    rest = list(it)
    assert sorted(first + rest) == [1, 2, 3, 4]  # the running epoch is unaffected
    assert len(s) == 4  # still the old subset until the next epoch starts
    # pending update survives a checkpoint
    r = SubsetSampler(np.array([1, 2, 3, 4]), seed=0)
    r.load_state_dict(s.state_dict())
    s.set_epoch(1)
    r.set_epoch(1)
    new = list(s)
    assert sorted(new) == [50, 60, 70] and len(s) == 3
    assert list(r) == new

    # immediate: the epoch restarts on the new subset, even inside a running iterator
    s = SubsetSampler(np.array([1, 2, 3, 4]), seed=0)
    it = iter(s)
    first = next(it)
    s.update(np.array([8, 9]), weights=np.array([1.0, 3.0]), immediate=True)
    rest = list(it)
    assert first in (1, 2, 3, 4) and sorted(rest) == [8, 9]
    assert s.weights.tolist() == [1.0, 3.0] and s.indices.tolist() == [8, 9]


def test_update_from_subset_file(subset):
    s = SubsetSampler(np.array([0, 1]), weighted=True)
    s.update(subset, immediate=True)
    np.testing.assert_array_equal(s.weights, subset.weights)
    assert set(s) <= set(subset.indices.tolist())
