"""Help of the ``subsetlm`` commands: each flag's default, read from its stage's config dataclass.

A command's flags default to None (a flag not given leaves the config's own default), so
argparse cannot show the defaults itself. :class:`HelpParser` (the class of every command's
parser) appends ``(default: X)`` to each flag's help when ``subsetlm COMMAND --help`` is
formatted: X is the field default of the config class of the command's stage
(``STAGE = Stage(name, Config, ...)`` in the module its ``stage`` names; argparse's default
for a flag with no field), ``on``/``off`` for a switch. A flag whose help already speaks of
its default, or whose field defaults to None or an empty value (a default worked out at run
time, described in words in the help), is left as written.

The config classes are read from their source with :mod:`ast`, not imported: the stage
modules import numpy, FAISS or torch, and ``--help`` should answer at once. A default the
reader cannot evaluate (anything but literals, arithmetic on them and module constants) is
not shown; ``tests/test_cli_help.py`` checks that every default shown equals the dataclass's.

Example
-------
>>> config_defaults("subsetlm.index.run")["k"]
32
>>> describe([1, "all"]), describe({"pubmed": 0.7}), describe(None)
('1 all', 'pubmed=0.7', None)
"""

from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent  # the subsetlm package


class HelpParser(argparse.ArgumentParser):
    """A command's parser: its help keeps the epilog's line breaks and shows each flag's default."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", argparse.RawDescriptionHelpFormatter)
        super().__init__(*args, **kwargs)

    def format_help(self) -> str:
        stage = self.get_default("stage")
        if stage and not getattr(self, "_defaults_shown", False):
            add_defaults(self, config_defaults(stage))
            self._defaults_shown = True
        return super().format_help()


def example(*lines: str) -> str:
    """An epilog of example command lines: ``example:`` then each line indented."""
    return ("examples:\n" if len(lines) > 1 else "example:\n") + "\n".join(f"  {line}" for line in lines)


def describe(value: Any) -> str | None:
    """A default as it is typed on the command line (None for none / empty: described in words)."""
    if value is None or value == "" or value == [] or value == {}:
        return None
    if isinstance(value, dict):
        return " ".join(f"{k}={describe(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return " ".join(str(describe(v)) for v in value)
    return str(value)


def default_text(action: argparse.Action, defaults: dict[str, Any]) -> str | None:
    """What ``(default: ...)`` says for ``action``: the config field's default, else argparse's."""
    value = defaults.get(action.dest, action.default)
    if isinstance(action, (argparse._StoreTrueAction, argparse._StoreFalseAction)):
        if action.dest in defaults:  # a switch: on when the field's default is what the flag sets
            return "on" if value == action.const else "off"
        return "on" if value else "off"
    return describe(value)


def add_defaults(parser: argparse.ArgumentParser, defaults: dict[str, Any]) -> None:
    """Append ``(default: X)`` to the help of every flag of ``parser`` whose help does not speak of its default."""
    for action in parser._actions:
        if not action.option_strings or action.help in (None, argparse.SUPPRESS):
            continue
        if isinstance(action, (argparse._HelpAction, argparse._VersionAction)):
            continue
        text = default_text(action, defaults)
        if text is not None and "default" not in action.help.lower():
            action.help = f"{action.help} (default: {text.replace('%', '%%')})"  # help is %-formatted


# ---- the config dataclass of a stage, read from its source ----------------------------------------------


class _Unknown(Exception):
    """An expression the reader does not evaluate (its default is not shown)."""


_MISSING = object()


def config_defaults(stage_module: str) -> dict[str, Any]:
    """``{field: default}`` of the config class of ``stage_module``'s ``STAGE`` (fields without one left out)."""
    import ast

    try:
        tree = _parse(stage_module)
    except (_Unknown, OSError, SyntaxError):
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "STAGE" for t in node.targets) \
                and isinstance(node.value, ast.Call) and len(node.value.args) >= 2 \
                and isinstance(node.value.args[1], ast.Name):
            try:
                return dict(_fields(stage_module, node.value.args[1].id))
            except _Unknown:
                return {}
    return {}


