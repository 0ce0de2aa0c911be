"""`bench decode`: one decoding step at long contexts, sharded over ranks by Tree Attention or Ring
Attention, against a single device: latency per step, bytes communicated per step per rank, and peak
memory per rank.

Each point builds the model (the same seeded weights on every rank) and a cache holding `context`
positions, then times real decoding steps through `HybridLM.forward` (the next token is the previous
step's argmax). The attention caches are filled with random keys and values instead of by a prefill,
which on a CPU would take O(context^2) time and changes nothing about a decoding step's cost; Mamba
states stay zero. Per step the time is the slowest rank's, the bytes are the payload this rank handed
to collectives (`hybridlm.parallel.comm`), both the largest over ranks (bytes: and over steps);
memory is the peak while decoding above the memory in use before the cache existed, i.e. the cache plus
what decoding allocates on top (CPU: RSS, glibc returning freed buffers at once; CUDA: allocated
bytes).

Ranks run as `python -m hybridlm.bench.decode` under torchrun, one launch per rank count; the single
device runs in this process.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field

import torch
import torch.distributed as dist

from hybridlm.bench import memory
from hybridlm.bench.report import Record
from hybridlm.config.resolve import resolve_config
from hybridlm.errors import HybridLMError

MODES = ("tree", "ring", "single")


def parse_tokens(text: str | int) -> int:
    """'4096', '64k', '1M' (1024-based) -> tokens."""
    if isinstance(text, int):
        return text
    match = re.fullmatch(r"\s*(\d+)\s*([kKmM]?)\s*", str(text))
    if not match:
        raise HybridLMError(f"cannot read a context length from {text!r}; use tokens with an optional k/M suffix")
    return int(match.group(1)) * 1024 ** " KM".index((match.group(2) or " ").upper())


@dataclass
class DecodeSweep:
    config: str = "zamba2-tiny"
    contexts: list[int] = field(default_factory=lambda: [1024, 4096, 16384])
    nprocs: list[int] = field(default_factory=lambda: [2, 4])
    modes: list[str] = field(default_factory=lambda: list(MODES))
    steps: int = 5
    warmup: int = 1
    batch: int = 1
    threads: int = 1
    backend: str = "auto"
    seed: int = 0

    def validate(self) -> DecodeSweep:
        for mode in self.modes:
            if mode not in MODES:
                raise HybridLMError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
        if not self.modes or not self.contexts:
            raise HybridLMError("give at least one --mode and one --context")
        if any(m != "single" for m in self.modes) and not self.nprocs:
            raise HybridLMError("tree and ring need at least one --nproc")
        if any(n < 2 or n > 64 for n in self.nprocs):
            raise HybridLMError(f"--nproc must be between 2 and 64 local processes, got {self.nprocs}")
        if min(self.contexts) < max(self.nprocs, default=1):
            raise HybridLMError(f"every context needs at least one token per rank: context {min(self.contexts)} "
                                f"with {max(self.nprocs)} ranks")
        if self.steps < 1 or self.warmup < 0 or self.batch < 1 or self.threads < 1:
            raise HybridLMError("need --steps >= 1, --warmup >= 0, --batch >= 1 and --threads >= 1")
        resolve_config(self.config)  # one-line error for an unknown preset or a bad config file
        return self


def run_decode(sweep: DecodeSweep, progress=None) -> list[Record]:
    """Every point of the sweep: the single device here, each rank count in one torchrun launch."""
    from hybridlm.parallel.launch import run_ranks

    sweep.validate()
    sharded = [m for m in sweep.modes if m != "single"]
    total = len(sweep.contexts) * (("single" in sweep.modes) + len(sharded) * len(sweep.nprocs))
    done = 0
    records: list[Record] = []
    if "single" in sweep.modes:
        memory.return_large_frees()
        threads = torch.get_num_threads()
        torch.set_num_threads(sweep.threads)
        try:
            measure_point(sweep, "single", min(sweep.contexts))  # first-time allocations stay out of the figures
            for context in sweep.contexts:
                records.append(measure_point(sweep, "single", context))
                done += 1
                if progress:
                    progress(done, total, f"single {context}")
        finally:
            torch.set_num_threads(threads)
    for nproc in sweep.nprocs if sharded else []:
        request = {**asdict(sweep), "modes": sharded}
        offset = done

        def relay(n, _total, what, offset=offset):
            if progress:
                progress(offset + n, total, what)

        records += run_ranks("hybridlm.bench.decode", nproc, request, on_progress=relay)["records"]
        done += len(sharded) * len(sweep.contexts)
    return records


def run_rank(request: dict) -> dict:
    """One rank's share of the sweep (the rank-count launch)."""
    from hybridlm.parallel.launch import join_group, progress

    sweep = DecodeSweep(**request)
    device = join_group(sweep.backend)
    torch.set_num_threads(sweep.threads)
    memory.return_large_frees()
    records, n = [], 0
    measure_point(sweep, sweep.modes[0], min(sweep.contexts), device)  # first-time allocations stay out
    for context in sweep.contexts:
        for mode in sweep.modes:
            records.append(measure_point(sweep, mode, context, device))
            n += 1
            progress(n, len(sweep.contexts) * len(sweep.modes), f"{mode} {context} x{dist.get_world_size()}")
    return {"records": records}


