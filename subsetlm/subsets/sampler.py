"""A torch ``Sampler`` over a subset: yields store row indices, resumable mid-epoch.

The sampler yields rows of the *embedding store* (``SubsetFile.indices``), so a
``Dataset`` over the whole store (row i = ``store.ids[i]``) can be used unchanged; the
subset only decides which rows are visited and how often.

Modes
-----
- unweighted (default): every subset index once per epoch, shuffled per epoch
  (``shuffle=False``: selection order). ``num_samples`` smaller than the subset takes
  the first ``num_samples`` of the epoch's order; larger chains further independent
  permutations. ``replacement=True`` draws uniformly with replacement instead.
- weighted (``weighted=True``): ``num_samples`` (default: subset size) draws with
  probability proportional to ``weight`` (with replacement by default;
  ``replacement=False`` draws distinct indices). ``shuffle`` is ignored.

The order of epoch ``e`` depends only on ``(seed, e)`` and the subset: it is drawn
from ``np.random.default_rng([seed, e])``. Call ``set_epoch(e)`` before each epoch
(as with ``DistributedSampler``); without it every epoch repeats the same order.

Resuming: ``state_dict()`` records the epoch, the position within it and the active
subset; ``load_state_dict`` on a fresh sampler makes the next ``iter()`` continue with
exactly the remaining indices of that epoch. A ``DataLoader`` draws indices ahead of
the training step (prefetch), so pass ``consumed=`` (samples actually trained on this
epoch) to ``state_dict`` when you checkpoint from a training loop.

Example
-------
>>> import numpy as np
>>> s = SubsetSampler(np.array([7, 3, 5]), seed=0)
>>> sorted(s)
[3, 5, 7]
>>> s.set_epoch(1); len(s)
3
"""

from __future__ import annotations

import hashlib
import logging
import os
from typing import Any, Iterator

import numpy as np
import torch
from torch.utils.data import Sampler

from subsetlm.subsets.format import SubsetFile, read_subset

logger = logging.getLogger(__name__)


def _fingerprint(indices: np.ndarray, weights: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(indices, dtype="<i8").tobytes())
    h.update(np.ascontiguousarray(weights, dtype="<f8").tobytes())
    return h.hexdigest()


