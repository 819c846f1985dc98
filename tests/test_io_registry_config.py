"""Shared plumbing: atomic outputs, deterministic JSON, the registry, config building."""

from dataclasses import dataclass

import pytest

from subsetlm import _io
from subsetlm._config import build_config, load_config_file
from subsetlm.registry import get, names, register


def test_atomic_dir_success_and_failure(tmp_path):
    dest = tmp_path / "out"
    with _io.atomic_dir(dest) as tmp:
        (tmp / "a.txt").write_text("x")
        assert not dest.exists()  # nothing visible until the end
    assert (dest / "a.txt").read_text() == "x" and _io.is_complete(dest)
    assert not _io.tmp_path_for(dest).exists()

    dest2 = tmp_path / "fails"
    with pytest.raises(RuntimeError):
        with _io.atomic_dir(dest2) as tmp:
            (tmp / "half.txt").write_text("half")
            raise RuntimeError("killed")
    assert not dest2.exists() and not _io.tmp_path_for(dest2).exists()


def test_atomic_dir_resume_keeps_partial_and_refuses_existing(tmp_path):
    dest = tmp_path / "out"
    with pytest.raises(RuntimeError):
        with _io.atomic_dir(dest, resume=True) as tmp:
            (tmp / "shard0").write_text("done")
            raise RuntimeError("killed")
    assert (_io.tmp_path_for(dest) / "shard0").exists()  # kept for the next run
    with _io.atomic_dir(dest, resume=True) as tmp:
        assert (tmp / "shard0").read_text() == "done"
    with pytest.raises(FileExistsError, match="--force"):
        with _io.atomic_dir(dest):
            pass
    with _io.atomic_dir(dest, overwrite=True) as tmp:
        (tmp / "new").write_text("1")
    assert (dest / "new").exists() and not (dest / "shard0").exists()


def test_dumps_json_is_deterministic_and_handles_numpy():
    import numpy as np

    a = _io.dumps_json({"b": np.float32(1.5), "a": np.int64(2), "c": np.arange(2)})
    b = _io.dumps_json({"c": [0, 1], "a": 2, "b": 1.5})
    assert a == b and a.endswith("\n")


def test_registry_lists_choices_on_unknown_name():
    @register("test-kind", "one")
    def one():
        return 1

    assert get("test-kind", "one")() == 1 and names("test-kind") == ["one"]
    with pytest.raises(ValueError, match="choose one of: one"):
        get("test-kind", "two")
    with pytest.raises(ValueError, match="already registered"):
        register("test-kind", "one")(lambda: 2)


@dataclass
class _Cfg:
    k: int = 32
    kind: str = "auto"
    eps: float = 0.1
    name: str | None = None


def test_build_config_file_then_overrides(tmp_path):
    f = tmp_path / "run.yaml"
    f.write_text("k: 8\nkind: flat\neps: 1\n")
    cfg = build_config(_Cfg, load_config_file(f), {"kind": "ivf", "name": None})
    assert cfg == _Cfg(k=8, kind="ivf", eps=1.0, name=None)


def test_build_config_rejects_unknown_and_mistyped():
    with pytest.raises(ValueError, match="valid fields: eps, k, kind, name"):
        build_config(_Cfg, {"kk": 3})
    with pytest.raises(TypeError, match="_Cfg.k expects"):
        build_config(_Cfg, {"k": "many"})
    with pytest.raises(TypeError):
        build_config(_Cfg, {"k": True})


def test_load_config_file_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_config_file(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(ValueError, match="mapping"):
        load_config_file(bad)
