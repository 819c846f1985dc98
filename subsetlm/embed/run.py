"""``embed_corpus``: corpus files -> a resumable :class:`EmbeddingStore`.

Flow: build the embedder -> chunk the corpus with the embedder's own tokenizer
(``iter_samples``) -> embed ``shard_size`` samples at a time -> write each finished
shard atomically into ``OUT.tmp/shards/`` -> assemble the final files -> rename
``OUT.tmp`` to ``OUT`` with ``_SUCCESS``.

Re-running the same command:

* ``OUT`` complete with the same config -> nothing is done, the store is returned.
* ``OUT`` complete with another config -> ``ValueError`` (pass ``force=True``/--force).
* ``OUT.tmp`` from a killed run with the same config -> resumes after its last finished
  shard (the skipped samples come back in the same order from ``iter_samples``);
  the result is byte-identical to an uninterrupted run (except ``stats.json``).
* ``OUT.tmp`` with another config -> ``ValueError`` (pass --force to start over).

Example
-------
>>> cfg = EmbedConfig(inputs=["pubmed"], out="runs/pubmed-minilm", limit=2000)  # doctest: +SKIP
>>> store = embed_corpus(cfg, progress=True)                                      # doctest: +SKIP
>>> print(store.summary())                                                        # doctest: +SKIP
2000 docs (2113 samples) -> 384-d float16 with minilm in 15.2 s (131.6 docs/s): runs/pubmed-minilm
"""

from __future__ import annotations

import dataclasses

import json
import logging
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import numpy as np

from subsetlm._io import atomic_dir, dumps_json, is_complete, read_json, tmp_path_for, write_json_atomic
from subsetlm.embed.base import Embedder, get_embedder
from subsetlm.embed.store import DTYPES, FORMAT, VERSION, EmbeddingStore, ShardWriter, write_manifest

log = logging.getLogger(__name__)

_PROGRESS_STEP = 1024  # samples per embed() call: the progress bar moves at least this often
_RUN_CONFIG = "run_config.json"
_STATE_DIR = "embedder_state"


@dataclass
class EmbedConfig:
    """Configuration of :func:`embed_corpus` (the CLI's ``subsetlm embed`` flags).

    Parameters
    ----------
    inputs : list of str
        Corpus files, folders or source names (``pubmed``, ``sotu``); see ``CorpusConfig``.
    out : str
        Store directory to create.
    model : str, default "minilm"
        Embedder spec: ``minilm`` | ``hashing`` | ``hf:PATH``.
    text_field : str, default "text"
    id_field : str or None, default None
    max_tokens : int or None, default 256
        Chunk length in the embedder's tokens (``None``: whole documents, truncated by
        the model at its ``max_length``). Lowered to what the model reads when larger
        (MiniLM reads 254 content tokens plus [CLS]/[SEP]).
    batch_size : int, default 64
        Most texts per forward pass.
    device : str, default "auto"
    dtype : {"float16", "float32"}, default "float16"
        Storage dtype of ``embeddings.npy``.
    shard_size : int, default 4096
        Samples per resumable shard.
    limit : int or None, default None
        Read at most this many documents.
    force : bool, default False
        Rebuild even if ``out`` (or an unfinished ``out.tmp``) exists with another config.
    embedder_options : dict, default {}
        Extra keyword arguments for the backend (``precision``, ``layer``, ``pooling``,
        ``dim``, ``projection``, ``seed`` ...).
    block_size : int, default 1024
        Documents per reader block.
    backend : {"local", "ray"}, default "local"
        ``ray``: shards are embedded by ``ray_actors`` Ray actors on the cluster at
        ``ray_address`` (:mod:`subsetlm.distributed.ray_embed`: Ray Data ``map_batches`` over
        the corpus shards); same store layout, resumable.
    ray_address : str or None, default None
        ``auto``, ``HOST:PORT``; None: ``RAY_ADDRESS`` or a local Ray instance.
    ray_actors : int or None, default None
        Embedding actors (None: one per GPU with ``device="cuda"``, else one per CPU of the cluster).
    """

    inputs: list[str]
    out: str
    model: str = "minilm"
    text_field: str = "text"
    id_field: str | None = None
    max_tokens: int | None = 256
    batch_size: int = 64
    device: str = "auto"
    dtype: str = "float16"
    shard_size: int = 4096
    limit: int | None = None
    force: bool = False
    embedder_options: dict[str, Any] = field(default_factory=dict)
    block_size: int = 1024
    backend: str = "local"
    ray_address: str | None = None
    ray_actors: int | None = None


