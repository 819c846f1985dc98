"""Readers: every format round-trips generated text; blocks, limits, fields, errors, fingerprint."""

from __future__ import annotations

import gzip
import json
import logging
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import zstandard

from subsetlm.corpus import CorpusConfig, CorpusError, Document, corpus_fingerprint, iter_documents, resolve_inputs
from subsetlm.corpus.readers import SUPPORTED_EXTENSIONS

RECORDS = [{"pmid": 100 + i, "abstract": f"Document number {i} about topic {i % 3}.", "year": 2000 + i}
           for i in range(23)]


def _jsonl_bytes(records) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_jsonl(path: Path, records=RECORDS) -> Path:
    data = _jsonl_bytes(records)
    if path.name.endswith(".gz"):
        path.write_bytes(gzip.compress(data))
    elif path.name.endswith(".zst"):
        path.write_bytes(zstandard.ZstdCompressor().compress(data))
    else:
        path.write_bytes(data)
    return path


def read_all(cfg: CorpusConfig) -> list[Document]:
    return [d for block in iter_documents(cfg) for d in block]


def cfg_for(path, **kw) -> CorpusConfig:
    kw.setdefault("text_field", "abstract")
    return CorpusConfig([str(path)], **kw)


EXPECTED_TEXTS = [r["abstract"] for r in RECORDS]
EXPECTED_IDS = [str(r["pmid"]) for r in RECORDS]


@pytest.mark.parametrize("name", ["c.jsonl", "c.jsonl.gz", "c.jsonl.zst"])
def test_jsonl_variants_round_trip(tmp_path, name):
    p = write_jsonl(tmp_path / name)
    docs = read_all(cfg_for(p, id_field="pmid"))
    assert [d.text for d in docs] == EXPECTED_TEXTS
    assert [d.id for d in docs] == EXPECTED_IDS  # ints become strings
    assert {d.source for d in docs} == {"c"}
    assert docs[4].location == f"{p}:5"


def test_parquet_round_trip_reads_only_needed_columns(tmp_path):
    p = tmp_path / "c.parquet"
    table = pa.table({"pmid": [r["pmid"] for r in RECORDS], "abstract": EXPECTED_TEXTS,
                      "year": [r["year"] for r in RECORDS]})
    pq.write_table(table, p, row_group_size=5)
    docs = read_all(cfg_for(p, id_field="pmid", block_size=4))
    assert [d.text for d in docs] == EXPECTED_TEXTS and [d.id for d in docs] == EXPECTED_IDS
    assert docs[7].location == f"{p}:row 7"
    docs = read_all(cfg_for(p, metadata_fields=["year"]))
    assert [d.metadata for d in docs] == [{"year": r["year"]} for r in RECORDS]
    assert all(d.id is None for d in docs)


def test_txt_folder_one_doc_per_file_ids_are_relative_paths(tmp_path):
    root = tmp_path / "notes"
    (root / "sub").mkdir(parents=True)
    (root / "b.txt").write_text("second file\n")
    (root / "a.txt").write_text("first file")
    (root / "sub" / "c.txt").write_text("nested ünïcode")
    (root / "README.md").write_text("ignored")
    (root / ".hidden.txt").write_text("ignored too")
    docs = read_all(CorpusConfig([str(root)]))
    assert [d.id for d in docs] == ["a.txt", "b.txt", "sub/c.txt"]
    assert [d.text for d in docs] == ["first file", "second file\n", "nested ünïcode"]
    assert {d.source for d in docs} == {"notes"}
    assert resolve_inputs([str(root)]) == [root / "a.txt", root / "b.txt", root / "sub" / "c.txt"]


