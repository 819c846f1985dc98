"""The distribution: ``python -m build`` gives an sdist and a wheel that hold the package and
nothing else, and the wheel, installed into a fresh virtual environment outside the
repository, runs ``subsetlm --version``, ``embed`` and ``select`` and imports as a library.

The build runs on a copy of the source tree (the working tree gets no ``build/`` or
``*.egg-info`` writes) with ``--no-isolation``: setuptools and build come from the dev
extra, so nothing is downloaded. The fresh environment sees the project environment's
dependencies (torch and the rest are not installed again) through a folder of links to its
site-packages minus subsetlm's own editable install, so ``import subsetlm`` can only
resolve to the installed wheel.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

from _docs import make_docs

import subsetlm

REPO = Path(__file__).resolve().parents[1]
# What a clean clone lacks (the .gitignore entries at the root), left out of the copy.
_NOT_SOURCE = {".git", ".venv", "build", "dist", "runs", "out", ".pytest_cache", ".hypothesis", "subsetlm.egg-info"}
# Data an archive must not carry, whatever folder it sits in.
_DATA_SUFFIXES = (".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet", ".npy", ".npz", ".arrow", ".pt", ".safetensors")
_ENTRY_POINT = "subsetlm = subsetlm.cli:main"


def _run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess:
    """Run ``cmd``; on a non-zero exit fail with its output (the assertion says which command)."""
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert r.returncode == 0, f"{' '.join(map(str, cmd))} exited {r.returncode}\n{r.stdout}\n{r.stderr}"
    return r


def _clean_env(home: Path) -> dict[str, str]:
    """The environment minus anything that could put the repository on ``sys.path``."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "PYTHONHOME", "PYTHONSTARTUP", "VIRTUAL_ENV", "PYTHONSAFEPATH")}
    env.update(PYTHONNOUSERSITE="1", PIP_NO_INPUT="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
               SUBSETLM_CACHE=str(home / "cache"), PYTHONDONTWRITEBYTECODE="1")
    return env


def _copy_source(dest: Path) -> Path:
    def ignore(folder: str, names: list[str]) -> set[str]:
        skip = {n for n in names if n == "__pycache__" or n.endswith((".pyc", ".pyo"))}
        if Path(folder) == REPO:
            skip |= _NOT_SOURCE & set(names)
        return skip

    shutil.copytree(REPO, dest, ignore=ignore, symlinks=True)
    return dest


def _site_packages() -> list[Path]:
    """The project environment's site-packages folders (this interpreter's)."""
    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]).resolve(), Path(paths["platlib"]).resolve()})


def _link_dependencies(dest: Path) -> Path:
    """``dest``: links to every entry of the project site-packages except subsetlm's own.

    Left out: the package, its dist-info, the editable-install finder and every ``.pth``
    (a folder named in a ``.pth`` file has its own ``.pth`` files ignored anyway).
    """
    dest.mkdir()
    for sp in _site_packages():
        for entry in sp.iterdir():
            name = entry.name
            if (name.lower().startswith(("subsetlm", "__editable__", "_subsetlm")) or name.endswith(".pth")
                    or name == "__pycache__" or (dest / name).exists()):
                continue
            (dest / name).symlink_to(entry, target_is_directory=entry.is_dir())
    return dest


@pytest.fixture(scope="module")
def dist(tmp_path_factory) -> dict[str, Path]:
    """The sdist and the wheel (the wheel built from the sdist, as ``python -m build`` does)."""
    try:
        import build  # noqa: F401
    except ImportError:  # pragma: no cover - the dev extra installs it
        pytest.fail("`build` is missing: pip install -c constraints.txt -e '.[dev]' (the dev extra has it)")
    root = tmp_path_factory.mktemp("dist")
    src = _copy_source(root / "src")
    out = root / "out"
    _run([sys.executable, "-m", "build", "--no-isolation", "--outdir", out, src], cwd=root, env=_clean_env(root))
    sdists, wheels = sorted(out.glob("*.tar.gz")), sorted(out.glob("*.whl"))
    assert len(sdists) == 1 and len(wheels) == 1, sorted(p.name for p in out.iterdir())
    return {"src": src, "sdist": sdists[0], "wheel": wheels[0]}


