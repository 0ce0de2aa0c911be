"""HybridLM vs transformers on the same ~20M-parameter Zamba2 model (identical weights), CPU, fp32.

The model is configured like the published Zamba2 checkpoints (mamba2.chunk_size 256, the GPU
kernels' value). transformers runs that config as is; hybridlm's CPU path caps the SSD chunk at
mamba2.cpu_chunk_size (64, measured fastest here; results are the same, only the schedule differs).
For a like-for-like algorithm comparison, transformers is also timed with its chunk forced to 64.

Measures, in one run, for 1 and 2 threads:
  - training step (forward + backward) tokens/s at seq_len 1024
  - generation tokens/s: 64 new tokens after a 512-token prompt (greedy, batch 1)
and prints the ratios, after checking that both produce the same logits and greedy tokens.
Times are the best of --repeats runs (the least-disturbed run on a shared machine), the contenders run
in alternation; `--clock cpu` times process CPU time instead of elapsed time (steadier when other
work shares the machine; meaningful with --threads 1).

    python benchmarks/bench_model_vs_transformers.py [--threads 1] [--compile]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import torch
import transformers

from hybridlm import HybridLM, ModelConfig

CLOCK = time.perf_counter  # --clock cpu: time.process_time (the process's CPU time; use with 1 thread)


def timed(fn, repeats: int, warmup: int = 1) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times)  # the least-disturbed run: robust on a shared machine


def timed_pair(fns, repeats: int, warmup: int = 1) -> list[float]:
    """Best time of each function, run in alternation so a load on the machine hits all of them alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeats):
        for i, fn in enumerate(fns):
            start = CLOCK()
            fn()
            best[i] = min(best[i], CLOCK() - start)
    return best


def train_step(model, ids, hf: bool):
    def run():
        model.zero_grad(set_to_none=True)
        out = model(input_ids=ids, labels=ids) if hf else model(ids, labels=ids)
        out.loss.backward()
    return run


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="zamba2-20m")
    ap.add_argument("--threads", type=int, default=0, help="0: benchmark 1 and 2 threads")
    ap.add_argument("--seq-len", type=int, default=1024)
    ap.add_argument("--prompt-len", type=int, default=512)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--chunk-size", type=int, default=256, help="mamba2.chunk_size of the model (published: 256)")
    ap.add_argument("--compile", action="store_true", help="also time torch.compile'd hybridlm training")
    ap.add_argument("--clock", choices=["wall", "cpu"], default="wall",
                    help="wall: elapsed time; cpu: process CPU time (steadier on a busy machine; with --threads 1)")
    args = ap.parse_args()
    global CLOCK
    CLOCK = time.process_time if args.clock == "cpu" else time.perf_counter

    torch.manual_seed(0)
    cfg = ModelConfig.from_preset(args.preset).replace(**{"mamba2.chunk_size": args.chunk_size})
    ours = HybridLM(cfg)
    with tempfile.TemporaryDirectory() as d:
        ours.save_pretrained(d)
        theirs = transformers.AutoModelForCausalLM.from_pretrained(d, dtype=torch.float32)
        theirs_same = transformers.AutoModelForCausalLM.from_pretrained(
            d, dtype=torch.float32, chunk_size=cfg.mamba2.chunk_for("cpu"))
    for m in (theirs, theirs_same):
        m.generation_config.eos_token_id = None
        m.generation_config.pad_token_id = 0
    print(f"model: {cfg.describe()}, {ours.num_parameters():,} parameters; transformers {transformers.__version__}, "
          f"torch {torch.__version__}; chunk: transformers {cfg.mamba2.chunk_size} (config), "
          f"hybridlm CPU path {cfg.mamba2.chunk_for('cpu')}")

    ids = torch.randint(0, cfg.vocab_size, (1, args.seq_len))
    prompt = ids[:, :args.prompt_len]
    ours.eval()
    theirs.eval()
    with torch.no_grad():
        diff = (ours(ids[:, :256]).logits - theirs(ids[:, :256]).logits).abs().max().item()
    g_ours = ours.generate(prompt, args.new_tokens)
    g_theirs = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                               min_new_tokens=args.new_tokens, do_sample=False)
    print(f"check: max |logit diff| = {diff:.2e}; greedy tokens identical: {torch.equal(g_ours, g_theirs)}")

    def hf_generate(model):
        return lambda: model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=args.new_tokens,
                                      min_new_tokens=args.new_tokens, do_sample=False)

    n = args.seq_len
    for threads in ([args.threads] if args.threads else [1, 2]):
        torch.set_num_threads(threads)
        for m in (ours, theirs, theirs_same):
            m.train()
        t_ours, t_theirs, t_same = timed_pair(
            [train_step(ours, ids, hf=False), train_step(theirs, ids, hf=True), train_step(theirs_same, ids, hf=True)],
            args.repeats)
        for m in (ours, theirs, theirs_same):
            m.eval()
        g_o, g_t, g_s = timed_pair(
            [lambda: ours.generate(prompt, args.new_tokens), hf_generate(theirs), hf_generate(theirs_same)],
            args.repeats)
        k = args.new_tokens
        print(f"\n[{threads} thread{'s' if threads > 1 else ''}]")
        print(f"train step (fwd+bwd, seq {n}), tokens/s: hybridlm {n / t_ours:6.0f} | transformers {n / t_theirs:6.0f}"
              f" (ratio {t_theirs / t_ours:.2f}x) | transformers at chunk {cfg.mamba2.chunk_for('cpu')} "
              f"{n / t_same:6.0f} (ratio {t_same / t_ours:.2f}x)")
        print(f"generate ({args.prompt_len} prompt + {k} new), tokens/s: hybridlm {k / g_o:6.1f} | transformers "
              f"{k / g_t:6.1f} (ratio {g_t / g_o:.2f}x) | transformers at chunk {cfg.mamba2.chunk_for('cpu')} "
              f"{k / g_s:6.1f} (ratio {g_s / g_o:.2f}x)")
        if args.compile:
            ours.train()
            compiled = torch.compile(ours)
            t_c = timed(train_step(compiled, ids, hf=False), args.repeats, warmup=2)
            print(f"train step, torch.compile: hybridlm {n / t_c:6.0f} tokens/s, ratio vs transformers "
                  f"{t_theirs / t_c:.2f}x")


if __name__ == "__main__":
    main()
