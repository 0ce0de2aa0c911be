"""`bench blocks`: forward, backward and forward+backward time of each block type of a ModelConfig.

Every block is the model's own module, built from the one config by its kind's spec
(`hybridlm.kinds`): `hybridlm.model.Block` (norm, sub-layer, residual) for attention,
sliding-window attention, Mamba1, Mamba2, the MLPs and MoE, and Zamba's `SharedBlock` with one
`SharedCall` for the shared block. Its FLOPs are the planner's
(`hybridlm.plan.sublayer_flops`), never a formula of our own: the norm and the residual add are
elementwise, which the planner counts as 0, so the timed unit is exactly the counted one.

Passes, all in training mode (autograd records the forward; inputs require grad, as a layer's
input does inside a model whose embedding trains):
  fwd      the forward alone                                  FLOPs: planner fwd
  bwd      the backward alone; its forward runs untimed first  FLOPs: planner bwd
  fwd_bwd  both together                                       FLOPs: fwd + bwd
Memory: peak allocated during the timed call on CUDA; on CPU the peak resident set size during
one extra untimed call minus the size just before it (glibc keeps freed memory, so it is trimmed
first; still a rough figure).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from hybridlm.bench import memory
from hybridlm.bench.gemm import resolve_device
from hybridlm.bench.report import Record
from hybridlm.bench.timing import Stats, time_trials, warm_up
from hybridlm.config import ModelConfig
from hybridlm.config.resolve import resolve_config
from hybridlm.errors import ConfigError, HybridLMError
from hybridlm.kinds import KINDS
from hybridlm.plan.flops import sublayer_flops

BLOCKS = dict(sorted((name, k.token) for k in KINDS.values() for name in k.bench))  # block -> its kind's token
PASSES = ("fwd", "bwd", "fwd_bwd")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
BlocksProgress = Callable[[int, int, str], None]  # (done, total, label)


@dataclass
class BlockSweep:
    """What to time: every combination of the lists, each block built from `config` at each d_model."""

    config: str = "zamba2-20m"
    blocks: list[str] = field(default_factory=lambda: list(BLOCKS))
    d_model: list[int] = field(default_factory=list)  # empty: the config's own
    seq_len: list[int] = field(default_factory=lambda: [64, 256])
    batch: list[int] = field(default_factory=lambda: [1])
    passes: list[str] = field(default_factory=lambda: list(PASSES))
    threads: list[int] = field(default_factory=list)  # empty: torch's current setting
    warmup: int = 1
    trials: int = 3
    dtype: str = "auto"
    device: str = "auto"
    overrides: dict[str, Any] = field(default_factory=dict)  # dotted ModelConfig fields, e.g. mlp.activation
    force: bool = False

    def check(self) -> None:
        unknown = [b for b in self.blocks if b not in BLOCKS]
        if unknown or not self.blocks:
            raise HybridLMError(
                f"unknown block {unknown[0] if unknown else '(none)'!r}; allowed: {', '.join(BLOCKS)}"
            )
        bad_pass = [p for p in self.passes if p not in PASSES]
        if bad_pass or not self.passes:
            raise HybridLMError(
                f"unknown pass {bad_pass[0] if bad_pass else '(none)'!r}; allowed: {', '.join(PASSES)}"
            )
        for name in ("d_model", "seq_len", "batch", "threads"):
            for v in getattr(self, name):
                if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                    raise HybridLMError(f"{name} must be a positive integer, got {v!r}")
        if (
            not all(isinstance(v, int) for v in (self.trials, self.warmup))
            or self.trials < 1
            or self.warmup < 0
        ):
            raise HybridLMError(
                f"need trials >= 1 and warmup >= 0, got trials={self.trials}, warmup={self.warmup}"
            )


def load_sweep(path: str | Path) -> dict[str, Any]:
    """A YAML sweep: keys as the CLI flags (block, d_model, seq_len, batch, pass, threads, warmup,
    trials, dtype, device, config, set), each a value or a list. Returns BlockSweep fields."""
    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text())
    except FileNotFoundError:
        raise HybridLMError(f"{p}: no such sweep file") from None
    except yaml.YAMLError as err:
        raise HybridLMError(f"{p}: not valid YAML: {str(err).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise HybridLMError(f"{p}: expected a mapping such as 'block: [mamba2, attention]'")
    names = {"block": "blocks", "pass": "passes", "set": "overrides"}
    allowed = ("config", "block", "d_model", "seq_len", "batch", "pass", "threads", "warmup", "trials",
               "dtype", "device", "set")  # fmt: skip
    out: dict[str, Any] = {}
    for key, value in data.items():
        if key not in allowed:
            raise HybridLMError(f"{p}: unknown key {key!r}; allowed: {', '.join(allowed)}")
        name = names.get(key, key)
        if name in ("blocks", "passes", "d_model", "seq_len", "batch", "threads"):
            value = list(value) if isinstance(value, list) else [value]
        elif name == "overrides" and not isinstance(value, dict):
            raise HybridLMError(
                f"{p}: 'set' must map dotted config fields to values, e.g. mlp.activation: silu"
            )
        out[name] = value
    return out


def resolve_dtype(dtype: str, device: torch.device, force: bool = False) -> torch.dtype:
    """'auto' is bf16 on CUDA and fp32 on CPU; half precision on CPU is refused unless forced."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in DTYPES:
        raise HybridLMError(f"unknown dtype {dtype!r}; allowed: auto, {', '.join(DTYPES)}")
    if device.type == "cpu" and dtype != "float32" and not force:
        raise HybridLMError(
            f"dtype {dtype} on CPU is emulated and ~300x slower than float32; use float32 or --force"
        )
    return DTYPES[dtype]


