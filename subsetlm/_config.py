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
import types
import typing
from pathlib import Path
from typing import Any


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read ``run.yaml`` / ``run.json`` into a dict (``ValueError`` naming the file, on one line)."""
    path = Path(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise FileNotFoundError(f"config file {path} {what}; pass --config RUN.yaml (or .json)")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"config file {path}: invalid UTF-8 at byte {exc.start}; save it as UTF-8") from None
    except OSError as exc:
        raise ValueError(f"config file {path}: cannot read ({exc.strerror or exc}); check its permissions") from None
    try:
        if path.suffix in (".yaml", ".yml"):
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as exc:  # noqa: BLE001 - re-raised with the file name
        why = " ".join(str(exc).split())  # YAML errors span lines; the CLI prints one
        raise ValueError(f"could not parse config file {path}: {why}; fix the syntax (a mapping of field: value)") \
            from None
    if not isinstance(data, dict):
        raise ValueError(f"config file {path} must hold a mapping of field: value, got {type(data).__name__}")
    return data


def build_config(cls: type, file_values: dict[str, Any] | None = None, overrides: dict[str, Any] | None = None,
                 file: str | Path | None = None) -> Any:
    """Instantiate dataclass ``cls`` from file values updated with non-None overrides.

    Unknown keys raise ``ValueError`` listing the valid fields; types are checked
    (:func:`_check_type`). ``file`` (the config file's path) is named in the errors.
    """
    fields = {f.name: f for f in dataclasses.fields(cls)}
    hints = typing.get_type_hints(cls)
    values: dict[str, Any] = {}
    where = f"config file {file}" if file else "config file"
    for source, mapping in ((where, file_values or {}), ("command line", overrides or {})):
        for key, value in mapping.items():
            if not isinstance(key, str):
                raise ValueError(f"{source}: key {key!r} ({type(key).__name__}) is not a field name; keys are "
                                 f"{cls.__name__} fields: {', '.join(sorted(fields))}")
            key = key.replace("-", "_")
            if key not in fields:
                raise ValueError(
                    f"unknown {cls.__name__} field {key!r} from the {source}; valid fields: {', '.join(sorted(fields))}"
                )
            if value is None and source == "command line":
                continue
            values[key] = _check_type(cls.__name__, key, value, hints.get(key), source)
    return cls(**values)


def _check_type(owner: str, key: str, value: Any, hint: Any, source: str = "config file") -> Any:
    """``value`` checked against the field's type hint (and converted where the flag would be).

    An int is accepted for a float; a number for a str (``budget: 0.25`` reads like
    ``--budget 0.25``); a single str for a list of str (``corpus: c.jsonl``). Anything
    else that does not fit raises ``TypeError`` naming the field, what it expects and where
    the value came from.
    """
    if hint is None:
        return value
    origin = typing.get_origin(hint)
    allowed = typing.get_args(hint) if origin in (typing.Union, types.UnionType) else (hint,)
    for strict in (True, False):
        for a in allowed:
            ok, out = _coerce(value, a, strict)
            if ok:
                return out
    shown = repr(value)
    shown = shown if len(shown) <= 60 else shown[:57] + "..."
    raise TypeError(f"{owner}.{key} expects {_hint_name(hint)}, got {shown} ({type(value).__name__}) from the "
                    f"{source}; give a value of that type")


def _coerce(value: Any, a: Any, strict: bool) -> tuple[bool, Any]:
    """``(fits, converted value)`` of ``value`` for type ``a``; ``strict`` allows no conversion."""
    if a is Any:
        return True, value
    if a is type(None):
        return value is None, value
    origin = typing.get_origin(a)
    if origin is list:
        (item,) = typing.get_args(a) or (Any,)
        if isinstance(value, str) and not strict:
            value = [value]
        if not isinstance(value, list):
            return False, value
        items = [_coerce(v, item, strict) for v in value]
        return all(ok for ok, _ in items), [v for _, v in items]
    if origin is dict:
        kt, vt = typing.get_args(a) or (Any, Any)
        if not isinstance(value, dict):
            return False, value
        keys = [_coerce(k, kt, strict) for k in value]
        vals = [_coerce(v, vt, strict) for v in value.values()]
        return all(ok for ok, _ in keys + vals), {k: v for (_, k), (_, v) in zip(keys, vals)}
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if a is bool:
        return isinstance(value, bool), value
    if a is int:
        return number and isinstance(value, int), value
    if a is float:
        return (number, float(value)) if isinstance(value, int) and not strict else (isinstance(value, float), value)
    if a is str:
        return (number, str(value)) if number and not strict else (isinstance(value, str), value)
    if isinstance(a, type):
        return isinstance(value, a), value
    return True, value  # a hint this loader does not check


def _hint_name(hint: Any) -> str:
    """``int``, ``str | None``, ``list[str]`` (not ``<class 'int'>``)."""
    return hint.__name__ if isinstance(hint, type) else str(hint).replace("typing.", "")
