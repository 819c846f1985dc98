"""Corpora at fsspec URLs (``memory://`` here; ``s3://`` in test_remote_s3.py): read as the same files locally are."""

from __future__ import annotations

import gzip
import json
import uuid
from pathlib import Path

import fsspec
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from subsetlm._remote import RemoteError, RemotePath, as_path, is_url, local_or_url
from subsetlm.corpus import CorpusConfig, CorpusError, corpus_fingerprint, iter_documents

RECORDS = [{"id": f"d{i}", "text": f"document {i} on topic {i % 3}", "year": 2000 + i} for i in range(7)]


def _jsonl(records=RECORDS) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


@pytest.fixture
def mem():
    """A fresh ``memory://`` folder (the memory filesystem is shared by the whole process), removed afterwards."""
    fs = fsspec.filesystem("memory")
    root = f"/t-{uuid.uuid4().hex[:10]}"
    yield fs, root
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _docs(paths, **kw):
    return [(d.id, d.text, d.source) for b in iter_documents(CorpusConfig([str(p) for p in paths], **kw)) for d in b]


def _local_tree(tmp: Path) -> Path:
    """The same corpus in every format, as local files."""
    d = tmp / "corpus"
    (d / "txt").mkdir(parents=True)
    (d / "a.jsonl").write_bytes(_jsonl())
    (d / "b.jsonl.gz").write_bytes(gzip.compress(_jsonl(RECORDS[:3])))
    (d / "c.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(_jsonl(RECORDS[3:])))
    pq.write_table(pa.table({"id": ["p0", "p1"], "text": ["parquet one", "parquet two"]}), d / "d.parquet")
    (d / "txt" / "x.txt").write_text("a text file")
    return d


def test_url_detection():
    assert is_url("s3://b/k") and is_url("memory://x") and is_url("hf://datasets/o/n")
    assert not is_url("data/c.jsonl") and not is_url("/abs/c.jsonl") and not is_url("file:///tmp/c.jsonl")
    assert local_or_url("file:///tmp/a%20b.jsonl") == "/tmp/a b.jsonl"
    assert isinstance(as_path("memory://x/y"), RemotePath) and as_path("file:///tmp/x") == Path("/tmp/x")


@pytest.mark.parametrize("name", ["a.jsonl", "b.jsonl.gz", "c.jsonl.zst", "d.parquet", "txt"])
def test_each_format_reads_as_it_does_locally(tmp_path, mem, name):
    fs, root = mem
    local = _local_tree(tmp_path)
    fs.put(str(local), root, recursive=True)
    url = f"memory://{root}/{name}"
    got, want = _docs([url]), _docs([local / name])
    assert got == want and got
    first = next(iter(iter_documents(CorpusConfig([url]))))[0]
    assert first.location.startswith(f"memory://{root}/")  # errors and locations name the URL
    assert corpus_fingerprint(CorpusConfig([url])) == corpus_fingerprint(CorpusConfig([str(local / name)]))


def test_a_folder_url_expands_like_a_local_folder(tmp_path, mem):
    fs, root = mem
    local = _local_tree(tmp_path)
    fs.put(str(local), f"{root}/corpus", recursive=True)  # the same folder name: .txt sources are folder names
    url = f"memory://{root}/corpus"
    assert _docs([url]) == _docs([local])
    assert corpus_fingerprint(CorpusConfig([url])) == corpus_fingerprint(CorpusConfig([str(local)]))
    assert _docs([url], id_field="@hash") == _docs([local], id_field="@hash")


def test_saved_hf_datasets_at_a_url(tmp_path, mem):
    datasets = pytest.importorskip("datasets")
    fs, root = mem
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"id": [1, 2], "text": ["a b", "c"]}),
                               "test": datasets.Dataset.from_dict({"id": [3], "text": ["d"]})})
    dd.save_to_disk(str(tmp_path / "dd"))
    fs.put(str(tmp_path / "dd"), f"{root}/dd", recursive=True)
    assert _docs([f"memory://{root}/dd"]) == _docs([tmp_path / "dd"])
    assert [d[0] for d in _docs([f"memory://{root}/dd:test"])] == ["3"]


def test_file_urls_are_local_paths(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_bytes(_jsonl())
    assert _docs([f"file://{p}"]) == _docs([p])


def test_missing_url_and_missing_package_are_named(mem, monkeypatch):
    _, root = mem
    with pytest.raises(CorpusError, match=rf"memory://{root}/nope\.jsonl.*not found"):
        _docs([f"memory://{root}/nope.jsonl"])

    def no_s3fs(url, **kw):
        raise ImportError("Install s3fs to access S3")

    monkeypatch.setattr(fsspec.core, "url_to_fs", no_s3fs)
    with pytest.raises(CorpusError, match=r"s3://bucket/c\.jsonl: s3:// URLs need the s3fs package.*pip install s3fs"):
        _docs(["s3://bucket/c.jsonl"])
    from subsetlm._stage import check_out

    with pytest.raises(RemoteError, match="pip install s3fs"):  # an output URL: refused before any work
        check_out("s3://bucket/store")


def test_bad_records_at_a_url_name_the_url_and_line(mem):
    fs, root = mem
    fs.pipe(f"{root}/bad.jsonl.gz", gzip.compress(_jsonl(RECORDS[:2]) + b'{"text": \n'))
    with pytest.raises(CorpusError, match=rf"memory://{root}/bad\.jsonl\.gz:3: malformed JSON"):
        _docs([f"memory://{root}/bad.jsonl.gz"])
    fs.pipe(f"{root}/cut.jsonl.gz", gzip.compress(_jsonl())[:-20])
    with pytest.raises(CorpusError, match=rf"memory://{root}/cut\.jsonl\.gz: read failed.*truncated"):
        _docs([f"memory://{root}/cut.jsonl.gz"])


def test_embed_from_a_url_gives_the_same_store(tmp_path, mem):
    """The store's identity does not depend on where the corpus lives: the manifests are byte-identical."""
    from subsetlm.cli import main

    fs, root = mem
    (tmp_path / "c.jsonl").write_bytes(_jsonl())
    fs.pipe(f"{root}/c.jsonl", _jsonl())
    for src, out in ((str(tmp_path / "c.jsonl"), "local"), (f"memory://{root}/c.jsonl", "remote")):
        assert main(["embed", src, "--out", str(tmp_path / out), "--model", "hashing", "-q"]) == 0
    assert (tmp_path / "local" / "manifest.json").read_bytes() == (tmp_path / "remote" / "manifest.json").read_bytes()
