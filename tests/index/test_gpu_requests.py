"""An explicit GPU request (use_gpu=True, `--gpu yes`) is honoured or refused, never quietly run on the CPU."""

from __future__ import annotations

import pytest

from subsetlm.index import IndexConfig, faiss_index


def test_explicit_gpu_without_one_is_refused(monkeypatch):
    monkeypatch.setattr(faiss_index, "num_gpus", lambda: 0)  # no GPU, also on a machine with one
    with pytest.raises(ValueError, match="sees no GPU"):
        faiss_index._want_gpu(IndexConfig(use_gpu=True), "flat")
    assert faiss_index._want_gpu(IndexConfig(use_gpu="auto"), "flat") is False


def test_explicit_gpu_for_hnsw_is_refused_and_auto_falls_back(monkeypatch):
    monkeypatch.setattr(faiss_index, "num_gpus", lambda: 1)
    with pytest.raises(ValueError, match="hnsw.*no FAISS GPU implementation"):
        faiss_index._want_gpu(IndexConfig(use_gpu=True, kind="hnsw"), "hnsw")
    assert faiss_index._want_gpu(IndexConfig(use_gpu="auto", kind="hnsw"), "hnsw") is False


def test_a_failed_move_to_the_gpu_is_refused_when_asked_for(monkeypatch):
    import faiss

    def fail(index):
        raise RuntimeError("unsupported layout")

    monkeypatch.setattr(faiss, "index_cpu_to_all_gpus", fail, raising=False)
    index = faiss.IndexFlatIP(4)
    with pytest.raises(ValueError, match="could not move the index to the GPU"):
        faiss_index._to_gpu(index, strict=True)
    same, on_gpu = faiss_index._to_gpu(index, strict=False)
    assert same is index and on_gpu is False
