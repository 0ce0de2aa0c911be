"""`RunConfig`: one validated description of a training run (model, data, optimizer, schedule, loop,
parallelism).

Loaded from YAML; every field can be overridden with a dotted key (`--train.steps 100` on the command line,
`apply_overrides(cfg_dict, {"train.steps": 100})` in Python). Errors are one line naming the field.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from hybridlm.config.model import ModelConfig, _deep_merge, _Section
from hybridlm.errors import ConfigError


class _Sub(BaseModel):
    """A strict, immutable section; its errors surface through `RunConfig` as one line naming the field."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


def _stored_path(path: str) -> str:
    """A data or model path as stored in a run config: absolute (from the current directory), `synth://` as is, so
    the saved config means the same wherever it is read."""
    if not path.strip():
        raise ValueError("a path is empty")
    if path.startswith("synth://"):
        return path
    return os.path.abspath(os.path.expanduser(path))


DecayShape = Literal["linear", "cosine", "1-sqrt", "exponential"]


class SourceConfig(_Sub):
    """A packed token-shard directory (`hybridlm data pack`), or `synth://web|hq|eval|eval-web|eval-qa` for
    the
    built-in synthetic corpus, with its share of the training samples."""

    path: str
    weight: float = 1.0

    @model_validator(mode="after")
    def _check(self) -> SourceConfig:
        if self.weight < 0:
            raise ValueError(f"weight must be >= 0, got {self.weight}")
        return self

    _absolute = field_validator("path")(lambda p: _stored_path(p))


class CurriculumPoint(_Sub):
    """Mixture weights (one per source) that hold at optimizer step `step`; weights are interpolated linearly
    between points and held constant after the last one."""

    step: int
    weights: list[float]


class DataConfig(_Sub):
    sources: list[SourceConfig] = Field(default_factory=lambda: [SourceConfig(path="synth://web")])
    seq_len: int = 128
    eval_path: str | None = "auto"  # auto: synth://eval when training on synth://, else none (same tokenizer only)
    eval_batches: int = 8  # batches (of batch_size / grad_accum windows) per evaluation; 0: the whole set
    curriculum: list[CurriculumPoint] = Field(default_factory=list)
    # packed documents stay apart: attention, SSM state and conv restart after each EOS, and no token is
    # trained to predict the next document's first (shards with an EOS id; otherwise nothing to do)
    document_mask: bool = True

    _absolute = field_validator("eval_path")(lambda p: p if p in (None, "auto") else _stored_path(p))

    @model_validator(mode="after")
    def _check(self) -> DataConfig:
        if not self.sources:
            raise ValueError("sources: at least one source is needed")
        if self.seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {self.seq_len}")
        if sum(s.weight for s in self.sources) <= 0:
            raise ValueError("sources: the weights must not all be 0")
        last = -1
        for p in self.curriculum:
            if len(p.weights) != len(self.sources):
                raise ValueError(
                    f"curriculum: step {p.step} has {len(p.weights)} weights for {len(self.sources)} sources"
                )
            if p.step <= last or min(p.weights) < 0 or sum(p.weights) <= 0:
                raise ValueError("curriculum: steps must increase and weights be >= 0, not all 0")
            last = p.step
        return self


class OptimConfig(_Sub):
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    weight_decay: float = 0.1
    no_decay_norms: bool = True  # norm weights get no weight decay
    no_decay_biases: bool = True  # biases (and other 1-d parameters) get no weight decay
    no_decay_embeddings: bool = True


