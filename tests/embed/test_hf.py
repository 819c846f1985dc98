"""hf:PATH embedder: pooling oracles on tiny BERT / GPT-2 checkpoints built in conftest."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from subsetlm.embed import get_embedder
from subsetlm.embed.hf import HFEmbedder

SENTENCES = [
    "the cat sat on the mat",
    "aspirin inhibits platelet aggregation in patients",
    "the heart pumps blood through the arteries",
    "a tumor was found in the brain of the patient",
]
SHORT = "the cat"
LONG = ["aspirin inhibits platelet aggregation in patients with the heart", "the dog sat on the log " * 4]


def _oracle(model_dir, texts, layer, pool):
    """Each text alone (no padding at all): hidden_states[layer] pooled by hand, L2-normalised."""
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModel.from_pretrained(model_dir).eval()
    out = []
    with torch.no_grad():
        for t in texts:
            enc = tok(t, return_tensors="pt")
            h = model(**enc, output_hidden_states=True).hidden_states[layer][0]  # (L, d)
            v = {"mean": h.mean(0), "cls": h[0], "last": h[-1]}[pool]
            out.append((v / v.norm()).numpy())
    return np.stack(out)


@pytest.mark.parametrize("layer", [-1, 1, 0])
def test_mean_pooling_equals_masked_mean_of_layer(tiny_bert_dir, layer):
    emb = HFEmbedder(tiny_bert_dir, device="cpu", layer=layer, pooling="mean")
    texts = SENTENCES + [SHORT] + LONG
    X = emb.embed(texts, batch_size=3)  # batches mix lengths => padding is exercised
    np.testing.assert_allclose(X, _oracle(tiny_bert_dir, texts, layer, "mean"), atol=2e-5)
    assert X.dtype == np.float32 and X.shape == (len(texts), 32)
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, atol=1e-5)


def test_cls_pooling_and_manual_mean_with_padding(tiny_bert_dir):
    """Also an explicit padded-batch oracle: masked mean computed by hand on the padded tensor."""
    from transformers import AutoModel, AutoTokenizer

    texts = [SHORT] + LONG
    tok = AutoTokenizer.from_pretrained(tiny_bert_dir)
    model = AutoModel.from_pretrained(tiny_bert_dir).eval()
    enc = tok(texts, return_tensors="pt", padding=True)
    with torch.no_grad():
        h = model(**enc, output_hidden_states=True).hidden_states[2]
    m = enc["attention_mask"].unsqueeze(-1).float()
    ref = torch.nn.functional.normalize((h * m).sum(1) / m.sum(1), dim=1).numpy()
    got = HFEmbedder(tiny_bert_dir, device="cpu", layer=2, pooling="mean").embed(texts)
    np.testing.assert_allclose(got, ref, atol=2e-5)
    cls = HFEmbedder(tiny_bert_dir, device="cpu", layer=2, pooling="cls").embed(texts)
    np.testing.assert_allclose(cls, torch.nn.functional.normalize(h[:, 0], dim=1).numpy(), atol=2e-5)
    assert not np.allclose(cls, got, atol=1e-3)


@pytest.mark.parametrize("pooling", ["mean", "cls", "last"])
def test_padding_invariance(tiny_bert_dir, pooling):
    emb = HFEmbedder(tiny_bert_dir, device="cpu", pooling=pooling)
    alone = emb.embed([SHORT])
    batched = emb.embed(LONG + [SHORT], batch_size=8)
    np.testing.assert_allclose(batched[-1], alone[0], atol=2e-5)


def test_gpt2_last_pooling_picks_last_real_token(tiny_gpt2_dir):
    emb = get_embedder(f"hf:{tiny_gpt2_dir}", device="cpu", pooling="last")
    assert emb.tokenizer.pad_token is None  # handled without adding a pad token
    texts = [SHORT] + LONG + ["the mat"]
    X = emb.embed(texts, batch_size=8)
    np.testing.assert_allclose(X, _oracle(tiny_gpt2_dir, texts, -1, "last"), atol=2e-5)
    # a padded position would give a different vector than the real last token
    mean = HFEmbedder(tiny_gpt2_dir, device="cpu", pooling="mean").embed(texts)
    assert not np.allclose(mean, X, atol=1e-3)


def test_gpt2_intermediate_layer(tiny_gpt2_dir):
    emb = HFEmbedder(tiny_gpt2_dir, device="cpu", layer=1, pooling="last")
    texts = [SHORT] + LONG
    np.testing.assert_allclose(emb.embed(texts), _oracle(tiny_gpt2_dir, texts, 1, "last"), atol=2e-5)


def test_from_model_matches_path_and_restores_training_flag(tiny_gpt2_dir):
    from transformers import AutoTokenizer, GPT2LMHeadModel

    lm = GPT2LMHeadModel.from_pretrained(tiny_gpt2_dir)
    lm.train()
    tok = AutoTokenizer.from_pretrained(tiny_gpt2_dir)
    emb = HFEmbedder.from_model(lm, tok, layer=-1, pooling="last")
    texts = [SHORT] + LONG
    X = emb.embed(texts)
    assert lm.training, "embed() must restore the model's training flag"
    ref = HFEmbedder(tiny_gpt2_dir, device="cpu", pooling="last").embed(texts)
    np.testing.assert_allclose(X, ref, atol=2e-5)
    assert emb.dim == 32 and emb.describe()["layer"] == -1


def test_truncation_to_max_length(tiny_bert_dir):
    emb = HFEmbedder(tiny_bert_dir, device="cpu", max_length=8)
    long = "the cat sat on the mat " * 10
    prefix = emb.tokenizer.decode(emb.tokenizer(long, add_special_tokens=False)["input_ids"][:6])
    np.testing.assert_allclose(emb.embed([long]), emb.embed([prefix]), atol=2e-5)
    assert emb.max_content_tokens == 6


def test_splitter_uses_model_tokenizer(tiny_bert_dir):
    from subsetlm.corpus.chunking import HFTokenSplitter

    emb = HFEmbedder(tiny_bert_dir, device="cpu")
    sp = emb.splitter()
    assert isinstance(sp, HFTokenSplitter)
    (chunks,) = sp.split(["the cat sat on the mat"], None)
    assert chunks[0][1] == len(emb.tokenizer("the cat sat on the mat", add_special_tokens=False)["input_ids"])


def test_errors(tiny_bert_dir, tmp_path):
    with pytest.raises(ValueError, match="pooling='max'"):
        HFEmbedder(tiny_bert_dir, device="cpu", pooling="max")
    with pytest.raises(ValueError, match="layer=7 but the model has 3 layers"):
        HFEmbedder(tiny_bert_dir, device="cpu", layer=7)
    with pytest.raises(ValueError, match="no config.json"):
        get_embedder(f"hf:{tmp_path}")
    with pytest.raises(ValueError, match="no path"):
        get_embedder("hf:")
    with pytest.raises(ValueError, match="unknown embedder 'nope'.*hashing.*minilm"):
        get_embedder("nope")


def test_embed_corpus_with_hf_checkpoint(tiny_bert_dir, tmp_path):
    """End to end: chunks are counted in the model's tokens and rows equal a direct embed()."""
    import json

    from subsetlm.embed import EmbedConfig, embed_corpus

    corpus = tmp_path / "c.jsonl"
    with open(corpus, "w") as fh:
        for i, t in enumerate(SENTENCES + ["the cat sat on the mat " * 5]):
            fh.write(json.dumps({"id": f"d{i}", "text": t}) + "\n")
    store = embed_corpus(EmbedConfig(inputs=[str(corpus)], out=str(tmp_path / "s"), model=f"hf:{tiny_bert_dir}",
                                     max_tokens=6, dtype="float32", id_field="id",
                                     embedder_options={"layer": 2}))
    emb = HFEmbedder(tiny_bert_dir, device="cpu", layer=2)
    assert store.n > 5 and store.n_tokens.max() <= 6
    texts = store.texts(range(store.n))
    np.testing.assert_allclose(store.block(0, store.n), emb.embed(texts), atol=2e-5)
    n_tok = [len(emb.tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    assert store.n_tokens.tolist() == n_tok
    assert store.manifest["model"]["layer"] == 2 and store.manifest["chunking"]["splitter"] == "hf"
