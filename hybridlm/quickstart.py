"""`hybridlm quickstart`: the cookbook end to end on an embedded default, on CPU, without downloads.

    corpus -> tokenizer -> filter -> dedup -> pack -> plan -> pretrain -> anneal (with replay)
           -> held-out eval before/after annealing -> sample -> report

Every stage is the real one (`hybridlm.data`, `hybridlm.plan`, `hybridlm.train`); this module only
chains them and writes OUTPUT/summary.json. The held-out text for the annealing comparison is the
evaluation set's question/answer lines about the high-quality part's entities, never trained on.
"""

from __future__ import annotations

import json
import math
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from rich.console import Console

from hybridlm.errors import HybridLMError

VOCAB_SIZE = 512
CORPUS = {"n_web": 2000, "n_hq": 2000, "n_eval": 400}
MODEL = "zamba2-tiny"


def unigram_entropy(dataset) -> float:
    """Entropy (nats) of the token unigram distribution: the loss of the best context-free model."""
    counts = np.zeros(1, dtype=np.int64)
    step = 1 << 20
    for start in range(0, dataset.total_tokens, step):
        chunk = np.asarray(dataset.tokens(start, min(step, dataset.total_tokens - start)), dtype=np.int64)
        c = np.bincount(chunk)
        if len(c) > len(counts):
            counts = np.pad(counts, (0, len(c) - len(counts)))
        counts[: len(c)] += c
    p = counts[counts > 0] / counts.sum()
    return float(-(p * np.log(p)).sum())


