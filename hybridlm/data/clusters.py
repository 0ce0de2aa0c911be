"""From LSH buckets to duplicate clusters: candidate pairs, exact-Jaccard verification, connected components, the
keep rule, and the cluster report (histogram PNG, largest clusters)."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def bucket_pairs(
    keys: np.ndarray, docs: np.ndarray, source: np.ndarray | None = None, max_all_pairs: int = 32
) -> np.ndarray:
    """Candidate pairs `(i, j)`, i < j, from one band's bucket entries sorted by (key, document).

    A bucket of up to `max_all_pairs` documents gives all its pairs; a larger one (e.g. thousands of copies of a
    boilerplate page) gives each member paired with the bucket's first member, its predecessor, and the first
    member of every source, which connects the same components without quadratic cost. With `source` (aligned
    with `docs`), only pairs from different sources are returned (cross-dataset mode). Not deduplicated.
    """
    if len(keys) < 2:
        return np.empty((0, 2), dtype=np.int64)
    brk = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    starts = np.concatenate([[0], brk])
    ends = np.concatenate([brk, [len(keys)]])
    sizes = ends - starts
    out: list[np.ndarray] = []
    two = starts[sizes == 2]
    if len(two):
        out.append(np.stack([two, two + 1], axis=1))
    for s, e in zip(starts[sizes > 2].tolist(), ends[sizes > 2].tolist(), strict=False):
        members = np.arange(s, e)
        if e - s <= max_all_pairs:
            out.append(np.array(list(itertools.combinations(range(s, e), 2)), dtype=np.int64))
        else:
            pairs = [
                np.stack([np.full(len(members) - 1, s), members[1:]], axis=1),
                np.stack([members[:-1], members[1:]], axis=1),
            ]
            if source is not None:
                _, first = np.unique(source[s:e], return_index=True)
                for h in (first + s).tolist():
                    pairs.append(np.stack([np.full(len(members), h), members], axis=1))
            out.append(np.concatenate(pairs))
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    pos = np.concatenate(out)
    if source is not None:
        pos = pos[source[pos[:, 0]] != source[pos[:, 1]]]
    p = np.sort(docs[pos].astype(np.int64), axis=1)
    return p[p[:, 0] != p[:, 1]]


def candidate_pairs(
    keys: np.ndarray, valid: np.ndarray, source: np.ndarray | None = None, max_all_pairs: int = 32
) -> np.ndarray:
    """Unique `(i, j)` pairs (i < j) of documents sharing a bucket in any band (`keys` is `(n, bands)`); see
    `bucket_pairs` for the rule inside one bucket."""
    idx_valid = np.flatnonzero(valid)
    out: list[np.ndarray] = []
    for j in range(keys.shape[1]):
        k = keys[idx_valid, j]
        order = np.argsort(k, kind="stable")
        docs = idx_valid[order]
        out.append(bucket_pairs(k[order], docs, None if source is None else source[docs], max_all_pairs))
    if not out:
        return np.empty((0, 2), dtype=np.int64)
    return unique_pairs(np.concatenate(out))


def unique_pairs(pairs: np.ndarray) -> np.ndarray:
    """Sorted unique rows of an `(m, 2)` array of document pairs."""
    if not len(pairs):
        return np.empty((0, 2), dtype=np.int64)
    return np.unique(pairs, axis=0)


def jaccard_sorted(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard of two sorted unique hash arrays."""
    if len(a) == 0 and len(b) == 0:
        return 0.0
    inter = np.intersect1d(a, b, assume_unique=True).size
    return inter / (len(a) + len(b) - inter)


