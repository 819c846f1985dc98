"""Stores, subsets and exports at fsspec URLs (``memory://``): staged locally, published with ``_SUCCESS`` last."""

from __future__ import annotations

import json
import logging
import uuid

import fsspec
import numpy as np
import pytest

from subsetlm import _mirror
from subsetlm.cli import main
from subsetlm.embed import EmbeddingStore
from subsetlm.embed.store import StoreError
from subsetlm.subsets import read_subset
from subsetlm.subsets.format import SubsetError

DOCS = [{"id": f"doc-{i}", "text": f"topic {i % 5} " + " ".join(f"w{j}" for j in range(i % 11))} for i in range(60)]


@pytest.fixture
def mem(monkeypatch, tmp_path):
    """``(fs, url)``: a fresh memory:// folder holding corpus.jsonl, and a private cache for the mirrors."""
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "cache"))
    fs = fsspec.filesystem("memory")
    root = f"/m-{uuid.uuid4().hex[:10]}"
    fs.pipe(f"{root}/corpus.jsonl", "".join(json.dumps(d) + "\n" for d in DOCS).encode())
    yield fs, f"memory://{root}"
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _files(fs, url):
    root = url.split("://", 1)[1]
    return sorted(f.split(root, 1)[1].lstrip("/") for f in fs.find(root))


def _embed(src, out, *extra):
    return main(["embed", src, "--out", out, "--model", "hashing", "-q", *extra])


def _select(store, out, *extra):
    return main(["select", store, "--budget", "6", "--k", "6", "--out", out, "-q", *extra])


def test_store_subset_and_export_round_trip(mem, tmp_path, capsys):
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert _files(fs, f"{url}/store") == ["_SUCCESS", "embedder_state/hashing_state.json", "embedder_state/idf.npy",
                                          "embeddings.npy", "ids.parquet", "manifest.json", "stats.json",
                                          "texts.parquet"]
    assert EmbeddingStore.is_store(f"{url}/store") and not EmbeddingStore.is_store(f"{url}/corpus.jsonl")
    store = EmbeddingStore.open(f"{url}/store")
    assert store.n == 60 and store.location == f"{url}/store"

    assert main(["index", f"{url}/store", "--k", "6", "-q"]) == 0  # a cache inside a remote store: published
    assert "graphs/knn-k6/_SUCCESS" in _files(fs, f"{url}/store")
    assert _select(f"{url}/store", f"{url}/sub") == 0
    sub = read_subset(f"{url}/sub")
    assert sub.size == 6 and sub.manifest["store"]["path"] == f"{url}/store"
    assert sub.store_path == f"{url}/store"  # a subset at a URL finds its store from anywhere

    # the same commands on local paths give the same bytes
    assert _embed(f"{url}/corpus.jsonl", str(tmp_path / "store")) == 0
    assert _select(str(tmp_path / "store"), str(tmp_path / "sub")) == 0
    for name in ("embeddings.npy", "ids.parquet", "manifest.json"):
        assert fs.cat(f"{url.split('://')[1]}/store/{name}") == (tmp_path / "store" / name).read_bytes()
    assert fs.cat(f"{url.split('://')[1]}/sub/subset.parquet") == (tmp_path / "sub" / "subset.parquet").read_bytes()

    for name in ("sel.jsonl.gz", "sel.parquet"):
        assert main(["export", f"{url}/sub", "--out", f"{url}/{name}", "-q"]) == 0
        assert main(["export", str(tmp_path / "sub"), "--out", str(tmp_path / name), "-q"]) == 0
        assert fs.cat(f"{url.split('://')[1]}/{name}") == (tmp_path / name).read_bytes()
    capsys.readouterr()
    assert main(["export", f"{url}/sub", "--out", f"{url}/sel.parquet", "-q"]) != 0
    assert f"{url}/sel.parquet already exists" in capsys.readouterr().err


