"""The package import graph follows the data flow: no cycle, no arrow from an earlier stage to a later one.

Every module under ``subsetlm/`` is parsed with :mod:`ast`; every import counts, at module
level or inside a function (a lazy import is still a dependency), relative imports
resolved, and ``importlib.import_module("subsetlm....")`` with a literal name too. Each
module belongs to a *unit*: its subpackage (``subsetlm/select/*`` -> ``select``) or, for a
top-level module, the module itself (``subsetlm/demo.py`` -> ``demo``). The units are
ordered by the data flow::

    core (_remote, _mirror, _io, _config, _stage, _device, _heap, registry, runs, __init__)
      < distributed (generic executors) < corpus (and task)
      < embed < index < subsets < select < retrieve < recipes < evaluate
      < demo and train (compositions of stages) < cli

A unit may import units at or before its own level. ``train.py`` is the ``train`` stage:
pretraining (recipes) followed by the tlm recipe's stage-2 fine-tuning (evaluate).
``task.py`` (the labelled ``Task`` that retrieve, train and eval share) sits at the corpus
level: ``load_task("pubmed-task")`` builds the built-in task through
:mod:`subsetlm.corpus.sources`.
"""

from __future__ import annotations

import ast
from pathlib import Path

import subsetlm

ROOT = Path(subsetlm.__file__).resolve().parent

ORDER = [
    ("_remote", "_mirror", "_io", "_config", "_stage", "_device", "_heap", "registry", "runs", "__init__"),
    ("distributed",),
    ("corpus", "task"),
    ("embed",),
    ("index",),
    ("subsets",),
    ("select",),
    ("retrieve",),
    ("recipes",),
    ("evaluate",),
    ("demo", "train"),
    ("cli", "_cli_help", "__main__"),
]
LEVEL = {unit: i for i, units in enumerate(ORDER) for unit in units}


