"""``subsetlm`` command line: parses arguments, builds a config dataclass, calls one function.

No logic lives here: every command names the module of its stage (``STAGE``, a
:class:`subsetlm._stage.Stage`); the config is built from ``--config run.yaml`` (or
``.json``; keys are the config's fields) overridden by the flags given (each flag's dest is
a field name), then ``STAGE.run(cfg)`` runs and ``STAGE.summary(result)`` is printed.

    subsetlm embed pubmed --out store/                 # embed a corpus
    subsetlm index store/ --k 32                       # FAISS kNN graph (+ --partitions P)
    subsetlm select store/ --budget 0.25 --out subset/ # facility location, subset file
    subsetlm retrieve store/ --task task.jsonl --method bm25 --out subset/   # task-driven (TLM)
    subsetlm export subset/ --out subset.jsonl         # selected documents
    subsetlm train --recipe bert --subset subset/ --out runs/bert   # pretrain on the subset
    subsetlm eval --model runs/bert --task pubmed-task --method finetune --out results.json
    subsetlm demo                                      # the whole job on real PubMed abstracts
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Any, Sequence

from subsetlm._cli_help import HelpParser, example


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", help="YAML/JSON file with the stage's config fields; flags override it (default: none)")
    p.add_argument("-v", "--verbose", action="count", default=0, help="-vv: debug logging, and a traceback instead "
                   "of a one-line error (default: INFO, the stage's milestones)")
    p.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors, no progress bars")


_ID_FIELD_HELP = ("corpus files: the document id field (default: the records' own 'id' field when every record has "
                  "one, else content hashes 'sha1:...'); @hash: content-hash ids even when records have an id")


def _no_verify(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-verify", dest="verify", action="store_false", default=None,
                   help="do not check the store / graph / subset files against their checksums (trusted huge stores)")


_DEVICE = "auto: cuda when available | cpu | cuda"
_FORCE = "replace an existing --out made with another config (without it: skipped when identical, else refused)"
_RAY_ADDRESS = "ray: auto | HOST:PORT (default: RAY_ADDRESS or a local Ray instance)"


def _finish(p: argparse.ArgumentParser, stage: str) -> None:
    """The options every command shares, and the module whose ``STAGE`` runs it."""
    _common(p)
    p.set_defaults(stage=stage)


def build_parser() -> argparse.ArgumentParser:
    from subsetlm import __version__

    parser = argparse.ArgumentParser(prog="subsetlm", description=__doc__.split("\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"subsetlm {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=HelpParser)

    p = sub.add_parser("embed", help="embed a corpus into an embedding store", epilog=example(
        "subsetlm embed pubmed --out store/", "subsetlm embed docs.jsonl.gz --model hashing --out store/"))
    p.add_argument("inputs", nargs="*", default=None, help="corpus files/folders (.jsonl[.gz|.zst], .parquet, .txt folder, "
                   "HF save_to_disk folder) or source names: pubmed, sotu")
    p.add_argument("--out", help="store directory to write (required)")
    p.add_argument("--model", help="embedder: minilm | static (MiniLM distilled to token vectors; pip install "
                   "'subsetlm[static]') | hashing | hf:PATH")
    p.add_argument("--text-field", dest="text_field", help="corpus files: the text field")
    p.add_argument("--id-field", dest="id_field", help=_ID_FIELD_HELP)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, help="chunk documents into samples of at most N "
                   "tokens of the embedding model's tokenizer (0 = one sample per document)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="most texts per forward pass")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=_DEVICE)
    p.add_argument("--dtype", choices=["float16", "float32"], help="storage dtype of the embeddings")
    p.add_argument("--limit", type=int, help="embed only the first N documents (default: all)")
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    p.add_argument("--backend", choices=["local", "ray"], help="local: this process; ray: each corpus file chunked "
                   "in a Ray task, the shards embedded by a pool of Ray actors (pip install 'subsetlm[ray]')")
    p.add_argument("--ray-address", dest="ray_address", help=_RAY_ADDRESS)
    p.add_argument("--ray-actors", dest="ray_actors", type=int, help="ray: embedding actors (default: one per GPU "
                   "with --device cuda, else one per CPU of the cluster)")
    _no_verify(p)
    _finish(p, "subsetlm.embed.run")

    p = sub.add_parser("index", help="build the FAISS kNN graph (and k-means partitions) of a store",
                       epilog=example("subsetlm index store/ --k 32 --partitions 8"))
    p.add_argument("store", nargs="?", help="embedding store directory (or `store:` in --config)")
    p.add_argument("--k", type=int, default=None, help="neighbours per sample, itself included")
    p.add_argument("--kind", choices=["auto", "flat", "ivf", "ivfpq", "hnsw"],
                   help="FAISS index; auto: exact up to 50,000 samples, IVF beyond (IVF-PQ when memory is short)")
    p.add_argument("--graph-method", dest="graph_method", choices=["auto", "blocked", "join", "search"],
                   help="blocked: all pairs in bfloat16 blocks, candidates re-scored exactly (CPU, torch; "
                   "exact quality); join: IVF self-join, neighbouring lists against each other in BLAS (CPU; "
                   "much faster, recall depends on how clustered the data is); search: FAISS search; auto: "
                   "blocked where estimated faster, else search")
    p.add_argument("--nprobe", type=int, help="IVF lists searched per query (default: chosen from n)")
    p.add_argument("--nlist", type=int, help="IVF lists (default: about 4 sqrt(n))")
    p.add_argument("--ef-search", dest="ef_search", type=int, help="HNSW search depth (default: max(128, 4 k))")
    p.add_argument("--partitions", type=int, help="also fit P > 1 k-means partitions (0 = none)")
    p.add_argument("--seed", type=int, help="seed of the k-means and IVF training")
    p.add_argument("--gpu", dest="use_gpu", choices=["auto", "yes", "no"], help="FAISS on a GPU; auto: when one is "
                   "visible")
    p.add_argument("--partitions-only", dest="partitions_only", action="store_true",
                   help="only the k-means partitions (partitioned selection builds its own per-partition graphs)")
    p.add_argument("--backend", choices=["local", "ray"], help="local: this process; ray: the kNN search blocks and "
                   "the k-means assignment run as Ray tasks (the store on a path every node reads)")
    p.add_argument("--ray-address", dest="ray_address", help=_RAY_ADDRESS)
    p.add_argument("--force", action="store_true", default=None, help="rebuild even when a matching graph / "
                   "partitions exist")
    _no_verify(p)
    _finish(p, "subsetlm.index.run")

    p = sub.add_parser("select", help="select a subset and write a subset file", epilog=example(
        "subsetlm select store/ --budget 0.25 --out subset/", "subsetlm select store/ --budget tokens:2e6 "
        "--partitions 8 --n-jobs 4 --out subset/"))
    p.add_argument("store", nargs="?", help="embedding store directory (or `store:` in --config)")
    p.add_argument("--budget", help="0.25 (fraction) | 5000 (count) | tokens:2e6 (token budget)")
    p.add_argument("--out", help="subset directory to write (required)")
    p.add_argument("--function", help="facility-location | graph-cut | log-det | disparity-min | disparity-sum | "
                   "fl-mi")
    p.add_argument("--optimizer", help="lazy | naive | stochastic | lazier-than-lazy")
    p.add_argument("--sampling", help="topk | taylor-softmax (INGENIOUS gain sampling)")
    p.add_argument("--kernel", help="auto: sparse for facility-location and fl-mi, dense for the others | sparse "
                   "(kNN graph) | dense (exact similarities)")
    p.add_argument("--k", type=int, help="sparse kernel: neighbours per sample in the kNN graph")
    p.add_argument("--index-kind", dest="index_kind", help="kNN index of the sparse kernel: auto | flat | ivf | "
                   "ivfpq | hnsw")
    p.add_argument("--source-proportions", dest="source_proportions", nargs="+", action=_KeyValues,
                   metavar="SOURCE=SHARE", help="per-source quotas of the budget, e.g. pubmed=0.7 sotu=0.3 "
                   "(default: none, one budget over all sources)")
    p.add_argument("--partitions", type=int, help="P > 1: solve P FAISS k-means partitions, the budget split by "
                   "partition size (0 = one global problem)")
    p.add_argument("--n-jobs", dest="n_jobs", type=int, help="processes solving the partitions (local backend)")
    p.add_argument("--epsilon", type=float, help="stochastic greedy's epsilon")
    p.add_argument("--queries", help="fl-mi (required there): store directory or .npy of query embeddings")
    p.add_argument("--within", help="select only among the rows of this subset of the same store (e.g. the output "
                   "of subsetlm dedup); a fraction budget is a fraction of them (default: all rows)")
    p.add_argument("--within-weights", dest="within_weights", choices=["none", "group-size"],
                   help="with --within a dedup subset: group-size weights each kept sample by its duplicate group's "
                   "size (from the subset's assignment.parquet), so the coverage term counts the whole corpus; "
                   "none: each kept sample counts once")
    p.add_argument("--quality", metavar="FILE", help="per-sample quality scores q >= 0 (.npy aligned with the store "
                   "rows, or .parquet/.jsonl with `id` and --quality-column): facility location + quality_weight * "
                   "sum of q over the subset (default: none)")
    p.add_argument("--quality-column", dest="quality_column", metavar="COL",
                   help="score column of a .parquet/.jsonl --quality file")
    p.add_argument("--quality-weight", dest="quality_weight", type=float, metavar="L",
                   help="lambda of the quality term (used only with --quality)")
    p.add_argument("--coverage-weights", dest="coverage_weights", metavar="FILE", help="per-sample weights w >= 0 "
                   "of the coverage term, sum_i w_i max_{j in S} sim(i, j) (same formats; default: all 1)")
    p.add_argument("--coverage-column", dest="coverage_column", metavar="COL",
                   help="weight column of a .parquet/.jsonl --coverage-weights file")
    p.add_argument("--merge", type=float, help="with --partitions: GreeDi merge factor F >= 1 (each partition "
                   "picks F x its share, then a weighted greedy over the winners; 0 = off)")
    p.add_argument("--backend", choices=["local", "ray"], help="where partitions are solved; ray needs --partitions "
                   "and pip install 'subsetlm[ray]'")
    p.add_argument("--ray-address", dest="ray_address", help=_RAY_ADDRESS)
    p.add_argument("--seed", type=int, help="seed of stochastic greedy, taylor-softmax sampling and the partitions")
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    _no_verify(p)
    _finish(p, "subsetlm.select.api")

    p = sub.add_parser("retrieve", help="task-driven selection (TLM): the task's train examples retrieve corpus "
                       "rows by BM25, dense search, or diverse FL mutual information; writes a subset file",
                       epilog=example("subsetlm retrieve store/ --task task.jsonl --method bm25 --out subset/"))
    p.add_argument("corpus", nargs="*", default=None, help="embedding store directory (any method) or corpus files / source "
                   "names (bm25 only)")
    p.add_argument("--task", help="task JSONL (text, label, optional split) or pubmed-task; only "
                   "its train split is used as queries (required)")
    p.add_argument("--method", choices=["bm25", "dense", "diverse"], help="bm25 | dense (kNN in the store) | "
                   "diverse (FL mutual information over a bm25 or dense pool)")
    p.add_argument("--k", type=int, help="hits per query (default: 50 / 500 / 5000 by task size, as TLM)")
    p.add_argument("--budget", help="cap: count, fraction of the corpus or tokens:N (default: every hit; "
                   "diverse: 0.25)")
    p.add_argument("--out", help="subset directory to write (required)")
    p.add_argument("--max-query-terms", dest="max_query_terms", type=int, help="bm25: key terms kept per query "
                   "(0 = all)")
    p.add_argument("--pool", choices=["bm25", "dense"], help="diverse: where the candidate pool comes from")
    p.add_argument("--pool-factor", dest="pool_factor", type=float, help="diverse: pool size / budget")
    p.add_argument("--eta", type=float, help="diverse: relevance magnification")
    p.add_argument("--graph-k", dest="graph_k", type=int, help="diverse: neighbours per pool row")
    p.add_argument("--no-decontaminate", dest="decontaminate", action="store_false", default=None,
                   help="allow rows of the task's validation/test documents (without it: never retrieved)")
    p.add_argument("--embedder", help="dense/diverse: query embedder spec (default: the store's own)")
    p.add_argument("--text-field", dest="text_field", help="corpus files: the text field")
    p.add_argument("--id-field", dest="id_field", help=_ID_FIELD_HELP)
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help="dense/diverse: where queries are embedded; "
                   + _DEVICE)
    p.add_argument("--seed", type=int, help="seed of the dense index and the diverse greedy")
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    _no_verify(p)
    _finish(p, "subsetlm.retrieve.run")

    p = sub.add_parser("export", help="write a subset's documents as JSONL or Parquet",
                       epilog=example("subsetlm export subset/ --out subset.jsonl"))
    p.add_argument("subset", nargs="?", help="subset directory (or `subset:` in --config)")
    p.add_argument("--out", help="output file (.jsonl, .jsonl.gz or .parquet; required)")
    p.add_argument("--store", help="store the subset was selected from (default: the path in its manifest)")
    p.add_argument("--format", choices=["jsonl", "parquet"], help="file format (default: from the --out suffix; "
                   "they must agree)")
    p.add_argument("--fields", nargs="+", help="columns, in order (default: id doc_id source n_tokens text index "
                   "rank gain weight partition)")
    p.add_argument("--order", choices=["rank", "index"], help="rank: selection order; index: store order")
    p.add_argument("--force", action="store_true", default=None, help="replace an existing --out file")
    _no_verify(p)
    _finish(p, "subsetlm.subsets.export")

    p = sub.add_parser("train", help="pretrain a model from scratch (bert, biobert, gpt2, slm, rts, crts) on a "
                       "corpus or a subset", epilog=example("subsetlm train --recipe bert --subset subset/ "
                                                            "--out runs/bert"))
    p.add_argument("--recipe", help="bert | biobert | gpt2 | slm | rts | crts | tlm")
    p.add_argument("--task", help="tlm (required there): task JSONL trained on jointly (then stage-2 fine-tuned)")
    p.add_argument("--rho1", type=int, help="tlm: external batches per task batch")
    p.add_argument("--rho2", type=float, help="tlm: MLM weight on task batches")
    p.add_argument("--stage2-seeds", dest="stage2_seeds", type=int, help="tlm: stage-2 fine-tuning seeds (0 = skip)")
    p.add_argument("--stage2-steps", dest="stage2_steps", type=int, help="tlm: stage-2 fine-tuning steps")
    p.add_argument("--corpus", nargs="+", help="store directory (needed with --subset; default: the subset's store) "
                   "or corpus files / source names (pubmed, sotu)")
    p.add_argument("--subset", help="subset file to train on (default: none, the whole corpus)")
    p.add_argument("--out", help="run directory to write (required)")
    p.add_argument("--preset", choices=["tiny", "small", "base"], help="model size")
    p.add_argument("--steps", type=int, help="optimizer steps (default: the preset's)")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="sequences per micro-batch (default: the "
                   "preset's)")
    p.add_argument("--grad-accum", dest="grad_accum", type=int, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, help="peak learning rate (default: the preset's)")
    p.add_argument("--seq-len", dest="seq_len", type=int, help="tokens per sequence (default: the preset's)")
    p.add_argument("--weighted", action="store_true", default=None, help="sample subset rows by their weight")
    p.add_argument("--reselect-every", dest="reselect_every", type=int, help="INGENIOUS: re-select every R steps "
                   "after the warm-up, 0 = once (default: none; this or --warmup-steps turns re-selection on)")
    p.add_argument("--warmup-steps", dest="warmup_steps", type=int, help="INGENIOUS: steps on all data before the "
                   "first selection (default: a tenth of the steps)")
    p.add_argument("--layer", type=int, help="INGENIOUS: hidden layer to embed with (default: 3/4 depth; GPT-2: "
                   "the last)")
    p.add_argument("--reselect-budget", dest="reselect_budget", help="INGENIOUS subset size (fraction | count)")
    p.add_argument("--reselect-mode", dest="reselect_mode", choices=["reembed", "reuse"], help="INGENIOUS: reembed "
                   "with the current model | reuse the first round's embeddings")
    p.add_argument("--init-from", dest="init_from", help="continue from a run's model (biobert from a bert run; "
                   "default: none, from scratch)")
    p.add_argument("--tokenizer", help="reuse a saved tokenizer folder (default: train one on the corpus)")
    p.add_argument("--limit", type=int, help="use only the first N corpus documents / store rows (default: all)")
    p.add_argument("--text-field", dest="text_field", help="corpus files: the text field")
    p.add_argument("--id-field", dest="id_field", help=_ID_FIELD_HELP + "; must match the one a subset of the "
                   "corpus was made with")
    p.add_argument("--save-every", dest="save_every", type=int, help="checkpoint every N steps, 0 = only at the end "
                   "(default: a quarter of the steps)")
    p.add_argument("--eval-every", dest="eval_every", type=int, help="validation loss every N steps, 0 = only at the "
                   "end (default: a quarter of the steps)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=_DEVICE)
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="auto: bf16 (else fp16) on a GPU, "
                   "fp32 on CPU")
    p.add_argument("--seed", type=int, help="seed of the model's init, the data order and re-selection")
    p.add_argument("--resume", action="store_true", default=None, help="continue an unfinished run from its newest "
                   "checkpoint")
    p.add_argument("--force", action="store_true", default=None, help="replace an existing run directory")
    _no_verify(p)
    _finish(p, "subsetlm.train")

    p = sub.add_parser("eval", help="fine-tune / prompt / distill a pretrained run on a text-classification task",
                       epilog=example("subsetlm eval --model runs/bert --task pubmed-task --method finetune "
                                      "--out results.json"))
    p.add_argument("--model", help="run directory (subsetlm train --out RUN) or save_pretrained folder (required)")
    p.add_argument("--task", help="JSONL with text and label (optional split), or pubmed-task (required)")
    p.add_argument("--method", choices=["finetune", "prompt", "distill"], help="finetune a classifier head | prompt "
                   "(cloze template + verbalizer) | distill a teacher into a smaller student")
    p.add_argument("--teacher", help="distill (required there): finetune | prompt (the model itself, student = half "
                   "depth) or RUN[:finetune|:prompt]")
    p.add_argument("--train-size", dest="train_sizes", nargs="+", help="few-shot sizes, e.g. 32 128 512 all")
    p.add_argument("--seeds", type=int, help="seeds per train size")
    p.add_argument("--out", help="RESULTS.json to write (required)")
    p.add_argument("--pooling", choices=["auto", "cls", "mean", "last"], help="classifier input; auto: cls, last for "
                   "GPT-2")
    p.add_argument("--template", help="prompt template with {text} and {mask} (default: '{text} Topic: {mask}.', "
                   "GPT-2 '{text} Topic:{mask}')")
    p.add_argument("--verbalizer", nargs="+", metavar="LABEL=WORD", help="prompt: the word for each label named "
                   "(one token; with --label-words multi-token any phrase), overriding --label-words for those "
                   "labels (default: none)")
    p.add_argument("--label-words", dest="label_words", choices=["auto", "name", "search", "multi-token"],
                   help="prompt: how each label's word is chosen: auto = a word of the label's own name that no other "
                   "label shares, else searched on the training set | name | search (LM-BFF: the tokens the LM "
                   "finds likeliest for the label's examples vs the others') | multi-token (whole label names, mean "
                   "token log-probability)")
    p.add_argument("--lr", type=float, help="fine-tuning learning rate")
    p.add_argument("--batch-size", dest="batch_size", type=int, help="training examples per step")
    p.add_argument("--max-steps", dest="max_steps", type=int, help="most steps per training run (10 epochs, at "
                   "least 50 steps, up to this)")
    p.add_argument("--temperature", type=float, help="distill: softmax temperature T")
    p.add_argument("--alpha", type=float, help="distill: weight of the KD term vs the hard labels")
    p.add_argument("--max-test", dest="max_test", type=int, help="score at most N test examples (default: all)")
    p.add_argument("--balanced", action="store_true", default=None, help="class-balanced training batches "
                   "(skewed tasks scored by macro-F1)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=_DEVICE)
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    _finish(p, "subsetlm.evaluate.run")

    p = sub.add_parser("dedup", help="semantic deduplication (SemDeDup) or D4 within k-means partitions; writes a "
                       "subset file and assignment.parquet", epilog=example(
                           "subsetlm dedup store/ --eps 0.05 --out dedup/",
                           "subsetlm dedup store/ --method d4 --ratio 0.25 --out d4/"))
    p.add_argument("store", nargs="?", help="embedding store directory (or `store:` in --config)")
    p.add_argument("--out", help="subset directory to write (required)")
    p.add_argument("--method", choices=["semdedup", "d4"], help="semdedup | d4: SemDeDup to --dedup-ratio, "
                   "then drop the samples most similar to their k-means centroid down to --ratio")
    p.add_argument("--eps", type=float, help="duplicates have cosine > 1 - EPS, 0 < EPS < 2 (semdedup: this or "
                   "--target is required; d4: replaces --dedup-ratio)")
    p.add_argument("--target", type=int, help="semdedup: keep exactly N samples (eps found); d4: the final size, "
                   "replacing --ratio (default: none)")
    p.add_argument("--keep", choices=["farthest", "centroid", "random", "longest", "score"], help="which sample of "
                   "a duplicate group stays: farthest from the partition centroid (SemDeDup's), closest, "
                   "random (--seed), most tokens, highest --score-column")
    p.add_argument("--rule", choices=["semdedup", "components"], help="semdedup: drop a sample that is a "
                   "duplicate of any sample before it in keep order, as the reference code | components: connected "
                   "components of the duplicate graph")
    p.add_argument("--partitions", type=int, help="k-means partitions (0 = ceil(n / 10000))")
    p.add_argument("--scores", help="--keep score (required there): .npy of one value per store row, or "
                   ".parquet/.jsonl with `id` and --score-column")
    p.add_argument("--score-column", dest="score_column", help="the score column of a .parquet/.jsonl --scores file "
                   "(required there)")
    p.add_argument("--dedup-ratio", dest="dedup_ratio", type=float, help="d4: fraction SemDeDup keeps")
    p.add_argument("--ratio", type=float, help="d4: final fraction of the samples")
    p.add_argument("--proto-partitions", dest="proto_partitions", type=int, help="d4: k-means clusters of the "
                   "prototype step (0 = sqrt of the SemDeDup-kept count)")
    p.add_argument("--no-graph", dest="use_graph", action="store_false", default=None, help="always compute "
                   "similarities in blocks, not from the store's cached exact kNN graph (same result)")
    p.add_argument("--seed", type=int, help="seed of the k-means and of --keep random")
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    _no_verify(p)
    _finish(p, "subsetlm.select.dedup_run")

    p = sub.add_parser("dsir", help="DSIR: importance resampling toward a target distribution on hashed word "
                       "n-grams; writes a subset file with the KL reduction in its manifest",
                       epilog=example("subsetlm dsir store/ --task pubmed-task --budget 0.25 --out dsir/"))
    p.add_argument("corpus", nargs="*", default=None, help="embedding store directory or corpus files / source "
                   "names (pubmed, sotu); one row per store sample or per document")
    p.add_argument("--out", help="subset directory to write (required)")
    p.add_argument("--target", nargs="+", help="target text files (any corpus format: .jsonl[.gz|.zst], .parquet, "
                   ".txt folder) or source names; one of --target, --target-store, --task is required")
    p.add_argument("--target-store", dest="target_store", help="target: the texts of this embedding store "
                   "(default: none)")
    p.add_argument("--task", help="target: the train split of this task (JSONL or pubmed-task; default: none)")
    p.add_argument("--budget", help="0.25 (fraction) | 5000 (count) | tokens:2e6 (token budget)")
    p.add_argument("--n-features", dest="n_features", type=int, help="hash buckets of the n-gram models, 2**16 .. "
                   "2**20")
    p.add_argument("--smoothing", type=float, help="add-alpha pseudo-count per hash bucket")
    p.add_argument("--min-overlap", dest="min_overlap", type=float, help="refuse a target whose hashed n-gram "
                   "distribution overlaps the corpus's by less than this (0 = never)")
    p.add_argument("--text-field", dest="text_field", help="corpus / target files: the text field")
    p.add_argument("--id-field", dest="id_field", help=_ID_FIELD_HELP)
    p.add_argument("--limit", type=int, help="corpus files: use only the first N documents (default: all)")
    p.add_argument("--seed", type=int, help="seed of the Gumbel noise and of the random reference subset")
    p.add_argument("--force", action="store_true", default=None, help=_FORCE)
    p.add_argument("--no-decontaminate", dest="decontaminate", action="store_false", default=None,
                   help="with --task: allow rows of the task's validation/test documents (without it: never drawn)")
    _no_verify(p)
    _finish(p, "subsetlm.select.dsir_run")

    p = sub.add_parser("inspect", help="why each sample was kept or dropped: coverage, least-covered samples, "
                       "dropped -> kept pairs, per-source counts (and a PNG)",
                       epilog=example("subsetlm inspect subset/ --plot subset.png"))
    p.add_argument("subset", nargs="?", help="subset directory (or `subset:` in --config)")
    p.add_argument("--store", help="store the subset was selected from (default: the path in its manifest)")
    p.add_argument("--examples", type=int, help="samples shown per list")
    p.add_argument("--plot", help="also write a PNG of the coverage histogram and per-source counts here "
                   "(default: none)")
    _no_verify(p)
    _finish(p, "subsetlm.subsets.inspect")

    p = sub.add_parser("demo", help="the main job on real PubMed abstracts: fetch, embed, index, select, report",
                       epilog=example("subsetlm demo", "subsetlm demo --model hashing --n-docs 500 --out runs/quick"))
    p.add_argument("--out", default=None, help="demo directory")
    p.add_argument("--n-docs", dest="n_docs", type=int, help="abstracts to embed")
    p.add_argument("--model", help="embedder: minilm | hashing (no model, seconds)")
    p.add_argument("--budget", help="0.25 (fraction) | 5000 (count) | tokens:2e6 (token budget)")
    p.add_argument("--force", action="store_true", default=None, help="redo the store, graph and subset in --out "
                   "even when up to date")
    _finish(p, "subsetlm.demo")
    return parser


class _KeyValues(argparse.Action):
    """``KEY=VALUE ...`` -> ``{KEY: float(VALUE)}`` (parsing only; the stage validates the values)."""

    def __call__(self, parser, namespace, values, option_string=None):  # noqa: ANN001 - argparse's signature
        out = {}
        for v in values:
            key, eq, val = v.partition("=")
            try:
                out[key] = float(val)
            except ValueError:
                parser.error(f"{option_string} {v!r}: expected KEY=NUMBER")
            if not eq or not key:
                parser.error(f"{option_string} {v!r}: expected KEY=NUMBER")
        setattr(namespace, self.dest, out)


def _config(cls: type, args: argparse.Namespace) -> Any:
    """The stage config: ``--config`` file values, overridden by every flag given (dest = field name)."""
    import dataclasses

    from subsetlm._config import build_config, load_config_file

    file_values = load_config_file(args.config) if getattr(args, "config", None) else {}
    fields = {f.name for f in dataclasses.fields(cls)}
    overrides = {k: v for k, v in vars(args).items() if k in fields and v not in (None, [])}
    return build_config(cls, file_values, overrides, file=getattr(args, "config", None))


def _run_stage(args: argparse.Namespace, progress: bool) -> int:
    """build the config -> ``STAGE.run(cfg)`` -> print ``STAGE.summary(result)``."""
    import importlib

    stage = importlib.import_module(args.stage).STAGE
    result = stage.run(_config(stage.config, args), progress=progress)
    text = stage.summary(result)
    if text:
        print(text)
    return 0


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    if verbose < 2:
        for noisy in ("faiss", "numba", "sentence_transformers", "urllib3", "filelock"):
            logging.getLogger(noisy).setLevel(logging.WARNING)
        # transformers' checkpoint load reports (e.g. an MLM head left out when a backbone is loaded for
        # fine-tuning) are expected here; -vv shows them
        logging.getLogger("transformers").setLevel(logging.ERROR)
        # transformers resets its logger's level when it is first imported (after this runs);
        # its environment variable survives that
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "stage", None):
        parser.print_help()
        return 2
    _setup_logging(args.verbose, args.quiet)
    try:
        return _run_stage(args, not args.quiet)
    except (ValueError, TypeError, FileExistsError, FileNotFoundError) as exc:
        if args.verbose > 1:
            raise
        print(f"subsetlm {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"subsetlm {args.command}: interrupted; partial outputs were left as *.tmp and a re-run resumes",
              file=sys.stderr)
        return 130
    except BrokenPipeError:  # the summary piped into `head`: the work is done, the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as exc:  # an unwritable --out, a parent that is a file, a full disk: one line naming the file
        if args.verbose > 1:
            raise
        print(f"subsetlm {args.command}: error: {_os_error(exc)}", file=sys.stderr)
        return 2


def _os_error(exc: OSError) -> str:
    """One line for an OSError: the file, what went wrong, and what to do."""
    import errno

    where = exc.filename if exc.filename is not None else "?"
    what = exc.strerror or str(exc)
    fix = {errno.EACCES: "check its permissions, or choose another --out",
           errno.EPERM: "check its permissions, or choose another --out",
           errno.EROFS: "the file system is read-only; choose another --out",
           errno.ENOTDIR: "a parent of it is a file, not a directory; choose another --out",
           errno.EISDIR: "it is a directory; choose a file path",
           errno.ENOSPC: "free some space and re-run (finished parts are kept and resumed)"}.get(exc.errno or -1,
                                                                                                  "fix it and re-run")
    return f"{where}: {what}; {fix}"


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