def test_a_rerun_skips_and_another_config_is_refused(mem, caplog, capsys):
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert _select(f"{url}/store", f"{url}/sub") == 0
    with caplog.at_level(logging.INFO):
        assert _select(f"{url}/store", f"{url}/sub") == 0
    assert f"subset {url}/sub is complete with this config; skipping" in caplog.text
    capsys.readouterr()
    assert main(["select", f"{url}/store", "--budget", "7", "--k", "6", "--out", f"{url}/sub", "-q"]) != 0
    assert f"{url}/sub holds a subset with a different config (config.budget" in capsys.readouterr().err
    assert _select(f"{url}/store", f"{url}/sub", "--force") == 0


def test_a_killed_upload_leaves_no_success_and_the_rerun_finishes_it(mem, monkeypatch):
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert main(["index", f"{url}/store", "--k", "6", "-q"]) == 0
    real_put, sent = _mirror._put, []

    def dies_before_success(fs_, src, dest, have, key):
        if dest.endswith("/sub/_SUCCESS"):
            raise KeyboardInterrupt("killed between the data files and _SUCCESS")
        sent.append(dest)
        real_put(fs_, src, dest, have, key)

    monkeypatch.setattr(_mirror, "_put", dies_before_success)
    assert _select(f"{url}/store", f"{url}/sub") != 0  # the CLI reports the interrupt
    files = _files(fs, f"{url}/sub")
    assert "subset.parquet" in files and "manifest.json" in files and "_SUCCESS" not in files
    with pytest.raises(SubsetError, match=rf"{url}/sub: incomplete subset \(no _SUCCESS marker\)"):
        read_subset(f"{url}/sub")

    monkeypatch.setattr(_mirror, "_put", lambda *a: (sent.append(a[2]), real_put(*a)))
    sent.clear()
    assert _select(f"{url}/store", f"{url}/sub") == 0  # finds its finished mirror: uploads only what is missing
    assert sent == [f"{url.split('://')[1]}/sub/_SUCCESS"]
    assert read_subset(f"{url}/sub").size == 6


def test_an_interrupted_store_upload_is_refused_by_readers(mem, monkeypatch):
    fs, url = mem
    real_put = _mirror._put

    def fails(fs_, src, dest, *a):
        if dest.endswith("embeddings.npy"):
            raise OSError("network down")
        real_put(fs_, src, dest, *a)

    monkeypatch.setattr(_mirror, "_put", fails)
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") != 0
    assert "_SUCCESS" not in _files(fs, f"{url}/store")
    with pytest.raises(StoreError, match="incomplete embedding store"):
        EmbeddingStore.open(f"{url}/store")
    monkeypatch.setattr(_mirror, "_put", real_put)
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert EmbeddingStore.open(f"{url}/store").n == 60


def test_a_changed_remote_is_fetched_again(mem, monkeypatch, tmp_path):
    """Machine A reads a subset; machine B replaces it at the same URL; A's next read sees B's."""
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert _select(f"{url}/store", f"{url}/sub") == 0
    assert read_subset(f"{url}/sub").size == 6
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "machine-b"))
    assert main(["select", f"{url}/store", "--budget", "9", "--k", "6", "--out", f"{url}/sub", "-q", "--force"]) == 0
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "cache"))
    assert read_subset(f"{url}/sub").size == 9


def test_a_deleted_remote_is_rebuilt(mem):
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", f"{url}/store") == 0
    assert _select(f"{url}/store", f"{url}/sub") == 0
    fs.rm(f"{url.split('://')[1]}/sub", recursive=True)
    assert _select(f"{url}/store", f"{url}/sub") == 0  # the stale mirror is dropped, the subset made again
    assert "_SUCCESS" in _files(fs, f"{url}/sub")


