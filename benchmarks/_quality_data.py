"""Corpora of ``benchmarks/selection_quality.py`` (private helper), built from real text at run time.

Four training corpora of the same number of rows, one held-out set per corpus, one DSIR
target sample per corpus, one shared GPT-2 byte-level BPE tokenizer — all cached under
``cache_dir()/bench/selection-quality/PRESET`` and never committed:

* ``natural``: PubMed abstracts as they come (``fetch_source("pubmed")``), one row each.
* ``redundant-50`` / ``redundant-75``: ``D = (1 - r) n`` distinct abstracts plus ``r n``
  near-duplicate copies of them (``r`` = 0.50 / 0.75 of the rows redundant). A copy is its
  original with light word-level edits (deletions, repeats, swaps, a header, a truncated
  tail: what mirrored and re-scraped web pages look like); the number of copies per
  original is heavy-tailed (weights from a Pareto(1.5) draw: a few abstracts get hundreds of
  copies, most get none or a few), as duplicate counts in web crawls are. The 50% level is
  the share SemDeDup removed from LAION-440M with minimal loss (Abbas et al. 2023,
  arXiv 2303.09540); the 75% level models the ~70% of FineWeb that exact deduplication
  across Common Crawl dumps removes (15T -> 5T tokens, Salesforce/fineweb_deduplicated).
* ``imbalanced``: a dominant source (PubMed, 85% of rows) and three small ones (State of
  the Union speeches 6%, docstrings of installed scientific packages 5%, the Python
  language reference topics of the running interpreter 2%), each cut into ~180-word chunks.

Held-out text never occurs in any training corpus: 1,000 other PubMed abstracts for the
first three corpora; for ``imbalanced`` 100 chunks from every source (so
every source weighs the same in the macro loss). The DSIR target of a corpus is a separate
sample of its held-out distribution (never the held-out rows themselves).

Example
-------
>>> mutate("alpha beta gamma delta epsilon zeta eta theta", __import__("numpy").random.default_rng(0)) != ""
True
>>> multiplicities(10, 30, seed=0).sum(), len(multiplicities(10, 30, seed=0))
(np.int64(30), 10)
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

CHUNK_WORDS = 180
HEADERS = ("Abstract", "ABSTRACT:", "Summary.", "Background", "Full text available.", "Article:")
MINOR = {"sotu": 0.06, "docstrings": 0.05, "pydoc": 0.02}  # imbalanced: shares of rows; PubMed the rest
IMB_HELDOUT, IMB_TARGET = 100, 30  # imbalanced: held-out and DSIR-target chunks per source
DOC_PACKAGES = ("numpy", "scipy", "sklearn", "torch", "pandas")


@dataclass
class Corpus:
    """One training corpus: rows, where they came from, and its evaluation texts.

    texts : (n,) training texts. origin : (n,) int, the distinct document a row copies (its own
    index among distinct documents for originals). is_copy : (n,) bool. source : (n,) str.
    heldout, heldout_source : held-out texts and their sources. target : DSIR target sample.
    """

    name: str
    texts: list[str]
    origin: np.ndarray
    is_copy: np.ndarray
    source: np.ndarray
    heldout: list[str]
    heldout_source: np.ndarray
    target: list[str]

    @property
    def n(self) -> int:
        return len(self.texts)

    def save(self, path: Path) -> None:
        from subsetlm._io import write_bytes_atomic

        rec = {"name": self.name, "texts": self.texts, "origin": self.origin.tolist(),
               "is_copy": self.is_copy.astype(int).tolist(), "source": self.source.tolist(),
               "heldout": self.heldout, "heldout_source": self.heldout_source.tolist(), "target": self.target}
        write_bytes_atomic(path, gzip.compress(json.dumps(rec, ensure_ascii=False).encode("utf-8"), mtime=0))

    @classmethod
    def load(cls, path: Path) -> "Corpus":
        r = json.loads(gzip.decompress(path.read_bytes()))
        return cls(r["name"], r["texts"], np.asarray(r["origin"], np.int64), np.asarray(r["is_copy"], bool),
                   np.asarray(r["source"]).astype(str), r["heldout"], np.asarray(r["heldout_source"]).astype(str),
                   r["target"])


def text_key(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8")).hexdigest()


def pubmed_pool(seed: int = 0) -> list[str]:
    """Every PubMed abstract of the source, in a fixed seeded order (by hash of id), duplicates of text removed."""
    from subsetlm._io import hash_unit
    from subsetlm.corpus.sources import fetch_source

    rows, seen = [], set()
    with gzip.open(fetch_source("pubmed"), "rt", encoding="utf-8") as fh:
        for line in fh:
            r = json.loads(line)
            t = " ".join(str(r.get("text") or "").split())
            if len(t.split()) < 40 or t in seen:
                continue
            seen.add(t)
            rows.append((hash_unit(seed, str(r["id"])), t))
    rows.sort()
    return [t for _, t in rows]


def chunks(text: str, words: int = CHUNK_WORDS) -> list[str]:
    """``text`` cut into chunks of ``words`` words (the last one kept when at least half as long)."""
    w = text.split()
    out = [" ".join(w[i:i + words]) for i in range(0, len(w), words)]
    if len(out) > 1 and len(out[-1].split()) < words // 2:
        out.pop()
    return out


def minor_source(name: str) -> list[str]:
    """Chunks of a small source, in a fixed order: ``sotu``, ``pydoc`` or ``docstrings``."""
    if name == "sotu":
        from subsetlm.corpus.sources import fetch_source

        out = []
        with gzip.open(fetch_source("sotu"), "rt", encoding="utf-8") as fh:
            for line in fh:
                out += chunks(str(json.loads(line)["text"]))
        return out
    if name == "pydoc":
        from pydoc_data.topics import topics

        return [c for k in sorted(topics) for c in chunks(topics[k])]
    if name == "docstrings":
        return docstring_chunks()
    raise ValueError(f"unknown minority source {name!r}; choose one of {', '.join(MINOR)}")


def docstring_chunks(limit: int = 6000) -> list[str]:
    """Prose of the docstrings of installed scientific packages (numpy, scipy, …), chunked."""
    import importlib
    import inspect
    import pkgutil

    seen, out = set(), []
    for pkg in DOC_PACKAGES:
        try:
            mod = importlib.import_module(pkg)
        except Exception:  # noqa: BLE001 — an absent or broken optional package is skipped
            continue
        names = [pkg] + sorted(m.name for m in pkgutil.iter_modules(getattr(mod, "__path__", []), pkg + ".")
                               if not m.name.split(".")[-1].startswith("_") and "test" not in m.name)
        for name in names[:40]:
            try:
                m = importlib.import_module(name)
            except Exception:  # noqa: BLE001
                continue
            for attr in sorted(dir(m)):
                doc = inspect.getdoc(getattr(m, attr, None)) or ""
                prose = " ".join(ln for ln in doc.splitlines() if ln.strip() and not ln.lstrip().startswith(">>>")
                                 and not set(ln.strip()) <= set("-=~"))
                if len(prose.split()) >= 60 and prose not in seen:
                    seen.add(prose)
                    out += chunks(prose, CHUNK_WORDS)
            if len(out) >= limit:
                return out[:limit]
    return out


def mutate(text: str, rng: np.random.Generator) -> str:
    """A near-duplicate of ``text``: light word edits, sometimes a header, sometimes a cut tail."""
    w = text.split()
    out = []
    for tok in w:
        u = rng.random()
        if u < 0.03:
            continue  # dropped
        out.append(tok)
        if u > 0.99:
            out.append(tok)  # repeated
    for _ in range(max(1, len(out) // 50)):
        if len(out) > 2:
            i = int(rng.integers(0, len(out) - 1))
            out[i], out[i + 1] = out[i + 1], out[i]
    if rng.random() < 0.3:
        out = out[: max(10, int(len(out) * rng.uniform(0.8, 1.0)))]
    if rng.random() < 0.5:
        out = [HEADERS[int(rng.integers(len(HEADERS)))]] + out
    return " ".join(out)


def multiplicities(n_distinct: int, n_copies: int, seed: int, shape: float = 1.5) -> np.ndarray:
    """(n_distinct,) copies per original summing to ``n_copies``: multinomial on Pareto(``shape``) weights."""
    rng = np.random.default_rng(seed)
    w = rng.pareto(shape, n_distinct) + 1.0
    return rng.multinomial(n_copies, w / w.sum()).astype(np.int64)


def redundant(name: str, pool: list[str], n: int, redundancy: float, seed: int) -> tuple[list[str], np.ndarray, np.ndarray]:
    """``n`` rows: ``(1 - redundancy) n`` originals from ``pool`` plus heavy-tailed near-duplicates, shuffled."""
    d = int(round((1.0 - redundancy) * n))
    mult = multiplicities(d, n - d, seed)
    rng = np.random.default_rng(seed + 1)
    texts, origin, is_copy = list(pool[:d]), list(range(d)), [False] * d
    for i, m in enumerate(mult):
        for _ in range(int(m)):
            texts.append(mutate(pool[i], rng))
            origin.append(i)
            is_copy.append(True)
    order = rng.permutation(len(texts))
    logger.info("%s: %d distinct abstracts, %d copies (max %d copies of one; %d originals copied at least once)",
                name, d, n - d, int(mult.max()), int((mult > 0).sum()))
    return [texts[i] for i in order], np.asarray(origin)[order], np.asarray(is_copy)[order]


def build_corpora(root: Path, n: int, n_heldout: int, n_target: int, seed: int = 0) -> dict[str, Corpus]:
    """The four corpora (cached as ``root/corpus-NAME.json.gz``)."""
    want = ("natural", "redundant-50", "redundant-75", "imbalanced")
    paths = {k: root / f"corpus-{k}.json.gz" for k in want}
    if all(p.is_file() for p in paths.values()):
        return {k: Corpus.load(p) for k, p in paths.items()}
    pool = pubmed_pool(seed)
    need = n_heldout + n_target + n
    if len(pool) < need:
        raise ValueError(f"the PubMed source has {len(pool)} usable abstracts; this preset needs {need} "
                         f"(n={n}, held-out {n_heldout}, DSIR target {n_target}); lower --rows")
    held, target, train = pool[:n_heldout], pool[n_heldout:n_heldout + n_target], pool[n_heldout + n_target:]
    pm = np.full(n_heldout, "pubmed")
    out = {"natural": Corpus("natural", train[:n], np.arange(n), np.zeros(n, bool), np.full(n, "pubmed"),
                             held, pm, target)}
    for r, name in ((0.50, "redundant-50"), (0.75, "redundant-75")):
        t, o, c = redundant(name, train, n, r, seed)
        out[name] = Corpus(name, t, o, c, np.full(n, "pubmed"), held, pm, target)
    out["imbalanced"] = imbalanced(train, n, seed)
    for k, c in out.items():
        c.save(paths[k])
    return out


def imbalanced(pubmed: list[str], n: int, seed: int) -> Corpus:
    """PubMed-dominated mixture; held-out and target with the same number of chunks per source."""
    rng = np.random.default_rng(seed + 7)
    per_held, per_target = IMB_HELDOUT, IMB_TARGET
    texts, source, held, held_src, target = [], [], [], [], []
    n_minor = 0
    for name, share in MINOR.items():
        ch = minor_source(name)
        rng.shuffle(ch)
        k = int(round(share * n))
        if len(ch) < per_held + per_target + 10:
            raise ValueError(f"source {name} has {len(ch)} chunks; the imbalanced corpus needs at least "
                             f"{per_held + per_target + 10} (held-out, DSIR target, training rows)")
        if len(ch) < k + per_held + per_target:  # a large preset outgrows a small source: it gets what there is
            logger.warning("imbalanced: source %s has %d chunks, fewer than the %d its %.0f%% share asks for; "
                           "using %d", name, len(ch), k + per_held + per_target, 100 * share, len(ch) - per_held - per_target)
            k = len(ch) - per_held - per_target
        held += ch[:per_held]
        held_src += [name] * per_held
        target += ch[per_held:per_held + per_target]
        texts += ch[per_held + per_target:per_held + per_target + k]
        source += [name] * k
        n_minor += k
    # PubMed: held-out and target drawn past the natural corpus's rows, so the four corpora share one held-out pool
    k = n - n_minor
    texts += pubmed[:k]
    source += ["pubmed"] * k
    extra = pubmed[n:]
    held += extra[:per_held]
    held_src += ["pubmed"] * per_held
    target += extra[per_held:per_held + per_target]
    order = rng.permutation(len(texts))
    texts = [texts[i] for i in order]
    src = np.asarray(source)[order]
    logger.info("imbalanced: %s", {s: int((src == s).sum()) for s in np.unique(src)})
    return Corpus("imbalanced", texts, np.arange(len(texts)), np.zeros(len(texts), bool), src, held,
                  np.asarray(held_src), target)


def tokenizer_dir(root: Path, corpora: dict[str, Corpus], vocab_size: int, seq_len: int) -> Path:
    """One byte-level BPE tokenizer for every arm, trained on the natural and imbalanced training rows."""
    from subsetlm.recipes.tokenizer import train_byte_bpe

    out = root / f"tokenizer-{vocab_size}"
    if (out / "tokenizer.json").is_file():
        return out
    texts = corpora["natural"].texts + [t for t, s in zip(corpora["imbalanced"].texts, corpora["imbalanced"].source)
                                        if s != "pubmed"]
    tok = train_byte_bpe(texts, vocab_size=vocab_size, model_max_length=seq_len)
    tmp = out.with_name(out.name + ".tmp")
    tok.save_pretrained(str(tmp))
    tmp.rename(out)
    return out


def token_counts(tok, texts: list[str]) -> np.ndarray:
    """(n,) BPE tokens of each text plus its end-of-text separator (what one packed pass costs)."""
    enc = tok(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    return np.asarray([len(e) + 1 for e in enc], np.int64)


def unigram_entropy(tok, texts: list[str]) -> float:
    """Entropy (nats per token) of the texts' own BPE unigram distribution: the loss a unigram model fitted to them gets."""
    enc = tok(texts, add_special_tokens=False, return_attention_mask=False, verbose=False)["input_ids"]
    c = np.bincount(np.concatenate([np.asarray(e, np.int64) for e in enc]))
    p = c[c > 0] / c.sum()
    return float(-(p * np.log(p)).sum())


