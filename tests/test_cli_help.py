"""``subsetlm COMMAND --help``: every flag explained with its default, one example that parses, no heavy import."""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import re
import subprocess
import sys

import pytest

from subsetlm._cli_help import config_defaults, default_text
from subsetlm.cli import build_parser

COMMON = {"help", "config", "verbose", "quiet"}  # every command's own options, no config field behind them


def _commands() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


COMMANDS = sorted(_commands())


def _helped(command: str) -> tuple[argparse.ArgumentParser, str]:
    """The command's parser after ``--help`` was formatted (defaults filled in), and that text."""
    p = _commands()[command]
    return p, p.format_help()


def _field_defaults(stage: str) -> dict:
    cls = importlib.import_module(stage).STAGE.config
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:
            out[f.name] = f.default_factory()
    return out


def test_every_command_is_covered():
    assert {"embed", "index", "select", "retrieve", "export", "train", "eval", "dedup", "dsir", "inspect",
            "demo"} <= set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_has_help_that_states_its_default(command):
    p, _ = _helped(command)
    for a in p._actions:
        if isinstance(a, argparse._HelpAction):
            continue
        name = "/".join(a.option_strings) or a.dest
        assert a.help and a.help.strip(), f"subsetlm {command} {name} has no help text"
        if not a.option_strings:
            continue
        n = len(re.findall(r"\bdefault\b", a.help, re.I))
        assert n <= 1, f"subsetlm {command} {name} states its default {n} times: {a.help!r}"
        assert n == 1 or "required" in a.help, (f"subsetlm {command} {name}: the help neither states the default "
                                                f"nor says the option is required: {a.help!r}")


@pytest.mark.parametrize("command", COMMANDS)
def test_shown_defaults_are_the_config_dataclass_defaults(command):
    p, text = _helped(command)
    stage = p.get_default("stage")
    real = _field_defaults(stage)
    assert config_defaults(stage) == real, "the --help reader disagrees with the dataclass (see subsetlm/_cli_help.py)"
    for a in p._actions:
        if not a.option_strings or a.dest not in real:
            continue
        shown = default_text(a, real)
        if shown is None:  # None or empty: a default worked out at run time, described in words
            continue
        assert f"default: {shown}" in a.help, (f"subsetlm {command} {'/'.join(a.option_strings)}: the config's "
                                               f"default is {shown!r}, the help says {a.help!r}")
    assert "(default: " in text


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_sets_a_config_field(command):
    """A flag whose dest is no field of the stage's config would be dropped silently by the CLI."""
    p = _commands()[command]
    fields = {f.name for f in dataclasses.fields(importlib.import_module(p.get_default("stage")).STAGE.config)}
    stray = [a.dest for a in p._actions if a.dest not in fields | COMMON]
    assert not stray, f"subsetlm {command}: options {stray} set no field of the config"


@pytest.mark.parametrize("command", COMMANDS)
def test_help_shows_an_example_that_parses(command):
    _, text = _helped(command)
    tail = text.split("example:\n" if "example:\n" in text else "examples:\n", 1)
    assert len(tail) == 2, f"subsetlm {command} --help has no example"
    lines = [ln.strip() for ln in tail[1].splitlines() if ln.strip()]
    assert lines and all(ln.startswith(f"subsetlm {command}") for ln in lines), lines
    for line in lines:
        try:
            args = build_parser().parse_args(line.split()[1:])
        except SystemExit:
            pytest.fail(f"subsetlm {command} --help: the example {line!r} does not parse")
        assert args.command == command, line


def test_a_stale_default_in_the_help_is_caught(monkeypatch):
    """The default is read from the config's source: change it there and the help follows."""
    from subsetlm import _cli_help

    src = _cli_help._path("subsetlm.index.run").read_text()
    changed = src.replace("    k: int = 32\n", "    k: int = 17\n", 1)
    assert changed != src
    tree, parse = ast.parse(changed), _cli_help._parse
    monkeypatch.setattr(_cli_help, "_parse", lambda m: tree if m == "subsetlm.index.run" else parse(m))
    p = _commands()["index"]
    p.format_help()
    k = next(a for a in p._actions if a.dest == "k")
    assert k.help.endswith("(default: 17)")


def test_help_imports_no_stage_module():
    """``--help`` reads the configs' source: numpy, FAISS and torch stay unloaded (it answers at once)."""
    code = ("import sys\nfrom subsetlm.cli import build_parser\nimport argparse\n"
            "p = build_parser(); p.format_help()\n"
            "sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))\n"
            "for c in sub.choices.values(): c.format_help()\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "('numpy', 'torch', 'faiss', 'transformers', 'pyarrow', 'scipy')"
            " or m.startswith(('subsetlm.select', 'subsetlm.embed', 'subsetlm.recipes', 'subsetlm.evaluate'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]", out