def embed_in_parts(emb: Embedder, texts: list[str], batch_size: int, on_part: Callable[[int], None] | None = None
                   ) -> np.ndarray:
    """Embed ``texts`` in parts of ``_PROGRESS_STEP`` (each length-sorted by the embedder), as every backend does."""
    parts = []
    for s0 in range(0, len(texts), _PROGRESS_STEP):
        parts.append(emb.embed(texts[s0:s0 + _PROGRESS_STEP], batch_size=batch_size))
        if on_part is not None:
            on_part(len(parts[-1]))
    return np.concatenate(parts) if len(parts) > 1 else parts[0]


def _check_cfg(cfg: EmbedConfig) -> None:
    if isinstance(cfg.inputs, str):
        cfg.inputs = [cfg.inputs]
    if not cfg.inputs:
        raise ValueError("EmbedConfig.inputs is empty; give at least one corpus file, folder or source name")
    if cfg.backend not in ("local", "ray"):
        raise ValueError(f"EmbedConfig.backend={cfg.backend!r}; expected local or ray")
    if cfg.dtype not in DTYPES:
        raise ValueError(f"EmbedConfig.dtype={cfg.dtype!r}; expected one of {', '.join(DTYPES)}")
    for name in ("batch_size", "shard_size", "block_size"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"EmbedConfig.{name}={v!r}; expected a positive integer")


def _corpus_cfg(cfg: EmbedConfig) -> Any:
    from subsetlm.corpus.readers import CorpusConfig

    return CorpusConfig(paths=list(cfg.inputs), text_field=cfg.text_field, id_field=cfg.id_field,
                        block_size=cfg.block_size, max_tokens=cfg.max_tokens, limit=cfg.limit)


def _identity(cfg: EmbedConfig, emb: Embedder, corpus_fp: str, splitter: Any) -> dict[str, Any]:
    """What must match for a store (or a partial run) to be reused: no paths, no timings."""
    model = {k: v for k, v in emb.describe().items() if k not in ("n_fit", "idf_sha256")}
    ident = {
        "model_spec": cfg.model if not cfg.model.startswith("hf:") else "hf",
        "model": model,
        "embedder_options": dict(sorted(cfg.embedder_options.items())),
        "corpus_fingerprint": corpus_fp,
        "chunking": _chunking(cfg, emb, splitter),
        "dtype": cfg.dtype,
    }
    return json.loads(dumps_json(ident))  # as read back from JSON (tuples -> lists), so == works


def _chunking(cfg: EmbedConfig, emb: Embedder, splitter: Any) -> dict[str, Any]:
    sp = splitter.describe() if hasattr(splitter, "describe") else {"splitter": type(splitter).__name__}
    return {"max_tokens": cfg.max_tokens, "splitter": sp.get("splitter", type(splitter).__name__),
            "tokenizer": emb.describe().get("model") if sp.get("splitter") == "hf" else None}


def _rechunk(samples_iter: Iterator[list[Any]], size: int, skip: int) -> Iterator[list[Any]]:
    """Regroup a stream of sample blocks into lists of ``size``, after dropping the first ``skip``."""
    buf: list[Any] = []
    for block in samples_iter:
        if skip:
            if skip >= len(block):
                skip -= len(block)
                continue
            block, skip = block[skip:], 0
        buf.extend(block)
        while len(buf) >= size:
            yield buf[:size]
            buf = buf[size:]
    if skip:
        raise ValueError(f"the corpus now has fewer samples than the unfinished run already embedded ({skip} "
                         f"missing); it changed since that run: pass --force to start over")
    if buf:
        yield buf


def _first_texts(cfg: EmbedConfig, ccfg: Any, splitter: Any, n: int) -> list[str]:
    from subsetlm.corpus.chunking import iter_samples

    out: list[str] = []
    for block in iter_samples(ccfg, splitter):
        out.extend(s.text for s in block[: n - len(out)])
        if len(out) >= n:
            break
    return out


