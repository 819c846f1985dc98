"""The static (model2vec-distilled) embedder: store round trip, determinism, cache, offline distillation.

Every test distils the tiny 32-d BERT of ``conftest.py`` (120 tokens, a fraction of a
second), never the packaged MiniLM (about a minute on 2 cores: benchmarks/static_embed.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("model2vec")
pytest.importorskip("skeletoken")

from subsetlm.embed import EmbedConfig, EmbeddingStore, embed_corpus, get_embedder  # noqa: E402
from subsetlm.embed import distill  # noqa: E402
from subsetlm.embed.static import StaticEmbedder  # noqa: E402

from _docs import SENTENCES  # noqa: E402

TEXTS = SENTENCES + ["the patient sat on the mat", "blood pumps through the heart", "???"]


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh cache directory (no distilled model in it)."""
    d = tmp_path / "cache"
    monkeypatch.setenv("SUBSETLM_CACHE", str(d))
    return d


@pytest.fixture
def distills(monkeypatch: pytest.MonkeyPatch) -> list:
    """Records every distillation that actually runs."""
    calls: list = []
    real = distill._distill_into

    def spy(recipe, tmp, **kw):
        calls.append(recipe.key)
        return real(recipe, tmp, **kw)

    monkeypatch.setattr(distill, "_distill_into", spy)
    return calls


def tiny(tiny_bert_dir: Path, **kw) -> StaticEmbedder:
    return get_embedder("static", device="cpu", model_path=str(tiny_bert_dir), dims=kw.pop("dims", 16), **kw)


def embed_cfg(corpus: Path, out: Path, model_path: Path, **opts) -> EmbedConfig:
    return EmbedConfig(inputs=[str(corpus)], out=str(out), model="static", dtype="float32", max_tokens=16,
                       embedder_options={"model_path": str(model_path), "dims": 16, **opts})


def test_embeddings_unit_norm_and_similar_texts_closer(tiny_bert_dir, cache):
    X = tiny(tiny_bert_dir).embed(TEXTS)
    assert X.shape == (len(TEXTS), 16) and X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)
    assert X[0] @ X[4] > X[0] @ X[2]  # "the cat sat on the mat" ~ "the dog sat on the log"


def test_text_without_known_tokens_gets_the_fixed_unit_vector(tiny_bert_dir, cache):
    emb = tiny(tiny_bert_dir)
    X = emb.embed(["\u4e2d\u6587", "the cat"])  # no WordPiece of the tiny vocabulary: only [UNK]
    np.testing.assert_array_equal(X[0], emb.tokenless())


def test_matches_model2vec_static_model_encode(tiny_bert_dir, cache):
    """Oracle: model2vec's own inference on the same vectors and tokenizer."""
    from model2vec import StaticModel

    emb = tiny(tiny_bert_dir, weighting="zipf")
    ours = emb.embed(TEXTS[:-1] * 300)  # > 1024 texts: several internal batches
    ref = StaticModel(vectors=emb._table, tokenizer=emb._tok, normalize=True, max_length=None).encode(
        TEXTS[:-1] * 300, use_multiprocessing=False)
    np.testing.assert_allclose(ours, ref, atol=2e-6)