def _validate(indices: Any, weights: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(indices, torch.Tensor):
        indices = indices.cpu().numpy()
    idx = np.asarray(indices)
    if idx.ndim != 1 or (idx.size and not np.issubdtype(idx.dtype, np.integer)):
        raise ValueError(
            f"SubsetSampler: indices must be a 1-D integer array, got shape {idx.shape} "
            f"dtype {idx.dtype}"
        )
    idx = idx.astype(np.int64, copy=True)
    if idx.size and idx.min() < 0:
        raise ValueError(f"SubsetSampler: indices must be >= 0, got min {idx.min()}")
    if weights is None:
        w = np.ones(idx.shape[0], dtype=np.float64)
    else:
        if isinstance(weights, torch.Tensor):
            weights = weights.cpu().numpy()
        w = np.asarray(weights, dtype=np.float64).copy()
        if w.shape != idx.shape:
            raise ValueError(
                f"SubsetSampler: weights has shape {w.shape} but indices has shape "
                f"{idx.shape}; pass one weight per index"
            )
        if not np.all(np.isfinite(w)) or (w.size and w.min() < 0):
            raise ValueError("SubsetSampler: weights must be finite and >= 0")
    return idx, w


class SubsetSampler(Sampler[int]):
    """Sample store row indices from a subset, per epoch, deterministically.

    Parameters
    ----------
    subset : SubsetFile, path or (b,) int array
        The subset (a path is read with ``read_subset``); an array is taken as store
        row indices (weights all 1 unless ``weights`` is given).
    weighted : bool
        Draw with probability proportional to the subset weights.
    shuffle : bool
        Unweighted mode: shuffle each epoch (else selection order).
    num_samples : int, optional
        Indices per epoch; default the subset size.
    replacement : bool, optional
        Draw with replacement; default ``True`` when weighted, ``False`` otherwise.
    seed : int
        Base seed; epoch ``e`` uses ``default_rng([seed, e])``.
    weights : (b,) float array, optional
        Weights for an array ``subset``; for a SubsetFile it overrides ``subset.weights``.

    Examples
    --------
    >>> from torch.utils.data import DataLoader
    >>> s = SubsetSampler(np.array([4, 1, 9]), seed=1)
    >>> sorted(int(i) for b in DataLoader(list(range(10)), sampler=s, batch_size=2) for i in b)
    [1, 4, 9]
    """

    def __init__(
        self,
        subset: SubsetFile | str | os.PathLike | np.ndarray,
        *,
        weighted: bool = False,
        shuffle: bool = True,
        num_samples: int | None = None,
        replacement: bool | None = None,
        seed: int = 0,
        weights: np.ndarray | None = None,
    ) -> None:
        super().__init__()
        if isinstance(subset, (str, os.PathLike)):
            subset = read_subset(subset)
        if isinstance(subset, SubsetFile):
            indices = subset.indices
            weights = subset.weights if weights is None else weights
        else:
            indices = subset
        self.weighted = bool(weighted)
        self.shuffle = bool(shuffle)
        self.replacement = self.weighted if replacement is None else bool(replacement)
        self.seed = int(seed)
        self._num_samples = None if num_samples is None else int(num_samples)
        if self._num_samples is not None and self._num_samples < 0:
            raise ValueError(f"SubsetSampler: num_samples must be >= 0, got {num_samples}")
        self._indices, self._weights = _validate(indices, weights)
        self._check_weights(self._indices, self._weights)
        self._pending: tuple[np.ndarray, np.ndarray] | None = None
        self.epoch = 0
        self._position = 0
        self._generation = 0  # bumped whenever the active subset changes
        self._cache: tuple[tuple[int, int], np.ndarray] | None = None

    # ------------------------------------------------------------------ properties
    @property
    def indices(self) -> np.ndarray:
        """(b,) int64 store rows of the active subset (selection order)."""
        return self._indices

    @property
    def weights(self) -> np.ndarray:
        """(b,) float64 weights of the active subset."""
        return self._weights

    @property
    def num_samples(self) -> int:
        """Indices yielded per epoch."""
        return self._indices.shape[0] if self._num_samples is None else self._num_samples

    @property
    def position(self) -> int:
        """Indices of the current epoch already yielded."""
        return self._position

    def __len__(self) -> int:
        return self.num_samples

    def _check_weights(self, idx: np.ndarray, w: np.ndarray) -> None:
        if not self.weighted or self.num_samples == 0:
            return
        positive = int(np.count_nonzero(w > 0))
        if positive == 0:
            raise ValueError("SubsetSampler(weighted=True): all weights are 0; nothing to sample")
        if not self.replacement and self.num_samples > positive:
            raise ValueError(
                f"SubsetSampler: num_samples={self.num_samples} distinct draws without "
                f"replacement but only {positive} indices have weight > 0; lower "
                f"num_samples or pass replacement=True"
            )

    # ---------------------------------------------------------------------- epochs
    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order the next ``iter()`` yields.

        Changing the epoch restarts at position 0; setting the current epoch again
        (e.g. after ``load_state_dict``) keeps the position, so a resumed loop that
        calls ``set_epoch(epoch)`` continues mid-epoch.
        """
        epoch = int(epoch)
        if epoch != self.epoch:
            self.epoch = epoch
            self._position = 0

    def _order(self) -> np.ndarray:
        """The full index sequence of the current epoch (cached)."""
        key = (self.epoch, self._generation)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, self.epoch])
        b, m = self._indices.shape[0], self.num_samples
        if m == 0 or b == 0:
            pos = np.zeros(0, dtype=np.int64)
        elif self.weighted:
            p = self._weights / self._weights.sum()
            pos = rng.choice(b, size=m, replace=self.replacement, p=p)
        elif self.replacement:
            pos = rng.integers(0, b, size=m)
        else:
            chunks, have = [], 0
            while have < m:
                chunks.append(rng.permutation(b) if self.shuffle else np.arange(b))
                have += b
            pos = np.concatenate(chunks)[:m]
        order = self._indices[pos]
        self._cache = (key, order)
        return order

    def __iter__(self) -> Iterator[int]:
        if self._position >= self.num_samples:
            self._position = 0  # the previous pass over this epoch finished
        if self._position == 0 and self._pending is not None:
            self._indices, self._weights = self._pending
            self._pending = None
            self._generation += 1
            logger.info("SubsetSampler: switched to the updated subset of %d indices", self._indices.size)
        while True:
            order = self._order()
            gen = self._generation
            while self._position < order.shape[0]:
                i = int(order[self._position])
                self._position += 1
                yield i
                if self._generation != gen:
                    break  # update(immediate=True) swapped the subset under us
            else:
                break

    # ---------------------------------------------------------------------- update
    def update(self, indices: Any, weights: Any = None, *, immediate: bool = False) -> None:
        """Swap in a new subset (e.g. from re-selection during training).

        Parameters
        ----------
        indices : (b',) int array or SubsetFile
            New store rows.
        weights : (b',) float array, optional
            New weights (default: the SubsetFile's, or 1.0).
        immediate : bool
            False (default): takes effect when the next epoch starts (the next
            ``iter()`` at position 0); the epoch in progress finishes on the old
            subset. True: takes effect now; the epoch restarts at position 0 on the
            new subset, and an iterator in progress continues with the new order.
            Indices a ``DataLoader`` has already prefetched still come from the old one.
        """
        if isinstance(indices, SubsetFile):
            weights = indices.weights if weights is None else weights
            indices = indices.indices
        new = _validate(indices, weights)
        self._check_weights(*new)
        if immediate:
            self._indices, self._weights = new
            self._pending = None
            self._position = 0
            self._generation += 1
        else:
            self._pending = new

    # ------------------------------------------------------------------ checkpoint
    def state_dict(self, consumed: int | None = None) -> dict[str, Any]:
        """Everything needed to continue this epoch exactly.

        Parameters
        ----------
        consumed : int, optional
            Samples of the current epoch actually consumed by the training loop
            (a ``DataLoader`` prefetches, so the sampler's own position runs ahead).
            Default: the sampler's position.

        Returns
        -------
        dict
            ``epoch``, ``position``, ``seed``, ``weighted``, ``shuffle``,
            ``replacement``, ``num_samples``, ``fingerprint`` and the active (and
            pending) subset as torch tensors (safe for ``torch.load(weights_only=True)``).
        """
        position = self._position if consumed is None else int(consumed)
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"state_dict: consumed={consumed} outside [0, {self.num_samples}]")
        state: dict[str, Any] = {
            "epoch": self.epoch,
            "position": position,
            "seed": self.seed,
            "weighted": self.weighted,
            "shuffle": self.shuffle,
            "replacement": self.replacement,
            "num_samples": self._num_samples,
            "fingerprint": _fingerprint(self._indices, self._weights),
            "indices": torch.from_numpy(self._indices.copy()),
            "weights": torch.from_numpy(self._weights.copy()),
        }
        if self._pending is not None:
            state["pending_indices"] = torch.from_numpy(self._pending[0].copy())
            state["pending_weights"] = torch.from_numpy(self._pending[1].copy())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a :meth:`state_dict`; the next ``iter()`` continues mid-epoch.

        Without ``indices`` in ``state`` the active subset must have the recorded
        ``fingerprint``.
        """
        if "indices" in state:
            self._indices, self._weights = _validate(state["indices"], state.get("weights"))
        elif state.get("fingerprint") not in (None, _fingerprint(self._indices, self._weights)):
            raise ValueError(
                "SubsetSampler.load_state_dict: the checkpoint was taken on a different "
                "subset (fingerprint mismatch) and carries no indices; build the sampler "
                "from the same subset file"
            )
        if "pending_indices" in state:
            self._pending = _validate(state["pending_indices"], state.get("pending_weights"))
        else:
            self._pending = None
        for key in ("seed",):
            if key in state:
                setattr(self, key, int(state[key]))
        for key in ("weighted", "shuffle", "replacement"):
            if key in state:
                setattr(self, key, bool(state[key]))
        if "num_samples" in state:
            self._num_samples = None if state["num_samples"] is None else int(state["num_samples"])
        self.epoch = int(state["epoch"])
        self._position = int(state["position"])
        self._generation += 1
        self._cache = None
