"""Scale-out backends. ``ray_backend``: partitioned selection as Ray tasks (``pip install subsetlm[ray]``).

Example
-------
>>> from subsetlm.distributed import executor_for
>>> executor_for("local") is None
True
"""

from __future__ import annotations

from typing import Any, Callable

BACKENDS = ("local", "ray")


def executor_for(backend: str, address: str | None = None, **kw: Any) -> Callable | None:
    """``None`` for the local backend (worker processes), else an executor ``run(func, tasks) -> results``."""
    if backend == "local":
        return None
    if backend == "ray":
        from subsetlm.distributed.ray_backend import ray_executor

        return ray_executor(address, **kw)
    raise ValueError(f"backend={backend!r}; choose one of {', '.join(BACKENDS)}")