def embed_corpus(cfg: EmbedConfig, progress: bool = False, *,
                 _after_shard: Callable[[int], None] | None = None) -> EmbeddingStore:
    """Embed a corpus into an :class:`EmbeddingStore` at ``cfg.out`` (resumable, atomic).

    Parameters
    ----------
    cfg : EmbedConfig
    progress : bool
        tqdm bar over samples.

    Returns
    -------
    EmbeddingStore
        ``store.stats`` (stats.json) holds ``docs``, ``samples``, ``dim``, ``seconds``,
        ``embed_seconds``, ``docs_per_s``, ``samples_per_s``, ``resumed_samples``,
        ``device``; ``store.summary()`` is the CLI's one-line summary.

    Raises
    ------
    ValueError
        ``out`` or ``out.tmp`` exists with a different configuration (pass --force), a
        bad config field, or an embedder that returns NaN/inf or the wrong shape
        (nothing is finalised; ``out`` is not created).
    """
    from subsetlm.corpus.chunking import iter_samples
    from subsetlm.corpus.readers import corpus_fingerprint

    _check_cfg(cfg)
    t0 = time.perf_counter()
    out = Path(cfg.out)
    tmp = tmp_path_for(out)
    emb = get_embedder(cfg.model, device=cfg.device, **cfg.embedder_options)
    splitter = emb.splitter()
    fits = getattr(emb, "max_content_tokens", None)
    if cfg.max_tokens and fits is not None and cfg.max_tokens > fits:
        # Chunk to what the model reads (MiniLM: 256 minus [CLS]/[SEP] = 254), so no chunk
        # is silently truncated by the model.
        log.info("max_tokens=%d > the %d content tokens %s reads; chunking at %d",
                 cfg.max_tokens, fits, emb.name, fits)
        cfg = dataclasses.replace(cfg, max_tokens=int(fits))
    ccfg = _corpus_cfg(cfg)
    corpus_fp = corpus_fingerprint(ccfg)
    ident = _identity(cfg, emb, corpus_fp, splitter)

    if out.exists() and not cfg.force:
        if is_complete(out) and (out / "manifest.json").is_file():
            old = read_json(out / "manifest.json").get("config")
            if old == ident:
                log.info("%s is complete with the same config; skipping (pass --force to rebuild)", out)
                return EmbeddingStore.open(out)
            raise ValueError(f"{out} already holds an embedding store built with a different config "
                             f"({_diff(old, ident)}); pass --force to overwrite it or choose another --out")
        raise ValueError(f"{out} exists but is not a complete embedding store; remove it or pass --force")

    resume_tmp = tmp.is_dir() and (tmp / _RUN_CONFIG).is_file() and not cfg.force
    if resume_tmp:
        old = read_json(tmp / _RUN_CONFIG)
        want = {"identity": ident, "shard_size": cfg.shard_size}
        if old != want:
            raise ValueError(f"{tmp} holds an unfinished run with a different config ({_diff(old, want)}); "
                             f"pass --force to discard it and start over")
    elif tmp.exists():
        shutil.rmtree(tmp)

    with atomic_dir(out, resume=True, overwrite=cfg.force) as d:
        write_json_atomic(d / _RUN_CONFIG, {"identity": ident, "shard_size": cfg.shard_size})
        if emb.requires_fit:
            state = d / _STATE_DIR
            if state.is_dir() and any(state.iterdir()):  # only a resumed run's tmp can hold it
                emb.load_state(state)
            else:
                n_fit = int(getattr(emb, "fit_samples", 20000))
                emb.fit(_first_texts(cfg, ccfg, splitter, n_fit))
                emb.save_state(state)
        writer = ShardWriter(d, emb.dim, cfg.dtype)
        done = writer.finished()
        ray_run = (d / "chunks").is_dir()  # the ray backend cuts shards its own way: no switching mid-run
        started = ray_run or any(writer.dir.glob("*.parquet"))
        if started and ray_run != (cfg.backend == "ray"):
            raise ValueError(f"{tmp} holds an unfinished --backend {'ray' if ray_run else 'local'} run; resume it "
                             f"with the same backend, or pass --force to start over")
        n_done = sum(c for _, c in done)
        if cfg.backend == "ray":  # shards finish in any order there: count every finished one
            from subsetlm.distributed.ray_chunk import chunk_shards

            n_done = sum(writer.rows(k) for k in range(len(chunk_shards(d) or [])) if writer.is_finished(k))
        if done:
            log.info("resuming %s after %d finished shard(s) (%d samples)", tmp, len(done), n_done)
        bar = None
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(desc=f"embed {emb.name}", unit="sample", initial=n_done)
        t_embed = 0.0
        k = len(done)
        try:
            t1 = time.perf_counter()
            if cfg.backend == "ray":
                from subsetlm.distributed.ray_embed import embed_with_ray

                def on_shard(k: int, rows: int) -> None:
                    if bar is not None:
                        bar.update(rows)
                    if _after_shard is not None:
                        _after_shard(k)

                embed_with_ray(d, ccfg, splitter, cfg.shard_size,
                               lambda skip: _rechunk(iter_samples(ccfg, splitter), cfg.shard_size, skip),
                               spec=cfg.model, options=cfg.embedder_options,
                               state_dir=d / _STATE_DIR if emb.requires_fit else None, batch_size=cfg.batch_size,
                               dim=int(emb.dim), dtype=cfg.dtype,
                               device=cfg.device if cfg.device != "auto" else "cpu", address=cfg.ray_address,
                               n_actors=cfg.ray_actors, on_shard=on_shard)
                t_embed = time.perf_counter() - t1
            else:
                for shard in _rechunk(iter_samples(ccfg, splitter), cfg.shard_size, n_done):
                    X = embed_in_parts(emb, [s.text for s in shard], cfg.batch_size,
                                       bar.update if bar is not None else None)
                    t_embed += time.perf_counter() - t1
                    writer.write(k, X, shard)
                    t1 = time.perf_counter()
                    if _after_shard is not None:
                        _after_shard(k)
                    k += 1
        finally:
            if bar is not None:
                bar.close()
        n, digest = writer.assemble(d)
        if n == 0:
            raise ValueError(f"no samples to embed in {cfg.inputs}; check the inputs and --text-field")
        docs, zero_rows = _count_docs_and_zero_rows(d)
        if zero_rows:
            log.warning("%d sample(s) got an all-zero embedding (no hashed words / features)", zero_rows)
        manifest = {
            "format": FORMAT, "version": VERSION, "model": emb.describe(), "dim": int(emb.dim),
            "dtype": cfg.dtype, "pooling": emb.pooling, "normalized": bool(emb.normalize), "count": int(n),
            "docs": int(docs), "corpus_fingerprint": corpus_fp, "embedding_fingerprint": digest,
            "chunking": ident["chunking"], "config": ident,
        }
        write_manifest(d, manifest)
        seconds = time.perf_counter() - t0
        new = n - n_done
        stats = {
            "docs": int(docs), "samples": int(n), "dim": int(emb.dim), "seconds": round(seconds, 3),
            "embed_seconds": round(t_embed, 3), "docs_per_s": round(docs / seconds, 2) if seconds else None,
            "samples_per_s": round(new / t_embed, 2) if t_embed else None, "resumed_samples": int(n_done),
            "device": str(getattr(emb, "device", "cpu")), "batch_size": cfg.batch_size,
            "shard_size": cfg.shard_size, "machine": platform.machine(),
        }
        write_json_atomic(d / "stats.json", stats)
        writer.remove()
        shutil.rmtree(d / "chunks", ignore_errors=True)  # the ray backend's chunk shards
        (d / _RUN_CONFIG).unlink()
    store = EmbeddingStore.open(out)
    log.info("embedded %s", store.summary())
    return store


