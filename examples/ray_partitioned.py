"""Partitioned selection on a Ray cluster: the same subset file as on one machine, each partition a Ray task.

    pip install 'subsetlm[ray]'
    python examples/ray_partitioned.py --out runs/ex-ray                # 5,000 abstracts, MiniLM, 8 partitions
    python examples/ray_partitioned.py --smoke --out /tmp/ex-ray        # under a minute, hashing embedder
    python examples/ray_partitioned.py --address auto --out runs/ex-ray # an existing cluster (`ray start --head`)

Facility location over millions of samples is split the way INGENIOUS and GreeDi do it:
k-means partitions of the embeddings, the budget shared out by partition size, one greedy
per partition. With ``backend="ray"`` each partition is a Ray task (the store is read from
a path every node sees), so the work spreads over a cluster's nodes. This script starts a
local Ray instance (``ray.init`` with ``--cpus`` CPUs; ``--address`` joins a running cluster
instead), selects with the Ray backend and again with local worker processes, and checks
that both wrote the same subset (same rows, same order, same weights), as the design
promises: where the work runs never changes what is selected.
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path

import numpy as np

from _common import corpus_and_heldout, write_result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--out", type=Path, required=True, help="work folder: store/, subset-ray/, subset-local/")
    ap.add_argument("--corpus", help="JSONL(.gz) with id and text (default: PubMed abstracts, fetched and cached)")
    ap.add_argument("--n-docs", type=int, default=5000, help="documents (default 5000)")
    ap.add_argument("--model", default="minilm", help="embedder: minilm (default) | hashing | hf:PATH")
    ap.add_argument("--partitions", type=int, default=8, help="k-means partitions = Ray tasks (default 8)")
    ap.add_argument("--budget", default="0.25", help="fraction, count or tokens:N (default 0.25)")
    ap.add_argument("--address", help="join this Ray cluster (auto | HOST:PORT) instead of starting one")
    ap.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray instance (default 2)")
    ap.add_argument("--smoke", action="store_true", help="600 documents, hashing embedder, 4 partitions")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    if args.smoke:
        args.n_docs, args.model, args.partitions = 600, "hashing", 4
    try:
        import ray
    except ImportError:
        raise SystemExit("this example needs Ray: pip install 'subsetlm[ray]'") from None

    from subsetlm.embed import EmbedConfig, embed_corpus
    from subsetlm.select.api import SelectConfig, select
    from subsetlm.subsets import read_subset

    corpus, _ = corpus_and_heldout(args.out, args.corpus, args.n_docs, 0)
    store = embed_corpus(EmbedConfig(inputs=[str(corpus)], out=str(args.out / "store"), model=args.model))

    # the cluster: a local instance started here, or the one at --address
    if args.address:
        ray.init(address=args.address, log_to_driver=False)
    else:
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
    nodes = [n for n in ray.nodes() if n["Alive"]]
    logging.info("ray: %d node(s), %g CPUs", len(nodes), ray.cluster_resources().get("CPU", 0))

    timings, subsets = {}, {}
    try:
        for backend in ("ray", "local"):
            t = time.perf_counter()
            path = select(SelectConfig(store=str(args.out / "store"), out=str(args.out / f"subset-{backend}"),
                                       budget=args.budget, partitions=args.partitions, n_jobs=args.cpus,
                                       backend=backend, force=True))
            timings[backend] = round(time.perf_counter() - t, 2)
            subsets[backend] = read_subset(path, store=store)
    finally:
        ray.shutdown()

    a, b = subsets["ray"], subsets["local"]
    write_result(args.out, {
        "samples": int(store.n), "partitions": args.partitions, "selected": int(len(a.indices)),
        "ray_nodes": len(nodes), "seconds": timings,
        "partitions_used": int(len(np.unique(a.partitions))) if a.partitions is not None else None,
        "same_rows_and_order": bool(np.array_equal(a.indices, b.indices)),
        "same_weights": bool(np.allclose(a.weights, b.weights)),
        "objective": a.manifest.get("certificate", {}).get("objective")})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
