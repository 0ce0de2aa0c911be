"""Token-count benchmark: `hybridlm data count` (end to end: reading JSONL, tokenizing, counting) vs the tokenizer's
own `encode_batch` on the same texts already in memory.

A byte-level BPE is trained on the synthetic corpus first (no hub access). Goal: ratio >= 0.9.

    python benchmarks/bench_count.py [--docs 6000] [--vocab 8192]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from hybridlm.data.count import count_tokens
from hybridlm.data.synth import generate_corpus
from hybridlm.data.tokenizer import load_tokenizer, train_tokenizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--docs", type=int, default=6000)
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--repeat", type=int, default=3, help="Best of N timings for each side.")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench_count_"))
    generate_corpus(tmp / "c", seed=0, n_web=args.docs, n_hq=args.docs // 4, n_eval=0)
    files = [tmp / "c" / "web.jsonl", tmp / "c" / "hq.jsonl"]
    train_tokenizer(files, tmp / "tok", vocab_size=args.vocab)
    tok = load_tokenizer(tmp / "tok")
    texts = [json.loads(x)["text"] for f in files for x in open(f, encoding="utf-8")]
    n_bytes = sum(len(t.encode()) for t in texts)

    # interleaved best-of-N: background load hits both sides alike
    t_base = t_ours = float("inf")
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        enc = tok.encode_batch(texts, add_special_tokens=False)
        t_base = min(t_base, time.perf_counter() - t0)
        base_tokens = sum(len(e.ids) for e in enc)
        del enc
        t0 = time.perf_counter()
        rep = count_tokens(files, tmp / "tok")
        t_ours = min(t_ours, time.perf_counter() - t0)
    assert rep["tokens"] == base_tokens, (rep["tokens"], base_tokens)
    print(f"{len(texts)} documents, {n_bytes / 1e6:.1f} MB, {base_tokens:,} tokens, vocab {args.vocab}")
    print(f"{'method':45s} {'seconds':>8s} {'tokens/s':>12s} {'MB/s':>7s}")
    for name, t in (
        ("tokenizers encode_batch (texts in memory)", t_base),
        ("hybridlm count (JSONL files, end to end)", t_ours),
    ):
        print(f"{name:45s} {t:8.2f} {base_tokens / t:12,.0f} {n_bytes / 1e6 / t:7.1f}")
    print(f"throughput ratio hybridlm count / encode_batch: {t_base / t_ours:.2f}x (goal >= 0.9)")


if __name__ == "__main__":
    main()