class ScheduleConfig(_Sub):
    """LR as a pure function of the step (see `hybridlm.train.schedules`). `lr` is the maximum LR; for
    `anneal`
    it is the phase-1 maximum and the peak is `lr * peak_fraction`."""

    name: Literal["constant", "cosine", "linear", "wsd", "anneal"] = "cosine"
    lr: float = 3e-3
    warmup_steps: int = 10
    min_lr: float = 3e-4
    decay_shape: DecayShape = "cosine"  # for wsd and anneal
    decay_fraction: float = 0.2  # wsd: the last fraction of the steps decays
    peak_fraction: float = 0.75  # anneal: peak LR = lr * peak_fraction
    # the steps the schedule spans (null: train.steps); a resume for more steps keeps the original length (its
    # decay ends where it ended, the LR then stays at min_lr) unless asked to re-plan it (--replan-schedule)
    total_steps: int | None = None

    @model_validator(mode="after")
    def _check(self) -> ScheduleConfig:
        if self.lr <= 0 or self.min_lr < 0 or self.min_lr > self.lr:
            raise ValueError(f"need 0 <= min_lr <= lr and lr > 0, got lr={self.lr}, min_lr={self.min_lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.decay_fraction <= 1:
            raise ValueError(f"decay_fraction must be in [0, 1], got {self.decay_fraction}")
        if not 0 < self.peak_fraction <= 1:
            raise ValueError(f"peak_fraction must be in (0, 1], got {self.peak_fraction}")
        if self.total_steps is not None and self.total_steps < 1:
            raise ValueError(f"total_steps must be >= 1 (or null: train.steps), got {self.total_steps}")
        return self


class TrainConfig(_Sub):
    steps: int = 150  # optimizer steps
    batch_size: int = 16  # sequences per optimizer step, over all ranks and micro-steps
    grad_accum: int = 1  # micro-steps per optimizer step (per rank: batch_size / (grad_accum * world))
    seed: int = 0
    phase: int = 0  # 0 pretraining, 1 annealing: part of the data order's seed
    init_from: str | None = None  # start from these weights (a checkpoint directory), e.g. for annealing
    checkpoint_every: int = 50
    keep_last: int = 2
    eval_every: int = 50
    log_every: int = 10  # progress-bar refresh; metrics.jsonl gets every step
    max_bad_steps: int = 5  # abort after this many non-finite steps in a row
    grad_clip: float = 1.0  # 0: off
    activation_checkpointing: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "fp32", "bf16"] = "auto"  # auto: bf16 autocast on CUDA, fp32 on CPU
    threads: int = 1  # CPU threads (0: torch default); 1 is fastest for tiny models
    peak_flops: float | None = None  # for MFU; None: measured once by a matmul probe (CPU) or looked up
    progress: bool = True
    plots: bool = True
    export: bool = True  # save the final model in the Hugging Face layout under OUTPUT/final

    _absolute = field_validator("init_from")(lambda p: p if p is None else _stored_path(p))

    @model_validator(mode="after")
    def _check(self) -> TrainConfig:
        for name in (
            "steps",
            "batch_size",
            "grad_accum",
            "checkpoint_every",
            "keep_last",
            "eval_every",
            "log_every",
            "max_bad_steps",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"batch_size={self.batch_size} must be divisible by grad_accum={self.grad_accum}"
            )
        if self.grad_clip < 0:
            raise ValueError(f"grad_clip must be >= 0, got {self.grad_clip}")
        if self.threads < 0:
            raise ValueError(f"threads must be >= 0 (0: torch's default), got {self.threads}")
        if self.peak_flops is not None and self.peak_flops <= 0:
            raise ValueError(f"peak_flops must be > 0 (or null: measured), got {self.peak_flops}")
        return self


