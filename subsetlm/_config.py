"""Build a stage's config dataclass from a YAML/JSON file plus command-line overrides.

Example
-------
>>> from dataclasses import dataclass
>>> @dataclass
... class C:
...     k: int = 32
...     kind: str = "auto"
>>> build_config(C, file_values={"k": 8}, overrides={"kind": "flat"})
C(k=8, kind='flat')
"""

from __future__ import annotations

import dataclasses
import json
import typing
from pathlib import Path
from typing import Any


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read ``run.yaml`` / ``run.json`` into a dict (error names the file on failure)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"config file {path} does not exist")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        raise ValueError(f"could not parse config file {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def build_config(cls: type, file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None) -> Any:
    """Instantiate dataclass ``cls`` from file values updated with non-None overrides.

    Unknown keys raise ``ValueError`` listing the valid fields; simple types are checked.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    for source, mapping in (("config file", file_values or {}), ("command line", overrides or {})):
        for key, value in mapping.items():
            key = key.replace("-", "_")
            if key not in fields:
                raise ValueError(
                    f"unknown {cls.__name__} field {key!r} from the {source}; valid fields: {', '.join(sorted(fields))}"
                )
            if value is None and source == "command line":
                continue
            values[key] = _check_type(cls.__name__, key, value, hints.get(key))
    return cls(**values)


def _check_type(owner: str, key: str, value: Any, hint: Any) -> Any:
    if hint is None or value is None:
        return value
    origin = typing.get_origin(hint)
    allowed = typing.get_args(hint) if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)) else (hint,)
    simple = [a for a in allowed if a in (int, float, str, bool)]
    if not simple or any(isinstance(value, a) for a in allowed if isinstance(a, type)):
        if not (isinstance(value, bool) and bool not in allowed and int in allowed):
            return value
    for a in simple:
        if a is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
    raise TypeError(f"{owner}.{key} expects {hint}, got {value!r} ({type(value).__name__})")
