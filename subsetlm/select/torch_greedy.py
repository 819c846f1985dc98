"""Dense facility-location greedy in torch, for a GPU (also runs on CPU).

f(S) = sum_i max_{j in S} max(x_i . x_j, 0) with gains computed on the fly from the
embeddings on the device, never an ``n x n`` matrix: a batched lazy greedy keeps an upper
bound ``ub[j]`` on every gain (exact at the start, stale later, valid by submodularity); each
step evaluates the ``batch`` non-fresh candidates with the largest bounds in one
``(batch, d) x (d, n)`` product and selects the argmax of ``ub`` as soon as it is fresh. This
picks what naive greedy picks (up to float rounding; ties to the smallest index).

Example
-------
>>> import numpy as np
>>> X = np.random.default_rng(0).normal(size=(200, 16)).astype(np.float32)
>>> res = torch_greedy(X, 20, device="cpu")
>>> res.order.shape
(20,)
"""

from __future__ import annotations

import logging
import math
import time
from typing import Any

import numpy as np

from subsetlm._device import resolve_device
from subsetlm.select.greedy import GreedyResult, _schedule

logger = logging.getLogger(__name__)

__all__ = ["torch_greedy"]


def torch_greedy(X: Any, budget: int, *, device: str = "auto", dtype: str = "float32", batch: int = 16,
                 chunk_size: int = 2048, record_bound: bool = True, progress: bool = False) -> GreedyResult:
    """Greedy dense facility location on a torch device.

    Parameters
    ----------
    X : (n, d) float array or torch tensor (rows usually L2-normalised).
    budget : int, 1 <= budget <= n.
    device : ``"auto"`` (cuda if available), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    dtype : ``"float32"`` (GPU default) or ``"float64"``.
    batch : candidates evaluated together per lazy re-evaluation.
    chunk_size : candidates per block in the initial all-gains pass (memory chunk_size * n).
    record_bound : compute the certificate (f + sum of the b largest gain upper bounds).

    Returns
    -------
    GreedyResult with ``optimizer="torch-lazy"``; ``info["device"]`` names the device.
    """
    import torch

    t0 = time.perf_counter()
    dev = torch.device(resolve_device(device))
    tdtype = {"float32": torch.float32, "float64": torch.float64}.get(dtype)
    if tdtype is None:
        raise ValueError(f"dtype must be 'float32' or 'float64'; got {dtype!r}")
    Xt = torch.as_tensor(np.asarray(X) if not isinstance(X, torch.Tensor) else X)
    if Xt.ndim != 2 or Xt.shape[0] == 0:
        raise ValueError(f"X: expected a non-empty (n, d) array; got shape {tuple(Xt.shape)}")
    if not torch.is_floating_point(Xt):
        raise TypeError(f"X: expected a float array; got dtype {Xt.dtype}")
    Xt = Xt.to(device=dev, dtype=tdtype)
    if not bool(torch.isfinite(Xt).all()):
        raise ValueError("X contains NaN or inf; drop or re-embed those rows")
    n = Xt.shape[0]
    if isinstance(budget, bool) or not isinstance(budget, (int, np.integer)) or not 1 <= budget <= n:
        raise ValueError(f"budget={budget!r} must be an int in [1, n={n}]")
    b = int(budget)
    cur = torch.zeros(n, device=dev, dtype=tdtype)

    def rows(c: torch.Tensor) -> torch.Tensor:
        return (Xt[c] @ Xt.T).clamp_(min=0)

    def gains_of(S: torch.Tensor) -> torch.Tensor:
        return (S - cur).clamp_(min=0).sum(dim=1, dtype=torch.float64)

    ub = torch.empty(n, device=dev, dtype=torch.float64)
    for s in range(0, n, chunk_size):
        c = torch.arange(s, min(s + chunk_size, n), device=dev)
        ub[c] = gains_of(rows(c))
    evals = n
    neg_inf = torch.tensor(-math.inf, device=dev, dtype=torch.float64)
    fresh_at = torch.zeros(n, device=dev, dtype=torch.long)  # step at which ub[j] was computed
    order = np.empty(b, np.int64)
    gains = np.empty(b, np.float64)
    bound, value = math.inf, 0.0
    sched = _schedule(b) if record_bound else set()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=b, desc="torch greedy", unit="pick")
    for t in range(b):
        if t in sched:
            top = torch.topk(ub.clamp(min=0), min(b, n - t)).values
            bound = min(bound, value + float(top.sum()))
        while True:
            j = int(torch.argmax(ub))  # first maximum = smallest index on ties
            if int(fresh_at[j]) == t:
                break
            stale = ub.masked_fill(fresh_at == t, -math.inf)
            m = min(batch, int(torch.isfinite(stale).sum()))
            c = torch.topk(stale, m).indices
            ub[c] = gains_of(rows(c))
            fresh_at[c] = t
            evals += m
        g = float(ub[j])
        order[t], gains[t] = j, g
        value += g
        cur = torch.maximum(cur, rows(torch.tensor([j], device=dev))[0])
        ub[j] = neg_inf
        fresh_at[j] = -1
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    if record_bound and b < n:
        top = torch.topk(ub.clamp(min=0), min(b, n - b)).values
        bound = min(bound, value + float(top.sum()))
    objective = float(cur.sum(dtype=torch.float64))
    bound = max(bound, objective) if record_bound else math.inf
    info = {"device": str(dev), "seconds": time.perf_counter() - t0}
    logger.info("torch greedy on %s: %d picks, f=%.6g, bound=%.6g, %.2fs", dev, b, objective, bound, info["seconds"])
    return GreedyResult(order, gains, objective, float(bound), int(evals), "torch-lazy", None, info)
