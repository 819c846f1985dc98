"""Tokenizers trained here: deterministic, save/load round trip; C-RTS clusters follow co-occurrence."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm.recipes.clusters import token_clusters
from subsetlm.recipes.tokenizer import load_tokenizer, special_ids, train_byte_bpe, train_wordpiece


def test_wordpiece_is_deterministic_and_round_trips(tmp_path, texts):
    a = train_wordpiece(texts, vocab_size=200)
    b = train_wordpiece(texts, vocab_size=200)
    assert a.get_vocab() == b.get_vocab()
    enc = a("heart artery blood")["input_ids"]
    assert a.convert_ids_to_tokens(enc) == ["[CLS]", "heart", "artery", "blood", "[SEP]"]
    a.save_pretrained(tmp_path / "tok")
    c = load_tokenizer(tmp_path / "tok")
    assert c("heart artery blood")["input_ids"] == enc
    assert c.mask_token == "[MASK]" and c.pad_token_id == 0


def test_byte_bpe_round_trips_text(tmp_path, texts):
    tok = train_byte_bpe(texts, vocab_size=400)
    assert tok.eos_token == "<|endoftext|>"
    ids = tok("tumor cancer, 5 mg!")["input_ids"]
    assert tok.decode(ids) == "tumor cancer, 5 mg!"  # byte-level: lossless on unseen characters
    tok.save_pretrained(tmp_path / "bpe")
    assert load_tokenizer(tmp_path / "bpe")("tumor")["input_ids"] == tok("tumor")["input_ids"]


def test_tokenizer_errors(tmp_path):
    with pytest.raises(ValueError, match="0 texts"):
        train_wordpiece([], vocab_size=100)
    with pytest.raises(ValueError, match="tokenizer_config"):
        load_tokenizer(tmp_path)


def test_clusters_separate_words_that_never_co_occur(texts):
    tok = train_wordpiece(texts, vocab_size=400)  # large enough that every topic word is one token
    seqs = [np.asarray(s) for s in tok(texts, add_special_tokens=False)["input_ids"]]
    lab = token_clusters(seqs, len(tok), special_ids(tok), n_clusters=4, dim=8, seed=0)
    assert (lab[special_ids(tok)] == -1).all()
    groups = [["heart", "artery", "blood", "stent"], ["tumor", "cancer", "biopsy", "lymphoma"],
              ["brain", "neuron", "cortex", "synapse"], ["virus", "bacteria", "vaccine", "fever"]]
    ids = [[tok.convert_tokens_to_ids(w) for w in g] for g in groups]
    assert tok.unk_token_id not in sum(ids, [])
    per_group = [set(lab[i].tolist()) for i in ids]
    assert all(len(s) == 1 for s in per_group), per_group  # each topic in one cluster
    assert len(set().union(*per_group)) == 4  # four topics, four clusters
    assert token_clusters(seqs, len(tok), special_ids(tok), n_clusters=4, dim=8, seed=0).tolist() == lab.tolist()