@pytest.fixture(scope="module")
def venv(dist, tmp_path_factory) -> dict[str, Path]:
    """A fresh virtual environment outside the repository with the wheel installed."""
    root = tmp_path_factory.mktemp("fresh")
    assert REPO not in root.resolve().parents
    env = _clean_env(root)
    deps = _link_dependencies(root / "deps")
    fresh = root / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", fresh], cwd=root, env=env)
    py = fresh / "bin" / "python"
    purelib = Path(_run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                        cwd=root, env=env).stdout.strip())
    (purelib / "_subsetlm_test_dependencies.pth").write_text(f"{deps}\n", encoding="utf-8")
    # pip itself comes from the linked dependencies; it installs into the fresh environment.
    _run([py, "-m", "pip", "install", "--no-deps", "--no-index", "-q", dist["wheel"]], cwd=root, env=env)
    work = root / "work"
    work.mkdir()
    return {"root": root, "python": py, "subsetlm": fresh / "bin" / "subsetlm", "purelib": purelib,
            "work": work, "env": env}


def _source_version(src: Path) -> str:
    m = re.search(r'^__version__ = "([^"]+)"$', (src / "subsetlm" / "__init__.py").read_text(), re.M)
    assert m, "subsetlm/__init__.py must set __version__ = \"X.Y.Z\" on one line (pyproject.toml reads it)"
    return m.group(1)


def _bad_entries(names: list[str]) -> list[str]:
    """Archive entries that are tests, benchmarks, examples, docs, CI, caches or data."""
    bad = []
    for name in names:
        parts = name.split("/")
        if (set(parts) & {"tests", "benchmarks", "examples", "docs", ".ci", "__pycache__", ".git", ".venv",
                          ".pytest_cache", ".hypothesis", "build"}
                or name.endswith(_DATA_SUFFIXES + (".pyc", ".pyo", ".so"))):
            bad.append(name)
    return bad


def _package_modules(src: Path) -> set[str]:
    return {p.relative_to(src).as_posix() for p in (src / "subsetlm").rglob("*.py") if "__pycache__" not in p.parts}


def test_sdist_holds_the_package_and_nothing_else(dist):
    with tarfile.open(dist["sdist"]) as tf:
        names = [m.name for m in tf.getmembers() if m.isfile()]
    top = {n.split("/", 1)[0] for n in names}
    assert len(top) == 1, top
    rel = sorted(n.split("/", 1)[1] for n in names)
    assert _bad_entries(rel) == []
    assert _package_modules(dist["src"]) <= set(rel)
    # Outside subsetlm/: only the metadata setuptools writes, the README and pyproject.toml.
    outside = {n for n in rel if not n.startswith(("subsetlm/", "subsetlm.egg-info/"))}
    assert outside <= {"PKG-INFO", "README.md", "pyproject.toml", "setup.cfg", "MANIFEST.in", "LICENSE"}, outside


def test_wheel_holds_every_module_and_nothing_else(dist):
    with zipfile.ZipFile(dist["wheel"]) as zf:
        names = zf.namelist()
        version = _source_version(dist["src"])
        info = f"subsetlm-{version}.dist-info"
        meta = zf.read(f"{info}/METADATA").decode()
        entry_points = zf.read(f"{info}/entry_points.txt").decode()
    assert _bad_entries(names) == []
    assert {n for n in names if not n.startswith(("subsetlm/", info + "/"))} == set()
    assert {n for n in names if n.startswith("subsetlm/")} == _package_modules(dist["src"])  # no data files either
    assert dist["wheel"].name == f"subsetlm-{version}-py3-none-any.whl"
    assert re.search(rf"^Version: {re.escape(version)}$", meta, re.M)
    assert _ENTRY_POINT in entry_points