def connected_components(n: int, edges: np.ndarray) -> np.ndarray:
    """For each node 0..n-1, the smallest node index of its component (vectorised hooking + pointer jumping:
    every label is a node of the same component no larger than the node, so the fixed point is the minimum)."""
    labels = np.arange(n, dtype=np.int64)
    if not len(edges):
        return labels
    u, v = edges[:, 0].astype(np.int64), edges[:, 1].astype(np.int64)
    while True:
        lu, lv = labels[u], labels[v]
        differ = lu != lv
        if not differ.any():
            return labels
        lo, hi = np.minimum(lu[differ], lv[differ]), np.maximum(lu[differ], lv[differ])
        np.minimum.at(labels, hi, lo)  # hook the larger label under the smaller
        while True:  # pointer jumping until every node points at a root
            nxt = labels[labels]
            if (nxt == labels).all():
                break
            labels = nxt


def apply_keep_rule(
    labels: np.ndarray, source_rank: np.ndarray, cross_only: bool = False
) -> tuple[np.ndarray, np.ndarray]:
    """Decide who stays in each cluster. Returns `(keep mask, kept_for)` where `kept_for[i]` is the index of the
    document kept in i's cluster (i itself for kept documents).

    Rule: the document from the highest-ranked source (lowest rank number) stays; ties are broken by input order
    (earlier file, then earlier line). In cross-dataset mode every document of the cluster's best source stays and
    only documents of lower-ranked sources go.
    """
    n = len(labels)
    if n == 0:
        return np.zeros(0, bool), np.zeros(0, np.int64)
    order = np.arange(n)
    # sort by (cluster, rank, input order): the first of each cluster is its keeper
    perm = np.lexsort((order, source_rank, labels))
    lab_sorted = labels[perm]
    first = np.concatenate([[True], lab_sorted[1:] != lab_sorted[:-1]])
    keeper_of_cluster = perm[first]
    cluster_index = np.cumsum(first) - 1
    kept_for = np.empty(n, dtype=np.int64)
    kept_for[perm] = keeper_of_cluster[cluster_index]
    if cross_only:
        keep = source_rank == source_rank[kept_for]
    else:
        keep = kept_for == order
    kept_for = np.where(keep, order, kept_for)
    return keep, kept_for


def size_histograms(
    labels: np.ndarray, source: np.ndarray, names: Sequence[str]
) -> dict[str, dict[int, int]]:
    """Per dataset: {cluster size: number of clusters of that size containing a document of the dataset}
    (clusters of size >= 2 only)."""
    _, inv, counts = np.unique(labels, return_inverse=True, return_counts=True)
    size_of = counts[inv]
    hist: dict[str, dict[int, int]] = {}
    for s, name in enumerate(names):
        m = (source == s) & (size_of >= 2)
        clusters = np.unique(labels[m])
        sizes = counts[np.searchsorted(np.unique(labels), clusters)]
        vals, cnt = np.unique(sizes, return_counts=True)
        hist[name] = {int(v): int(c) for v, c in zip(vals, cnt, strict=False)}
    return hist


def plot_histograms(hist: dict[str, dict[int, int]], path: Path) -> Path | None:
    """Log-log plot of number of clusters vs cluster size, one series per dataset (as in the Zyda-2 analysis).

    Drawn on a bare `Figure` with fixed margins (no pyplot, no layout pass): a third of the time, which matters
    for a command that otherwise finishes in seconds."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter

    fig = Figure(figsize=(6, 4), dpi=110)
    FigureCanvasAgg(fig)
    ax = fig.add_axes((0.14, 0.13, 0.82, 0.78))
    drawn = False
    for name, h in hist.items():
        if h:
            xs = sorted(h)
            ax.loglog(xs, [h[x] for x in xs], marker="o", linestyle="-", label=name)
            drawn = True
    if drawn:  # plain numbers (2, 5, 10, 20, ...) rather than 2x10^0 on these short log axes
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "235" else ""))
    ax.set_xlabel("cluster size (documents)")
    ax.set_ylabel("number of clusters")
    ax.set_title("Duplicate cluster sizes per dataset" + ("" if drawn else " (no duplicates found)"))
    if drawn:
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)
    return path
