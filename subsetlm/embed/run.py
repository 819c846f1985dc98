"""``embed_corpus``: corpus files -> a resumable :class:`EmbeddingStore` (the ``embed`` stage).

Flow: build the embedder -> a shard plan (:class:`~subsetlm.embed.shards.ShardPlan`: the
corpus's samples, chunked with the embedder's own tokenizer, cut into ``shard_size``
shards) -> embed the shards not yet written, on an executor (in this process for
``--backend local``; a pool of Ray actors for ``--backend ray``, chosen by
:func:`subsetlm.distributed.executor_for` as index and select choose theirs), each
shard written atomically into ``OUT.tmp/shards/`` -> assemble the final files -> rename
``OUT.tmp`` to ``OUT`` with ``_SUCCESS`` (:class:`subsetlm._stage.Output`).

Re-running the same command:

* ``OUT`` complete with the same config -> nothing is done, the store is returned.
* ``OUT`` complete with another config -> ``ValueError`` (pass ``force=True``/--force).
* ``OUT.tmp`` from a killed run with the same config -> resumes at the shards it had not
  written; the result is byte-identical to an uninterrupted run (except ``stats.json``).
  A run resumes only with the same ``shard_size`` and the same cut: ``--backend ray``
  cuts shards per corpus file (serially with ``--limit``), ``local`` serially
  (``ValueError`` otherwise).
* ``OUT.tmp`` with another config -> ``ValueError`` (pass --force to start over).

Example
-------
>>> cfg = EmbedConfig(inputs=["pubmed"], out="runs/pubmed-minilm", limit=2000)  # doctest: +SKIP
>>> store = embed_corpus(cfg, progress=True)                                      # doctest: +SKIP
>>> print(summary(store))                                                         # doctest: +SKIP
2000 docs (2113 samples) -> 384-d float16 with minilm in 15.2 s (131.6 docs/s): runs/pubmed-minilm
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar, Iterator

import numpy as np

from subsetlm._io import write_json_atomic
from subsetlm._stage import Output, Stage, check_out, manifest_config, portable
from subsetlm.distributed import BACKENDS, executor_for, map_stateful
from subsetlm.embed.base import Embedder, get_embedder
from subsetlm.embed.shards import CHUNKS, PLAN_FILE, ShardEmbedder, ShardPlan, embed_shard
from subsetlm.embed.store import (DTYPES, FORMAT, VERSION, EmbeddingStore, ShardWriter, store_checksums,
                                   write_manifest)

logger = logging.getLogger(__name__)

_STATE_DIR = "embedder_state"


class StoreExistsError(FileExistsError, ValueError):
    """``OUT`` (or ``OUT.tmp``) holds an embedding store of another config: a ``FileExistsError``
    as for every stage, and a ``ValueError`` as ``embed_corpus`` has always raised."""


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
        Document id field. None: the corpus's own ``id`` field when its records carry one,
        else content hashes; ``"@hash"``: content hashes always (:mod:`subsetlm.corpus.ids`).
        The rule applied is recorded in the manifest under ``ids``.
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
        Where the shards are embedded (:func:`subsetlm.distributed.executor_for`): ``local``
        in this process; ``ray``: each corpus file chunked in a Ray task (serially with
        ``limit``), the shards
        embedded by ``ray_actors`` Ray actors on the cluster at ``ray_address``. Same store,
        resumable.
    ray_address : str or None, default None
        ``auto``, ``HOST:PORT``; None: ``RAY_ADDRESS`` or a local Ray instance.
    ray_actors : int or None, default None
        Embedding actors (None: one per GPU with ``device="cuda"``, else one per CPU of the cluster).
    verify : bool, default True
        When ``out`` is complete and skipped: check its files against their checksums first
        (``--no-verify``: trust them).
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
    verify: bool = True

    # Where and how the store is written, not what it holds: none of these is in its identity
    # (the manifest's "config", built by _identity from what the embedder, corpus and
    # chunking resolve to), so changing one reuses a finished store.
    VOLATILE: ClassVar[tuple[str, ...]] = ("out", "force", "backend", "ray_address", "ray_actors", "batch_size",
                                           "device", "shard_size", "block_size", "verify")


def _check_cfg(cfg: EmbedConfig) -> None:
    if isinstance(cfg.inputs, str):
        cfg.inputs = [cfg.inputs]
    if not cfg.inputs:
        raise ValueError("EmbedConfig.inputs is empty; give at least one corpus file, folder or source name")
    if cfg.backend not in BACKENDS:
        raise ValueError(f"EmbedConfig.backend={cfg.backend!r}; expected {' or '.join(BACKENDS)}")
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
    return portable(ident)  # as read back from JSON (tuples -> lists), so == works


def _chunking(cfg: EmbedConfig, emb: Embedder, splitter: Any) -> dict[str, Any]:
    sp = splitter.describe() if hasattr(splitter, "describe") else {"splitter": type(splitter).__name__}
    return {"max_tokens": cfg.max_tokens, "splitter": sp.get("splitter", type(splitter).__name__),
            "tokenizer": emb.describe().get("model") if sp.get("splitter") == "hf" else None}


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
        ``device``; :func:`summary` is the CLI's one-line summary.

    Raises
    ------
    ValueError
        ``out`` or ``out.tmp`` exists with a different configuration (pass --force;
        :class:`StoreExistsError`, also a ``FileExistsError``), a bad config field, or an
        embedder that returns NaN/inf or the wrong shape (nothing is finalised; ``out`` is
        not created).
    """
    from subsetlm.corpus.ids import id_rule
    from subsetlm.corpus.readers import corpus_fingerprint

    _check_cfg(cfg)
    t0 = time.perf_counter()
    executor = executor_for(cfg.backend, cfg.ray_address, actors=cfg.ray_actors)  # None: in this process
    emb = get_embedder(cfg.model, device=cfg.device, **cfg.embedder_options)
    splitter = emb.splitter()
    fits = getattr(emb, "max_content_tokens", None)
    if cfg.max_tokens and fits is not None and cfg.max_tokens > fits:
        # Chunk to what the model reads (MiniLM: 256 minus [CLS]/[SEP] = 254), so no chunk
        # is silently truncated by the model.
        logger.info("max_tokens=%d > the %d content tokens %s reads; chunking at %d",
                    cfg.max_tokens, fits, emb.name, fits)
        cfg = dataclasses.replace(cfg, max_tokens=int(fits))
    ccfg = _corpus_cfg(cfg)
    corpus_fp = corpus_fingerprint(ccfg)
    ident = _identity(cfg, emb, corpus_fp, splitter)
    out = Output(check_out(cfg.out), ident, what="embedding store", read_identity=manifest_config)
    with _refused():
        if out.up_to_date(cfg.force):
            return EmbeddingStore.open(out.path, verify=cfg.verify)
        if cfg.force:  # --force starts over, also from an unfinished run of this config
            shutil.rmtree(out.tmp, ignore_errors=True)
        elif out.tmp.is_dir():
            out.check_resumable(out.tmp, force=False)
    # A distributed executor chunks the corpus one file per task (--limit counts documents
    # across files: serially then); in this process the sample stream is cut as it is read.
    plan = ShardPlan.choose(cfg.shard_size, per_file=executor is not None and ccfg.limit is None)

    with out.writing(force=cfg.force, resume=True) as d:
        plan.record(d)
        state_dir = d / _STATE_DIR if emb.requires_fit else None
        if state_dir is not None:
            if state_dir.is_dir() and any(state_dir.iterdir()):  # only a resumed run's tmp can hold it
                emb.load_state(state_dir)
            else:  # fitted state written whole or not at all: a kill mid-write leaves only state.tmp behind
                emb.fit(_first_texts(cfg, ccfg, splitter, int(getattr(emb, "fit_samples", 20000))))
                tmp_state = state_dir.with_name(state_dir.name + ".tmp")
                shutil.rmtree(tmp_state, ignore_errors=True)
                shutil.rmtree(state_dir, ignore_errors=True)
                emb.save_state(tmp_state)
                os.replace(tmp_state, state_dir)
        writer = ShardWriter(d, emb.dim, cfg.dtype)
        done = writer.done()
        n_done = sum(done.values())
        if done:
            logger.info("resuming %s after %d finished shard(s) (%d samples)", d, len(done), n_done)
        worker = ShardEmbedder(d, cfg.model, cfg.embedder_options, state_dir=state_dir,
                               device=cfg.device if cfg.device != "auto" else "cpu", batch_size=cfg.batch_size,
                               dim=int(emb.dim), dtype=cfg.dtype, embedder=emb)
        t1 = time.perf_counter()
        with _bar(progress, emb.name, n_done) as bar, contextlib.closing(map_stateful(
                executor, worker, embed_shard, plan.tasks(d, ccfg, splitter, done, executor),
                progress=bar.update if bar is not None else None,
                num_gpus=1 if str(cfg.device).startswith("cuda") else 0)) as results:
            for _, (k, _rows) in results:
                if _after_shard is not None:
                    _after_shard(k)
        t_embed = time.perf_counter() - t1
        finished = writer.done()
        plan.check_finished(finished, d)
        n, digest = writer.assemble(d, finished)
        if n == 0:
            raise ValueError(f"no samples to embed in {cfg.inputs}; check the inputs and --text-field")
        docs, zero_rows = _count_docs_and_zero_rows(d)
        if zero_rows:
            logger.warning("%d sample(s) got an all-zero embedding (no hashed words / features)", zero_rows)
        manifest = {
            "format": FORMAT, "version": VERSION, "model": emb.describe(), "dim": int(emb.dim),
            "dtype": cfg.dtype, "pooling": emb.pooling, "normalized": bool(emb.normalize), "count": int(n),
            "docs": int(docs), "corpus_fingerprint": corpus_fp, "embedding_fingerprint": digest,
            "chunking": ident["chunking"], "config": ident, "ids": id_rule(ccfg),
            "checksums": store_checksums(d, {"embeddings.npy": writer.embeddings_checksum}),
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
        writer.remove(finished)
        shutil.rmtree(d / CHUNKS, ignore_errors=True)  # a per-file plan's chunk shards
        (d / PLAN_FILE).unlink()
    store = EmbeddingStore.open(out.path, verify=False)  # just written and hashed
    logger.info("embedded %s", store.summary())
    return store


def summary(store: EmbeddingStore) -> str:
    """The line ``subsetlm embed`` prints: counts, dims, time and throughput (:meth:`EmbeddingStore.summary`)."""
    return store.summary()


@contextlib.contextmanager
def _refused() -> Iterator[None]:
    """An existing output of another config: :class:`StoreExistsError` (a ValueError, as embed always raised)."""
    try:
        yield
    except FileExistsError as e:
        if isinstance(e, ValueError):
            raise
        raise StoreExistsError(str(e)) from None


@contextlib.contextmanager
def _bar(progress: bool, name: str, initial: int) -> Iterator[Any]:
    """A tqdm bar over samples (None without ``progress``), closed at the end."""
    if not progress:
        yield None
        return
    from tqdm.auto import tqdm

    bar = tqdm(desc=f"embed {name}", unit="sample", initial=initial)
    try:
        yield bar
    finally:
        bar.close()


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


STAGE = Stage("embed", EmbedConfig, embed_corpus, summary)
