"""Integrity on read (issue 18, findings 1, 2, 6, 8): files altered after ``_SUCCESS`` are refused, corrupt or
unwritable files give one-line errors, an exact graph is not keyed on the seed, and a failed embed re-runs.

Every test here fails on the code before issue 18 (checked by running them against it).
"""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from subsetlm.cli import main


def _flip(path: Path, offset: int = -7, count: int = 1, mask: int = 0xFF) -> None:
    """XOR ``count`` bytes of ``path`` from ``offset`` (negative: from the end) with ``mask``."""
    b = bytearray(path.read_bytes())
    start = offset % len(b)
    for i in range(start, start + count):
        b[i] ^= mask
    path.write_bytes(bytes(b))


def _one_line_error(capsys, *names: str) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error:" in ln]
    assert len(lines) == 1, err
    for name in names:
        assert name in lines[0], (name, lines[0])
    return lines[0]


@pytest.fixture
def subset(tmp_path: Path, store: Path) -> Path:
    out = tmp_path / "sub"
    assert main(["select", str(store), "--budget", "15", "--k", "8", "--out", str(out), "-q"]) == 0
    return out


# -- finding 1: corruption after _SUCCESS ---------------------------------------------------
def _commands(store: Path, subset: Path, out: Path) -> dict[str, list[str]]:
    return {
        "select": ["select", str(store), "--budget", "10", "--k", "8", "--out", str(out)],
        "index": ["index", str(store), "--k", "4"],
        "export": ["export", str(subset), "--out", str(out) + ".jsonl"],
        "dedup": ["dedup", str(store), "--eps", "0.1", "--out", str(out)],
        "dsir": ["dsir", str(store), "--target-store", str(store), "--budget", "10", "--out", str(out)],
        "inspect": ["inspect", str(subset)],
    }


@pytest.mark.parametrize("command", ["select", "index", "export", "dedup", "dsir", "inspect"])
def test_flipped_embeddings_are_refused_by_every_stage(tmp_path, store, subset, capsys, command):
    _flip(store / "embeddings.npy", offset=-9, count=2, mask=0x01)  # data bytes: the header still parses
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(_commands(store, subset, out)[command] + ["-q"]) == 2
    line = _one_line_error(capsys, "embeddings.npy", "--force")
    assert "altered" in line
    assert not (out / "_SUCCESS").exists() and not Path(str(out) + ".jsonl").exists()


def test_flipped_texts_are_not_exported(tmp_path, store, subset, capsys):
    _flip(store / "texts.parquet", offset=200, count=2)
    capsys.readouterr()
    assert main(["export", str(subset), "--out", str(tmp_path / "x.jsonl"), "-q"]) == 2
    _one_line_error(capsys, "texts.parquet", "subsetlm embed")
    assert not (tmp_path / "x.jsonl").exists()


def test_flipped_graph_is_rebuilt_by_select_and_refused_by_load(tmp_path, store, subset):
    from subsetlm._io import IntegrityError
    from subsetlm.embed import EmbeddingStore
    from subsetlm.index import load_store_graph

    sims = store / "graphs" / "knn-k8" / "similarities.npy"
    _flip(sims, offset=-40, count=4)
    with pytest.raises(IntegrityError, match="similarities.npy.*index .* --k 8 --force"):
        load_store_graph(EmbeddingStore.open(store), 8)
    again = tmp_path / "again"
    assert main(["select", str(store), "--budget", "15", "--k", "8", "--out", str(again), "-q"]) == 0
    assert (again / "subset.parquet").read_bytes() == (subset / "subset.parquet").read_bytes()
    load_store_graph(EmbeddingStore.open(store), 8)  # rebuilt: intact again


