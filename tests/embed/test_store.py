"""EmbeddingStore + embed_corpus: round trip, resume, atomicity, skip/force, validation."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from subsetlm._io import sha256_file
from subsetlm.embed import EmbedConfig, EmbeddingStore, StoreError, embed_corpus
from subsetlm.embed import store as store_mod
from subsetlm.embed.base import Embedder
from subsetlm.registry import register

CALLS = {"embed": 0}
WORDS = "heart artery tumor cancer brain neuron virus vaccine the a of in with and patients study".split()


class FakeEmbedder(Embedder):
    """Deterministic text -> unit vector (seeded by crc32 of the text); NaN for texts with ``nan_word``."""

    name = "test-fake"
    pooling = "mean"

    def __init__(self, device="auto", dim=8, nan_word=None, out_dim=None):
        self.dim, self.nan_word, self.out_dim = dim, nan_word, out_dim

    def splitter(self):
        from subsetlm.corpus.chunking import WhitespaceSplitter

        return WhitespaceSplitter()

    def embed(self, texts, batch_size=64, progress=False):
        CALLS["embed"] += 1
        out = np.stack([self.vector(t) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)
        if self.out_dim:
            out = out[:, : self.out_dim]
        return out

    def vector(self, text):
        v = np.random.default_rng(zlib.crc32(text.encode())).normal(size=self.dim).astype(np.float32)
        if self.nan_word and self.nan_word in text:
            v[0] = np.nan
        return v / np.linalg.norm(v)


register("embedder", "test-fake")(FakeEmbedder)


def write_corpus(path: Path, n: int, seed: int = 0, extra: str | None = None) -> Path:
    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(n):
            words = rng.choice(WORDS, size=int(rng.integers(3, 20))).tolist()
            if extra and i == n // 2:
                words.append(extra)
            fh.write(json.dumps({"id": f"d{i:04d}", "text": " ".join(words)}) + "\n")
    return path


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path / "c.jsonl", 120)


def cfg_for(corpus, out, **kw):
    base = dict(inputs=[str(corpus)], out=str(out), model="test-fake", max_tokens=8, shard_size=16)
    base.update(kw)
    return EmbedConfig(**base)


def expected_samples(corpus, max_tokens=8):
    from subsetlm.corpus.chunking import WhitespaceSplitter, iter_samples
    from subsetlm.corpus.readers import CorpusConfig

    return [s for b in iter_samples(CorpusConfig([str(corpus)], max_tokens=max_tokens), WhitespaceSplitter())
            for s in b]


FILES = ("embeddings.npy", "ids.parquet", "texts.parquet", "manifest.json")


def test_round_trip(corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(store_mod, "ROW_GROUP", 10)  # several row groups + carried-over remainders
    store = embed_corpus(cfg_for(corpus, tmp_path / "s", dtype="float32"))
    samples = expected_samples(corpus)
    assert store.n == len(samples) > 120  # some documents were chunked
    assert list(store.ids) == [s.id for s in samples]
    assert list(store.doc_ids) == [s.doc_id for s in samples]
    assert store.n_tokens.tolist() == [s.n_tokens for s in samples]
    assert store.texts([3, 0, store.n - 1]) == [samples[3].text, samples[0].text, samples[-1].text]
    idx = np.random.default_rng(0).permutation(store.n)[:40]
    assert store.texts(idx) == [samples[i].text for i in idx]
    with pytest.raises(IndexError):
        store.texts([store.n])
    ref = FakeEmbedder().embed([s.text for s in samples])
    mm = np.load(tmp_path / "s" / "embeddings.npy", mmap_mode="r")
    np.testing.assert_array_equal(mm, ref)
    np.testing.assert_array_equal(store.embeddings, ref)
    blocks = list(store.iter_blocks(50))
    assert [s for s, _ in blocks] == list(range(0, store.n, 50))
    np.testing.assert_array_equal(np.concatenate([b for _, b in blocks]), ref)
    assert pq.ParquetFile(tmp_path / "s" / "ids.parquet").metadata.num_row_groups == -(-store.n // 10)
    m = store.manifest
    assert m["format"] == "subsetlm.embedding_store" and m["version"] == 1
    assert (m["count"], m["dim"], m["dtype"], m["normalized"]) == (store.n, 8, "float32", True)
    assert store.fingerprint == sha256_file(tmp_path / "s" / "embeddings.npy")
    assert m["chunking"]["max_tokens"] == 8 and m["chunking"]["splitter"] == "whitespace"
    assert store.stats["docs"] == 120 and store.stats["samples"] == store.n
    assert sorted(p.name for p in (tmp_path / "s").iterdir()) == sorted(
        ["_SUCCESS", "embeddings.npy", "ids.parquet", "manifest.json", "stats.json", "texts.parquet"])
    assert not (tmp_path / "s.tmp").exists()
    schema = pq.read_schema(tmp_path / "s" / "ids.parquet")
    assert [str(t) for t in schema.types] == ["string", "string", "string", "int32"]
    assert schema.metadata is None or b"pandas" not in schema.metadata


def test_float16_default(corpus, tmp_path):
    store = embed_corpus(cfg_for(corpus, tmp_path / "s"))
    assert store.dtype == np.float16 and store.block(0, 5).dtype == np.float32
    ref = FakeEmbedder().embed(store.texts(range(5)))
    np.testing.assert_allclose(store.block(0, 5), ref, atol=1e-3)


class Boom(RuntimeError):
    pass


@pytest.mark.parametrize("model", ["test-fake", "hashing"])
def test_kill_and_resume_is_byte_identical(corpus, tmp_path, monkeypatch, model):
    monkeypatch.setattr(store_mod, "ROW_GROUP", 7)
    opts = {"dim": 16} if model == "hashing" else {}
    embed_corpus(cfg_for(corpus, tmp_path / "full", model=model, embedder_options=opts))

    def kill_after_shard_2(k):
        if k == 2:
            raise Boom("simulated kill")

    out = tmp_path / "resumed"
    with pytest.raises(Boom):
        embed_corpus(cfg_for(corpus, out, model=model, embedder_options=opts), _after_shard=kill_after_shard_2)
    assert not out.exists(), "a failed run must not leave a destination behind"
    shards = sorted(p.name for p in (tmp_path / "resumed.tmp" / "shards").iterdir())
    assert shards == ["00000.npy", "00000.parquet", "00001.npy", "00001.parquet", "00002.npy", "00002.parquet"]
    resumed = embed_corpus(cfg_for(corpus, out, model=model, embedder_options=opts))
    assert resumed.stats["resumed_samples"] == 3 * 16
    for f in FILES:
        assert (out / f).read_bytes() == (tmp_path / "full" / f).read_bytes(), f
    assert not (tmp_path / "resumed.tmp").exists()


def test_resume_with_other_config_errors(corpus, tmp_path):
    with pytest.raises(Boom):
        embed_corpus(cfg_for(corpus, tmp_path / "s"), _after_shard=lambda k: (_ for _ in ()).throw(Boom()))
    with pytest.raises(ValueError, match=r"unfinished run with a different config.*shard_size.*--force"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", shard_size=32))
    store = embed_corpus(cfg_for(corpus, tmp_path / "s", shard_size=32, force=True))
    assert store.stats["resumed_samples"] == 0


def test_skip_if_complete_and_force(corpus, tmp_path):
    cfg = cfg_for(corpus, tmp_path / "s")
    embed_corpus(cfg)
    n_calls = CALLS["embed"]
    before = (tmp_path / "s" / "stats.json").read_bytes()
    again = embed_corpus(cfg)
    assert CALLS["embed"] == n_calls, "a complete store with the same config must be reused"
    assert (tmp_path / "s" / "stats.json").read_bytes() == before and again.n > 0
    embed_corpus(cfg_for(corpus, tmp_path / "s", force=True))
    assert CALLS["embed"] > n_calls


def test_skip_with_tuple_options(corpus, tmp_path):
    cfg = cfg_for(corpus, tmp_path / "s", model="hashing", embedder_options={"dim": 8, "ngram_range": (1, 1)})
    first = embed_corpus(cfg)
    again = embed_corpus(cfg)  # must be recognised as the same config despite tuple -> JSON list
    assert again.fingerprint == first.fingerprint


def test_config_mismatch_needs_force(corpus, tmp_path):
    embed_corpus(cfg_for(corpus, tmp_path / "s"))
    with pytest.raises(ValueError, match=r"different config \(chunking.max_tokens.*--force"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", max_tokens=4))
    with pytest.raises(ValueError, match=r"different config \(corpus_fingerprint"):
        embed_corpus(cfg_for(write_corpus(tmp_path / "other.jsonl", 50, seed=1), tmp_path / "s"))
    store = embed_corpus(cfg_for(corpus, tmp_path / "s", max_tokens=4, force=True))
    assert store.manifest["chunking"]["max_tokens"] == 4


def test_nan_embeddings_rejected(tmp_path):
    corpus = write_corpus(tmp_path / "c.jsonl", 60, extra="NANWORD")
    out = tmp_path / "s"
    with pytest.raises(ValueError, match="NaN/inf.*nothing was finalised"):
        embed_corpus(cfg_for(corpus, out, embedder_options={"nan_word": "NANWORD"}))
    assert not out.exists()


def test_wrong_dim_rejected(corpus, tmp_path):
    with pytest.raises(ValueError, match=r"shape \(16, 5\); expected \(n, 8\)"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", embedder_options={"out_dim": 5}))
    assert not (tmp_path / "s").exists()


def test_bad_config_fields(corpus, tmp_path):
    with pytest.raises(ValueError, match="dtype='float64'"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", dtype="float64"))
    with pytest.raises(ValueError, match="shard_size=0"):
        embed_corpus(cfg_for(corpus, tmp_path / "s", shard_size=0))


def test_open_errors(corpus, tmp_path):
    with pytest.raises(StoreError, match="no such embedding store"):
        EmbeddingStore.open(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(StoreError, match="no manifest.json"):
        EmbeddingStore.open(tmp_path / "empty")
    store = embed_corpus(cfg_for(corpus, tmp_path / "s"))
    m = dict(store.manifest, version=99)
    (tmp_path / "s" / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(StoreError, match="store version 99"):
        EmbeddingStore.open(tmp_path / "s")
    (tmp_path / "s" / "_SUCCESS").unlink()
    with pytest.raises(StoreError, match="incomplete"):
        EmbeddingStore.open(tmp_path / "s")
    with pytest.raises(Boom):
        embed_corpus(cfg_for(corpus, tmp_path / "p"), _after_shard=lambda k: (_ for _ in ()).throw(Boom()))
    with pytest.raises(StoreError, match="unfinished run.*resume"):
        EmbeddingStore.open(tmp_path / "p")


def test_sigkill_then_resume(corpus, tmp_path):
    """A real kill (SIGKILL: no cleanup, no exception handlers) after shard 1, then a resume."""
    import signal
    import subprocess
    import sys

    kw = dict(model="hashing", embedder_options={"dim": 16})
    full = embed_corpus(cfg_for(corpus, tmp_path / "full", **kw))
    out = tmp_path / "killed"
    script = (
        "import os, signal\n"
        "from subsetlm.embed import EmbedConfig, embed_corpus\n"
        f"cfg = EmbedConfig(inputs=[{str(corpus)!r}], out={str(out)!r}, model='hashing', max_tokens=8, "
        "shard_size=16, embedder_options={'dim': 16})\n"
        "embed_corpus(cfg, _after_shard=lambda k: k == 1 and os.kill(os.getpid(), signal.SIGKILL))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).resolve().parents[2],
                          capture_output=True, timeout=120)
    assert proc.returncode == -signal.SIGKILL, proc.stderr.decode()[-2000:]
    assert not out.exists() and (tmp_path / "killed.tmp" / "shards" / "00001.parquet").is_file()
    resumed = embed_corpus(cfg_for(corpus, out, **kw))
    assert resumed.stats["resumed_samples"] == 32
    for f in FILES:
        assert (out / f).read_bytes() == (full.path / f).read_bytes(), f
