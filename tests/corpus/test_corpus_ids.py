"""Document ids: the corpus's own ``id`` by default, ``--id-field NAME`` or ``@hash``; recorded in manifests."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from subsetlm.corpus import CorpusConfig, CorpusError, WhitespaceSplitter, corpus_fingerprint, iter_samples
from subsetlm.corpus.ids import HASH_IDS, id_rule
from subsetlm.corpus.rows import CorpusRows


def _all_sha1(ids) -> bool:
    """Every id is a content hash, and there is at least one (an empty list would pass ``all``)."""
    ids = list(ids)
    return bool(ids) and all(str(i).startswith("sha1:") for i in ids)


def _jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def _doc_ids(cfg: CorpusConfig) -> list[str]:
    return [s.doc_id for block in iter_samples(cfg, WhitespaceSplitter()) for s in block]


WITH_IDS = [{"id": f"d{i}", "text": f"document {i} about topic {i % 3}"} for i in range(6)]
NO_IDS = [{"text": f"document {i} about topic {i % 3}"} for i in range(6)]


def test_own_id_field_by_default(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", WITH_IDS)
    assert _doc_ids(CorpusConfig([str(p)])) == [f"d{i}" for i in range(6)]
    assert id_rule(CorpusConfig([str(p)])) == {"rule": "auto", "source": "field", "field": "id"}


def test_numeric_ids_become_strings(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"id": 7, "text": "a"}, {"id": 8, "text": "b"}])
    assert _doc_ids(CorpusConfig([str(p)])) == ["7", "8"]


def test_no_id_field_gives_content_hashes(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", NO_IDS)
    ids = _doc_ids(CorpusConfig([str(p)]))
    assert all(i.startswith("sha1:") and len(i) == 21 for i in ids) and len(set(ids)) == 6
    assert id_rule(CorpusConfig([str(p)])) == {"rule": "auto", "source": "content-hash", "field": None}


def test_hash_option_ignores_the_id_field(tmp_path):
    with_ids = _jsonl(tmp_path / "a.jsonl", WITH_IDS)
    without = _jsonl(tmp_path / "b.jsonl", NO_IDS)
    hashed = _doc_ids(CorpusConfig([str(with_ids)], id_field=HASH_IDS))
    assert hashed == _doc_ids(CorpusConfig([str(without)]))  # same texts, same content-hash ids
    assert _all_sha1(hashed)
    assert id_rule(CorpusConfig([str(with_ids)], id_field=HASH_IDS)) == {
        "rule": "content-hash", "source": "content-hash", "field": None}


def test_explicit_field_is_recorded(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"pmid": i, "id": "same", "text": f"t{i}"} for i in range(3)])
    assert _doc_ids(CorpusConfig([str(p)], id_field="pmid")) == ["0", "1", "2"]
    assert id_rule(CorpusConfig([str(p)], id_field="pmid")) == {"rule": "field", "source": "field", "field": "pmid"}


def test_a_later_record_without_id_names_its_line(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", WITH_IDS[:3] + [{"text": "no id here"}] + WITH_IDS[3:])
    with pytest.raises(CorpusError, match=r"c\.jsonl:4: id field 'id' is missing.*--id-field @hash"):
        _doc_ids(CorpusConfig([str(p)]))
    # the explicit choice reads it
    assert len(_doc_ids(CorpusConfig([str(p)], id_field=HASH_IDS))) == 7


def test_a_first_record_without_id_means_content_hashes(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"text": "first"}, {"id": "x", "text": "second"}])
    assert _all_sha1(_doc_ids(CorpusConfig([str(p)])))


def test_files_that_disagree_are_refused_before_reading(tmp_path):
    a = _jsonl(tmp_path / "a.jsonl", WITH_IDS)
    b = _jsonl(tmp_path / "b.jsonl", NO_IDS)
    with pytest.raises(CorpusError, match=r"a\.jsonl carries an 'id' field.*b\.jsonl does not.*--id-field @hash"):
        _doc_ids(CorpusConfig([str(a), str(b)]))
    with pytest.raises(CorpusError, match="carries an 'id' field"):
        corpus_fingerprint(CorpusConfig([str(a), str(b)]))
    assert len(_doc_ids(CorpusConfig([str(a), str(b)], id_field=HASH_IDS))) == 6  # same texts: copies dropped


def test_repeated_own_ids_stop_the_run(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", [{"id": "x", "text": "a"}, {"id": "x", "text": "b"}])
    with pytest.raises(CorpusError, match=r"duplicate document id 'x': at .*c\.jsonl:1 and again at .*:2.*@hash"):
        _doc_ids(CorpusConfig([str(p)]))


def test_reserved_names_are_refused(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", WITH_IDS)
    with pytest.raises(CorpusError, match="reserved.*@hash"):
        _doc_ids(CorpusConfig([str(p)], id_field="@hsh"))


def test_parquet_and_saved_dataset_columns(tmp_path):
    pq.write_table(pa.table({"id": [f"p{i}" for i in range(3)], "text": ["a", "b", "c"]}), tmp_path / "with.parquet")
    pq.write_table(pa.table({"text": ["a", "b", "c"]}), tmp_path / "without.parquet")
    assert _doc_ids(CorpusConfig([str(tmp_path / "with.parquet")])) == ["p0", "p1", "p2"]
    assert _all_sha1(_doc_ids(CorpusConfig([str(tmp_path / "without.parquet")])))
    pq.write_table(pa.table({"id": ["p0", None], "text": ["a", "b"]}), tmp_path / "null.parquet")
    with pytest.raises(CorpusError, match=r"null\.parquet:row 1: id field 'id' is null"):
        _doc_ids(CorpusConfig([str(tmp_path / "null.parquet")]))

    datasets = pytest.importorskip("datasets")
    datasets.Dataset.from_dict({"id": [1, 2], "text": ["x y", "z"]}).save_to_disk(str(tmp_path / "hf"))
    assert _doc_ids(CorpusConfig([str(tmp_path / "hf")])) == ["1", "2"]
    assert _all_sha1(_doc_ids(CorpusConfig([str(tmp_path / "hf")], id_field=HASH_IDS)))


def test_txt_files_keep_path_ids_unless_hashed(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    (d / "a.txt").write_text("alpha text")
    assert _doc_ids(CorpusConfig([str(d)])) == ["a.txt"]
    assert _doc_ids(CorpusConfig([str(d)], id_field=HASH_IDS))[0].startswith("sha1:")
    assert id_rule(CorpusConfig([str(d)])) == {"rule": "auto", "source": "path", "field": None}
    assert corpus_fingerprint(CorpusConfig([str(d)])) != corpus_fingerprint(CorpusConfig([str(d)], id_field=HASH_IDS))


def test_fingerprint_follows_the_ids(tmp_path):
    with_ids = _jsonl(tmp_path / "a.jsonl", WITH_IDS)
    without = _jsonl(tmp_path / "b.jsonl", NO_IDS)
    fp = corpus_fingerprint
    assert fp(CorpusConfig([str(with_ids)])) == fp(CorpusConfig([str(with_ids)], id_field="id"))
    assert fp(CorpusConfig([str(with_ids)])) != fp(CorpusConfig([str(with_ids)], id_field=HASH_IDS))
    # a corpus without ids: the default and @hash are the same corpus (stores made before stay valid)
    assert fp(CorpusConfig([str(without)])) == fp(CorpusConfig([str(without)], id_field=HASH_IDS))


def test_per_file_chunk_pass_makes_the_same_choice(tmp_path):
    """The per-file (Ray) cut resolves the rule once, so every file task reads the same ids as a serial run."""
    from subsetlm.embed.shards import _chunk_pass

    a = _jsonl(tmp_path / "a.jsonl", WITH_IDS[:3])
    b = _jsonl(tmp_path / "b.jsonl", WITH_IDS[3:])
    cfg = CorpusConfig([str(a), str(b)], max_tokens=None)
    parts = _chunk_pass(tmp_path / "run", cfg, WhitespaceSplitter(), 2, lambda f, items: [f(t) for t in items])
    got = [d for p in parts for d in pq.read_table(p, columns=["doc_id"]).column("doc_id").to_pylist()]
    assert got == _doc_ids(cfg) == [f"d{i}" for i in range(6)]


def test_corpus_rows_record_the_rule(tmp_path):
    p = _jsonl(tmp_path / "c.jsonl", WITH_IDS)
    rows = CorpusRows.read([str(p)])
    assert rows.ids.tolist() == [f"d{i}" for i in range(6)]
    assert rows.manifest["ids"] == {"rule": "auto", "source": "field", "field": "id"}


def test_store_and_subset_carry_the_corpus_ids(tmp_path):
    """Without flags, a corpus with ids gives a store and a subset that join back to it by id."""
    from subsetlm.cli import main

    rows = [{"id": f"doc-{i}", "text": f"topic {i % 4} words {' '.join(str(j) for j in range(i % 7))}"}
            for i in range(40)]
    corpus = _jsonl(tmp_path / "c.jsonl", rows)
    store, sub = tmp_path / "store", tmp_path / "sub"
    assert main(["embed", str(corpus), "--out", str(store), "--model", "hashing", "--max-tokens", "0", "-q"]) == 0
    man = json.loads((store / "manifest.json").read_text())
    assert man["ids"] == {"rule": "auto", "source": "field", "field": "id"}
    assert pq.read_table(store / "ids.parquet").column("doc_id").to_pylist() == [r["id"] for r in rows]
    assert main(["select", str(store), "--budget", "5", "--k", "4", "--out", str(sub), "-q"]) == 0
    picked = pq.read_table(sub / "subset.parquet").column("id").to_pylist()
    assert len(picked) > 0 and {p.rpartition("#")[0] for p in picked} <= {r["id"] for r in rows}
    assert json.loads((sub / "manifest.json").read_text())["store"]["ids"]["field"] == "id"

    hashed = tmp_path / "hashed"
    assert main(["embed", str(corpus), "--out", str(hashed), "--model", "hashing", "--max-tokens", "0",
                 "--id-field", "@hash", "-q"]) == 0
    assert json.loads((hashed / "manifest.json").read_text())["ids"]["source"] == "content-hash"
    assert _all_sha1(pq.read_table(hashed / "ids.parquet").column("doc_id").to_pylist())
