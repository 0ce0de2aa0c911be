"""`bench gemm`: which model dimensions the GEMMs of this hardware like.

Following Anthony et al., "The Case for Co-Designing Model Architectures with Hardware"
(arXiv 2401.14489): a transformer layer's time is mostly a few GEMMs whose shapes come from the
hidden size h, the head dim d = h/a and the vocab V; sizes with large power-of-two factors (64, 128)
fill the hardware's tiles and run at a higher TFLOP/s than a neighbour a few percent smaller.
Three sweeps, each timed with `torch.matmul` on (tokens x k) @ (k x n):

  hidden:   h in a window around the request, heads fixed, ffn scaled with h;
            the layer's GEMMs: qkv (h -> 3h), attn_out (h -> h), ffn_up, ffn_down, and the two
            attention batched GEMMs over a heads (scores T x d x T, values T x T x d).
  head_dim: d over the divisors of h in [d/2, 2d], a = h/d heads; the attention GEMMs only.
  vocab:    V padded up to multiples of 8 ... 256; the logits GEMM (h -> V). Padding adds work, so
            the figure of merit is useful TFLOP/s, counted on the real V.

`gemm_sweep` is the API (a preset-based caller passes its config's dims); the CLI is a thin shell.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch

from hybridlm.bench.report import Record
from hybridlm.bench.timing import Stats, time_trials, warm_up
from hybridlm.errors import HybridLMError

ALIGNMENTS = (128, 64, 16, 8)
SWEEPS = ("hidden", "head_dim", "vocab")
VOCAB_PADS = (8, 16, 64, 128, 256)
GemmProgress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass(frozen=True)
class Gemm:
    """batch x (m x k) @ (k x n)."""

    name: str
    m: int
    k: int
    n: int
    batch: int = 1

    @property
    def flops(self) -> int:
        return 2 * self.batch * self.m * self.k * self.n


def alignment(x: int) -> int:
    """Largest of 128, 64, 16, 8 that divides x (1 if none)."""
    return next((a for a in ALIGNMENTS if x % a == 0), 1)


def attention_gemms(tokens: int, heads: int, head_dim: int) -> list[Gemm]:
    return [
        Gemm("attn_scores", tokens, head_dim, tokens, heads),
        Gemm("attn_values", tokens, tokens, head_dim, heads),
    ]


def layer_gemms(tokens: int, hidden: int, ffn: int, heads: int) -> list[Gemm]:
    return [
        Gemm("qkv", tokens, hidden, 3 * hidden),
        Gemm("attn_out", tokens, hidden, hidden),
        Gemm("ffn_up", tokens, hidden, ffn),
        Gemm("ffn_down", tokens, ffn, hidden),
        *attention_gemms(tokens, heads, hidden // heads),
    ]


def hidden_candidates(hidden: int, heads: int, window: float, step: int | None = None) -> list[int]:
    """Sizes within +-window of `hidden` that keep the head dim an integer (multiples of `step`)."""
    step = step or math.lcm(heads, 8)
    if step % heads:
        raise HybridLMError(f"--step {step} must be a multiple of --heads {heads} so the head dim is whole")
    lo, hi = math.ceil(hidden * (1 - window)), math.floor(hidden * (1 + window))
    return sorted({hidden, *range(-(-lo // step) * step, hi + 1, step)})


def head_dim_candidates(hidden: int, heads: int) -> list[int]:
    d = hidden // heads
    return [x for x in range(max(1, d // 2), 2 * d + 1) if hidden % x == 0]


def vocab_candidates(vocab: int) -> list[int]:
    return sorted({vocab, *(-(-vocab // p) * p for p in VOCAB_PADS)})


def check_dims(hidden: int, ffn: int, heads: int, vocab: int, tokens: int, window: float) -> None:
    dims = {"hidden": hidden, "ffn": ffn, "heads": heads, "vocab": vocab, "tokens": tokens}
    for name, value in dims.items():
        if value <= 0:
            raise HybridLMError(f"--{name} must be a positive integer, got {value}")
    if hidden % heads:
        raise HybridLMError(f"--hidden {hidden} is not divisible by --heads {heads}; head dim must be whole")
    if not 0 <= window < 1:
        raise HybridLMError(f"--window must be a fraction in [0, 1), e.g. 0.1 for +-10%, got {window}")


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """'auto' is bf16 on CUDA, fp32 on CPU (CPU bf16 matmul is orders of magnitude slower)."""
    table = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in table:
        raise HybridLMError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(table)}")
    if device.type == "cpu" and dtype != "float32":
        raise HybridLMError(f"dtype {dtype} on CPU is emulated and not representative; use float32 (or auto)")
    return table[dtype]


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise HybridLMError(f"device {device} asked for, but CUDA is not available; use cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError:
        raise HybridLMError(f"unknown device {device!r}; allowed: auto, cpu, cuda, cuda:N") from None


def time_gemm(g: Gemm, dtype: torch.dtype, device: torch.device, warmup: int, trials: int) -> Stats:
    shape_a = (g.batch, g.m, g.k) if g.batch > 1 else (g.m, g.k)
    shape_b = (g.batch, g.k, g.n) if g.batch > 1 else (g.k, g.n)
    a = torch.randn(shape_a, dtype=dtype, device=device)
    b = torch.randn(shape_b, dtype=dtype, device=device)
    out = torch.empty(torch.matmul(a[..., :1, :], b).shape[:-2] + (g.m, g.n), dtype=dtype, device=device)
    samples = time_trials(lambda: torch.matmul(a, b, out=out), warmup=warmup, trials=trials, device=device)
    return Stats.of(samples)


def gemm_sweep(
    hidden: int,
    ffn: int,
    heads: int,
    vocab: int,
    tokens: int,
    dtype: str = "auto",
    device: str = "auto",
    *,
    window: float = 0.1,
    step: int | None = None,
    warmup: int = 1,
    trials: int = 3,
    sweeps: tuple[str, ...] = SWEEPS,
    progress: GemmProgress | None = None,
) -> list[Record]:
    """Time the GEMMs of a model with these dims and of its neighbours; one record per GEMM, plus a
    `gemm="total"` record per hidden / head-dim candidate (sum of flops over sum of median times)."""
    check_dims(hidden, ffn, heads, vocab, tokens, window)
    dev = resolve_device(device)
    dt = resolve_dtype(dtype, dev)
    unknown = set(sweeps) - set(SWEEPS)
    if unknown:
        raise HybridLMError(f"unknown sweep {sorted(unknown)}; allowed: hidden, head_dim, vocab")

    # (sweep, candidate dims, gemms) for every point, so progress knows the total up front.
    plan: list[tuple[str, dict, list[Gemm]]] = []
    if "hidden" in sweeps:
        for h in hidden_candidates(hidden, heads, window, step):
            f = round(ffn * h / hidden)
            dims = {"hidden": h, "ffn": f, "heads": heads, "head_dim": h // heads, "vocab": vocab}
            plan.append(("hidden", dims, layer_gemms(tokens, h, f, heads)))
    if "head_dim" in sweeps:
        for d in head_dim_candidates(hidden, heads):
            dims = {"hidden": hidden, "ffn": ffn, "heads": hidden // d, "head_dim": d, "vocab": vocab}
            plan.append(("head_dim", dims, attention_gemms(tokens, hidden // d, d)))
    if "vocab" in sweeps:
        for v in vocab_candidates(vocab):
            dims = {"hidden": hidden, "ffn": ffn, "heads": heads, "head_dim": hidden // heads, "vocab": v}
            plan.append(("vocab", dims, [Gemm("logits", tokens, hidden, v)]))

    swept = {"hidden": "hidden", "head_dim": "head_dim", "vocab": "vocab"}
    base = {"tokens": tokens, "dtype": str(dt).removeprefix("torch."), "device": dev.type}
    records: list[Record] = []
    warm_up(dev)
    for done, (sweep, dims, gemms) in enumerate(plan, start=1):
        point = {"sweep": sweep, **dims, "align": alignment(dims[swept[sweep]]), **base}
        rows = []
        for g in gemms:
            s = time_gemm(g, dt, dev, warmup, trials)
            rows.append({**point, "gemm": g.name, "batch": g.batch, "m": g.m, "k": g.k, "n": g.n,
                         "time_s": s.median, "time_min_s": s.min, "time_max_s": s.max,
                         "flops": g.flops, "tflops": g.flops / s.median / 1e12})  # fmt: skip
        if sweep == "vocab":
            rows[0]["useful_tflops"] = Gemm("", tokens, hidden, vocab).flops / rows[0]["time_s"] / 1e12
        else:
            t, f = sum(r["time_s"] for r in rows), sum(r["flops"] for r in rows)
            rows.append({**point, "gemm": "total", "time_s": t, "time_min_s": sum(r["time_min_s"] for r in rows),
                         "time_max_s": sum(r["time_max_s"] for r in rows), "trials": trials, "flops": f,
                         "tflops": f / t / 1e12})  # fmt: skip
        records.extend(rows)
        if progress is not None:
            progress(done, len(plan), f"{sweep}={dims[swept[sweep]]}")
    return records


def suggest(
    records: list[Record], hidden: int, heads: int, vocab: int, min_gain: float = 0.03
) -> dict[str, dict]:
    """For each sweep present: the requested value, the fastest candidate, the speedup and the timing noise.

    hidden and head_dim rank candidates by total TFLOP/s; vocab by useful TFLOP/s (on the real V),
    which is the same as ranking by time. Ties go to the candidate closest to the request, and a
    candidate must beat the request by more than the noise to be suggested over it: `min_gain`, or the
    spread of the trials ((max - min) / median time of the request or the candidate) when that is larger.
    `noise` is that spread (None with one trial: nothing to estimate it from).
    """
    plans = {
        "hidden": ("hidden", hidden, "total", "tflops"),
        "head_dim": ("head_dim", hidden // heads, "total", "tflops"),
        "vocab": ("vocab", vocab, "logits", "useful_tflops"),
    }
    out: dict[str, dict] = {}
    for sweep, (key, requested, gemm, metric) in plans.items():
        rows = [r for r in records if r["sweep"] == sweep and r["gemm"] == gemm]
        if not rows:
            continue
        fastest = max(rows, key=lambda r: (r[metric], -abs(r[key] - requested)))
        mine = next((r for r in rows if r[key] == requested), None)
        noise = max((_spread(r) for r in (fastest, mine) if r is not None), default=0.0)
        best = fastest
        if mine is not None and fastest[metric] <= mine[metric] * (1 + max(min_gain, noise)):
            best = mine
        out[sweep] = {
            "requested": requested,
            "requested_tflops": mine[metric] if mine else None,
            "best": best[key],
            "best_tflops": best[metric],
            "best_align": best["align"],
            "speedup": best[metric] / mine[metric] if mine else None,
            "fastest": fastest[key],
            "fastest_gain": fastest[metric] / mine[metric] - 1 if mine else None,
            "noise": noise if max(r.get("trials", 2) for r in rows) > 1 else None,
        }
    return out


def _spread(rec: Record) -> float:
    """Relative spread of a record's trials: (max - min) / median time (0 when not recorded)."""
    if "time_min_s" not in rec or "time_max_s" not in rec or not rec.get("time_s"):
        return 0.0
    return (rec["time_max_s"] - rec["time_min_s"]) / rec["time_s"]