def test_hf_save_to_disk_dataset_and_dataset_dict(tmp_path):
    import datasets  # a core dependency: missing it must fail, not skip
    datasets.disable_progress_bars()
    ds = datasets.Dataset.from_dict({"abstract": EXPECTED_TEXTS, "pmid": [r["pmid"] for r in RECORDS]})
    ds.save_to_disk(str(tmp_path / "hf"))
    docs = read_all(cfg_for(tmp_path / "hf", id_field="pmid", block_size=5))
    assert [d.text for d in docs] == EXPECTED_TEXTS and [d.id for d in docs] == EXPECTED_IDS
    assert docs[0].source == "hf"

    dd = datasets.DatasetDict({"train": ds.select(range(20)), "test": ds.select(range(20, 23))})
    dd.save_to_disk(str(tmp_path / "hfdd"))
    all_docs = read_all(cfg_for(tmp_path / "hfdd", id_field="pmid"))
    order = json.loads((tmp_path / "hfdd" / "dataset_dict.json").read_text())["splits"]
    expect = {"train": EXPECTED_IDS[:20], "test": EXPECTED_IDS[20:]}
    assert [d.id for d in all_docs] == [i for s in order for i in expect[s]]
    test_only = read_all(cfg_for(f"{tmp_path / 'hfdd'}:test", id_field="pmid"))
    assert [d.id for d in test_only] == EXPECTED_IDS[20:]
    with pytest.raises(CorpusError, match=r"no split 'dev'.*splits present"):
        read_all(cfg_for(f"{tmp_path / 'hfdd'}:dev"))


@pytest.mark.parametrize("block_size", [1, 4, 23, 100])
def test_blocks_have_block_size_except_last(tmp_path, block_size):
    p = write_jsonl(tmp_path / "c.jsonl")
    sizes = [len(b) for b in iter_documents(cfg_for(p, block_size=block_size))]
    assert sum(sizes) == len(RECORDS)
    assert all(s == block_size for s in sizes[:-1]) and 0 < sizes[-1] <= block_size


def test_streaming_is_lazy(tmp_path):
    """A bad line after the first block must not prevent the first block from arriving."""
    p = tmp_path / "c.jsonl"
    p.write_bytes(_jsonl_bytes(RECORDS[:4]) + b"{broken\n")
    it = iter_documents(cfg_for(p, block_size=2))
    assert len(next(it)) == 2 and len(next(it)) == 2
    with pytest.raises(CorpusError):
        next(it)


