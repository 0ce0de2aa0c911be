"""Dedup benchmark: hybridlm MinHash+LSH vs datasketch (MinHash + MinHashLSH) on the same corpus and settings.

Generates the synthetic web corpus (about 20,000 documents with planted near-duplicate groups whose exact pairwise
Jaccard is known), then measures in one run:
- docs/s of signatures + LSH + clustering: hybridlm (one process, in memory) vs datasketch (same shingles,
  num_perm, bands x rows), and the ratio;
- hybridlm's end-to-end `run_dedup` on files (all cores, includes JSON I/O and writing outputs);
- precision and recall of planted duplicate pairs, unverified and verified (`--verify`).
Recall counts planted pairs with Jaccard >= threshold that end up in one cluster; precision counts pairs sharing a
predicted cluster that are planted duplicates.

    python benchmarks/bench_dedup.py [--docs 20000] [--threshold 0.8]
"""

from __future__ import annotations

import argparse
import itertools
import json
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hybridlm.data.clusters import connected_components
from hybridlm.data.dedup import DedupConfig, dedup_texts, run_dedup
from hybridlm.data.minhash import normalize_words
from hybridlm.data.synth import generate_corpus


def cluster_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    groups = defaultdict(list)
    for i, lab in enumerate(labels.tolist()):
        groups[lab].append(i)
    return {p for g in groups.values() if len(g) > 1 for p in itertools.combinations(g, 2)}


def score(labels, truth_pairs, threshold):
    pred = cluster_pairs(labels)
    planted = {(a, b) for a, b, _ in truth_pairs}
    positives = [(a, b) for a, b, j in truth_pairs if j >= threshold]
    recall = sum(labels[a] == labels[b] for a, b in positives) / max(1, len(positives))
    precision = len(pred & planted) / max(1, len(pred))
    return precision, recall, len(pred), len(positives)


def datasketch_run(texts, num_perm, ngram, bands, rows, threshold):
    from datasketch import MinHash, MinHashLSH

    lsh = MinHashLSH(threshold=threshold, num_perm=num_perm, params=(bands, rows))
    mhs = []
    for i, t in enumerate(texts):
        w = normalize_words(t)
        sh = [" ".join(w[k : k + ngram]) for k in range(max(1, len(w) - ngram + 1))] if w else []
        m = MinHash(num_perm=num_perm)
        m.update_batch([s.encode("utf-8") for s in sh])
        lsh.insert(i, m)
        mhs.append(m)
    edges = [(i, j) for i, m in enumerate(mhs) for j in lsh.query(m) if j != i]
    return connected_components(len(texts), np.array(edges, dtype=np.int64).reshape(-1, 2))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--workers", type=int, default=None)
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    t0 = time.perf_counter()
    generate_corpus(tmp / "corpus", seed=0, n_web=args.docs, n_hq=0, n_eval=0)
    print(f"corpus: {args.docs} documents generated in {time.perf_counter() - t0:.1f}s ({tmp / 'corpus'})")
    recs = [json.loads(x) for x in open(tmp / "corpus" / "web.jsonl", encoding="utf-8")]
    texts = [r["text"] for r in recs]
    index = {r["id"]: i for i, r in enumerate(recs)}
    truth = [
        (index[p["a"]], index[p["b"]], p["jaccard"])
        for p in map(json.loads, open(tmp / "corpus" / "web_pairs.jsonl"))
    ]

    cfg = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    b, r = cfg.bands_rows()
    dedup_texts(texts[:200], config=cfg)  # warm up caches
    t0 = time.perf_counter()
    res = dedup_texts(texts, config=cfg)
    t_ours = time.perf_counter() - t0

    t0 = time.perf_counter()
    ds_labels = datasketch_run(texts, args.num_perm, args.ngram, b, r, args.threshold)
    t_ds = time.perf_counter() - t0

    vcfg = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, verify=True)
    t0 = time.perf_counter()
    vres = dedup_texts(texts, config=vcfg)
    t_ver = time.perf_counter() - t0

    t0 = time.perf_counter()
    rep = run_dedup([tmp / "corpus" / "web.jsonl"], tmp / "out", config=vcfg, workers=args.workers)
    t_e2e = time.perf_counter() - t0

    n = len(texts)
    rows = [
        ("hybridlm minhash+lsh (1 process)", t_ours, res.labels, f"{b}x{r}"),
        ("datasketch MinHash+MinHashLSH", t_ds, ds_labels, f"{b}x{r}"),
        ("hybridlm --verify (1 process)", t_ver, vres.labels, f"{vres.bands}x{vres.rows}"),
    ]
    print(
        f"\n{'method':36s} {'bands x rows':>12s} {'seconds':>8s} {'docs/s':>9s} {'precision':>9s} {'recall':>7s}"
    )
    for name, t, labels, br in rows:
        p, rc, npred, npos = score(labels, truth, args.threshold)
        print(f"{name:36s} {br:>12s} {t:8.2f} {n / t:9.0f} {p:9.4f} {rc:7.4f}")
    print(f"\nplanted pairs with Jaccard >= {args.threshold}: {npos}")
    print(f"speed ratio hybridlm / datasketch (same settings): {t_ds / t_ours:.2f}x")
    print(
        f"end-to-end `run_dedup --verify` on the JSONL file (I/O + outputs): {t_e2e:.2f}s, {n / t_e2e:.0f} docs/s; "
        f"kept {rep['kept_documents']} + removed {rep['removed_documents']} = {rep['input_documents']}"
    )


if __name__ == "__main__":
    main()