def _count_docs_and_zero_rows(d: Path) -> tuple[int, int]:
    """Distinct documents (chunks of a document are consecutive) and all-zero embedding rows."""
    import pyarrow.parquet as pq

    pf = pq.ParquetFile(d / "ids.parquet")
    docs, prev = 0, None
    for rg in range(pf.num_row_groups):
        for did in pf.read_row_group(rg, columns=["doc_id"]).column("doc_id").to_pylist():
            if did != prev:
                docs += 1
                prev = did
    X = np.load(d / "embeddings.npy", mmap_mode="r")
    zero = 0
    for s in range(0, len(X), 65536):
        zero += int((~np.asarray(X[s:s + 65536]).any(axis=1)).sum())
    return docs, zero


def _diff(old: Any, new: Any, prefix: str = "") -> str:
    """Short description of the first differing keys of two nested dicts."""
    if not isinstance(old, dict) or not isinstance(new, dict):
        return f"{prefix or 'config'}: {dumps_json(old).strip()[:80]} != {dumps_json(new).strip()[:80]}"
    for k in sorted(set(old) | set(new)):
        if old.get(k) != new.get(k):
            return _diff(old.get(k), new.get(k), f"{prefix}.{k}" if prefix else k)
    return "no difference"


def config_dict(cfg: EmbedConfig) -> dict[str, Any]:
    """The config as a plain dict (for logs and the CLI)."""
    return asdict(cfg)


def store_embedder(store: EmbeddingStore | str | Path, device: str = "auto", model: str | None = None) -> Embedder:
    """The embedder that wrote ``store``, rebuilt to embed new texts (queries) into the same space.

    Parameters
    ----------
    store : an :class:`EmbeddingStore` or its directory.
    model : the embedder spec, needed only for ``hf:PATH`` stores (the manifest does not
        keep local paths); it must describe the same model.

    Example
    -------
    >>> emb = store_embedder("runs/pubmed.store")          # doctest: +SKIP
    >>> emb.embed(["a query"]).shape                       # doctest: +SKIP
    (1, 384)
    """
    st = store if isinstance(store, EmbeddingStore) else EmbeddingStore.open(store)
    ident = st.manifest.get("config") or {}
    spec = model or ident.get("model_spec")
    if not spec or spec == "hf":
        raise ValueError(f"{st.path} was embedded with a local transformers checkpoint (hf:PATH); pass the same "
                         f"spec to embed queries with it (--embedder hf:PATH)")
    emb = get_embedder(spec, device=device, **dict(ident.get("embedder_options") or {}))
    if emb.requires_fit:
        state = st.path / _STATE_DIR
        if not state.is_dir():
            raise ValueError(f"{st.path} has no {_STATE_DIR}/ (the fitted {spec} state); re-embed with --force")
        emb.load_state(state)
    if int(emb.dim) != st.dim:
        raise ValueError(f"embedder {spec} gives {emb.dim}-d vectors but {st.path} holds {st.dim}-d ones")
    return emb