def test_limit_and_multiple_inputs_in_order(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", RECORDS[:10])
    b = write_jsonl(tmp_path / "b.jsonl.gz", RECORDS[10:])
    docs = read_all(CorpusConfig([str(a), str(b)], text_field="abstract", block_size=3))
    assert [d.text for d in docs] == EXPECTED_TEXTS
    assert [d.source for d in docs] == ["a"] * 10 + ["b"] * 13
    docs = read_all(CorpusConfig([str(a), str(b)], text_field="abstract", block_size=3, limit=12))
    assert [d.text for d in docs] == EXPECTED_TEXTS[:12]
    # a folder expands sorted, so it reads the same as the explicit list
    assert [d.text for d in read_all(cfg_for(tmp_path))] == EXPECTED_TEXTS


def test_empty_texts_skipped_with_warning_or_error(tmp_path, caplog):
    recs = [{"text": "one"}, {"text": "   \n"}, {"text": None}, {"text": "two"}, {"text": ""}]
    p = write_jsonl(tmp_path / "e.jsonl", recs)
    with caplog.at_level(logging.WARNING):
        docs = read_all(CorpusConfig([str(p)]))
    assert [d.text for d in docs] == ["one", "two"]
    assert "skipped 3 document(s)" in caplog.text and f"{p}:2" in caplog.text
    with pytest.raises(CorpusError) as e:
        read_all(CorpusConfig([str(p)], on_empty="error"))
    assert f"{p}:2" in str(e.value) and "'text'" in str(e.value) and "on_empty" in str(e.value)
    allempty = write_jsonl(tmp_path / "z.jsonl", [{"text": " "}, {"text": ""}])
    with pytest.raises(CorpusError, match=r"all 2 documents .* empty 'text'"):
        read_all(CorpusConfig([str(allempty)]))


# ----------------------------------------------------------------------------- bad input
def _err(cfg: CorpusConfig) -> str:
    with pytest.raises(CorpusError) as e:
        read_all(cfg)
    return str(e.value)


def test_malformed_json_names_file_line_and_column(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n\n{"text": "no end"\n')
    msg = _err(CorpusConfig([str(p)]))
    assert f"{p}:3" in msg and "malformed JSON" in msg and "column" in msg


def test_line_not_an_object(tmp_path):
    p = tmp_path / "bad.jsonl"
    p.write_text('{"text": "ok"}\n["a", "list"]\n')
    msg = _err(CorpusConfig([str(p)]))
    assert f"{p}:2" in msg and "expected a JSON object" in msg and "list" in msg


def test_missing_text_field_lists_present_fields(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl.gz")
    msg = _err(CorpusConfig([str(p)]))  # default text_field "text" is absent
    assert f"{p}:1" in msg and "'text'" in msg and "abstract, pmid, year" in msg and "--text-field" in msg


def test_missing_text_column_parquet(tmp_path):
    p = tmp_path / "c.parquet"
    pq.write_table(pa.table({"body": ["x"]}), p)
    msg = _err(CorpusConfig([str(p)]))
    assert str(p) in msg and "'text'" in msg and "body" in msg and "--text-field" in msg


def test_text_field_not_a_string(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"text": "a"}, {"text": {"nested": 1}}])
    msg = _err(CorpusConfig([str(p)]))
    assert f"{p}:2" in msg and "'text'" in msg and "must be a string" in msg


def test_missing_id_field(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl", [{"text": "a", "id": 1}, {"text": "b"}])
    msg = _err(CorpusConfig([str(p)], id_field="id"))
    assert f"{p}:2" in msg and "id field 'id' is missing" in msg and "fields present: text" in msg
    q = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": ["a"]}), q)
    msg = _err(CorpusConfig([str(q)], id_field="doc"))
    assert str(q) in msg and "'doc'" in msg and "--id-field" in msg


@pytest.mark.parametrize("name", ["latin.jsonl", "latin.jsonl.gz"])
def test_non_utf8_reports_line_and_byte_offset(tmp_path, name):
    data = b'{"text": "fine"}\n{"text": "caf\xe9"}\n'
    p = tmp_path / name
    p.write_bytes(gzip.compress(data) if name.endswith(".gz") else data)
    msg = _err(CorpusConfig([str(p)]))
    assert f"{p}:2" in msg and "invalid UTF-8" in msg and "offset 30" in msg and "iconv" in msg


def test_non_utf8_txt(tmp_path):
    p = tmp_path / "t.txt"
    p.write_bytes(b"line one\nline \xff two")
    msg = _err(CorpusConfig([str(p)]))
    assert f"{p}:2" in msg and "byte offset 14" in msg and "Re-encode" in msg


def test_missing_file_and_unknown_extension(tmp_path):
    msg = _err(CorpusConfig([str(tmp_path / "nope.jsonl")]))
    assert "nope.jsonl" in msg and "not found" in msg and "pubmed" in msg
    p = tmp_path / "data.csv"
    p.write_text("text\nx\n")
    msg = _err(CorpusConfig([str(p)]))
    assert "data.csv" in msg and "unsupported" in msg and all(e in msg for e in SUPPORTED_EXTENSIONS)
    (tmp_path / "emptydir").mkdir()
    assert "holds no corpus files" in _err(CorpusConfig([str(tmp_path / "emptydir")]))


def test_unreadable_file(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl")
    p.chmod(0)
    try:
        if _readable(p):
            pytest.skip("running as root: permissions are not enforced")
        msg = _err(CorpusConfig([str(p)]))
        assert str(p) in msg and "cannot open" in msg
    finally:
        p.chmod(0o644)


def _readable(p: Path) -> bool:
    try:
        p.open("rb").close()
        return True
    except OSError:
        return False


def test_truncated_gzip(tmp_path):
    p = tmp_path / "c.jsonl.gz"
    p.write_bytes(gzip.compress(_jsonl_bytes(RECORDS))[:-30])
    msg = _err(CorpusConfig([str(p)], text_field="abstract"))
    assert str(p) in msg and "truncated" in msg


def test_bad_config_values(tmp_path):
    p = write_jsonl(tmp_path / "c.jsonl")
    for kw, needle in [({"block_size": 0}, "block_size"), ({"on_empty": "drop"}, "on_empty"),
                       ({"limit": -1}, "limit"), ({"max_tokens": -5}, "max_tokens")]:
        assert needle in _err(CorpusConfig([str(p)], **kw))


# ----------------------------------------------------------------------------- fingerprint
def test_fingerprint_tracks_content_and_fields_not_location_or_blocks(tmp_path):
    (tmp_path / "x").mkdir()
    a = write_jsonl(tmp_path / "x" / "c.jsonl")
    b_dir = tmp_path / "y"
    b_dir.mkdir()
    b = b_dir / "c.jsonl"
    b.write_bytes(a.read_bytes())
    fa = corpus_fingerprint(cfg_for(a))
    assert len(fa) == 64
    assert fa == corpus_fingerprint(cfg_for(b, block_size=7))          # same bytes elsewhere
    assert fa != corpus_fingerprint(cfg_for(a, text_field="text"))      # fields count
    assert fa != corpus_fingerprint(cfg_for(a, id_field="pmid"))
    assert fa != corpus_fingerprint(cfg_for(a, max_tokens=128))
    recs = [dict(r) for r in RECORDS]
    recs[5]["abstract"] = recs[5]["abstract"].replace("5", "6")         # same size, new content
    write_jsonl(b, recs)
    assert b.stat().st_size == a.stat().st_size
    assert fa != corpus_fingerprint(cfg_for(b))


def test_documented_defaults_match_the_dataclass():
    import ast
    import dataclasses
    import re

    doc = CorpusConfig.__doc__
    for f in dataclasses.fields(CorpusConfig):
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            continue
        value = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        m = re.search(rf"^\s*{f.name} : .*default (.+)$", doc, re.M)
        assert m, f"{f.name} has no documented default"
        assert ast.literal_eval(m.group(1).strip()) == value, f.name


def test_repeats_is_the_one_duplicate_check_ids_raise_naming_both_places_hashes_drop_once(tmp_path, caplog):
    from subsetlm.corpus.readers import Repeats

    a = write_jsonl(tmp_path / "a.jsonl", RECORDS[:5])
    b = write_jsonl(tmp_path / "b.jsonl", RECORDS[5:8] + RECORDS[2:3])  # pmid 102 again, at b.jsonl:4
    r = Repeats(CorpusConfig([str(a), str(b)], text_field="abstract", id_field="pmid"))
    asked = []
    for i in range(8):
        assert r.keep(str(100 + i), user_id=True, where=lambda: asked.append(1) or "unused")
    assert asked == [] and r.seen == {str(100 + i) for i in range(8)}  # a location is looked up only for a repeat
    with pytest.raises(CorpusError, match=rf"duplicate document id '102': at {a}:3 and again at {b}:4; ids must be "
                                          rf"unique.*--id-field"):
        r.repeated("102", user_id=True, where=f"{b}:4")
    assert not r.repeated("999", user_id=False, where="x") and "999" not in r.seen  # repeated() does not record
    hashes = Repeats(cfg_for(a))
    assert [hashes.keep(h, False, f"f:{i}") for i, h in enumerate(["h1", "h2", "h1", "h1", "h3"])] == \
        [True, True, False, False, True]
    with caplog.at_level(logging.WARNING):
        hashes.warn()
        Repeats(cfg_for(a)).warn()  # nothing dropped: nothing logged
    assert [r.getMessage() for r in caplog.records] == [
        "dropped 2 exact duplicate document(s) without ids (e.g. f:2, f:3); their content-hash ids would collide"]
