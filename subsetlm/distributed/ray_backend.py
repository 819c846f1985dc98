"""Ray executor: stage tasks as Ray tasks, stateful work on a pool of restartable Ray actors.

``ray_executor(address)`` returns a :class:`RayExecutor`, used two ways:

* ``run(func, tasks)`` -- every ``func(task)`` is a Ray task (``num_cpus`` each, retried up
  to ``max_retries`` times when its worker dies); results come back in task order. Index
  (kNN search blocks, k-means assignment) and select (one task per partition) use it; the
  tasks read the store through paths every node can read (one machine or a shared
  filesystem), so results are the same as the local backend's.
* ``run.map_stateful(setup, func, tasks, progress=None, num_gpus=0)`` -- a pool of
  ``actors`` Ray actors (default: :func:`cluster_actors`), each building ``state =
  setup()`` once (a model) and running ``func(state, task)`` on the tasks it is handed, at
  most two at a time (so it never waits for the driver). ``tasks`` may be lazy: a task is
  drawn only when an actor has room, so the driver holds a few tasks at a time. A dead
  actor is restarted (``setup`` again) and its tasks retried; an exception raised by
  ``func`` is not retried: it ends the map. ``(task_number, result)`` pairs are yielded as
  tasks finish (any order); closing the iterator early kills the actors.

Example
-------
With a cluster started by ``ray start --head``:

>>> run = ray_executor("auto")                      # doctest: +SKIP
>>> partitioned_greedy(X, labels, 1000, executor=run)  # doctest: +SKIP
>>> for i, rows in run.map_stateful(make_model, embed_shard, shards):  # doctest: +SKIP
...     pass
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Iterable, Iterator

from subsetlm.distributed.executor import reporting

logger = logging.getLogger(__name__)

_IN_FLIGHT = 2  # tasks queued on one actor: the next one is ready when the current one ends


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
        logger.info("ray: connected to %s (%d node(s), %g CPUs)", address or "a local instance",
                    len([n for n in ray.nodes() if n.get("Alive")]), res.get("CPU", 0))
    return ray


def cluster_actors(ray: Any, num_gpus: float, num_cpus: float) -> int:
    """Default pool size: as many actors as the cluster has GPUs for (``num_gpus`` each), else CPUs for.

    Raises ``ValueError`` when the actors ask for GPUs and the cluster has none.
    """
    res = ray.cluster_resources()
    if num_gpus > 0:
        n = int(res.get("GPU", 0) // num_gpus)
        if n < 1:
            raise ValueError(f"the Ray workers ask for {num_gpus:g} GPU each (--device cuda), but the Ray cluster "
                             f"has no GPUs; use --device cpu or start the nodes with GPUs")
        return n
    return max(1, int(res.get("CPU", 1) // num_cpus))


def _apply(func: Callable, task: Any) -> Any:
    return func(task)


class _Worker:
    """The actor of :meth:`RayExecutor.map_stateful`: one state, built once (again after a restart)."""

    def __init__(self, setup: Callable[[], Any]) -> None:
        self.state = setup()

    def run(self, func: Callable[[Any, Any], Any], task: Any) -> tuple[Any, int]:
        units = [0]

        def count(n: int) -> None:
            units[0] += n

        with reporting(count):
            result = func(self.state, task)
        return result, units[0]


def _name(func: Callable) -> str:
    inner = getattr(func, "func", func)  # functools.partial: its func
    return getattr(inner, "__name__", type(inner).__name__)


class RayExecutor:
    """Runs tasks on the Ray cluster at ``address``; see the module docstring.

    Parameters
    ----------
    address : ``auto``, ``HOST:PORT``; None: ``RAY_ADDRESS`` or a local Ray instance.
    num_cpus : CPUs per task and per actor.
    max_retries : retries of a plain task whose worker died.
    actors : actors of a ``map_stateful`` pool (None: :func:`cluster_actors`).
    """

    def __init__(self, address: str | None = None, *, num_cpus: float = 1.0, max_retries: int = 3,
                 actors: int | None = None) -> None:
        if actors is not None and (not isinstance(actors, int) or actors < 1):
            raise ValueError(f"actors={actors!r}; expected a positive integer or None (one per GPU / CPU)")
        self.address, self.num_cpus, self.max_retries, self.actors = address, num_cpus, max_retries, actors

    def __call__(self, func: Callable, tasks: list) -> list:
        ray = connect(self.address)
        remote = ray.remote(num_cpus=self.num_cpus, max_retries=self.max_retries)(_apply)
        fn = ray.put(func)  # any picklable callable, shipped once
        refs = [remote.remote(fn, t) for t in tasks]
        logger.info("ray: %d task(s) of %s submitted", len(refs), _name(func))
        return ray.get(refs)

    def map_stateful(self, setup: Callable[[], Any], func: Callable[[Any, Any], Any], tasks: Iterable[Any], *,
                     progress: Callable[[int], None] | None = None, num_gpus: float = 0.0
                     ) -> Iterator[tuple[int, Any]]:
        """Yield ``(i, func(state, task_i))`` as the actors finish them (see the module docstring)."""
        ray = connect(self.address)
        size = self.actors or cluster_actors(ray, num_gpus, self.num_cpus)  # actors start only while tasks wait
        worker = ray.remote(_Worker).options(num_cpus=self.num_cpus, num_gpus=num_gpus, max_restarts=-1,
                                             max_task_retries=-1)
        setup_ref, func_ref = ray.put(setup), ray.put(func)
        todo = iter(enumerate(tasks))
        actors: list[Any] = []
        load: list[int] = []  # tasks in flight per actor
        pending: dict[Any, tuple[int, int]] = {}  # ref -> (task number, actor number)
        held: tuple[int, Any] | None = None  # a task drawn, waiting for an actor with room

        def pick() -> int | None:
            """An idle actor, else a new one while the pool is not full, else the least loaded with room."""
            idle = [a for a in range(len(actors)) if load[a] == 0]
            if idle:
                return idle[0]
            if len(actors) < size:
                actors.append(worker.remote(setup_ref))  # started only once there is a task for it
                load.append(0)
                return len(actors) - 1
            room = [a for a in range(len(actors)) if load[a] < _IN_FLIGHT]
            return min(room, key=lambda a: load[a]) if room else None

        def submit() -> None:
            nonlocal held
            while True:
                if held is None:
                    held = next(todo, None)
                    if held is None:
                        return
                a = pick()
                if a is None:
                    return
                pending[actors[a].run.remote(func_ref, held[1])] = (held[0], a)
                load[a] += 1
                held = None

        try:
            submit()
            logger.info("ray: %s on %d actor(s) of %s", _name(func), len(actors), _name(setup))
            while pending:
                (ref,), _ = ray.wait(list(pending), num_returns=1)
                i, a = pending.pop(ref)
                load[a] -= 1
                result, units = ray.get(ref)
                submit()  # keep the actors busy while the driver handles this result
                if progress is not None and units:
                    progress(units)
                yield i, result
        finally:
            for actor in actors:
                ray.kill(actor)

    def __repr__(self) -> str:
        return f"RayExecutor({self.address!r}, num_cpus={self.num_cpus}, actors={self.actors})"


def ray_executor(address: str | None = None, *, num_cpus: float = 1.0, max_retries: int = 3,
                 actors: int | None = None) -> RayExecutor:
    """A :class:`RayExecutor`: ``run(func, tasks) -> [func(t) for t in tasks]`` as Ray tasks, plus ``map_stateful``."""
    return RayExecutor(address, num_cpus=num_cpus, max_retries=max_retries, actors=actors)
