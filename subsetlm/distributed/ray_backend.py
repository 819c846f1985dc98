"""Ray backend: run the per-partition selection tasks on a Ray cluster.

:func:`subsetlm.select.partitioned.partitioned_greedy` turns a selection into one task per
partition (its row ids, its budget share, its seed ``SeedSequence([seed, p])``). Locally
the tasks run in worker processes; with ``executor=ray_executor(address)`` each is a Ray
task (1 CPU, retried up to ``max_retries`` times when its worker dies). A task reads only
its own rows of the store's ``embeddings.npy`` (memory-mapped), builds its kNN graph and
runs the greedy, so the cluster needs the store on a path every node can read (the same
machine, or a shared filesystem). The tasks and the merge are the same code as the local
backend, so the subset file is byte-identical (``backend`` is not part of the manifest's
config: it says how, not what).

Example
-------
>>> run = ray_executor("auto")                      # doctest: +SKIP  (needs `ray start --head`)
>>> partitioned_greedy(X, labels, 1000, executor=run)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
from typing import Any, Callable

log = logging.getLogger(__name__)


def _ray() -> Any:
    try:
        import ray
    except ImportError as e:  # pragma: no cover - depends on the install
        raise ImportError("the ray backend needs Ray: pip install 'subsetlm[ray]' (or ray[data])") from e
    return ray


def connect(address: str | None = None) -> Any:
    """Connect to the Ray cluster at ``address`` (``auto``, ``HOST:PORT``; None: ``RAY_ADDRESS`` or a local one)."""
    ray = _ray()
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False, configure_logging=False)
        res = ray.cluster_resources()
        log.info("ray: connected to %s (%d node(s), %g CPUs)", address or "a local instance",
                 len([n for n in ray.nodes() if n.get("Alive")]), res.get("CPU", 0))
    return ray


def _apply(func: Callable, task: Any) -> Any:
    return func(task)


def ray_executor(address: str | None = None, *, num_cpus: float = 1.0, max_retries: int = 3) -> Callable:
    """An executor ``run(func, tasks) -> [func(t) for t in tasks]`` whose calls are Ray tasks, results in task order."""

    def run(func: Callable, tasks: list) -> list:
        ray = connect(address)
        remote = ray.remote(num_cpus=num_cpus, max_retries=max_retries)(_apply)
        fn = ray.put(func)  # any picklable callable, shipped once
        refs = [remote.remote(fn, t) for t in tasks]
        name = getattr(getattr(func, "func", func), "__name__", "a function")  # functools.partial: its func
        log.info("ray: %d task(s) of %s submitted", len(refs), name)
        return ray.get(refs)

    return run
