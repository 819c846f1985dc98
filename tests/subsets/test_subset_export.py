"""export_subset and to_hf_dataset: contents equal the store's rows, atomic, validated."""

from __future__ import annotations

import gzip
import json

import pyarrow.parquet as pq
import pytest

from subsetlm.subsets import SubsetStoreMismatch, export_subset, read_subset, to_hf_dataset, write_subset
from subsetlm.subsets.export import DEFAULT_FIELDS

from .conftest import example_inputs


@pytest.fixture
def sub_path(store, tmp_path):
    return write_subset(tmp_path / "sub", store=store, **example_inputs())


def expected_rows(store, sub_path, order="rank"):
    """The oracle: built directly from the store's files, not through export code."""
    ids_t = pq.read_table(store.path / "ids.parquet").to_pylist()
    texts = pq.read_table(store.path / "texts.parquet").column("text").to_pylist()
    sub = pq.read_table(sub_path / "subset.parquet").to_pylist()
    if order == "index":
        sub = sorted(sub, key=lambda r: r["index"])
    rows = []
    for r in sub:
        i = r["index"]
        rows.append({
            "id": ids_t[i]["id"], "doc_id": ids_t[i]["doc_id"], "source": ids_t[i]["source"],
            "n_tokens": ids_t[i]["n_tokens"], "text": texts[i], "index": i, "rank": r["rank"],
            "gain": r["gain"], "weight": r["weight"], "partition": r["partition"],
        })
    return rows


@pytest.mark.parametrize("name", ["out.jsonl", "out.jsonl.gz", "out.parquet"])
@pytest.mark.parametrize("order", ["rank", "index"])
def test_export_matches_store(store, sub_path, tmp_path, name, order, monkeypatch):
    calls = []
    real = store.texts
    monkeypatch.setattr(store, "texts", lambda idx: calls.append(len(idx)) or real(idx))
    out = export_subset(sub_path, store, tmp_path / name, order=order, block_size=5)
    assert out == tmp_path / name and not (tmp_path / (name + ".tmp")).exists()
    if name.endswith(".parquet"):
        t = pq.read_table(out)
        assert t.column_names == list(DEFAULT_FIELDS)
        rows = t.to_pylist()
    else:
        opener = gzip.open if name.endswith(".gz") else open
        with opener(out, "rt", encoding="utf-8") as fh:
            rows = [json.loads(line) for line in fh]
        assert list(rows[0]) == list(DEFAULT_FIELDS)
    assert rows == expected_rows(store, sub_path, order)
    assert calls == [5, 5, 2]  # 12 rows in blocks of 5: streamed, not one by one


def test_export_is_deterministic(store, sub_path, tmp_path):
    for name in ("a.jsonl.gz", "a.parquet"):
        a = export_subset(sub_path, store, tmp_path / "1" / name)
        b = export_subset(sub_path, store, tmp_path / "2" / name)
        assert a.read_bytes() == b.read_bytes()


def test_export_fields_and_store_path(store, sub_path, tmp_path):
    # a store given as a path is opened with EmbeddingStore.open
    out = export_subset(sub_path, str(store.path), tmp_path / "x.parquet", include_fields="id,text")
    t = pq.read_table(out)
    assert t.column_names == ["id", "text"]
    assert t.column("text").to_pylist() == store.texts(read_subset(sub_path).indices)
    with pytest.raises(ValueError, match=r"unknown or repeated field\(s\) \['txt'\]"):
        export_subset(sub_path, store, tmp_path / "y.jsonl", include_fields=["id", "txt"])
    with pytest.raises(ValueError, match="format='csv'"):
        export_subset(sub_path, store, tmp_path / "y.csv", format="csv")
    with pytest.raises(FileExistsError):
        export_subset(sub_path, store, out)


def test_export_validates_against_store_first(sub_path, other_store, tmp_path):
    with pytest.raises(SubsetStoreMismatch, match="re-run subsetlm select on this store"):
        export_subset(sub_path, other_store, tmp_path / "o.jsonl")
    assert not (tmp_path / "o.jsonl").exists()


def test_export_failure_leaves_nothing(store, sub_path, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = store.texts

    def flaky(idx):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("store went away")
        return real(idx)

    monkeypatch.setattr(store, "texts", flaky)
    with pytest.raises(OSError, match="store went away"):
        export_subset(sub_path, store, tmp_path / "o.jsonl", block_size=4)
    assert not (tmp_path / "o.jsonl").exists() and not (tmp_path / "o.jsonl.tmp").exists()


@pytest.mark.parametrize("cache", [False, True])
def test_hf_dataset_view(store, sub_path, tmp_path, cache):
    import datasets

    ds = to_hf_dataset(sub_path, store, cache_file=(tmp_path / "c.arrow") if cache else None, block_size=5)
    assert isinstance(ds, datasets.Dataset)
    assert ds.column_names == list(DEFAULT_FIELDS)
    assert len(ds) == 12
    assert ds.to_list() == expected_rows(store, sub_path)
    ds2 = to_hf_dataset(read_subset(sub_path), store, include_fields=["text", "weight"], order="index")
    assert ds2.column_names == ["text", "weight"]
    exp = expected_rows(store, sub_path, "index")
    assert ds2["text"] == [r["text"] for r in exp]


def test_hf_dataset_rejects_wrong_store(sub_path, other_store):
    with pytest.raises(SubsetStoreMismatch):
        to_hf_dataset(sub_path, other_store)


def test_hf_missing_datasets_is_a_clear_error(store, sub_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(ImportError, match="to_hf_dataset needs the Hugging Face `datasets` package"):
        to_hf_dataset(sub_path, store)
