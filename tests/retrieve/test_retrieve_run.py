"""``retrieve`` end to end: train queries only, decontamination, skip/refuse, budgets, the subset directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from _retrieve_data import _corpus, _task
from subsetlm.retrieve import RetrieveConfig, read_provenance, retrieve



def test_retrieve_on_a_plain_corpus_uses_train_queries_only_and_decontaminates(tmp_path):
    from subsetlm.subsets import read_subset

    corpus, docs = _corpus(tmp_path)
    task = _task(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(tmp_path / "sub"), k=5))
    sub = read_subset(out)
    ids = set(sub.ids.tolist())
    assert "zebra-doc" not in ids  # only a test example mentions it: test texts are never queries
    assert "t-held" not in ids  # the task's test document itself is never retrieved
    assert {i.split("-")[0] for i in ids} <= {"cardio", "onco", "neuro"}
    prov = read_provenance(out).to_pydict()
    assert prov["index"] == sub.indices.tolist()
    assert set(prov["query"]) <= {0, 1, 2} and set(prov["query_id"]) <= {"q0", "q1", "q2"}
    np.testing.assert_allclose(sub.gains, prov["score"])  # gain = best retrieval score
    assert sub.manifest["selection"]["n_excluded"] == 1
    # the same config again is skipped; a different one refuses without --force
    assert retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(out), k=5)) == out
    with pytest.raises(FileExistsError):
        retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(out), k=3))
    # without decontamination the held document is retrievable (a train query matches it)
    out2 = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(task), out=str(tmp_path / "sub2"), k=10,
                                   decontaminate=False))
    assert "t-held" in set(read_subset(out2).ids.tolist())


def test_budget_cap_takes_every_querys_first_hit_first(tmp_path):
    from subsetlm.subsets import read_subset

    corpus, _ = _corpus(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(_task(tmp_path)), out=str(tmp_path / "s"), k=6,
                                  budget="4"))
    prov = read_provenance(out).to_pydict()
    assert read_subset(out).size == 4
    assert prov["rank"][:3] == [0, 0, 0] and sorted(prov["query"][:3]) == [0, 1, 2]


def test_dense_needs_a_store(tmp_path):
    corpus, _ = _corpus(tmp_path)
    with pytest.raises(ValueError, match="needs embeddings"):
        retrieve(RetrieveConfig(corpus=[str(corpus)], task=str(_task(tmp_path)), out=str(tmp_path / "s"),
                                method="dense"))


def test_dense_retrieval_on_a_store_and_a_token_budget(tmp_path):
    from subsetlm.cli import main
    from subsetlm.embed import EmbeddingStore
    from subsetlm.subsets import read_subset

    corpus, docs = _corpus(tmp_path)
    store = tmp_path / "store"
    assert main(["embed", str(corpus), "--out", str(store), "--model", "hashing", "--id-field", "id", "-q"]) == 0
    st = EmbeddingStore.open(store)
    task = _task(tmp_path)
    out = retrieve(RetrieveConfig(corpus=[str(store)], task=str(task), out=str(tmp_path / "d"), method="dense", k=3))
    sub = read_subset(out, store=st)
    prov = read_provenance(out).to_pydict()
    first = {q: st.doc_ids[i] for q, i, r in zip(prov["query"], prov["index"], prov["rank"]) if r == 0}
    assert first[0].startswith("cardio") and first[1].startswith("onco") and first[2].startswith("neuro")
    assert sub.gains.max() <= 1.0 + 1e-6  # cosine scores
    tok = retrieve(RetrieveConfig(corpus=[str(store)], task=str(task), out=str(tmp_path / "t"), k=10,
                                  budget="tokens:40"))
    n_tok = st.n_tokens[read_subset(tok).indices]
    assert n_tok.sum() <= 40 and read_subset(tok).size >= 2


def test_write_subset_refuses_extra_tables_that_would_clobber_its_files(tmp_path):
    import pyarrow as pa

    from subsetlm.corpus.rows import CorpusRows
    from subsetlm.subsets import write_subset
    from subsetlm.subsets.format import SubsetError

    rows = CorpusRows.from_texts(["a", "b"], ["x", "y"])
    with pytest.raises(SubsetError, match="extra table name"):
        write_subset(tmp_path / "s", store=rows, indices=np.array([1]), gains=np.ones(1), manifest={},
                     extra_tables={"subset.parquet": pa.table({"a": [1]})})
    assert not (tmp_path / "s").exists()  # nothing half-written


def test_the_stage_prints_what_the_cli_printed_and_refuses_a_foreign_folder(tmp_path):
    from subsetlm.retrieve import STAGE, summary

    corpus, _ = _corpus(tmp_path)
    cfg = RetrieveConfig(corpus=[str(corpus)], id_field="id", task=str(_task(tmp_path)), out=str(tmp_path / "s"), k=5)
    assert STAGE.name == "retrieve" and STAGE.config is RetrieveConfig and STAGE.run is retrieve
    out = STAGE.run(cfg)
    m = json.loads((out / "manifest.json").read_text())
    assert summary(out) == (f"wrote {out}: {m['size']} of 26 rows retrieved by 3 task queries (k=5, "
                            f"{m['selection']['n_union']} distinct hits, 1 validation/test rows excluded)")
    assert m["config"]["k"] == 5 and not {"out", "force", "device"} & set(m["config"])
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    cfg.out = str(tmp_path / "mine")
    with pytest.raises(FileExistsError, match="not a complete subset"):
        retrieve(cfg)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "x"
