"""A tiny name -> object registry for embedders, optimizers, functions, recipes.

Example
-------
>>> from subsetlm.registry import register, get
>>> @register("greeter", "hello")
... def hello():
...     return "hi"
>>> get("greeter", "hello")()
'hi'
"""

from __future__ import annotations

from typing import Any, Callable

_REGISTRY: dict[str, dict[str, Any]] = {}


def register(kind: str, name: str) -> Callable[[Any], Any]:
    """Decorator that registers ``obj`` under ``(kind, name)``."""

    def deco(obj: Any) -> Any:
        table = _REGISTRY.setdefault(kind, {})
        if name in table and table[name] is not obj:
            raise ValueError(f"{kind} {name!r} is already registered to {table[name]!r}")
        table[name] = obj
        return obj

    return deco


def get(kind: str, name: str) -> Any:
    """Return the object registered as ``(kind, name)``.

    Raises
    ------
    ValueError
        If the name is unknown; the message lists the valid choices.
    """
    table = _REGISTRY.get(kind, {})
    if name not in table:
        choices = ", ".join(sorted(table)) or "(none registered)"
        raise ValueError(f"unknown {kind} {name!r}; choose one of: {choices}")
    return table[name]


def names(kind: str) -> list[str]:
    """Sorted registered names of ``kind``."""
    return sorted(_REGISTRY.get(kind, {}))
