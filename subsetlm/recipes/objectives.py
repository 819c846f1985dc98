"""Corruption functions of the pretraining objectives (research.md §3), pure torch.

Every function takes a padded batch ``input_ids`` (B, L) int64, a boolean ``special``
mask (B, L) of positions that must never change ([CLS], [SEP], padding, ...) and a
``torch.Generator``, and returns new tensors (the input is not modified):

* :func:`mlm_corrupt` — BERT MLM: select 15% of the ordinary tokens; 80% → [MASK],
  10% → a random ordinary token, 10% kept. ``labels`` = original id at selected
  positions, -100 elsewhere.
* :func:`slm_corrupt` — swapped LM: the selected tokens are all replaced by random
  ordinary tokens (no [MASK]); labels as MLM.
* :func:`rts_corrupt` — random token substitution: 15% of the ordinary tokens replaced by
  uniformly random ordinary tokens; ``labels`` (B, L) = 1 where the token differs from the
  original, 0 at every other real position (special tokens included), -100 at padding.
* :class:`ClusterGenerator` — C-RTS: for a token of cluster s a target cluster c is drawn
  from softmax(β·minmax(K[s])) and a token uniformly from c; after the step K[s, c] += 1
  where the discriminator was fooled (called a replaced token original) and -= 1 where it
  was right. K starts at 1, β = 2.

Example
-------
>>> import torch
>>> g = torch.Generator().manual_seed(0)
>>> x = torch.tensor([[2, 10, 11, 12, 13, 3, 0]]); sp = (x <= 4)
>>> inp, lab = mlm_corrupt(x, sp, mask_id=4, normal_ids=torch.arange(5, 20), gen=g, prob=1.0)
>>> bool(((lab == -100) == sp).all())
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

IGNORE = -100


def _select(special: torch.Tensor, prob: float, gen: torch.Generator) -> torch.Tensor:
    if not 0.0 < prob <= 1.0:
        raise ValueError(f"masking probability {prob}; expected a value in (0, 1] (BERT uses 0.15)")
    u = torch.rand(special.shape, generator=gen)
    return (u < prob) & ~special


def _random_tokens(shape: torch.Size, normal_ids: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    pick = torch.randint(0, len(normal_ids), shape, generator=gen)
    return normal_ids[pick]


def mlm_corrupt(input_ids: torch.Tensor, special: torch.Tensor, *, mask_id: int, normal_ids: torch.Tensor, gen: torch.Generator, prob: float = 0.15,
                mask_frac: float = 0.8, random_frac: float = 0.1) -> tuple[torch.Tensor, torch.Tensor]:
    """BERT masking. Returns ``(inputs, labels)``, both (B, L) int64."""
    sel = _select(special, prob, gen)
    labels = torch.where(sel, input_ids, torch.full_like(input_ids, IGNORE))
    u = torch.rand(input_ids.shape, generator=gen)
    rnd = _random_tokens(input_ids.shape, normal_ids, gen)
    inputs = input_ids.clone()
    to_mask = sel & (u < mask_frac)
    to_rand = sel & (u >= mask_frac) & (u < mask_frac + random_frac)
    inputs[to_mask] = mask_id
    inputs[to_rand] = rnd[to_rand]
    return inputs, labels


def slm_corrupt(input_ids: torch.Tensor, special: torch.Tensor, *, normal_ids: torch.Tensor,
                gen: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Swapped LM: every selected token replaced by a random ordinary token. Returns ``(inputs, labels)``."""
    sel = _select(special, prob, gen)
    labels = torch.where(sel, input_ids, torch.full_like(input_ids, IGNORE))
    rnd = _random_tokens(input_ids.shape, normal_ids, gen)
    return torch.where(sel, rnd, input_ids), labels


def rts_corrupt(input_ids: torch.Tensor, special: torch.Tensor, pad: torch.Tensor, *, normal_ids: torch.Tensor,
                gen: torch.Generator, prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor]:
    """Random token substitution. Returns ``(inputs, labels)``; labels 1 = replaced, 0 = original, -100 = pad."""
    sel = _select(special, prob, gen)
    rnd = _random_tokens(input_ids.shape, normal_ids, gen)
    inputs = torch.where(sel, rnd, input_ids)
    labels = (inputs != input_ids).long()
    labels[pad] = IGNORE
    return inputs, labels


def minmax(x: torch.Tensor) -> torch.Tensor:
    """Row-wise min-max scaling to [0, 1] (a constant row becomes all zeros)."""
    lo = x.min(dim=-1, keepdim=True).values
    hi = x.max(dim=-1, keepdim=True).values
    return (x - lo) / (hi - lo).clamp_min(1e-12)