def _fields(module: str, name: str, depth: int = 0) -> list[tuple[str, Any]]:
    import ast

    module, cls = _find(module, name, ast.ClassDef, depth)
    out: list[tuple[str, Any]] = []
    for base in cls.bases:  # a dataclass's fields follow its bases'
        if isinstance(base, ast.Name) and base.id != "object":
            out += _fields(module, base.id, depth + 1)
    for node in cls.body:
        if not isinstance(node, ast.AnnAssign) or not isinstance(node.target, ast.Name) \
                or "ClassVar" in ast.unparse(node.annotation):
            continue
        try:
            value = _field_default(module, node.value, depth)
        except _Unknown:
            continue
        if value is not _MISSING:
            out.append((node.target.id, value))
    return out


def _field_default(module: str, node: Any, depth: int) -> Any:
    import ast

    if node is None:
        return _MISSING
    if isinstance(node, ast.Call) and ast.unparse(node.func) in ("field", "dataclasses.field"):
        kw = {k.arg: k.value for k in node.keywords}
        if "default" in kw:
            return _eval(module, kw["default"], depth)
        factory = kw.get("default_factory")
        if isinstance(factory, ast.Name) and factory.id in ("list", "dict", "tuple", "set"):
            return {"list": [], "dict": {}, "tuple": (), "set": set()}[factory.id]
        if isinstance(factory, ast.Lambda):
            return _eval(module, factory.body, depth)
        if factory is None:
            return _MISSING
        raise _Unknown(ast.unparse(node))
    return _eval(module, node, depth)


def _eval(module: str, node: Any, depth: int) -> Any:
    """Literals, + - * / // ** on them, and module constants (followed through imports)."""
    import ast
    import operator

    ops = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.FloorDiv: operator.floordiv, ast.Pow: operator.pow}
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = _eval(module, node.operand, depth)
        return -v if isinstance(node.op, ast.USub) else +v
    if isinstance(node, ast.BinOp) and type(node.op) in ops:
        return ops[type(node.op)](_eval(module, node.left, depth), _eval(module, node.right, depth))
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_eval(module, e, depth) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict) and None not in node.keys:
        return {_eval(module, k, depth): _eval(module, v, depth) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name):
        where, value = _find(module, node.id, ast.Assign, depth)
        return _eval(where, value, depth + 1)
    raise _Unknown(ast.unparse(node))


def _find(module: str, name: str, kind: type, depth: int) -> tuple[str, Any]:
    """(module, node) defining ``name`` in ``module``: a class (``kind=ClassDef``) or a constant's value."""
    import ast

    if depth > 8:
        raise _Unknown(name)
    tree = _parse(module)
    for node in tree.body:
        if kind is ast.ClassDef and isinstance(node, ast.ClassDef) and node.name == name:
            return module, node
        if kind is ast.Assign:
            if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == name for t in node.targets):
                return module, node.value
            if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name) and node.target.id == name \
                    and node.value is not None:
                return module, node.value
    for node in tree.body:
        if isinstance(node, ast.ImportFrom):
            for a in node.names:
                if (a.asname or a.name) == name:
                    return _find(_absolute(module, node), a.name, kind, depth + 1)
    raise _Unknown(f"{module}.{name}")


def _absolute(module: str, node: Any) -> str:
    """The module an ``ImportFrom`` in ``module`` names, relative imports resolved."""
    if not node.level:
        return node.module or ""
    package = module if _path(module).name == "__init__.py" else module.rpartition(".")[0]
    base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _path(module: str) -> Path:
    parts = module.split(".")
    if parts[0] != "subsetlm":
        raise _Unknown(module)
    base = ROOT.joinpath(*parts[1:])
    return base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"


@functools.lru_cache(maxsize=None)
def _parse(module: str) -> Any:
    import ast

    path = _path(module)
    if not path.is_file():
        raise _Unknown(module)
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
