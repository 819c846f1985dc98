"""The subset file with a store written by ``embed_corpus`` (and by the select stage)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from subsetlm import embed
from subsetlm.select import api
from subsetlm.subsets import (
    SubsetSampler,
    SubsetStoreMismatch,
    export_subset,
    read_subset,
    to_hf_dataset,
    write_subset,
)

from _stores import write_store_dir

from .conftest import example_inputs

WORDS = ("aspirin platelet kinase tumour insulin receptor telescope galaxy orbit budget "
         "senate tax vaccine antibody neuron cortex").split()


@pytest.fixture(scope="module")
def real_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("real")
    rng = np.random.default_rng(0)
    with open(root / "corpus.jsonl", "w") as fh:
        for i in range(40):
            text = " ".join(rng.choice(WORDS, size=12))
            fh.write(json.dumps({"id": f"d{i}", "text": f"{text} ünï {i}"}) + "\n")
    cfg = embed.EmbedConfig(inputs=[str(root / "corpus.jsonl")], out=str(root / "store"),
                            model="hashing", id_field="id")
    return embed.embed_corpus(cfg)


def test_real_store_round_trip_export_hf_sampler(real_store, tmp_path):
    store = embed.EmbeddingStore.open(real_store.path)
    inp = example_inputs(n=store.n, b=10)
    sub_dir = write_subset(tmp_path / "sub", store=store, **inp)
    sub = read_subset(sub_dir, store=store)
    assert sub.ids.tolist() == [store.ids[i] for i in inp["indices"]]
    assert sub.manifest["store"]["fingerprint"] == store.fingerprint
    assert sub.manifest["store"]["corpus_fingerprint"] == store.manifest["corpus_fingerprint"]
    assert sub.manifest["n_ground"] == store.n

    texts = pq.read_table(store.path / "texts.parquet").column("text").to_pylist()
    ids_t = pq.read_table(store.path / "ids.parquet").to_pylist()
    out = export_subset(sub_dir, str(store.path), tmp_path / "x.jsonl")  # store given as a path
    rows = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert [r["text"] for r in rows] == [texts[i] for i in inp["indices"]]
    assert [r["doc_id"] for r in rows] == [ids_t[i]["doc_id"] for i in inp["indices"]]
    assert [r["n_tokens"] for r in rows] == [ids_t[i]["n_tokens"] for i in inp["indices"]]

    ds = to_hf_dataset(sub, store)
    assert len(ds) == 10 and ds["text"] == [r["text"] for r in rows]
    assert sorted(SubsetSampler(sub, seed=0)) == sorted(inp["indices"].tolist())


def test_real_store_rejects_foreign_subset(real_store, store, tmp_path):
    sub_dir = write_subset(tmp_path / "sub", store=store, **example_inputs(n=store.n, b=5))
    with pytest.raises(SubsetStoreMismatch, match="re-run subsetlm select on this store"):
        read_subset(sub_dir, store=embed.EmbeddingStore.open(real_store.path))


def test_fixture_store_reads_back_what_was_written(tmp_path):
    """The fixture directory (and so docs/formats.md's example) is what EmbeddingStore reads."""
    X = np.random.default_rng(4).standard_normal((30, 6)).astype(np.float32)
    X /= np.linalg.norm(X, axis=1, keepdims=True)
    path = write_store_dir(tmp_path / "s", embeddings=X, seed=2)
    store = embed.EmbeddingStore.open(path)
    ids = pq.read_table(path / "ids.parquet")
    texts = pq.read_table(path / "texts.parquet").column("text").to_pylist()
    assert (store.n, store.dim) == (30, 6)
    assert store.fingerprint == json.loads((path / "manifest.json").read_text())["embedding_fingerprint"]
    np.testing.assert_array_equal(store.embeddings, X.astype(np.float16))
    assert store.ids.tolist() == ids.column("id").to_pylist()
    assert store.sources.tolist() == ids.column("source").to_pylist()
    assert store.n_tokens.tolist() == ids.column("n_tokens").to_pylist()
    assert store.texts([3, 1]) == [texts[3], texts[1]]


def test_select_output_is_a_valid_subset(real_store, tmp_path):
    """Contract with the select stage: its output reads back and exports against the store."""
    out = api.select(api.SelectConfig(store=str(real_store.path), out=str(tmp_path / "sel"), budget="8", k=8))
    sub = read_subset(out, store=real_store)
    assert sub.size == 8 and np.all(np.diff(sub.ranks) == 1)
    cert = sub.manifest["certificate"]
    assert cert["objective"] <= cert["upper_bound"] + 1e-9
    assert cert["ratio"] == pytest.approx(cert["objective"] / cert["upper_bound"])
    assert sub.weights.sum() <= real_store.n  # each ground point counts for one selected sample
    rows = pq.read_table(export_subset(out, real_store, tmp_path / "sel.parquet")).to_pylist()
    assert [r["index"] for r in rows] == sub.indices.tolist()


def test_relative_store_path_is_found_from_another_working_directory(real_store, tmp_path, monkeypatch):
    """select run in PROJECT with relative paths; export / inspect run elsewhere find the store
    through the manifest's ``path_from_subset`` (issue 18: export failed from another cwd)."""
    import shutil

    from subsetlm.cli import main

    proj = tmp_path / "proj"
    proj.mkdir()
    shutil.copytree(real_store.path, proj / "st")
    monkeypatch.chdir(proj)
    assert main(["select", "st", "--budget", "8", "--out", "sub", "-q"]) == 0
    m = json.loads((proj / "sub" / "manifest.json").read_text())
    assert (m["store"]["path"], m["store"]["path_from_subset"]) == ("st", "../st")

    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    sub = read_subset("../proj/sub")
    assert sub.store_path == "../proj/st"
    assert main(["export", "../proj/sub", "--out", "x.jsonl", "-q"]) == 0
    rows = [json.loads(s) for s in open("x.jsonl", encoding="utf-8")]
    texts = pq.read_table(proj / "st" / "texts.parquet").column("text").to_pylist()
    assert [r["text"] for r in rows] == [texts[i] for i in sub.indices]
    assert main(["inspect", "../proj/sub", "-q"]) == 0

    monkeypatch.chdir(proj)  # from the original directory the recorded path itself wins
    assert read_subset("sub").store_path == "st"
    shutil.rmtree(proj / "st")  # neither exists: the recorded path comes back (its error names it)
    assert read_subset("sub", verify=False).store_path == "st"
