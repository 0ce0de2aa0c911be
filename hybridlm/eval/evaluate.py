"""Running lm-evaluation-harness tasks on a hybridlm model (`hybridlm eval SOURCE --tasks ...`).

Offline by default: HF_DATASETS_OFFLINE and HF_HUB_OFFLINE are set to 1 unless the environment already sets
them, so local task YAMLs (`dataset_path: json` with `data_files`) never reach for the network. Set both to 0
to let lm-eval download the datasets of its built-in tasks.
"""

from __future__ import annotations

import os
from pathlib import Path

from hybridlm.errors import HybridLMError

OFFLINE_ENV = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")


def go_offline() -> None:
    for name in OFFLINE_ENV:
        os.environ.setdefault(name, "1")
    import sys

    if "datasets" in sys.modules:  # imported before us: its config already read the environment
        import datasets

        datasets.config.HF_DATASETS_OFFLINE = os.environ["HF_DATASETS_OFFLINE"] not in ("0", "false", "False")


def _require_lm_eval():
    try:
        import lm_eval
    except ImportError:
        raise HybridLMError('lm-evaluation-harness is not installed (pip install -e ".[eval]")') from None
    import hybridlm.eval  # noqa: F401  (registers the model name)

    return lm_eval


def task_manager(include_path: str | Path | None, tasks: list[str]):
    """lm-eval's TaskManager for `tasks`: over `include_path` alone when it has them all, else over lm-eval's
    built-in tasks too (indexing their ~15,000 configs takes seconds). Unknown names are a one-line error."""
    _require_lm_eval()
    from lm_eval.tasks import TaskManager

    if not tasks:
        raise HybridLMError("--tasks is empty; name one or more lm-eval tasks, separated by commas")
    local = None
    if include_path is not None:
        if not Path(include_path).is_dir():
            raise HybridLMError(f"--include-path {include_path}: no such directory (a folder of lm-eval task YAMLs)")
        local = TaskManager(include_path=str(include_path), include_defaults=False)
        if all(local.match_tasks([t]) for t in tasks):
            return local
    manager = TaskManager(include_path=str(include_path) if include_path else None)
    missing = [t for t in tasks if not manager.match_tasks([t])]
    if missing:
        here = f"; tasks in {include_path}: {', '.join(sorted(local.all_tasks))}" if local is not None else ""
        raise HybridLMError(f"unknown lm-eval task(s): {', '.join(missing)}{here}")
    return manager


def run_tasks(model, tasks: list[str], *, tokenizer=None, include_path=None, batch_size: int = 8,
              max_length: int | None = None, num_fewshot: int | None = None, limit: float | None = None,
              device: str = "cpu", seed: int = 0, bootstrap_iters: int = 0, log_samples: bool = False,
              manager=None) -> dict:
    """lm-eval's `simple_evaluate` with the `hybridlm` model. `model` is anything `pretrained=` accepts (a
    checkpoint directory, preset, config file or a HybridLM); `manager` a `task_manager(...)` already made.
    Returns lm-eval's results dictionary."""
    go_offline()
    lm_eval = _require_lm_eval()
    from hybridlm.eval.harness import HybridLMEval

    manager = manager or task_manager(include_path, tasks)
    lm = HybridLMEval(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length,
                      device=device, seed=seed)
    return lm_eval.simple_evaluate(model=lm, tasks=tasks, num_fewshot=num_fewshot, limit=limit,
                                   task_manager=manager, bootstrap_iters=bootstrap_iters, log_samples=log_samples,
                                   random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                                   fewshot_random_seed=seed)


def metric_rows(results: dict) -> list[dict]:
    """One row per (task, metric, filter): {"task", "metric", "filter", "value", "stderr"}."""
    rows = []
    for task, metrics in results["results"].items():
        for key, value in metrics.items():
            if "," not in key or "_stderr," in key:
                continue
            metric, filt = key.split(",", 1)
            stderr = metrics.get(f"{metric}_stderr,{filt}")
            rows.append({"task": task, "metric": metric, "filter": filt, "value": float(value),
                         "stderr": float(stderr) if isinstance(stderr, int | float) else None})
    return rows


def summary(results: dict, source: str, settings: dict) -> dict:
    """What `--json` writes: lm-eval's per-task results and versions, our flat metric rows, and the settings."""
    return {"source": source, "settings": settings, "metrics": metric_rows(results),
            "results": results["results"], "groups": results.get("groups", {}),
            "versions": results.get("versions", {}), "n-shot": results.get("n-shot", {}),
            "n-samples": results.get("n-samples", {}), "higher_is_better": results.get("higher_is_better", {})}