def embeddings(root: Path, corpus: Corpus, model: str) -> np.ndarray:
    """(n, d) float32 L2-normalised embeddings of the corpus's rows (cached; MiniLM vectors shared by text)."""
    from subsetlm.embed.base import get_embedder

    path = root / f"emb-{corpus.name}-{model}.npy"
    if path.is_file():
        return np.load(path)
    if model == "hashing":
        emb = get_embedder("hashing")
        emb.fit(corpus.texts)
        X = emb.embed(corpus.texts)
    else:
        X = _cached_model_embeddings(root, corpus.texts, model)
    X = np.ascontiguousarray(X, dtype=np.float32)
    np.save(path.with_suffix(".tmp.npy"), X)
    path.with_suffix(".tmp.npy").rename(path)
    return X


def _cached_model_embeddings(root: Path, texts: list[str], model: str) -> np.ndarray:
    """Model embeddings by text (a text shared between corpora is embedded once)."""
    from subsetlm.embed.base import get_embedder

    keys_p, vecs_p = root / f"textcache-{model}-keys.json", root / f"textcache-{model}.npy"
    keys = json.loads(keys_p.read_text()) if keys_p.is_file() else []
    vecs = np.load(vecs_p) if vecs_p.is_file() else None
    if vecs is not None and len(vecs) != len(keys):  # an interrupted update: start the cache over
        keys, vecs = [], None
    where = {k: i for i, k in enumerate(keys)}
    want = [text_key(t) for t in texts]
    todo = sorted({k: i for i, k in enumerate(want) if k not in where}.items(), key=lambda kv: kv[1])
    if todo:
        emb = get_embedder(model)
        logger.info("embedding %d new texts with %s", len(todo), model)
        new = emb.embed([texts[i] for _, i in todo], progress=True).astype(np.float32)
        vecs = new if vecs is None else np.concatenate([vecs, new])
        keys += [k for k, _ in todo]
        np.save(vecs_p.with_suffix(".tmp.npy"), vecs)
        vecs_p.with_suffix(".tmp.npy").rename(vecs_p)
        keys_p.write_text(json.dumps(keys))
        where = {k: i for i, k in enumerate(keys)}
    return vecs[[where[k] for k in want]]

