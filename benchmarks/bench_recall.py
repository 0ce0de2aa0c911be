"""In-context recall against architecture, at equal parameter count: the cookbook's claim, measured.

The cookbook's thesis: linear sequence mixers (Mamba) are efficient but weak at in-context retrieval; a few
attention layers (Zamba's one shared block; sliding-window attention is a cheaper, local substitute) restore it.
This script trains tiny models of (nearly) equal parameter count from scratch on multi-query associative recall
(Zoology, arXiv 2312.04927; `hybridlm.eval.recall`) on the CPU, with the same data, steps and optimizer, and
measures accuracy against context length (the number of key-value pairs grows with it: length // 8):

    mamba2        pure Mamba2 (the parameter target)
    zamba2        Mamba2 + one shared attention block (Zamba2 style: concatenated embeddings, own projection)
    swa-hybrid    Mamba2 + sliding-window attention layers (`w`), when the layer pattern has `w`
    transformer   attention + gated MLP

Each model is sized to the pure Mamba2 model's parameter count by its MLP width (the closest of a few widths).
Training uses hybridlm's optimizer (AdamW groups) and LR schedule (cosine) in fp32; evaluation is
`hybridlm.eval.recall.evaluate_recall` on held-out examples (another seed). About ten minutes on one thread.

    python benchmarks/bench_recall.py [--steps 400] [--out bench_recall] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

from hybridlm import HybridLM, ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.eval.output import write_json
from hybridlm.eval.recall import generate
from hybridlm.eval.recall.plot import plot_recall
from hybridlm.eval.recall.run import evaluate_recall
from hybridlm.train.config import OptimConfig, ScheduleConfig
from hybridlm.train.distributed import grad_norm_
from hybridlm.train.optim import build_optimizer, set_lr
from hybridlm.train.schedules import lr_at

TRAIN_SEED, EVAL_SEED = 1, 0
D_MODEL = 64
MAMBA2 = {"d_state": 16, "headdim": 32, "ngroups": 1, "chunk_size": 32}
WIDTHS = range(16, 1025, 16)  # MLP widths tried when matching parameter counts


def architectures(vocab: int, window: int) -> dict[str, tuple[dict, str | None]]:
    """name -> (config fields, or the fields as a function of an MLP width; note)."""
    base = {"d_model": D_MODEL, "vocab_size": vocab, "max_seq_len": 4096, "mamba2": MAMBA2}
    return {
        "mamba2": ({**base, "layers": "m*6"}, None),
        "zamba2": (lambda f: {**base, "layers": "m m g m m", "shared": {"n_blocks": 1, "n_heads": 4, "ffn_dim": f}},
                   "one shared attention + MLP block"),
        "swa-hybrid": (lambda f: {**base, "layers": "m m w f m m w f", "attention": {"n_heads": 4, **_window(window)},
                                  "mlp": {"ffn_dim": f, "activation": "silu", "gated": True}},
                       f"sliding window {window}"),
        "transformer": (lambda f: {**base, "layers": "(a f)*3", "attention": {"n_heads": 4},
                                   "mlp": {"ffn_dim": f, "activation": "silu", "gated": True}}, None),
    }


def _window(window: int) -> dict:
    """The attention section's sliding-window field, whatever the pattern parser calls it (if it has one)."""
    from hybridlm.config.model import AttentionConfig

    names = [n for n in AttentionConfig.model_fields if "window" in n]
    return {names[0]: window} if names else {}


def n_params(fields: dict) -> int:
    with torch.device("meta"):
        return HybridLM(ModelConfig(**fields)).num_parameters()


def sized(spec, target: int) -> ModelConfig:
    """The config, or the config whose MLP width brings it closest to `target` parameters."""
    if isinstance(spec, dict):
        return ModelConfig(**spec)
    best = min(WIDTHS, key=lambda f: abs(n_params(spec(f)) - target))
    return ModelConfig(**spec(best))


