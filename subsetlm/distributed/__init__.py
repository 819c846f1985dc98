"""Executors: where the tasks of a stage run (in this process, worker processes, or a Ray cluster).

An *executor* is a callable ``executor(func, tasks) -> [func(t) for t in tasks]`` (results
in task order); index and select hand it their per-block / per-partition tasks. For work
that needs a costly state per worker (a model loaded once), an executor also has
``map_stateful(setup, func, tasks, progress=None, num_gpus=0)``: every worker builds
``state = setup()`` once and runs ``func(state, task)`` for its tasks, yielding
``(task_number, result)`` as the tasks finish. Task code reports progress with
:func:`report_progress`; the driver's ``progress`` callback receives it (live in process,
per finished task on Ray).

``executor_for("local")`` is ``None``: each stage then runs its own local way (worker
processes for index and select, :data:`IN_PROCESS` for embed). This package is generic:
it imports no stage package.

Example
-------
>>> from subsetlm.distributed import executor_for, map_stateful
>>> executor_for("local") is None
True
>>> list(map_stateful(None, lambda: 10, lambda state, t: state + t, [1, 2]))
[(0, 11), (1, 12)]
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Iterator

from subsetlm.distributed.executor import IN_PROCESS, InProcess, report_progress, reporting

__all__ = ["BACKENDS", "executor_for", "map_stateful", "IN_PROCESS", "InProcess", "report_progress", "reporting"]

BACKENDS = ("local", "ray")


def executor_for(backend: str, address: str | None = None, **kw: Any) -> Callable | None:
    """``None`` for the local backend, else an executor ``run(func, tasks) -> results`` with ``map_stateful``.

    Parameters
    ----------
    backend : {"local", "ray"}
    address : the Ray cluster (``auto``, ``HOST:PORT``; None: ``RAY_ADDRESS`` or a local instance).
    **kw : passed to :func:`~subsetlm.distributed.ray_backend.ray_executor` (``num_cpus``,
        ``max_retries``, ``actors``).
    """
    if backend == "local":
        return None
    if backend == "ray":
        from subsetlm.distributed.ray_backend import ray_executor

        return ray_executor(address, **kw)
    raise ValueError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")


def map_stateful(executor: Any, setup: Callable[[], Any], func: Callable[[Any, Any], Any], tasks: Iterable[Any],
                 **kw: Any) -> Iterator[tuple[int, Any]]:
    """``executor.map_stateful(...)``, or in this process when ``executor`` is None (see the module docstring)."""
    return (IN_PROCESS if executor is None else executor).map_stateful(setup, func, tasks, **kw)