class DistributedConfig(_Sub):
    """Data parallelism (`mode`) on the ranks left after tensor (`tp`) and expert (`ep`) parallelism:
    world = dp x ep x tp (see `hybridlm.parallel.mesh`)."""

    mode: Literal["none", "ddp", "zero1", "fsdp2"] = "none"
    backend: Literal["auto", "gloo", "nccl"] = "auto"
    tp: int = 1  # tensor-parallel degree (ranks sharing one replica's layers)
    ep: int = 1  # expert-parallel degree (data ranks sharing one set of experts)
    sequence_parallel: bool = False  # with tp > 1: norms and the residual stream split along the sequence

    @model_validator(mode="after")
    def _check(self) -> DistributedConfig:
        for name in ("tp", "ep"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.sequence_parallel and self.tp == 1:
            raise ValueError("sequence_parallel needs tp > 1")
        return self


class RunConfig(_Section):
    """`model`: a preset name, or `preset` plus ModelConfig fields overriding it (or all the fields)."""

    model: dict[str, Any] = Field(default_factory=lambda: {"preset": "zamba2-tiny"})
    data: DataConfig = DataConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    train: TrainConfig = TrainConfig()
    distributed: DistributedConfig = DistributedConfig()

    @model_validator(mode="before")
    @classmethod
    def _model_shorthand(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("model"), str):
            data = {**data, "model": model_section(data["model"])}
        return data

    @model_validator(mode="after")
    def _check(self) -> RunConfig:
        mcfg = self.model_config_obj()  # validate the model section now, with the field named
        if self.data.seq_len > mcfg.max_seq_len:
            raise ValueError(
                f"data.seq_len {self.data.seq_len} exceeds the model's max_seq_len {mcfg.max_seq_len}; lower "
                "data.seq_len or raise model.max_seq_len"
            )
        return self

    def model_config_obj(self) -> ModelConfig:
        try:
            return ModelConfig.from_dict(self.model)
        except ConfigError as err:
            raise ValueError(f"model.{err}") from None
        except TypeError as err:
            raise ValueError(f"model: {err}") from None

    # ----- I/O -----
    @classmethod
    def from_yaml(cls, path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
        """Relative paths in the file (data sources, eval_path, init_from, a model file) are taken from the file's
        directory, those in `overrides` (typed on a command line) from the current one; all are stored absolute."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {str(err).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: expected a mapping of config sections")
        return cls.from_dict(paths_from(data, path.parent), overrides)

    @classmethod
    def from_dict(cls, data: dict[str, Any], overrides: dict[str, Any] | None = None) -> RunConfig:
        data = dict(data)
        data.setdefault("model", {"preset": "zamba2-tiny"})
        return cls(**apply_overrides(data, overrides or {}))

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def replace(self, **overrides: Any) -> RunConfig:
        """A validated copy with dotted-key overrides, e.g. `cfg.replace(**{"train.steps": 10})`."""
        return RunConfig.from_dict(self.to_dict(), overrides)

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.write_text(yaml.safe_dump(self.to_dict(), sort_keys=False))
        return path


def apply_overrides(data: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Merge dotted-key overrides into a nested dict (sections are created as needed)."""
    nested: dict[str, Any] = {}
    for key, value in overrides.items():
        node = nested
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    data = dict(data)
    if isinstance(data.get("model"), str) and isinstance(nested.get("model"), dict):
        data["model"] = model_section(data["model"])
    return _deep_merge(data, nested)


def paths_from(data: dict[str, Any], base: Path) -> dict[str, Any]:
    """A run config read from a file with its relative paths taken from the file's directory `base`."""
    from hybridlm.config.presets import presets

    def rebase(p: Any) -> Any:
        if not isinstance(p, str) or p.startswith("synth://") or p in ("auto", "") or os.path.isabs(p):
            return p
        return str(base / os.path.expanduser(p))

    data = dict(data)
    if isinstance(data.get("model"), str) and data["model"] not in presets():
        data["model"] = rebase(data["model"])
    section = data.get("data")
    if isinstance(section, dict):
        section = dict(section)
        if isinstance(section.get("sources"), list):
            section["sources"] = [{**s, "path": rebase(s.get("path"))} if isinstance(s, dict) else s
                                  for s in section["sources"]]
        if "eval_path" in section:
            section["eval_path"] = rebase(section["eval_path"])
        data["data"] = section
    if isinstance(data.get("train"), dict) and "init_from" in data["train"]:
        data["train"] = {**data["train"], "init_from": rebase(data["train"]["init_from"])}
    return data


def model_section(model: str) -> dict[str, Any]:
    """A run config's `model: NAME`: a preset, or any model location (config file, exported model, checkpoint, run
    directory; `hybridlm.locate`), whose complete architecture is stored (weights come from train.init_from)."""
    from hybridlm.config.presets import presets

    if model in presets():
        return {"preset": model}
    from hybridlm.locate import locate

    try:
        return locate(model).config().to_dict()
    except ConfigError as err:
        raise ConfigError(f"model: {err}") from None


def parse_cli_overrides(args: list[str]) -> dict[str, Any]:
    """`["--train.steps", "10", "--optim.betas", "[0.9, 0.99]"]` -> {"train.steps": 10, ...} (YAML values)."""
    out: dict[str, Any] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) == 2:
            raise ConfigError(f"expected --section.key VALUE, got {arg!r}")
        key = arg[2:]
        if "=" in key:
            key, raw = key.split("=", 1)
            i += 1
        else:
            if i + 1 >= len(args):
                raise ConfigError(f"{arg}: missing value")
            raw = args[i + 1]
            i += 2
        if "." not in key:
            raise ConfigError(f"--{key}: overrides name a section and a field, e.g. --train.steps 100")
        try:
            out[key] = yaml.safe_load(raw)
        except yaml.YAMLError:
            out[key] = raw
    return out