def test_store_round_trip_and_deterministic_bytes(tiny_bert_dir, small_jsonl, tmp_path, monkeypatch):
    from subsetlm.embed.run import store_embedder

    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "cache-a"))
    store = embed_corpus(embed_cfg(small_jsonl, tmp_path / "a", tiny_bert_dir))
    X = np.asarray(store.embeddings)
    direct = tiny(tiny_bert_dir).embed(store.texts(np.arange(store.n)))
    np.testing.assert_array_equal(X, direct)
    np.testing.assert_array_equal(store_embedder(store, device="cpu").embed(store.texts([0, 5])), X[[0, 5]])
    m = EmbeddingStore.open(tmp_path / "a").manifest["model"]
    assert m["name"] == "static" and m["dims"] == 16 and m["weighting"] == "zipf"
    assert m["model2vec_version"] and m["skeletoken_version"] and m["torch_version"]
    assert m["source_fingerprint"].startswith("sha256:") and len(m["vectors_sha256"]) == 64 and m["recipe_key"]
    # a second run from a fresh cache distils again and writes the same bytes
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path / "cache-b"))
    embed_corpus(embed_cfg(small_jsonl, tmp_path / "b", tiny_bert_dir))
    for name in ("embeddings.npy", "ids.parquet", "manifest.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_distillation_cached_per_recipe(tiny_bert_dir, cache, distills):
    a = tiny(tiny_bert_dir).embed(TEXTS)
    b = tiny(tiny_bert_dir).embed(TEXTS)  # a new embedder (as a new process would): read from the cache
    np.testing.assert_array_equal(a, b)
    assert len(distills) == 1
    tiny(tiny_bert_dir, dims=8).embed(TEXTS)  # another recipe: distilled once more
    tiny(tiny_bert_dir, dims=8).embed(TEXTS)
    assert len(distills) == 2
    assert sorted(p.name for p in (cache / "static").iterdir()) == sorted(distills)
    assert all((cache / "static" / k / "_SUCCESS").is_file() for k in distills)


def test_corpus_vocab_and_corpus_weights_fit_and_state(tiny_bert_dir, cache, tmp_path):
    corpus = ["hypertension tachycardia in the patient"] * 3 + ["the cat sat on the mat"] * 5
    emb = tiny(tiny_bert_dir, corpus_vocab=2, weighting="corpus")
    assert emb.requires_fit
    with pytest.raises(RuntimeError, match="not fitted"):
        emb.embed(corpus)
    emb.fit(corpus)
    assert emb.words_ == ("hypertension", "tachycardia")  # split by the tiny vocabulary, seen 3 times
    X = emb.embed(corpus)
    assert emb._tok.encode("hypertension", add_special_tokens=False).tokens == ["hypertension"]
    w = emb.token_weights_
    the, hyp = emb._tok.token_to_id("the"), emb._tok.token_to_id("hypertension")
    assert w[the] < w[hyp] < 1.0 and w[emb._tok.token_to_id("dog")] == 1.0  # frequent ones weigh less; unseen 1
    emb.save_state(tmp_path / "state")
    again = tiny(tiny_bert_dir, corpus_vocab=2, weighting="corpus").load_state(tmp_path / "state")
    np.testing.assert_array_equal(again.embed(corpus), X)
    with pytest.raises(ValueError, match="fitted with"):
        tiny(tiny_bert_dir, corpus_vocab=3, weighting="corpus").load_state(tmp_path / "state")


def test_teacher_fit_moves_towards_the_teacher_and_round_trips(tiny_bert_dir, cache, tmp_path):
    from subsetlm.embed.hf import HFEmbedder

    corpus = [f"{a} {b}" for a in SENTENCES for b in SENTENCES]
    Y = HFEmbedder(tiny_bert_dir, device="cpu", pooling="mean").embed(corpus)
    plain = tiny(tiny_bert_dir, dims=None, weighting="none").embed(corpus)
    emb = tiny(tiny_bert_dir, dims=None, teacher_samples=20, teacher_ridge=1e-4)
    emb.fit(corpus)  # the teacher pass runs the tiny model itself
    X = emb.embed(corpus)
    assert np.mean(np.sum(X * Y, axis=1)) > np.mean(np.sum(plain * Y, axis=1)) + 0.05
    again = tiny(tiny_bert_dir, dims=None, teacher_samples=20, teacher_ridge=1e-4)
    Yt = emb._teacher().embed(corpus[:20])  # the embeddings fit() computed (precision "auto")
    np.testing.assert_array_equal(again.fit(corpus, teacher=Yt).embed(corpus), X)  # same teacher, same state
    emb.save_state(tmp_path / "state")
    loaded = tiny(tiny_bert_dir, dims=None, teacher_samples=20, teacher_ridge=1e-4).load_state(tmp_path / "state")
    np.testing.assert_array_equal(loaded.embed(corpus), X)
    assert loaded.describe()["vectors_sha256"] == emb.describe()["vectors_sha256"]


@pytest.mark.parametrize("which", ["tiny", "minilm"])
def test_splitter_chunks_like_transformers_tokenizer(tiny_bert_dir, which):
    """The same samples as the transformers tokenizer (so a static and a minilm store of a corpus align)."""
    from transformers import AutoTokenizer

    from subsetlm.corpus.chunking import HFTokenSplitter
    from subsetlm.embed.minilm import model_dir

    path = tiny_bert_dir if which == "tiny" else model_dir()
    ref = HFTokenSplitter(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    ours = StaticEmbedder(device="cpu", model_path=path, dims=16).splitter()  # nothing distilled for chunking
    texts = [" ".join(SENTENCES) * 3, "Aspirin, Tumor-Heart! the cat été naïve CO₂-laser", "x"]
    for m in (None, 3, 7, 128):
        assert ours.split(texts, m) == ref.split(texts, m)


@pytest.mark.parametrize("kw, match", [({"weighting": "idf"}, "weighting"), ({"dims": 0}, "dims"),
                                       ({"dims": 64}, "hidden size"), ({"corpus_vocab": -1}, "corpus_vocab"),
                                       ({"sif_coefficient": 2.0}, "sif_coefficient"),
                                       ({"teacher_samples": 10, "weighting": "corpus"}, "teacher"),
                                       ({"teacher_samples": 30, "fit_samples": 20}, "fit_samples")])
def test_bad_options_are_refused(tiny_bert_dir, kw, match):
    with pytest.raises(ValueError, match=match):
        tiny(tiny_bert_dir, **kw)


def test_missing_extra_names_it(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "model2vec" else real(name, *a))
    with pytest.raises(ImportError, match=r"subsetlm\[static\]"):
        get_embedder("static")


_BLOCK = """
import socket
def refuse(*a, **k):
    raise RuntimeError("network access during distillation")
socket.socket.connect = refuse
socket.create_connection = refuse
import huggingface_hub, huggingface_hub.hf_api
for name in ("hf_hub_download", "snapshot_download", "model_info"):
    setattr(huggingface_hub, name, refuse)
    setattr(huggingface_hub.hf_api, name, refuse)
huggingface_hub.hf_api.HfApi.model_info = refuse
import model2vec.distill.distillation
model2vec.distill.distillation.model_info = refuse
"""


def test_distillation_in_a_clean_environment_without_network(tiny_bert_dir, tmp_path):
    """No HF_* variable at all (HF_HUB_OFFLINE unset), sockets and hub calls refused: distils all the same."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGINGFACE", "TRANSFORMERS"))}
    env["SUBSETLM_CACHE"] = str(tmp_path / "cache")
    code = _BLOCK + ("import sys\nfrom subsetlm.embed import get_embedder\n"
                     "emb = get_embedder('static', device='cpu', model_path=sys.argv[1], dims=8)\n"
                     "print(emb.embed(['the cat']).shape)")
    r = subprocess.run([sys.executable, "-c", code, str(tiny_bert_dir)], env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("(1, 8)")
    recipe = json.loads(next((tmp_path / "cache" / "static").glob("*/recipe.json")).read_text())
    assert recipe["method"] == "model2vec.distill.distill_from_model" and recipe["pca_dims"] == 8


def test_distillation_with_hub_offline_and_hub_calls_refused(tiny_bert_dir, cache, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ns: dict = {}
    with monkeypatch.context() as m:
        import socket

        import huggingface_hub.hf_api

        def refuse(*a, **k):
            raise RuntimeError("network access during distillation")

        m.setattr(socket.socket, "connect", refuse)
        m.setattr(socket, "create_connection", refuse)
        for name in ("hf_hub_download", "snapshot_download", "model_info"):
            m.setattr(huggingface_hub, name, refuse)
            m.setattr(huggingface_hub.hf_api, name, refuse, raising=False)
        m.setattr("model2vec.distill.distillation.model_info", refuse)
        ns["X"] = tiny(tiny_bert_dir, dims=12).embed(["the cat sat"])
    assert ns["X"].shape == (1, 12)
