"""The in-process executor and the progress channel every executor shares.

:class:`InProcess` runs tasks one after the other in this process: ``run(func, tasks)``
is ``[func(t) for t in tasks]`` and ``map_stateful(setup, func, tasks)`` builds the state
once and loops. Task code calls :func:`report_progress` (``n`` units done); the executor
that runs it forwards the units to the driver's ``progress`` callback: directly here, and
summed per finished task by the Ray executor (:mod:`subsetlm.distributed.ray_backend`).

Example
-------
>>> seen = []
>>> def work(state, task):
...     report_progress(task)
...     return state * task
>>> list(IN_PROCESS.map_stateful(lambda: 3, work, [1, 2], progress=seen.append))
[(0, 3), (1, 6)]
>>> seen
[1, 2]
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from typing import Any, Callable, Iterable, Iterator

logger = logging.getLogger(__name__)

_PROGRESS: contextvars.ContextVar[Callable[[int], None] | None] = contextvars.ContextVar("subsetlm_progress",
                                                                                        default=None)


def report_progress(n: int) -> None:
    """Task code: ``n`` more units are done (forwarded to the driver's progress callback, if any)."""
    cb = _PROGRESS.get()
    if cb is not None:
        cb(int(n))


@contextlib.contextmanager
def reporting(callback: Callable[[int], None] | None) -> Iterator[None]:
    """Send the :func:`report_progress` calls made inside the block to ``callback``."""
    token = _PROGRESS.set(callback)
    try:
        yield
    finally:
        _PROGRESS.reset(token)


class InProcess:
    """An executor that runs every task in this process, in task order.

    Used where a stage's local backend needs no worker processes (embedding: the model
    already runs on all cores). ``num_gpus`` and other resource requests are ignored.
    """

    def __call__(self, func: Callable[[Any], Any], tasks: Iterable[Any]) -> list[Any]:
        return [func(t) for t in tasks]

    def map_stateful(self, setup: Callable[[], Any], func: Callable[[Any, Any], Any], tasks: Iterable[Any], *,
                     progress: Callable[[int], None] | None = None, num_gpus: float = 0.0
                     ) -> Iterator[tuple[int, Any]]:
        """Build ``state = setup()`` once, then yield ``(i, func(state, task_i))`` in task order.

        ``tasks`` may be a lazy iterable: each task is drawn only when the previous one is done.
        """
        del num_gpus  # one process, one state: nothing to place
        state = setup()
        for i, task in enumerate(tasks):
            with reporting(progress):
                result = func(state, task)
            yield i, result

    def __repr__(self) -> str:
        return "InProcess()"


IN_PROCESS = InProcess()
