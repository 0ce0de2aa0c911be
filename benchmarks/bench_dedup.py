"""Dedup benchmark: `hybridlm data dedup` end to end (a fresh process, start-up included) vs datasketch
(MinHash + MinHashLSH, in one process on texts already in memory) on the same corpus and settings.

Two parts, both printing measured numbers from one run:

1. End to end (default): the synthetic web corpus (`hybridlm data synth`, about 20,000 documents with planted
   near-duplicate groups whose exact Jaccard is known). Times `hybridlm data dedup` as a command (start-up, JSON
   reading, all stages, writing kept/removed/report/plot) with one process and with all cores, unverified with
   datasketch's bands and `--verify`; datasketch with the same shingles, permutations and bands x rows; the
   in-memory core (`dedup_texts`) for reference. Precision and recall of planted pairs for each.
2. Scale (`--scale 100000,1000000`): N short documents (40-90 words) with planted duplicates (copies trimmed or
   extended at their ends, so exact Jaccard spreads over 0.6-1.0), deduplicated by the command under one
   `--memory` budget. Prints docs/s, peak RSS per worker (each task's process, from the run's report), precision
   and recall at Jaccard >= 0.8, and datasketch's figures on the same input (up to `--datasketch-max` documents);
   plots time and peak RSS against N (`--plot`).

Recall counts planted pairs with exact Jaccard >= threshold that end up in one cluster. Precision (planted) counts
co-clustered pairs that are planted pairs; precision (exact) counts co-clustered pairs whose exact Jaccard over the
hashed shingle sets reaches the threshold.

    python benchmarks/bench_dedup.py [--docs 20000]
    python benchmarks/bench_dedup.py --scale 100000,1000000 --memory 128M --plot dedup_scale.png
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

from hybridlm.data.dedup import DedupConfig, dedup_texts
from hybridlm.data.minhash import MinHasher, normalize_words
from hybridlm.data.synth import generate_corpus

HYBRIDLM = [sys.executable, "-m", "hybridlm"]


# --- scoring ---------------------------------------------------------------------------------------------------------


def cluster_pairs(labels: np.ndarray) -> set[tuple[int, int]]:
    groups = defaultdict(list)
    for i, lab in enumerate(labels.tolist()):
        groups[lab].append(i)
    return {p for g in groups.values() if 1 < len(g) <= 200 for p in itertools.combinations(g, 2)}


class Scorer:
    """Ground truth: planted pairs with their exact Jaccard; exact Jaccard of any pair over hashed shingle sets."""

    def __init__(self, texts: list[str], truth: list[tuple[int, int, float]], threshold: float, ngram: int = 13):
        self.texts, self.truth, self.threshold = texts, truth, threshold
        self.hasher = MinHasher(ngram=ngram)
        self.sets: dict[int, np.ndarray] = {}

    def jaccard(self, a: int, b: int) -> float:
        for d in (a, b):
            if d not in self.sets:
                self.sets[d] = np.unique(self.hasher.shingle_hashes(self.texts[d]))
        x, y = self.sets[a], self.sets[b]
        inter = np.intersect1d(x, y, assume_unique=True).size
        return inter / max(1, len(x) + len(y) - inter)

    def score(self, labels: np.ndarray) -> dict:
        pred = cluster_pairs(labels)
        planted = {(a, b) for a, b, _ in self.truth}
        positives = [(a, b) for a, b, j in self.truth if j >= self.threshold]
        recall = sum(labels[a] == labels[b] for a, b in positives) / max(1, len(positives))
        exact_ok = sum(self.jaccard(a, b) >= self.threshold - 1e-12 for a, b in pred)
        return {
            "precision_planted": len(pred & planted) / max(1, len(pred)),
            "precision_exact": exact_ok / max(1, len(pred)),
            "recall": recall,
            "positives": len(positives),
            "predicted_pairs": len(pred),
        }


def labels_from_output(out: Path, n: int) -> np.ndarray:
    """Cluster labels (document index of the cluster's first member) from a single-file run's removed records."""
    labels = np.arange(n)
    for p in (out / "removed").rglob("*.jsonl"):
        for raw in open(p, encoding="utf-8"):
            r = json.loads(raw)
            labels[int(r["dedup_kept_id"].rsplit(":", 1)[1]) - 1] = r["dedup_cluster_id"]
            labels[r["_i"]] = r["dedup_cluster_id"]
    return labels


# --- the two implementations --------------------------------------------------------------------------------------


def datasketch_run(texts, num_perm, ngram, bands, rows, threshold):
    from datasketch import MinHash, MinHashLSH

    from hybridlm.data.clusters import connected_components

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


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def run_cli(args: list[str]) -> tuple[float, float]:
    """Run `hybridlm ARGS` as a fresh process; returns (wall seconds, CPU seconds of it and its workers), start-up
    included."""
    c0, t0 = _children_cpu(), time.perf_counter()
    subprocess.run([*HYBRIDLM, *args], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0, _children_cpu() - c0


def best_of(repeat: int, fn):
    """Run `fn() -> (wall, cpu, ...)` `repeat` times; the run with the least wall time (a loaded machine only ever
    adds time)."""
    return min((fn() for _ in range(repeat)), key=lambda r: r[0])


def timed(fn, *a):
    c0, t0 = time.process_time(), time.perf_counter()
    out = fn(*a)
    return time.perf_counter() - t0, time.process_time() - c0, out


def _datasketch_in_child(path, num_perm, ngram, bands, rows, threshold):
    from hybridlm.data.engine import peak_rss_mb

    texts = [json.loads(x)["text"] for x in open(path, encoding="utf-8")]
    wall, cpu, labels = timed(datasketch_run, texts, num_perm, ngram, bands, rows, threshold)
    return wall, cpu, labels, peak_rss_mb()


def datasketch_process(path, num_perm, ngram, bands, rows, threshold):
    """datasketch in a fresh process (so its memory is its own): (wall and CPU seconds without reading the texts,
    labels, peak RSS MB)."""
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    with ProcessPoolExecutor(1, mp_context=mp.get_context("spawn")) as ex:
        return ex.submit(_datasketch_in_child, str(path), num_perm, ngram, bands, rows, threshold).result()


def tag_records(src: Path, dst: Path) -> list[str]:
    """Copy a JSONL corpus adding `_i` (its index) to every record; returns the texts."""
    texts = []
    with open(src, encoding="utf-8") as fi, open(dst, "w", encoding="utf-8") as fo:
        for i, raw in enumerate(fi):
            r = json.loads(raw)
            r["_i"] = i
            texts.append(r["text"])
            fo.write(json.dumps(r, ensure_ascii=False) + "\n")
    return texts


# --- part 1: end to end on the synthetic web corpus ---------------------------------------------------------------


def end_to_end(args, tmp: Path) -> None:
    t0 = time.perf_counter()
    generate_corpus(tmp / "corpus", seed=0, n_web=args.docs, n_hq=0, n_eval=0)
    corpus = tmp / "web.jsonl"
    texts = tag_records(tmp / "corpus" / "web.jsonl", corpus)
    index = {f"web-{i:06d}": i for i in range(len(texts))}
    truth = [
        (index[p["a"]], index[p["b"]], p["jaccard"]) for p in map(json.loads, open(tmp / "corpus" / "web_pairs.jsonl"))
    ]
    words = np.mean([len(normalize_words(t)) for t in texts])
    print(
        f"corpus: {len(texts):,} documents, {words:.0f} words each on average, {corpus.stat().st_size / 1e6:.1f} MB "
        f"({time.perf_counter() - t0:.1f}s to generate)"
    )
    scorer = Scorer(texts, truth, args.threshold, args.ngram)
    cfg = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram)
    b, r = cfg.bands_rows()
    vb, vr = DedupConfig(threshold=args.threshold, num_perm=args.num_perm, ngram=args.ngram, verify=True).bands_rows()
    common = ["--threshold", str(args.threshold), "--num-perm", str(args.num_perm), "--ngram", str(args.ngram)]
    rows = []
    rep = args.repeat
    t_ds, c_ds, ds_labels = best_of(
        rep, lambda: timed(datasketch_run, texts, args.num_perm, args.ngram, b, r, args.threshold)
    )
    rows.append(("datasketch MinHash+MinHashLSH (in memory)", f"{b}x{r}", t_ds, c_ds, ds_labels))
    dedup_texts(texts[:200], config=cfg)  # warm up
    t, c, res = best_of(rep, lambda: timed(dedup_texts, texts, None, cfg))
    rows.append(("hybridlm dedup_texts (in memory)", f"{b}x{r}", t, c, res.labels))

    runs = [
        ("`hybridlm data dedup -j 1`", ["--bands", str(b), "--rows", str(r), "-j", "1"], f"{b}x{r}"),
        ("`hybridlm data dedup` (all cores)", ["--bands", str(b), "--rows", str(r)], f"{b}x{r}"),
        ("`hybridlm data dedup --verify -j 1`", ["--verify", "-j", "1"], f"{vb}x{vr}"),
        ("`hybridlm data dedup --verify` (all cores)", ["--verify"], f"{vb}x{vr}"),
    ]
    e2e = {}
    for k, (name, extra, br) in enumerate(runs):
        out = tmp / f"out{k}"
        cmd = ["data", "dedup", str(corpus), "-o", str(out), *common, *extra]

        def fresh_run(cmd=cmd, out=out):  # a new output directory each time: nothing to resume
            shutil.rmtree(out, ignore_errors=True)
            return run_cli(cmd)

        wall, cpu = best_of(rep, fresh_run)
        rows.append((name, br, wall, cpu, labels_from_output(out, len(texts))))
        e2e[name] = (wall, cpu)

    n = len(texts)
    print(
        f"\n{'method (best of ' + str(rep) + ')':44s} {'bands':>6s} {'seconds':>8s} {'CPU s':>7s} {'docs/s':>8s} "
        f"{'prec.':>7s} {'prec.@J':>7s} {'recall':>7s}"
    )
    for name, br, t, c, labels in rows:
        s = scorer.score(labels)
        print(
            f"{name:44s} {br:>6s} {t:8.2f} {c:7.2f} {n / t:8.0f} {s['precision_planted']:7.4f} "
            f"{s['precision_exact']:7.4f} {s['recall']:7.4f}"
        )
    print(
        f"\nplanted pairs with Jaccard >= {args.threshold}: {s['positives']:,}; cores: {os.cpu_count()}, "
        f"load average (1 min) at the end {os.getloadavg()[0]:.1f}"
    )
    for name in ("`hybridlm data dedup -j 1`", "`hybridlm data dedup` (all cores)"):
        wall, cpu = e2e[name]
        print(
            f"end to end, start-up included: {name} is {t_ds / wall:.2f}x datasketch in wall time "
            f"({c_ds / cpu:.2f}x in CPU time), same bands"
        )
    start = time.perf_counter()
    subprocess.run([*HYBRIDLM, "--help"], check=True, stdout=subprocess.DEVNULL)
    print(f"`hybridlm --help`: {time.perf_counter() - start:.2f}s")


# --- part 2: scale ------------------------------------------------------------------------------------------------


def short_corpus(path: Path, n: int, seed: int = 0, dup_fraction: float = 0.2) -> tuple[list[str], list]:
    """N short documents (40-90 words, Zipfian vocabulary of 30k invented words); `dup_fraction` of them are in
    planted groups of 2-4: an original and copies with words dropped or added at their ends (sometimes one word
    replaced inside). Returns the texts and the planted pairs (a, b, exact Jaccard filled in later)."""
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    vocab = np.array(["".join(rng.choice(letters, size=int(rng.integers(3, 10)))) for _ in range(30_000)], object)
    p = 1.0 / (np.arange(1, len(vocab) + 1) + 5.0)
    cdf = np.cumsum(p / p.sum())

    def words(k):
        return np.minimum(np.searchsorted(cdf, rng.random(k)), len(vocab) - 1)

    docs: list[np.ndarray] = []
    groups: list[list[int]] = []
    while len(docs) < n * dup_fraction:
        orig = words(int(rng.integers(40, 91)))
        g = [len(docs)]
        docs.append(orig)
        for _ in range(int(rng.integers(1, 4))):
            c = orig
            t = int(rng.choice([0, 1, 2, 3, 4, 6, 8, 12]))
            cut = int(rng.integers(0, t + 1))
            c = c[cut : len(c) - (t - cut)] if rng.random() < 0.5 else np.concatenate([words(cut), c, words(t - cut)])
            if rng.random() < 0.15:
                c = c.copy()
                c[int(rng.integers(len(c)))] = words(1)[0]
            g.append(len(docs))
            docs.append(c)
        groups.append(g)
    while len(docs) < n:
        docs.append(words(int(rng.integers(40, 91))))
    docs = docs[:n]
    order = rng.permutation(n)
    pos = np.empty(n, np.int64)
    pos[order] = np.arange(n)
    texts = [" ".join(vocab[docs[i]]) for i in order.tolist()]
    pairs = [
        (min(pos[a], pos[b]), max(pos[a], pos[b]))
        for g in groups
        for a, b in itertools.combinations(g, 2)
        if a < n and b < n
    ]
    with open(path, "w", encoding="utf-8") as fh:
        for i, t in enumerate(texts):
            fh.write(json.dumps({"text": t, "_i": i}) + "\n")
    return texts, pairs


def scale(args, tmp: Path) -> None:
    sizes = [int(x) for x in args.scale.split(",")]
    results = []
    for n in sizes:
        t0 = time.perf_counter()
        path = tmp / f"short_{n}.jsonl"
        texts, pairs = short_corpus(path, n)
        scorer = Scorer(texts, [], args.threshold, args.ngram)
        scorer.truth = [(a, b, scorer.jaccard(a, b)) for a, b in pairs]
        print(
            f"\nN = {n:,}: {path.stat().st_size / 1e6:.0f} MB, {len(pairs):,} planted pairs "
            f"({sum(j >= args.threshold for *_, j in scorer.truth):,} with Jaccard >= {args.threshold}); "
            f"generated in {time.perf_counter() - t0:.0f}s"
        )
        out = tmp / f"scale_out_{n}"
        extra = ["--verify"] if args.verify else []
        wall, cpu = run_cli(["data", "dedup", str(path), "-o", str(out), "--memory", args.memory, *extra])
        rep = json.loads((out / "report.json").read_text())
        rss = rep["execution"]["peak_rss_mb"]
        s = scorer.score(labels_from_output(out, n))
        row = {
            "n": n,
            "seconds": wall,
            "cpu_seconds": cpu,
            "load_average": os.getloadavg()[0],
            "docs_per_s": n / wall,
            "peak_rss_mb": max(rss.values()),
            "rss": rss,
            **s,
            "stage_seconds": rep["execution"]["seconds"],
        }
        print(
            f"  hybridlm: {wall:.1f}s end to end ({cpu:.1f}s CPU), {n / wall:,.0f} docs/s, peak RSS per worker "
            f"{max(rss.values()):.0f} MB ({', '.join(f'{k} {v:.0f}' for k, v in rss.items())}), "
            f"precision {s['precision_planted']:.4f} (exact {s['precision_exact']:.4f}), recall {s['recall']:.4f}; "
            f"stage seconds {rep['execution']['seconds']}"
        )
        if n <= args.datasketch_max:
            cfg = DedupConfig(threshold=args.threshold, ngram=args.ngram, verify=args.verify)
            b, r = cfg.bands_rows()
            t_ds, c_ds, labels, ds_rss = datasketch_process(path, args.num_perm, args.ngram, b, r, args.threshold)
            ds = scorer.score(labels)
            row.update(datasketch_seconds=t_ds, datasketch_cpu_seconds=c_ds, datasketch_rss_mb=ds_rss, datasketch=ds)
            print(
                f"  datasketch ({b}x{r} bands, one process, timed after reading the texts): {t_ds:.1f}s "
                f"({c_ds:.1f}s CPU), "
                f"{n / t_ds:,.0f} docs/s, its process's peak RSS {ds_rss:.0f} MB, "
                f"precision {ds['precision_planted']:.4f} (exact {ds['precision_exact']:.4f}), "
                f"recall {ds['recall']:.4f}"
            )
        results.append(row)
        del texts, scorer
    if len(results) > 1:
        lo, hi = results[0], results[-1]
        print(
            f"\npeak RSS per worker {lo['peak_rss_mb']:.0f} MB at N={lo['n']:,} -> {hi['peak_rss_mb']:.0f} MB at "
            f"N={hi['n']:,} ({hi['peak_rss_mb'] / lo['peak_rss_mb']:.2f}x) under --memory {args.memory}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n")
    if args.plot:
        plot_scale(results, Path(args.plot), args.memory)
        print(f"plot: {args.plot}")


def plot_scale(results: list[dict], path: Path, memory: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n"] for r in results]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 4), dpi=110)
    a1.loglog(n, [r["seconds"] for r in results], "o-", color="C0", label="hybridlm data dedup, wall (end to end)")
    a1.loglog(n, [r["cpu_seconds"] for r in results], "o--", color="C0", alpha=0.6, label="hybridlm, CPU")
    ds = [r for r in results if "datasketch_seconds" in r]
    if ds:
        a1.loglog(
            [r["n"] for r in ds],
            [r["datasketch_seconds"] for r in ds],
            "s",
            color="C1",
            label="datasketch, wall (in memory, no I/O)",
        )
        a1.loglog(
            [r["n"] for r in ds],
            [r["datasketch_cpu_seconds"] for r in ds],
            "s",
            color="C1",
            alpha=0.5,
            fillstyle="none",
            label="datasketch, CPU",
        )
    a1.loglog(n, [results[0]["seconds"] * x / n[0] for x in n], ":", color="grey", label="linear in N (reference)")
    a1.set_xlabel("documents")
    a1.set_ylabel("seconds (start-up included)")
    a1.set_title("Time vs corpus size")
    a1.grid(True, which="both", alpha=0.3)
    a1.legend(fontsize=8)
    for stage in results[0]["rss"]:
        a2.semilogx(n, [r["rss"][stage] for r in results], "o-", label=f"{stage} task")
    a2.set_ylim(0, max(r["peak_rss_mb"] for r in results) * 1.6)
    a2.set_xlabel("documents")
    a2.set_ylabel("peak RSS per worker (MB)")
    a2.set_title(f"Memory vs corpus size (--memory {memory})")
    a2.grid(True, which="both", alpha=0.3)
    a2.legend()
    from matplotlib.ticker import FuncFormatter

    for axis in (a1.xaxis, a1.yaxis, a2.xaxis):  # plain numbers: 20, 50, 100, 200, ... and 100,000, 300,000, ...
        axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}"))
        axis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:,.0f}" if f"{v:g}"[0] in "235" else ""))
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=20000)
    ap.add_argument("--threshold", type=float, default=0.8)
    ap.add_argument("--num-perm", type=int, default=128)
    ap.add_argument("--ngram", type=int, default=13)
    ap.add_argument("--scale", default=None, help="Comma-separated corpus sizes for the scale part (skips part 1).")
    ap.add_argument("--memory", default="128M", help="--memory for the scale runs.")
    ap.add_argument("--verify", action="store_true", help="Scale runs with --verify.")
    ap.add_argument("--datasketch-max", type=int, default=100_000, help="Largest N datasketch runs on.")
    ap.add_argument("--plot", default=None, help="PNG for time and RSS vs N.")
    ap.add_argument("--json", default=None, help="Write the scale results as JSON.")
    ap.add_argument("--repeat", type=int, default=3, help="End-to-end part: best of this many runs of each.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_dedup_"))
    if args.scale:
        scale(args, tmp)
    else:
        end_to_end(args, tmp)


if __name__ == "__main__":
    main()