class ClusterGenerator:
    """The C-RTS light statistical generator: a C×C count matrix over token clusters.

    Parameters
    ----------
    clusters : (V,) int array, cluster of every token id, -1 for special tokens.
    beta : float, default 2.0 (the paper's value).

    Attributes
    ----------
    counts : (C, C) float64 tensor K, initialised to 1.

    Example
    -------
    >>> gen = ClusterGenerator(np.array([-1, 0, 0, 1, 1]))
    >>> gen.counts.tolist()
    [[1.0, 1.0], [1.0, 1.0]]
    """

    def __init__(self, clusters: Any, beta: float = 2.0) -> None:
        c = torch.as_tensor(np.asarray(clusters), dtype=torch.long)
        self.clusters = c
        self.beta = float(beta)
        self.n_clusters = int(c.max()) + 1
        if self.n_clusters < 2:
            raise ValueError(f"C-RTS needs at least 2 token clusters, got {self.n_clusters}")
        members = [torch.nonzero(c == k, as_tuple=False).flatten() for k in range(self.n_clusters)]
        empty = [k for k, m in enumerate(members) if len(m) == 0]
        if empty:
            raise ValueError(f"token clusters {empty[:5]} have no tokens; rebuild the cluster map")
        self.sizes = torch.tensor([len(m) for m in members], dtype=torch.long)
        self.offsets = torch.cat([torch.zeros(1, dtype=torch.long), self.sizes.cumsum(0)[:-1]])
        self.flat = torch.cat(members)
        self.counts = torch.ones((self.n_clusters, self.n_clusters), dtype=torch.float64)

    def probabilities(self) -> torch.Tensor:
        """(C, C) row-stochastic matrix softmax(β·minmax(K[s]))."""
        return torch.softmax(self.beta * minmax(self.counts), dim=-1)

    def corrupt(self, input_ids: torch.Tensor, special: torch.Tensor, pad: torch.Tensor, *, gen: torch.Generator,
                prob: float = 0.15) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """Replace 15% of the ordinary tokens by cluster-sampled tokens.

        Returns ``(inputs, labels, info)``; labels as :func:`rts_corrupt`; ``info`` holds the
        (source, target) cluster of every selected position for :meth:`update`.
        """
        sel = _select(special, prob, gen)
        pos = torch.nonzero(sel, as_tuple=True)
        src = self.clusters[input_ids[pos]]
        if (src < 0).any():
            raise ValueError("a selected token has no cluster (-1): the cluster map does not match the tokenizer")
        P = self.probabilities()[src]  # (m, C)
        tgt = torch.multinomial(P.float(), 1, generator=gen).flatten() if len(src) else src
        r = torch.rand(len(tgt), generator=gen)
        off = torch.minimum((r * self.sizes[tgt]).long(), self.sizes[tgt] - 1)
        new = self.flat[self.offsets[tgt] + off]
        inputs = input_ids.clone()
        inputs[pos] = new
        labels = (inputs != input_ids).long()
        labels[pad] = IGNORE
        return inputs, labels, {"positions": pos, "source": src, "target": tgt}

    def delta(self, info: dict, predictions: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """(C, C) change of K for one batch: +1 per fooled replacement (s, c), -1 per caught one.

        ``predictions`` (B, L) are the discriminator's argmax labels on the corrupted batch.
        Selected positions whose sampled token equals the original are not replacements and
        leave K unchanged.
        """
        out = torch.zeros_like(self.counts)
        pos = info["positions"]
        if len(info["source"]) == 0:
            return out
        replaced = (labels[pos] == 1).cpu()
        fooled = predictions[pos].cpu() == 0
        d = torch.where(fooled, 1.0, -1.0).double()[replaced]
        out.index_put_((info["source"][replaced], info["target"][replaced]), d, accumulate=True)
        return out

    def update(self, info: dict, predictions: torch.Tensor, labels: torch.Tensor) -> None:
        """K[s, c] += 1 where a replaced token was called original (fooled), -= 1 where it was caught."""
        self.counts += self.delta(info, predictions, labels)

    def state_dict(self) -> dict:
        return {"counts": self.counts.clone(), "beta": self.beta}

    def load_state_dict(self, state: dict) -> None:
        counts = state["counts"].double()
        if counts.shape != self.counts.shape:
            raise ValueError(f"C-RTS count matrix {tuple(counts.shape)} does not match {tuple(self.counts.shape)} "
                             f"clusters of this tokenizer")
        self.counts = counts.clone()
        self.beta = float(state.get("beta", self.beta))