def measure_point(sweep: DecodeSweep, mode: str, context: int, device: torch.device | None = None) -> Record:
    from hybridlm.model import HybridLM
    from hybridlm.parallel import ContextParallel

    device = device or torch.device("cpu")
    cfg = resolve_config(sweep.config)
    torch.manual_seed(sweep.seed)
    model = HybridLM(cfg).to(device).eval()
    b, max_len = sweep.batch, context + sweep.warmup + sweep.steps
    cp = None if mode == "single" else ContextParallel(mode)
    gen = torch.Generator(device=device).manual_seed(sweep.seed)
    memory.settle()
    before = _in_use(device)
    if cp is None:
        cache = model.allocate_cache(b, max_len)
        _fill_attention(cache.slots, lambda slot: min(context, slot["k"].shape[2]), gen)
        cache.offset = context
    else:
        cache, _ = cp.start(model, torch.zeros(b, context, dtype=torch.long, device=device), max_len)
        _fill_attention(cache.slots, lambda slot: cp.layout.lengths[cp.rank], gen)
        cp.finish_prefill(torch.zeros(b, cfg.padded_vocab_size, device=device), cache)
    token = torch.zeros(b, 1, dtype=torch.long, device=device)
    times, sent, received = [], [], []

    def step():
        nonlocal token
        if cp is not None:
            cp.comm.reset()
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            token = model(token, cache=cache).logits[:, -1:].argmax(-1)
        _sync(device)
        times.append(time.perf_counter() - start)
        if cp is not None:
            sent.append(cp.comm.sent)
            received.append(cp.comm.received)

    for _ in range(sweep.warmup):
        step()
    times.clear()
    sent.clear()
    received.clear()
    peak = _peak_above(device, before, lambda: [step() for _ in range(sweep.steps)])
    values = [*times, max(sent, default=0), max(received, default=0), peak, cache.nbytes]
    if cp is not None and cp.world > 1:  # the slowest rank per step; the largest bytes and memory
        t = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        values = t.tolist()
    times = sorted(values[:sweep.steps])
    return {
        "config": sweep.config, "mode": mode, "nproc": 1 if cp is None else cp.world, "context": context,
        "batch": b, "threads": sweep.threads, "device": device.type,
        "backend": "none" if cp is None else dist.get_backend() if dist.is_initialized() else "none",
        "step_s": times[len(times) // 2], "step_min_s": times[0], "steps": sweep.steps,
        "bytes_per_step": int(values[-4]), "received_per_step": int(values[-3]),
        "peak_bytes": int(values[-2]), "cache_bytes": int(values[-1]),
    }


def _fill_attention(slots, length, gen: torch.Generator) -> None:
    """Random keys and values in the first `length(slot)` positions of every attention cache."""
    from hybridlm.parallel.kv import ShardedKV

    for slot in slots:
        if slot is None or "k" not in slot:
            continue
        n = length(slot)
        for name in ("k", "v"):
            slot[name][:, :, :n].normal_(generator=gen)
        if isinstance(slot, ShardedKV):
            slot.length = n


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _in_use(device: torch.device) -> int:
    return torch.cuda.memory_allocated(device) if device.type == "cuda" else memory.rss_bytes()


def _peak_above(device: torch.device, before: int, fn) -> int:
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        return max(0, torch.cuda.max_memory_allocated(device) - before)
    return memory.peak_rss_above(before, fn)


def plot_decode(records: list[Record], path) -> None:
    """Three panels against the context: latency per step, bytes per step per rank, peak memory per rank."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
    panels = [("step_s", 1e3, "ms per decoding step"), ("bytes_per_step", 1.0, "bytes sent per step per rank"),
              ("peak_bytes", 1 / 2**20, "peak memory per rank (MiB)")]
    series: dict[tuple[str, int], list[Record]] = {}
    for r in records:
        series.setdefault((r["mode"], r["nproc"]), []).append(r)
    nprocs = sorted({n for _, n in series})
    shades = {n: 0.45 + 0.55 * i / max(1, len(nprocs) - 1) for i, n in enumerate(n for n in nprocs if n > 1)}
    for ax, (key, scale, label) in zip(axes, panels, strict=True):
        for (mode, n), recs in sorted(series.items()):
            if key == "bytes_per_step" and mode == "single":
                continue  # nothing to send
            recs = sorted(recs, key=lambda r: r["context"])
            color = "black" if mode == "single" else (plt.cm.Blues if mode == "tree" else plt.cm.Reds)(shades[n])
            name = "single device" if mode == "single" else f"{mode}, {n} ranks"
            ax.plot([r["context"] for r in recs], [r[key] * scale for r in recs], marker="o", ms=3, color=color,
                    ls="--" if mode == "single" else "-", label=name)
        tree = {r[key] for (mode, _), recs in series.items() if mode == "tree" for r in recs}
        if key == "bytes_per_step" and len(tree) == 1:  # the tree lines coincide: say so
            ax.annotate(f"tree: {tree.pop():,} B at every context and rank count", (0.03, 0.06),
                        xycoords="axes fraction", fontsize=8, color=plt.cm.Blues(1.0))
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("context (tokens)")
        ax.set_title(label)
        ax.grid(True, alpha=0.3, which="both")
    axes[0].legend(fontsize=8)
    r0 = records[0]
    fig.suptitle(f"decoding at long context: tree vs ring attention ({r0['config']}, batch {r0['batch']}, "
                 f"{r0['device']}, {r0['threads']} thread(s) per rank)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    from hybridlm.parallel.launch import worker_main

    worker_main(run_rank)