def block_config(
    cfg: ModelConfig, block: str, d_model: int | None = None, overrides: dict[str, Any] | None = None
) -> ModelConfig:
    """The config of one block: `cfg` at `d_model` with a one-token layer pattern (its spec's
    `bench_config`), so validation checks exactly this block's section at this width."""
    spec = KINDS[BLOCKS[block]]
    d = d_model or cfg.d_model
    fields: dict[str, Any] = {"d_model": d, **spec.bench_config(cfg, d), **spec.bench[block], **(overrides or {})}
    try:
        return cfg.replace(**fields)
    except ConfigError as err:
        raise ConfigError(f"block {block} at d_model={d}: {err}") from None


def build_block(cfg: ModelConfig, block: str) -> nn.Module:
    return KINDS[BLOCKS[block]].bench_unit(cfg)


def block_flops(cfg: ModelConfig, block: str, batch: int, seq_len: int, pass_: str, device_type: str = "cpu") -> int:
    """The planner's FLOPs for one pass of `block` (built from `cfg`, see block_config) on a device type."""
    f = sublayer_flops(cfg, BLOCKS[block], batch, seq_len, device=device_type)
    return {"fwd": f["fwd"], "bwd": f["bwd"], "fwd_bwd": f["fwd"] + f["bwd"]}[pass_]


class PassRunner:
    """The untimed `setup` and the timed `fn` of one pass of a block on fixed random inputs."""

    def __init__(self, module: nn.Module, n_inputs: int, batch: int, seq_len: int, pass_: str):
        p = next(module.parameters())
        shape = (batch, seq_len, module.d_model)
        self.module = module
        self.inputs = [
            torch.randn(shape, dtype=p.dtype, device=p.device, requires_grad=True) for _ in range(n_inputs)
        ]
        self.grad_out = torch.randn(shape, dtype=p.dtype, device=p.device)
        self.pass_ = pass_
        self.out: torch.Tensor | None = None

    def forward(self) -> torch.Tensor:
        out = self.module(*self.inputs)
        return out[0] if isinstance(out, tuple) else out  # Block returns (x, aux)

    def setup(self) -> None:
        for t in [*self.module.parameters(), *self.inputs]:
            t.grad = None
        if self.pass_ == "bwd":
            self.out = self.forward()

    def fn(self) -> None:
        if self.pass_ == "fwd":
            self.forward()
        elif self.pass_ == "bwd":
            out, self.out = self.out, None
            out.backward(self.grad_out)
        else:
            self.forward().backward(self.grad_out)