def test_the_installed_wheel_is_what_imports(venv):
    r = _run([venv["python"], "-c",
              "import json, subsetlm, importlib.metadata as m; "
              "print(json.dumps([subsetlm.__file__, str(m.distribution('subsetlm').locate_file('')), "
              "subsetlm.__version__, m.version('subsetlm')]))"],
             cwd=venv["work"], env=venv["env"])
    file, dist_root, version, dist_version = json.loads(r.stdout)
    assert Path(file).resolve().is_relative_to(venv["purelib"].resolve()), file
    assert not Path(file).resolve().is_relative_to(REPO), file
    assert Path(dist_root).resolve() == venv["purelib"].resolve()
    assert version == dist_version


def test_the_wheel_requirements_are_met(venv):
    """Every Requires-Dist of the wheel (no extras) is satisfied in the environment it runs in."""
    script = (
        "import json, importlib.metadata as m\n"
        "from packaging.requirements import Requirement\n"
        "bad, n = [], 0\n"
        "for line in m.requires('subsetlm') or []:\n"
        "    req = Requirement(line)\n"
        "    if req.marker is not None and not req.marker.evaluate({'extra': ''}):\n"
        "        continue\n"
        "    n += 1\n"
        "    try:\n"
        "        v = m.version(req.name)\n"
        "    except m.PackageNotFoundError:\n"
        "        bad.append(f'{line}: not installed'); continue\n"
        "    if not req.specifier.contains(v, prereleases=True):\n"
        "        bad.append(f'{line}: {v} installed')\n"
        "print(json.dumps({'n': n, 'bad': bad}))\n"
    )
    out = json.loads(_run([venv["python"], "-c", script], cwd=venv["work"], env=venv["env"]).stdout)
    assert out["n"] > 0 and out["bad"] == [], out


def test_cli_embed_select_and_library_from_the_wheel(venv, dist):
    work, env, cli = venv["work"], venv["env"], venv["subsetlm"]
    out = _run([cli, "--version"], cwd=work, env=env).stdout.strip()
    m = re.fullmatch(r"subsetlm (\S+)", out)
    assert m, out
    version = m.group(1)
    assert version == _source_version(dist["src"]) == subsetlm.__version__

    docs = work / "docs.jsonl"
    docs.write_text("".join(json.dumps(d) + "\n" for d in make_docs(30, seed=1)), encoding="utf-8")
    _run([cli, "embed", docs.name, "--out", "store", "--model", "hashing", "-q"], cwd=work, env=env)
    assert (work / "store" / "_SUCCESS").exists()
    _run([cli, "select", "store", "--budget", "0.5", "--k", "8", "--out", "subset", "-q"], cwd=work, env=env)
    sub = work / "subset"
    assert (sub / "_SUCCESS").exists() and (sub / "subset.parquet").exists()
    manifest = json.loads((sub / "manifest.json").read_text())
    assert manifest["size"] == 15
    assert manifest["versions"]["subsetlm"] == version  # the manifest and --version agree

    # The library: read back what the CLI wrote, select again in memory; every subsetlm
    # module that ran was loaded from the installed wheel.
    script = (
        "import json, sys\n"
        "from subsetlm.embed import EmbeddingStore\n"
        "from subsetlm.subsets import read_subset\n"
        "from subsetlm.select.api import select_array\n"
        "store = EmbeddingStore.open('store')\n"
        "sub = read_subset('subset', store=store)\n"
        "sel = select_array(store.embeddings, budget=0.5, k=8)\n"
        "files = sorted({m.__file__ for n, m in sys.modules.items()\n"
        "                if n.split('.')[0] == 'subsetlm' and getattr(m, '__file__', None)})\n"
        "print(json.dumps({'n_subset': len(sub.ids), 'n_select': len(sel.indices), 'files': files}))\n"
    )
    res = json.loads(_run([venv["python"], "-c", script], cwd=work, env=env).stdout)
    assert res["n_subset"] == 15 and res["n_select"] == 15, res
    assert len(res["files"]) > 5
    outside = [f for f in res["files"] if not Path(f).resolve().is_relative_to(venv["purelib"].resolve())]
    assert outside == [], outside