def _module_name(path: Path, root: Path = ROOT) -> str:
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _unit(module: str) -> str:
    """``subsetlm.select.api`` -> ``select``; ``subsetlm`` -> ``__init__``; ``subsetlm.demo`` -> ``demo``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _is_module(module: str, root: Path) -> bool:
    base = root.parent / module.replace(".", "/")
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _imports(path: Path, root: Path = ROOT) -> list[tuple[int, str]]:
    """(line, imported subsetlm module) for every import in ``path``, relative ones resolved."""
    me = _module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            found.append((node.lineno, target))
            # `from subsetlm import demo` / `from . import x`: the names may be submodules
            for a in node.names:
                if _is_module(f"{target}.{a.name}", root):
                    found.append((node.lineno, f"{target}.{a.name}"))
        elif isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", "")) == \
                "import_module" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            found.append((node.lineno, node.args[0].value))
    return sorted((line, m) for line, m in found if m == "subsetlm" or m.startswith("subsetlm."))


def _edges(root: Path = ROOT) -> list[tuple[str, int, str, str, str]]:
    """(file, line, imported module, importing unit, imported unit) for every cross-unit import."""
    edges = []
    for path in sorted(root.rglob("*.py")):
        src = _unit(_module_name(path, root))
        found = _imports(path, root)
        for line, module in found:
            # `from subsetlm import x`: the submodule x is the dependency, not the package's __init__
            if module == "subsetlm" and any(m.startswith("subsetlm.") for ln, m in found if ln == line):
                continue
            dst = _unit(module)
            if dst != src:
                edges.append((str(path.relative_to(root.parent)), line, module, src, dst))
    return edges


def _backward(edges: list[tuple[str, int, str, str, str]]) -> list[str]:
    return [f"{f}:{line} imports {module} ({src} -> {dst}: {dst} comes after {src} in the data flow)"
            for f, line, module, src, dst in edges if LEVEL[dst] > LEVEL[src]]


def test_every_unit_has_a_level():
    units = {_unit(_module_name(p)) for p in ROOT.rglob("*.py")}
    missing = sorted(units - set(LEVEL))
    assert not missing, f"units {missing} have no place in the layering order of tests/test_layering.py; add them"


def test_the_parser_sees_lazy_and_relative_imports(tmp_path):
    """The graph builder on a made-up tree: lazy, relative and ``from pkg import module`` imports all count."""
    pkg = tmp_path / "subsetlm"
    files = {
        "__init__.py": "",
        "_io.py": "",
        "select/__init__.py": "from . import greedy\n",
        "select/greedy.py": "from .. import _io\n\n\ndef f():\n    from ..evaluate import run\n",
        "select/api.py": "import numpy\n\n\ndef g():\n    from subsetlm import recipes\n",
        "recipes/__init__.py": "",
        "evaluate/__init__.py": "",
        "evaluate/run.py": "from subsetlm.select.greedy import f\n",
    }
    for name, text in files.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    edges = _edges(pkg)
    assert sorted((f, line, m) for f, line, m, _, _ in edges) == [
        ("subsetlm/evaluate/run.py", 1, "subsetlm.select.greedy"),
        ("subsetlm/select/api.py", 5, "subsetlm.recipes"),
        ("subsetlm/select/greedy.py", 1, "subsetlm._io"),
        ("subsetlm/select/greedy.py", 5, "subsetlm.evaluate"),
        ("subsetlm/select/greedy.py", 5, "subsetlm.evaluate.run"),
    ]
    assert _backward(edges) == [
        "subsetlm/select/api.py:5 imports subsetlm.recipes (select -> recipes: recipes comes after select in the "
        "data flow)",
        "subsetlm/select/greedy.py:5 imports subsetlm.evaluate (select -> evaluate: evaluate comes after select in "
        "the data flow)",
        "subsetlm/select/greedy.py:5 imports subsetlm.evaluate.run (select -> evaluate: evaluate comes after "
        "select in the data flow)",
    ]


def test_no_arrow_from_an_earlier_stage_to_a_later_one():
    bad = _backward(_edges())
    assert not bad, "backward dependencies:\n" + "\n".join(bad)


def _cycle(edges: list[tuple[str, int, str, str, str]]) -> str | None:
    """A cycle between units, each step named by one import that makes it (None without a cycle)."""
    graph: dict[str, set[str]] = {}
    where: dict[tuple[str, str], str] = {}
    for f, line, module, src, dst in edges:
        graph.setdefault(src, set()).add(dst)
        where.setdefault((src, dst), f"{f}:{line} imports {module}")
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    stack: list[str] = []

    def visit(u: str) -> list[str] | None:
        state[u] = 1
        stack.append(u)
        for v in sorted(graph.get(u, ())):
            if state.get(v) == 1:
                return stack[stack.index(v):] + [v]
            if v not in state and (cyc := visit(v)):
                return cyc
        stack.pop()
        state[u] = 2
        return None

    for u in sorted(graph):
        if u not in state and (cyc := visit(u)):
            steps = "\n".join(f"  {a} -> {b}: {where[(a, b)]}" for a, b in zip(cyc, cyc[1:]))
            return f"{' -> '.join(cyc)}:\n{steps}"
    return None


def test_the_cycle_finder_names_each_step(tmp_path):
    pkg = tmp_path / "subsetlm"
    for name, text in {"__init__.py": "", "select/__init__.py": "", "evaluate/__init__.py": "",
                       "select/a.py": "def f():\n    import subsetlm.evaluate.b\n",
                       "evaluate/b.py": "from subsetlm.select import a\n"}.items():
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text(text)
    assert _cycle(_edges(pkg)) == ("evaluate -> select -> evaluate:\n"
                                   "  evaluate -> select: subsetlm/evaluate/b.py:1 imports subsetlm.select\n"
                                   "  select -> evaluate: subsetlm/select/a.py:2 imports subsetlm.evaluate.b")


def test_no_cycle_between_packages():
    cyc = _cycle(_edges())
    assert cyc is None, f"import cycle {cyc}"