def test_swapped_subset_parquet_is_refused(tmp_path, store, subset, capsys):
    from subsetlm._io import IntegrityError
    from subsetlm.subsets import read_subset

    other = tmp_path / "other"
    assert main(["select", str(store), "--budget", "15", "--k", "8", "--seed", "3", "--function", "graph-cut",
                 "--out", str(other), "-q"]) == 0
    assert (other / "subset.parquet").read_bytes() != (subset / "subset.parquet").read_bytes()
    shutil.copy(other / "subset.parquet", subset / "subset.parquet")  # same size, same store: another selection
    with pytest.raises(IntegrityError, match="subset.parquet"):
        read_subset(subset)
    capsys.readouterr()
    assert main(["export", str(subset), "--out", str(tmp_path / "x.jsonl"), "-q"]) == 2
    _one_line_error(capsys, "subset.parquet", "--force")


def test_no_verify_trusts_the_files(tmp_path, store, subset):
    _flip(store / "embeddings.npy", offset=-9, count=2, mask=0x01)
    assert main(["export", str(subset), "--out", str(tmp_path / "x.jsonl"), "--no-verify", "-q"]) == 0
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(tmp_path / "s"), "--no-verify",
                 "-q"]) == 0


def test_outputs_without_checksums_are_read_with_a_warning(store, subset, caplog):
    from subsetlm.embed import EmbeddingStore
    from subsetlm.index import load_store_graph
    from subsetlm.subsets import read_subset

    for man in (store / "manifest.json", subset / "manifest.json", store / "graphs" / "knn-k8" / "manifest.json"):
        m = json.loads(man.read_text())
        del m["checksums"]
        man.write_text(json.dumps(m))
    st = EmbeddingStore.open(store)
    load_store_graph(st, 8)
    assert read_subset(subset, store=st).size == 15
    assert caplog.text.count("records no checksums") == 3


def test_a_store_is_hashed_once_per_process(store, monkeypatch):
    import subsetlm._io as io
    from subsetlm.embed import EmbeddingStore

    EmbeddingStore.open(store)  # verified (maybe already, by the fixture's process)
    calls = []
    real = io.file_checksum
    monkeypatch.setattr(io, "file_checksum", lambda *a, **k: calls.append(a[0]) or real(*a, **k))
    EmbeddingStore.open(store)
    EmbeddingStore.open(store)
    assert calls == []
    _flip(store / "ids.parquet", offset=100)
    with pytest.raises(ValueError, match="ids.parquet"):
        EmbeddingStore.open(store)
    assert [Path(c).name for c in calls] == ["ids.parquet"]


# -- finding 2: one-line errors instead of tracebacks ------------------------------------------
def test_corrupt_subset_parquet_unverified_is_one_line(tmp_path, subset, capsys):
    from subsetlm.subsets import read_subset

    _flip(subset / "subset.parquet", offset=20)  # the zstd frame header of the first page
    with pytest.raises(ValueError, match="subset.parquet"):
        read_subset(subset, verify=False)
    capsys.readouterr()
    assert main(["export", str(subset), "--out", str(tmp_path / "x.jsonl"), "--no-verify", "-q"]) == 2
    _one_line_error(capsys, "subset.parquet")


@pytest.mark.parametrize("damage", ["header", "truncated"])
def test_broken_npy_is_one_line(tmp_path, store, capsys, damage):
    emb = store / "embeddings.npy"
    if damage == "header":
        b = bytearray(emb.read_bytes())
        b[b.index(b"descr") + 10] = ord("(")  # a Python syntax error inside the header dict
        emb.write_bytes(bytes(b))
    else:
        emb.write_bytes(emb.read_bytes()[:-1000])
    out = tmp_path / "s"
    capsys.readouterr()
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--out", str(out), "--no-verify", "-q"]) == 2
    _one_line_error(capsys, str(emb), "--force")
    assert not out.exists()


@pytest.mark.parametrize("command", ["embed", "select", "export"])
def test_out_under_a_file_is_one_line(tmp_path, store, subset, small_jsonl, capsys, command):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    out = blocker / "deeper" / "out"
    args = {"embed": ["embed", str(small_jsonl), "--model", "hashing", "--out", str(out)],
            "select": ["select", str(store), "--budget", "10", "--out", str(out)],
            "export": ["export", str(subset), "--out", str(out) + ".jsonl"]}[command]
    capsys.readouterr()
    assert main(args + ["-q"]) == 2
    _one_line_error(capsys, str(blocker))