def train(cfg: ModelConfig, steps: int, batch: int, lengths: list[int], lr: float, vocab: int) -> HybridLM:
    torch.manual_seed(TRAIN_SEED)
    model = HybridLM(cfg).train()
    optimizer = build_optimizer(model, OptimConfig(), lr)
    # constant after a short warmup: a decaying LR stalls the slow "induction" phase change of the recall circuit
    schedule = ScheduleConfig(name="constant", lr=lr, warmup_steps=max(1, steps // 20))
    for step in range(steps):
        set_lr(optimizer, lr_at(step, schedule, steps))
        data = generate("mqar", lengths[step % len(lengths)], batch, vocab, seed=TRAIN_SEED, start=step * batch)
        loss = model(torch.from_numpy(data.tokens), labels=torch.from_numpy(data.labels())).loss
        loss.backward()
        grad_norm_(model, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if (step + 1) % max(1, steps // 5) == 0:
            print(f"    step {step + 1}/{steps}  loss {loss.item():.3f}", flush=True)
    return model.eval()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=1000, help="Training steps per model.")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--vocab", type=int, default=40, help="Task vocabulary (keys: half of the ids after 2).")
    ap.add_argument("--train-lengths", default="32,64,128", help="Training context lengths (cycled).")
    ap.add_argument("--eval-lengths", default="32,64,128")
    ap.add_argument("--examples", type=int, default=64, help="Held-out examples per length.")
    ap.add_argument("--window", type=int, default=16, help="Sliding-window size of the swa-hybrid.")
    ap.add_argument("--only", default=None, help="Comma-separated architectures to run (default: all).")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("bench_recall"), help="Folder for recall.json and recall.png.")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    train_lengths = [int(x) for x in args.train_lengths.split(",")]
    eval_lengths = [int(x) for x in args.eval_lengths.split(",")]

    archs = architectures(args.vocab, args.window)
    target = n_params(archs["mamba2"][0])
    chosen = args.only.split(",") if args.only else list(archs)
    results, curves = [], {}
    start_all = time.perf_counter()
    for name in chosen:
        spec, note = archs[name]
        try:
            cfg = sized(spec, target)
        except ConfigError as err:
            print(f"{name}: skipped ({err})")
            continue
        params = n_params(cfg.model_dump())
        print(f"{name}: {cfg.describe()}, {params:,} parameters ({params / target - 1:+.1%} vs mamba2)", flush=True)
        start = time.perf_counter()
        model = train(cfg, args.steps, args.batch, train_lengths, args.lr, args.vocab)
        seconds = time.perf_counter() - start
        rows = evaluate_recall(model, ["mqar"], eval_lengths, examples=args.examples, vocab=args.vocab,
                               seed=EVAL_SEED)
        results.append({"model": name, "parameters": params, "layers": cfg.layers, "note": note,
                         "train_seconds": round(seconds, 1), "results": rows})
        curves[f"{name} ({params / 1000:.0f}k)"] = rows
        print(f"    trained in {seconds:.0f} s; accuracy " +
              "  ".join(f"{r['length']}: {r['accuracy']:.3f}" for r in rows), flush=True)

    print(f"\nMQAR accuracy (share of values recalled) by context length; {args.steps} steps x {args.batch} "
          f"sequences of lengths {args.train_lengths}; {time.perf_counter() - start_all:.0f} s in all")
    header = f"{'model':<12} {'params':>8} " + " ".join(f"{n:>6}" for n in eval_lengths) + f" {'train s':>8}"
    print(header)
    for r in results:
        accs = {row["length"]: row["accuracy"] for row in r["results"]}
        print(f"{r['model']:<12} {r['parameters']:>8,} " + " ".join(f"{accs[n]:>6.3f}" for n in eval_lengths)
              + f" {r['train_seconds']:>8.0f}")
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    write_json(args.out / "recall.json", {"settings": settings, "models": results})
    plot_recall(curves, args.out / "recall.png", vocab=args.vocab,
                title=f"MQAR after {args.steps} training steps (key-value pairs = length / 8)")
    print(f"wrote {args.out / 'recall.json'} and {args.out / 'recall.png'}")


if __name__ == "__main__":
    main()
