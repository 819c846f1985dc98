"""FAISS indexes, the cosine kNN graph, and k-means partitions over embeddings.

Example
-------
>>> import numpy as np
>>> from subsetlm.index import knn_graph
>>> X = np.eye(3, dtype=np.float32)
>>> knn_graph(X, k=1).neighbors.ravel().tolist()
[0, 1, 2]
"""

from .faiss_index import IndexConfig, build_index, num_gpus, resolve_params
from .knn import KNNGraph, estimate_recall, exact_topk, knn_graph
from .partitions import KMeansResult, kmeans_partitions
from .store_graph import build_store_graph, build_store_partitions, graph_dir, load_store_graph

__all__ = [
    "IndexConfig", "build_index", "num_gpus", "resolve_params",
    "KNNGraph", "knn_graph", "estimate_recall", "exact_topk",
    "KMeansResult", "kmeans_partitions",
    "build_store_graph", "load_store_graph", "build_store_partitions", "graph_dir",
]