def _split_eval(raw: Path) -> None:
    rows = [json.loads(line) for line in (raw / "eval.jsonl").read_text().splitlines()]
    for kind in ("web", "qa"):
        with open(raw / f"eval-{kind}.jsonl", "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows if r["kind"] == kind)


def run_quickstart(output_dir: str | Path, seed: int = 0, pretrain_steps: int = 150, anneal_steps: int | None = None,
                   threads: int = 1, console: Console | None = None) -> dict[str, Any]:
    from hybridlm import HybridLM, ModelConfig
    from hybridlm.data.dedup import DedupConfig, run_dedup
    from hybridlm.data.filters import run_filter
    from hybridlm.data.pack import pack
    from hybridlm.data.shards import TokenShardDataset
    from hybridlm.data.synth import generate_corpus
    from hybridlm.data.tokenizer import load_tokenizer, train_tokenizer
    from hybridlm.plan.report import build_plan
    from hybridlm.train import evaluate_loss, run_anneal, run_training

    if pretrain_steps < 1:
        raise HybridLMError(f"--pretrain-steps must be >= 1, got {pretrain_steps}")
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise HybridLMError(f"output directory {out} is a file; give a new directory")
    if out.exists() and any(out.iterdir()):
        raise HybridLMError(f"output directory {out} is not empty; choose a new one")
    out.mkdir(parents=True, exist_ok=True)
    say = (console or Console()).print
    start = time.perf_counter()
    if threads:
        torch.set_num_threads(threads)

    def stage(name: str, text: str) -> None:
        say(f"[bold cyan]{name:<10}[/] {text}  [dim]({time.perf_counter() - start:.0f} s)[/]")

    raw = out / "corpus"
    manifest = generate_corpus(raw, seed=seed, **CORPUS)
    _split_eval(raw)
    stage("corpus", f"synthetic: {manifest.get('n_web', CORPUS['n_web'])} web docs (planted near-duplicates and "
                    f"junk), {CORPUS['n_hq']} high-quality fact docs, {CORPUS['n_eval']} held-out docs -> {raw}")

    tok_dir = out / "tokenizer"
    train_tokenizer([raw / "web.jsonl", raw / "hq.jsonl"], tok_dir, vocab_size=VOCAB_SIZE)
    stage("tokenizer", f"byte-level BPE, {VOCAB_SIZE} ids -> {tok_dir}")

    filt = run_filter([raw / "web.jsonl"], out / "filtered")
    removed_by = {k: v for k, v in filt.get("removed_by_filter", {}).items() if v}
    stage("filter", f"Zyda filters: kept {filt['kept_documents']} of {filt['input_documents']}, removed "
                    f"{filt['removed_documents']} {removed_by}")

    dedup = run_dedup([out / "filtered" / "kept"], out / "dedup",
                      config=DedupConfig(threshold=0.8, verify=True))
    stage("dedup", f"MinHash-LSH (word 13-grams, verified): kept {dedup['kept_documents']}, removed "
                   f"{dedup['removed_documents']} in {dedup['clusters']} clusters")

    shards = out / "shards"
    sources = {"web": [out / "dedup" / "kept"], "hq": [raw / "hq.jsonl"],
               "eval-web": [raw / "eval-web.jsonl"], "eval-qa": [raw / "eval-qa.jsonl"]}
    for part, files in sources.items():
        pack(files, shards / part, tok_dir)
    web = TokenShardDataset(shards / "web")
    entropy = unigram_entropy(web)
    stage("pack", f"token shards (uint16) -> {shards}: web {web.total_tokens:,} tokens, hq "
                  f"{TokenShardDataset(shards / 'hq').total_tokens:,}; unigram entropy {entropy:.3f} nats")

    cfg = ModelConfig.from_preset(MODEL).replace(vocab_size=VOCAB_SIZE)
    seq_len = 128
    plan = build_plan(cfg, batch=16, seq_len=seq_len)
    (out / "plan.json").write_text(json.dumps(plan, indent=2) + "\n")
    stage("plan", f"{cfg.describe()}: {plan['params']['total']:,} params, "
                  f"{plan['flops']['train_per_token'] / 1e6:.1f} MFLOP/token to train -> {out / 'plan.json'}")

    run = {
        "model": {"preset": MODEL, "vocab_size": VOCAB_SIZE},
        "data": {"sources": [{"path": str(shards / "web"), "weight": 1.0}], "seq_len": seq_len,
                 "eval_path": str(shards / "eval-web")},
        "train": {"steps": pretrain_steps, "seed": seed, "threads": threads, "progress": console is None,
                  "checkpoint_every": max(1, pretrain_steps // 3), "eval_every": max(1, pretrain_steps // 3)},
    }
    pre = run_training(run, out / "pretrain")
    stage("pretrain", f"{pretrain_steps} steps, final loss {pre['final_loss']:.3f} "
                      f"(unigram entropy {entropy:.3f}), {pre.get('tokens_per_s', 0):.0f} tokens/s")

    phase1 = HybridLM.from_pretrained(out / "pretrain" / "final")
    before = evaluate_loss(phase1, TokenShardDataset(shards / "eval-qa"), seq_len=seq_len)["loss"]
    ann = run_anneal(out / "pretrain", out / "anneal", data=[str(shards / "hq")], steps=anneal_steps,
                     overrides={"train": {"threads": threads, "progress": console is None, "seed": seed},
                                "data": {"eval_path": str(shards / "eval-qa")}})
    phase2 = HybridLM.from_pretrained(out / "anneal" / "final")
    after = evaluate_loss(phase2, TokenShardDataset(shards / "eval-qa"), seq_len=seq_len)["loss"]
    stage("anneal", f"{ann['steps']} steps, 60% replay of web + 40% high-quality: held-out QA loss "
                    f"{before:.3f} -> {after:.3f}")

    tok = load_tokenizer(tok_dir)
    prompt = "The capital of"
    encoded = tok.encode(prompt)
    ids = torch.tensor([getattr(encoded, "ids", encoded)])
    sample_ids = phase2.generate(ids, max_new_tokens=40, do_sample=True, top_k=20, seed=seed)[0, ids.shape[1]:]
    sample = prompt + tok.decode(sample_ids.tolist())
    stage("sample", repr(sample))

    summary = {
        "unigram_entropy": entropy,
        "pretrain_final_loss": pre["final_loss"],
        "pretrain_eval_loss": (pre.get("eval") or {}).get("loss"),
        "anneal_eval_loss_before": before,
        "anneal_eval_loss_after": after,
        "pretrain_tokens_per_s": pre.get("tokens_per_s"),
        "pretrain_mfu": pre.get("mfu"),
        "params": plan["params"]["total"],
        "filter": {"input": filt["input_documents"], "kept": filt["kept_documents"]},
        "dedup": {"input": dedup["input_documents"], "kept": dedup["kept_documents"],
                  "removed": dedup["removed_documents"], "clusters": dedup["clusters"]},
        "tokens": {"web": web.total_tokens},
        "sample": sample,
        "seconds": time.perf_counter() - start,
        "paths": {"plan": "plan.json", "pretrain": "pretrain", "anneal": "anneal", "model": "anneal/final",
                  "plots": ["pretrain/plots", "anneal/plots"], "dedup_report": "dedup/report.json"},
    }
    if not (math.isfinite(after) and math.isfinite(before)):
        raise HybridLMError("held-out loss is not finite; the run diverged")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    stage("report", f"{out / 'summary.json'}; plots in pretrain/plots and anneal/plots")
    shutil.rmtree(out / "pretrain" / "checkpoints", ignore_errors=True)  # keep the report directory small
    return summary
