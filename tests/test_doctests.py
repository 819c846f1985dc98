"""Every module whose docstrings hold an example (``>>>``) runs it as a doctest.

Examples that need the network, a GPU or minutes carry ``# doctest: +SKIP``; the rest run
here, with ELLIPSIS and NORMALIZE_WHITESPACE, in a temporary working directory (some
write files). A module whose ``>>>`` the doctest finder does not see fails; one whose
examples all carry +SKIP is reported as skipped (never as passed), and so are modules of
an optional extra (Ray) when it is not installed.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.util
from pathlib import Path

import pytest

import subsetlm

ROOT = Path(subsetlm.__file__).resolve().parent
#: module prefix -> the optional package it needs (``pip install subsetlm[...]``)
OPTIONAL = {"subsetlm.distributed.ray_": "ray"}


def _modules_with_examples() -> list[str]:
    names = []
    for path in sorted(ROOT.rglob("*.py")):
        if ">>>" not in path.read_text(encoding="utf-8"):
            continue
        parts = path.relative_to(ROOT.parent).with_suffix("").parts
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


MODULES = _modules_with_examples()


def test_the_walk_finds_modules_in_every_stage():
    assert {m.split(".")[1] for m in MODULES if m.count(".")} >= {"corpus", "embed", "index", "select", "subsets"}


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name, tmp_path, monkeypatch):
    for prefix, package in OPTIONAL.items():
        if name.startswith(prefix) and importlib.util.find_spec(package) is None:
            pytest.skip(f"{name} needs the optional package {package!r} (pip install subsetlm[{package}])")
    monkeypatch.chdir(tmp_path)
    module = importlib.import_module(name)
    tests = doctest.DocTestFinder(exclude_empty=True).find(module, name, globs=vars(module).copy())
    examples = [ex for t in tests for ex in t.examples]
    assert examples, f"{name}: its source has '>>>' but no docstring example was found"
    if all(ex.options.get(doctest.SKIP) for ex in examples):
        pytest.skip(f"{name}: all {len(examples)} examples carry +SKIP (they need a model, the network, "
                    f"a GPU or minutes)")
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    for test in tests:
        runner.run(test)
    result = runner.summarize(verbose=False)
    assert result.attempted > 0 and result.failed == 0, (
        f"{name}: {result.failed} of {result.attempted} examples failed (the report is above)")