def test_a_killed_embed_resumes_from_its_mirror(mem):
    from subsetlm.embed import EmbedConfig, embed_corpus

    fs, url = mem

    def kill(k):
        if k == 1:
            raise KeyboardInterrupt

    cfg = dict(inputs=[f"{url}/corpus.jsonl"], model="hashing", shard_size=16, max_tokens=None)
    with pytest.raises(KeyboardInterrupt):
        embed_corpus(EmbedConfig(out=f"{url}/store", **cfg), _after_shard=kill)
    assert not fs.exists(f"{url.split('://')[1]}/store")  # nothing published before the end
    resumed = embed_corpus(EmbedConfig(out=f"{url}/store", **cfg))
    assert resumed.stats["resumed_samples"] > 0
    whole = embed_corpus(EmbedConfig(out=str(resumed.path.parent / "whole"), **cfg))
    assert np.array_equal(np.asarray(resumed.embeddings), np.asarray(whole.embeddings))
    assert fs.cat(f"{url.split('://')[1]}/store/embeddings.npy") == (whole.path / "embeddings.npy").read_bytes()


def test_publish_replaces_stale_remote_files(mem, tmp_path):
    fs, url = mem
    d = _mirror.local_path(f"{url}/out")
    d.mkdir(parents=True)
    for name in ("a.bin", "b.bin", "_SUCCESS"):
        (d / name).write_bytes(name.encode())
    _mirror.publish(d)
    assert _files(fs, f"{url}/out") == ["_SUCCESS", "a.bin", "b.bin"]
    (d / "b.bin").unlink()
    (d / "a.bin").write_bytes(b"new")
    _mirror.publish(d)
    assert _files(fs, f"{url}/out") == ["_SUCCESS", "a.bin"]
    assert fs.cat(f"{url.split('://')[1]}/out/a.bin") == b"new"
    assert _mirror.url_of(d / "x" / "y") == f"{url}/out/x/y" and _mirror.url_of(tmp_path) is None


def test_retrieve_from_a_corpus_url_to_a_subset_url(mem, tmp_path):
    from subsetlm.retrieve import RetrieveConfig, read_provenance, retrieve

    fs, url = mem
    task = tmp_path / "task.jsonl"
    task.write_text("".join(json.dumps({"id": f"q{t}", "text": f"topic {t} w1 w2", "label": "ab"[t % 2],
                                        "split": "train" if t < 3 else "test"}) + "\n" for t in range(5)))
    out = retrieve(RetrieveConfig(corpus=[f"{url}/corpus.jsonl"], task=str(task), out=f"{url}/ret", k=3))
    assert "provenance.parquet" in _files(fs, f"{url}/ret") and "_SUCCESS" in _files(fs, f"{url}/ret")
    sub = read_subset(f"{url}/ret")
    assert sub.size > 0 and set(sub.ids.tolist()) <= {d["id"] for d in DOCS}  # the corpus's own ids, without --id-field
    assert sub.manifest["store"]["ids"] == {"rule": "auto", "source": "field", "field": "id"}
    assert sub.manifest["store"]["path"] == f"{url}/corpus.jsonl"
    assert read_provenance(f"{url}/ret").num_rows == sub.size
    assert _mirror.url_of(out) == f"{url}/ret"


def test_train_refuses_an_output_url():
    from subsetlm.recipes.run import TrainRunConfig, run_output

    with pytest.raises(ValueError, match="must be a local directory"):
        run_output(TrainRunConfig(out="memory://bkt/run"))


def test_an_inspect_plot_at_a_url_is_uploaded(mem, tmp_path):
    fs, url = mem
    assert _embed(f"{url}/corpus.jsonl", str(tmp_path / "store")) == 0
    assert _select(str(tmp_path / "store"), str(tmp_path / "sub")) == 0
    assert main(["inspect", str(tmp_path / "sub"), "--plot", f"{url}/plots/coverage.png", "-q"]) == 0
    assert fs.cat(f"{url.split('://', 1)[1]}/plots/coverage.png")[:8] == b"\x89PNG\r\n\x1a\n"