def measure_memory(runner: PassRunner, device: torch.device) -> int:
    """Bytes: CUDA peak allocated during `fn`; CPU peak RSS during `fn` minus RSS before it."""
    runner.setup()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        runner.fn()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device))
    memory.settle()
    return memory.peak_rss_above(memory.rss_bytes(), runner.fn)


def time_pass(
    module: nn.Module,
    cfg: ModelConfig,
    block: str,
    batch: int,
    seq_len: int,
    pass_: str,
    sweep: BlockSweep,
    device: torch.device,
) -> Record:
    """Time one pass of one block at (batch, seq_len); the record without config and threads."""
    runner = PassRunner(module, KINDS[BLOCKS[block]].bench_inputs, batch, seq_len, pass_)
    s = Stats.of(
        time_trials(runner.fn, warmup=sweep.warmup, trials=sweep.trials, device=device, setup=runner.setup)
    )
    flops = block_flops(cfg, block, batch, seq_len, pass_, device.type)
    dtype = next(module.parameters()).dtype
    return {
        "block": block, "kind": BLOCKS[block], "batch": batch, "seq_len": seq_len, "d_model": cfg.d_model,
        "pass": pass_, "dtype": str(dtype).removeprefix("torch."), "device": device.type,
        "time_s": s.median, "time_min_s": s.min, "time_max_s": s.max, "trials": s.n, "warmup": sweep.warmup,
        "flops": flops, "tflops": flops / s.median / 1e12, "tokens_per_s": batch * seq_len / s.median,
        "mem_bytes": measure_memory(runner, device),
    }  # fmt: skip


def plan_blocks(sweep: BlockSweep):
    """Check the sweep and build every block's config before anything runs: (device, dtype, the base
    config, {(d_model, block): config}). Any bad input fails here, as one line."""
    sweep.check()
    device = resolve_device(sweep.device)
    dtype = resolve_dtype(sweep.dtype, device, sweep.force)
    base_cfg = resolve_config(sweep.config)
    d_models = sweep.d_model or [base_cfg.d_model]
    configs = {(d, b): block_config(base_cfg, b, d, sweep.overrides) for d in d_models for b in sweep.blocks}
    return device, dtype, base_cfg, configs


def run_blocks(sweep: BlockSweep, progress: BlocksProgress | None = None) -> list[Record]:
    """Time every (threads, d_model, block, batch, seq_len, pass) of the sweep; one record each."""
    device, dtype, base_cfg, configs = plan_blocks(sweep)
    threads = sweep.threads or [torch.get_num_threads()]
    overrides = " ".join(f"{k}={v}" for k, v in sorted(sweep.overrides.items()))  # --set, as the run's records say
    total = len(threads) * len(configs) * len(sweep.batch) * len(sweep.seq_len) * len(sweep.passes)
    records: list[Record] = []
    saved_threads = torch.get_num_threads()
    try:
        for n_threads in threads:
            torch.set_num_threads(n_threads)
            warm_up(device)
            for (_, block), cfg in configs.items():
                torch.manual_seed(0)
                module = build_block(cfg, block).to(device=device, dtype=dtype)
                for batch, seq_len, pass_ in itertools.product(sweep.batch, sweep.seq_len, sweep.passes):
                    rec = time_pass(module, cfg, block, batch, seq_len, pass_, sweep, device)
                    records.append({"block": block, "config": base_cfg.name, "set": overrides, "threads": n_threads,
                                    **rec})
                    if progress is not None:
                        progress(len(records), total, f"{block} b={batch} s={seq_len} {pass_}")
    finally:
        torch.set_num_threads(saved_threads)
    return records