@pytest.mark.parametrize("command", ["embed", "select", "export"])
def test_unwritable_out_is_one_line(tmp_path, store, subset, small_jsonl, capsys, monkeypatch, command):
    """A PermissionError where the output is created (simulated: the tests may run as root)."""
    import os

    target = tmp_path / "locked"
    real_mkdir, real_open = os.mkdir, os.open

    def deny(path, *a, **k):
        if str(path).startswith(str(target)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_mkdir(path, *a, **k)

    def deny_open(path, *a, **k):
        if str(path).startswith(str(target)):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *a, **k)

    monkeypatch.setattr(os, "mkdir", deny)
    monkeypatch.setattr(os, "open", deny_open)
    import builtins

    real_bopen = builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: deny_open(f) if str(f).startswith(str(target))
                        else real_bopen(f, *a, **k))
    out = target / "out"
    args = {"embed": ["embed", str(small_jsonl), "--model", "hashing", "--out", str(out)],
            "select": ["select", str(store), "--budget", "10", "--out", str(out)],
            "export": ["export", str(subset), "--out", str(out) + ".jsonl"]}[command]
    capsys.readouterr()
    assert main(args + ["-q"]) == 2
    line = _one_line_error(capsys, str(target), "Permission denied", "permissions")
    assert "choose another --out" in line


# -- finding 6: an exact graph is not keyed on the seed -----------------------------------------
def test_select_with_another_seed_reuses_the_exact_graph(tmp_path, store):
    assert main(["index", str(store), "--k", "8", "-q"]) == 0
    g = store / "graphs" / "knn-k8"
    before = {f: (g / f).stat().st_mtime_ns for f in ("manifest.json", "neighbors.npy")}
    assert main(["select", str(store), "--budget", "10", "--k", "8", "--seed", "1", "--out", str(tmp_path / "s"),
                 "-q"]) == 0
    assert {f: (g / f).stat().st_mtime_ns for f in before} == before


def test_an_exact_graph_cached_with_a_seed_is_still_used(tmp_path, store):
    from subsetlm.embed import EmbeddingStore
    from subsetlm.index import IndexConfig, build_store_graph

    assert main(["index", str(store), "--k", "8", "-q"]) == 0
    man_file = store / "graphs" / "knn-k8" / "manifest.json"
    man = json.loads(man_file.read_text())
    man["config"] = {**IndexConfig(k=8, seed=5).to_dict(), "kind": "auto"}  # as written before: every field
    man["config"] = {f: man["config"][f] for f in ("kind", "k", "nlist", "nprobe", "hnsw_m", "ef_search",
                                                      "train_size", "seed", "memory_gb", "flat_max", "ivf_storage",
                                                      "graph_method")}
    man_file.write_text(json.dumps(man))
    stamp = man_file.stat().st_mtime_ns
    build_store_graph(EmbeddingStore.open(store), IndexConfig(k=8, seed=2))
    assert man_file.stat().st_mtime_ns == stamp


# -- finding 8: a failed embed re-runs on the fixed corpus ---------------------------------------
def test_embed_reruns_after_failing_on_bad_input(tmp_path, small_jsonl, capsys):
    lines = small_jsonl.read_text().splitlines()
    bad = tmp_path / "c.jsonl"
    bad.write_text("\n".join(lines[:30] + ['{"id": "x", "text": ', *lines[30:]]) + "\n")
    out = tmp_path / "st"
    args = ["embed", str(bad), "--model", "hashing", "--out", str(out), "-q"]
    assert main(args) == 2
    assert not (out / "_SUCCESS").exists()
    bad.write_text("\n".join(lines) + "\n")  # the user fixes the line
    capsys.readouterr()
    assert main(args) == 0
    assert (out / "_SUCCESS").exists()
    assert np.load(out / "embeddings.npy").shape[0] == 60
