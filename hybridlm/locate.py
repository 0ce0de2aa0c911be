"""Where a model is: the one notion of a model location that every command reading a model accepts.

What a user may type where a model is expected (`generate`, `plan`, `bench blocks --config`, `anneal --from`,
`train.init_from`, a run config's `model:`, `eval`, `convert`):

| location            | example                                   | architecture         | weights                 |
|---------------------|-------------------------------------------|----------------------|-------------------------|
| preset              | `zamba2-tiny`                             | the preset           | none (random, seeded)   |
| config file         | `my.yaml`, `run.yaml` (its `model:`), `config.json` | the file   | none (random, seeded)   |
| exported model      | `runs/p1/final`, a transformers checkpoint | its config.json      | its safetensors         |
| training checkpoint | `runs/p1/checkpoints/step_00000150`       | its meta.json        | model.pt / dcp          |
| run directory       | `runs/p1`                                 | its final/ or newest valid checkpoint       |

A run directory means its exported model (`final/`), or its newest valid checkpoint when it has no export or the
checkpoint is newer (a run resumed for more steps). Relative paths are taken from the current directory, or from
`base` (the directory of the config file that names them). Nothing here imports torch until weights are loaded.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from hybridlm.errors import CheckpointError, ConfigError

STEP_PREFIX = "step_"  # as hybridlm.train.checkpoint.PREFIX (not imported: that module imports torch)
KINDS = ("preset", "config", "export", "checkpoint")


@dataclass(frozen=True)
class ModelLocation:
    source: str  # as the user wrote it
    kind: str  # one of KINDS
    path: Path | None = None  # absolute; None for a preset
    run: Path | None = None  # the training run directory the weights belong to, when there is one

    @property
    def has_weights(self) -> bool:
        return self.kind in ("export", "checkpoint")

    def describe(self) -> str:
        return {
            "preset": f"preset {self.source}, random weights",
            "config": f"config {self.path}, random weights",
            "export": f"model {self.path}",
            "checkpoint": f"checkpoint {self.path}",
        }[self.kind]

    def config(self):
        """The `ModelConfig` of the location."""
        from hybridlm.config.model import ModelConfig

        if self.kind == "preset":
            return ModelConfig.from_preset(self.source)
        if self.kind in ("config", "export"):
            return ModelConfig.from_file(self.path)
        return _run_config(_read_meta(self.path)["config"], self.path).model_config_obj()

    def load(self, seed: int = 0, dtype=None, device=None):
        """A `HybridLM` in eval mode: the location's weights, or random weights drawn with `seed`; in `dtype`
        (default float32; 'auto': the checkpoint's own) on `device` (default cpu), as `HybridLM.from_pretrained`."""
        import torch

        from hybridlm.hf.load import AUTO, resolve_device, resolve_dtype
        from hybridlm.model import HybridLM

        if self.kind == "export":
            return HybridLM.from_pretrained(self.path, dtype=dtype, device=device)
        target, dev = resolve_dtype(dtype), resolve_device(device)
        if self.kind == "checkpoint":
            from hybridlm.train import checkpoint as ckpt

            verified = ckpt.find_checkpoint(self.path)
            model = HybridLM(self.config())
            ckpt.load_checkpoint(verified, model, None, restore_rng=False)
        else:
            torch.manual_seed(seed)
            model = HybridLM(self.config())
        return model.to(device=dev, dtype=torch.float32 if target == AUTO else target).eval()

    def tokenizer(self) -> Path | None:
        """The tokenizer.json that goes with the weights: the export's own, the run's export's, else the one its
        training data was packed with; None when there is none (presets and config files have none)."""
        if not self.has_weights:
            return None
        for d in (self.path, self.run / "final" if self.run else None):
            if d is not None and (d / "tokenizer.json").is_file():
                return d / "tokenizer.json"
        if self.kind == "checkpoint":
            saved = _read_meta(self.path).get("config", {})
        elif self.run is not None and (self.run / "config.yaml").is_file():
            import yaml

            saved = yaml.safe_load((self.run / "config.yaml").read_text()) or {}
        else:
            return None
        return data_tokenizer(saved)

    def phase_one(self) -> PhaseOne:
        """What annealing continues: the run config, step, tokens and maximum LR of a training run, and its weights.
        A checkpoint has them in meta.json; an exported model gets them from its run's config.yaml and summary.json."""
        if self.kind == "checkpoint":
            from hybridlm.train import checkpoint as ckpt

            path = ckpt.find_checkpoint(self.path)
            meta = _read_meta(path)
            return PhaseOne(meta["config"], int(meta["step"]), int(meta["tokens"]), meta.get("lr_max"), path)
        if self.kind == "export" and self.run is not None and (self.run / "summary.json").is_file():
            import yaml

            summary = json.loads((self.run / "summary.json").read_text())
            config = yaml.safe_load((self.run / "config.yaml").read_text())
            return PhaseOne(config, int(summary["steps"]), int(summary["tokens"]), None, self.path)
        raise ConfigError(
            f"{self.source} is a {'model without its training run' if self.kind == 'export' else self.kind}: "
            "annealing continues a training run (a run directory, its final/ or a checkpoint step_N); to start a "
            "new run from a model's weights, set train.init_from"
        )


@dataclass(frozen=True)
class PhaseOne:
    config: dict  # the phase-1 run config
    step: int
    tokens: int
    lr_max: float | None  # None: the config's schedule.lr
    weights: Path  # a verified checkpoint or the exported model


def locate(source: str | Path, base: str | Path | None = None) -> ModelLocation:
    """Where `source` (a preset name or a path) points; one line naming what is wrong otherwise."""
    from hybridlm.config.presets import presets

    text = str(source)
    if not text.strip():
        raise ConfigError("no model given: name a preset, a config file, a model directory or a run directory")
    if text in presets() and not (base is not None and (Path(base) / text).exists()):
        return ModelLocation(text, "preset")
    path = Path(text).expanduser()
    if base is not None and not path.is_absolute():
        path = Path(base) / path
    path = path.absolute()
    if not path.exists():
        raise ConfigError(
            f"{text!r} is not a model: no preset of that name and no such file or directory; presets: "
            f"{', '.join(presets())}; or a config file (YAML/JSON), an exported model (config.json + weights), a "
            "checkpoint (checkpoints/step_N) or a run directory"
        )
    if path.is_file():
        return ModelLocation(text, "config", path)
    if (path / "meta.json").is_file() and path.name.startswith(STEP_PREFIX):
        return ModelLocation(text, "checkpoint", path, _run_of(path.parent.parent))
    if _has_weights(path):
        return ModelLocation(text, "export", path, _run_of(path.parent))
    if _run_of(path) is not None:
        return _in_run(text, path)
    if (path / "config.json").is_file():
        return ModelLocation(text, "config", path / "config.json")
    raise ConfigError(
        f"{text} is a directory but not a model: expected config.json with weights (an exported model), meta.json "
        "(a checkpoint step_N) or a run directory (final/, checkpoints/)"
    )


def _has_weights(path: Path) -> bool:
    from hybridlm.config.resolve import is_checkpoint_dir

    return is_checkpoint_dir(str(path))


def _run_of(path: Path) -> Path | None:
    """`path` if it is a training run's output directory."""
    if (path / "checkpoints").is_dir() or ((path / "config.yaml").is_file() and _has_weights(path / "final")):
        return path
    return None


def _steps(run: Path) -> list[Path]:
    d = run / "checkpoints"
    found = [p for p in d.glob(f"{STEP_PREFIX}*") if p.name[len(STEP_PREFIX) :].isdigit()] if d.is_dir() else []
    return sorted(found, key=lambda p: int(p.name[len(STEP_PREFIX) :]))


def _in_run(text: str, run: Path) -> ModelLocation:
    """A run directory: its export, unless a newer checkpoint exists (or there is no export)."""
    steps = _steps(run)
    final = run / "final"
    if _has_weights(final):
        try:
            exported_at = json.loads((run / "summary.json").read_text())["steps"]
        except (OSError, ValueError, KeyError, TypeError):
            exported_at = None
        newest = int(steps[-1].name[len(STEP_PREFIX) :]) if steps else None
        if newest is None or exported_at is None or newest <= exported_at:
            return ModelLocation(text, "export", final, run)
    if steps:
        from hybridlm.train import checkpoint as ckpt

        return ModelLocation(text, "checkpoint", ckpt.find_checkpoint(run), run)
    raise CheckpointError(f"run directory {text} has no exported model (final/) and no checkpoint yet")


def _read_meta(path: Path) -> dict:
    try:
        meta = json.loads((path / "meta.json").read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{path}: cannot read meta.json ({str(err).splitlines()[0][:100]})") from None
    if not isinstance(meta, dict) or not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{path}: meta.json holds no run config")
    return meta


def _run_config(saved: dict, where: Path):
    from hybridlm.train.config import RunConfig

    try:
        return RunConfig.from_dict(saved)
    except ConfigError as err:
        raise CheckpointError(f"{where}: its run config is not valid here ({err})") from None


def data_tokenizer(run_config: dict) -> Path | None:
    """The tokenizer.json the run's training data was packed with (the first source that has one), without preparing
    anything (a synthetic corpus not prepared yet has none)."""
    from hybridlm.data.tokenizer import packed_tokenizer

    sources = ((run_config or {}).get("data") or {}).get("sources") or [{"path": "synth://web"}]
    for source in sources:
        path = source.get("path") if isinstance(source, dict) else None
        if not isinstance(path, str):
            continue
        if path.startswith("synth://"):
            from hybridlm.train.synthetic import PARTS, PREFIX, VERSION, cache_root

            if path[len(PREFIX) :] not in PARTS:
                continue
            shards = cache_root() / f"synth-{VERSION}" / path[len(PREFIX) :]
        else:
            shards = Path(path)
        try:
            index = json.loads((shards / "index.json").read_text())
        except (OSError, ValueError):
            index = None
        if isinstance(index, dict):
            found = packed_tokenizer(shards, index)
            if found is not None:
                return found
    return None
