"""The training loop: build the pieces, then per optimizer step fetch the micro-batches, accumulate
token-weighted gradients, clip, step, log, evaluate and checkpoint. Everything else is delegated to its own
module."""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path

import torch

from hybridlm.data.tokenizer import copy_tokenizer
from hybridlm.errors import HybridLMError
from hybridlm.model import HybridLM
from hybridlm.parallel.model import ParallelModel
from hybridlm.plan.params import params as params_count
from hybridlm.train import checkpoint as ckpt
from hybridlm.train import rundir
from hybridlm.train.config import RunConfig
from hybridlm.train.data import BatchStream, document_ids, eval_dataset, repeat_warnings, target_count
from hybridlm.train.distributed import (
    DistContext,
    all_reduce_sum,
    grad_norm_,
    init_distributed,
    no_sync,
    shutdown,
    unwrap,
)
from hybridlm.train.distributed import barrier as ctx_barrier
from hybridlm.train.evaluate import evaluate_loss
from hybridlm.train.faults import nan_step
from hybridlm.train.metrics import MetricsLogger, ProgressBar, read_metrics
from hybridlm.train.optim import build_optimizer, no_decay_names, plain_no_decay_names, set_lr
from hybridlm.train.plots import plot_run
from hybridlm.train.schedules import lr_at
from hybridlm.train.throughput import Throughput, peak_flops, train_flops_per_token


class TrainingError(HybridLMError):
    """A run that cannot continue (e.g. too many non-finite steps in a row)."""


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise HybridLMError("train.device is cuda but no CUDA device is available")
    return torch.device(name)


def run_training(
    run_config: RunConfig | dict,
    output_dir: str | Path,
    resume: bool = False,
    progress: bool | None = None,
    overwrite: bool = False,
    allow_changes: bool = False,
    replan_schedule: bool = False,
) -> dict:
    """Train (or, with `resume`, continue from the newest valid checkpoint in `output_dir`); returns a summary dict
    with `final_loss`, `eval` (held-out loss / ppl), `tokens`, `tokens_per_s`, `mfu`, `final_model` and paths.
    What a run may do with a directory that already holds one (`overwrite`, `allow_changes`), and how a resume for
    more steps treats the LR schedule (`replan_schedule`), is in `hybridlm.train.rundir`."""
    cfg = run_config if isinstance(run_config, RunConfig) else RunConfig.from_dict(run_config)
    device = pick_device(cfg.train.device)
    if device.type == "cuda" and "LOCAL_RANK" in os.environ:
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
    if cfg.train.threads:
        torch.set_num_threads(cfg.train.threads)
    import torch.distributed as dist

    owned = not (dist.is_available() and dist.is_initialized())  # a caller's process group stays up
    ctx = init_distributed(cfg.distributed, device)
    try:
        with rundir.open_run(Path(output_dir), cfg, resume, overwrite, allow_changes, ctx, replan_schedule) as start:
            return _train(
                start.config or cfg, Path(output_dir), start, device, ctx,
                cfg.train.progress if progress is None else progress,
            )
    finally:
        if owned:
            shutdown(ctx)


def _load_init_weights(model: HybridLM | ParallelModel, source: str) -> None:
    """train.init_from: the weights at a model location with weights (an export such as OUTPUT/final, a checkpoint
    or a run directory; `hybridlm.locate`)."""
    from hybridlm.errors import CheckpointError, ConfigError
    from hybridlm.locate import locate

    try:
        loc = locate(source)
    except ConfigError as err:
        raise CheckpointError(f"train.init_from: {err}") from None
    if not loc.has_weights:
        raise HybridLMError(f"train.init_from {source!r} is a {loc.kind} without weights; give an exported model, a "
                            "checkpoint (step_N) or a run directory")
    if loc.kind == "checkpoint":
        ckpt.load_checkpoint(ckpt.find_checkpoint(loc.path), model, None)
        return
    weights = HybridLM.from_pretrained(loc.path).state_dict()
    if isinstance(model, ParallelModel):
        from hybridlm.parallel.checkpoint import load_full_state

        load_full_state(model.model, model.layouts, weights)
        return
    try:
        model.load_state_dict(weights)
    except RuntimeError as err:
        first = (str(err).splitlines()[1:2] or [str(err)])[0].strip()[:160]
        raise HybridLMError(f"train.init_from {source}: its weights do not fit this run's model ({first})") from None


def _build(mcfg, cfg: RunConfig, ctx: DistContext, device: torch.device):
    """(the plain or split model, what forward runs on, what checkpoints take, the no-decay names)."""
    t = cfg.train
    if not ctx.enabled:
        model = HybridLM(mcfg).to(device)
        return model, model, model, no_decay_names(model, cfg.optim)
    mixed = torch.bfloat16 if device.type == "cuda" and t.dtype in ("auto", "bf16") else None
    pm = ParallelModel.build(mcfg, ctx.pmesh, ctx.mode, device, mixed if ctx.mode == "fsdp2" else None,
                             cfg.data.seq_len)
    return pm.model, pm.wrapped, pm, plain_no_decay_names(mcfg, cfg.optim)


def _train(
    cfg: RunConfig, out: Path, run: rundir.RunStart, device: torch.device, ctx: DistContext, show: bool
) -> dict:
    t = cfg.train
    out.mkdir(parents=True, exist_ok=True)
    if ctx.is_main:
        cfg.save(out / "config.yaml")
    torch.manual_seed(t.seed)
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    mcfg = cfg.model_config_obj()
    model, wrapped, holder, exempt = _build(mcfg, cfg, ctx, device)
    model.gradient_checkpointing = t.activation_checkpointing
    model.train()

    resume_from = run.checkpoint
    if resume_from is None and t.init_from:
        _load_init_weights(holder, t.init_from)
    optimizer = build_optimizer(model, cfg.optim, cfg.schedule.lr, zero1=ctx.mode == "zero1", exempt=exempt,
                                process_group=ctx.pmesh.data_group if ctx.enabled else None)
    start, tokens, bad, eval_before = 0, 0, 0, None
    if resume_from is not None:
        meta = ckpt.load_checkpoint(resume_from, holder, optimizer)
        start, tokens, bad = meta["step"], meta["tokens"], meta.get("bad_streak", 0)
        eval_before = meta.get("eval_before")

    data_group = ctx.pmesh.data_group if ctx.enabled else None  # ranks with their own tokens (not tp's)
    stream = BatchStream(cfg.data, t, ctx.data_world, ctx.data_rank, vocab_size=mcfg.vocab_size)
    if ctx.is_main:
        for warning in repeat_warnings(stream, cfg.data, t.steps):
            ckpt.notice(f"warning: {warning}")
    eval_ds = eval_dataset(cfg.data, stream, announce=ctx.is_main)
    autocast = torch.bfloat16 if device.type == "cuda" and t.dtype in ("auto", "bf16") else None
    n_global = t.batch_size * cfg.data.seq_len  # target tokens per optimizer step (every label is valid)
    logger = MetricsLogger(out, start, enabled=ctx.is_main)
    bar = ProgressBar(t.steps, start, enabled=show and ctx.is_main)
    fpt = train_flops_per_token(mcfg, cfg.data.seq_len, device.type)
    meter = Throughput(fpt, peak_flops(device, t.peak_flops) if fpt is not None else None)
    last_loss, last_eval, skipped_total = rundir.last_loss(out, start) if start else float("nan"), None, 0

    def evaluate() -> dict:
        return evaluate_loss(
            unwrap(wrapped),
            eval_ds,
            cfg.data.seq_len,
            max(1, t.batch_size // t.grad_accum),
            cfg.data.eval_batches,
            device,
            autocast,
            cfg.data.document_mask,
        )

    if start == 0 and t.init_from and eval_ds is not None:  # held-out loss of the weights the run starts from
        eval_before = evaluate()
    try:
        for step in range(start, t.steps):
            lr = lr_at(step, cfg.schedule, t.steps)
            set_lr(optimizer, lr)
            micro = stream.micro_batches(step)
            counts = [target_count(ids, stream.eos_id) for ids in micro]
            n_targets = n_global
            if stream.eos_id is not None:
                n_targets = all_reduce_sum([float(sum(counts))], ctx, data_group)[0]
            loss_sum = 0.0
            for m, (ids, n_m) in enumerate(zip(micro, counts, strict=True)):
                ids = ids.to(device, non_blocking=True)
                # the model runs on exactly the seq_len inputs of a window and predicts their seq_len next tokens
                inputs, targets, seq_idx = ids[:, :-1], ids[:, 1:], None
                if stream.eos_id is not None:  # packed documents kept apart; nothing predicted across a start
                    docs = document_ids(ids, stream.eos_id)
                    seq_idx = docs[:, :-1]
                    targets = targets.masked_fill(docs[:, 1:] != docs[:, :-1], -100)
                with (
                    no_sync(wrapped, m < len(micro) - 1),
                    torch.autocast(device.type, dtype=autocast, enabled=autocast is not None),
                ):
                    result = wrapped(inputs, seq_idx=seq_idx, shift_labels=targets)
                    # a micro-batch with nothing to predict (EOS only) still joins the gradient all-reduce
                    loss = result.loss if n_m else result.logits.float().sum() * 0.0
                    if nan_step(step + 1):
                        loss = loss * float("nan")
                    # token-weighted: the sum over micro-steps and data ranks is the mean over the global batch
                    (loss * (n_m * ctx.data_world / n_targets)).backward()
                loss_sum += float(loss.detach()) * n_m
            loss_value = all_reduce_sum([loss_sum], ctx, data_group)[0] / n_targets
            if isinstance(holder, ParallelModel):
                holder.finish_grads()
                norm = holder.clip_grad_norm_(t.grad_clip)
            else:
                norm = grad_norm_(wrapped, t.grad_clip)
            ok = math.isfinite(loss_value) and math.isfinite(norm)
            if ok:
                optimizer.step()
                bad = 0
            else:
                bad += 1
                skipped_total += 1
            optimizer.zero_grad(set_to_none=True)
            tokens += n_global
            done = step + 1
            meter.update(n_global)
            record = {
                "step": done,
                "loss": loss_value,
                "lr": lr,
                "tokens": tokens,
                "grad_norm": norm,
                "tokens_per_s": meter.tokens_per_s,
                "mfu": meter.mfu,
                "time": time.time(),
            }
            if not ok:
                record["skipped"] = True
                print(
                    f"[hybridlm] step {done}: non-finite loss/gradient "
                    f"(loss={loss_value}, grad_norm={norm}); "
                    f"step skipped ({bad} in a row)",
                    flush=True,
                )
            if eval_ds is not None and (done % t.eval_every == 0 or done == t.steps):
                last_eval = evaluate()
                record["eval_loss"], record["eval_ppl"] = last_eval["loss"], last_eval["ppl"]
            logger.log(record)
            if done % t.log_every == 0 or done == t.steps:
                bar.update(done, loss_value, lr, meter.tokens_per_s)
            if ok:
                last_loss = loss_value
            if bad >= t.max_bad_steps:
                raise TrainingError(
                    f"{bad} non-finite steps in a row (train.max_bad_steps={t.max_bad_steps}); "
                    f"stopped at step {done}"
                )
            if done % t.checkpoint_every == 0 or done == t.steps:
                meta = {
                    "tokens": tokens,
                    "bad_streak": bad,
                    "phase": t.phase,
                    "config": cfg.to_dict(),
                    "lr_max": cfg.schedule.lr,
                    "eval_before": eval_before,
                }
                ckpt.save_checkpoint(out / "checkpoints", done, holder, optimizer, meta, ctx, t.keep_last)
    finally:
        bar.close()
        logger.close()

    if eval_ds is not None and last_eval is None:
        last_eval = evaluate()
    final_model = _export(model, mcfg, out, ctx, stream.datasets) if t.export else None
    result = {
        "output_dir": str(out),
        "steps": t.steps,
        "start_step": start,
        "tokens": tokens,
        "final_loss": last_loss,
        "eval": last_eval,
        "eval_before": eval_before,
        "tokens_per_s": meter.tokens_per_s,
        "mfu": meter.mfu,
        "flops_per_token": fpt,
        "params": params_count(mcfg).total,
        "skipped_steps": skipped_total,
        "final_model": str(final_model) if final_model else None,
        "checkpoint": str(ckpt.latest_checkpoint(out / "checkpoints")),
        "world": ctx.world,
        "rank": ctx.rank,
        "mode": ctx.mode,
        "tp": ctx.pmesh.dims.tp,
        "ep": ctx.pmesh.dims.ep,
    }
    if ctx.is_main:
        records = read_metrics(out / "metrics.jsonl")
        if t.plots and records:
            result["plots"] = [str(p) for p in plot_run(records, out / "plots", eval_before)]
        (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _export(model: HybridLM, mcfg, out: Path, ctx: DistContext, datasets=()) -> Path | None:
    """Save the final weights in the Hugging Face layout (rank 0), with the tokenizer the training data was packed
    with, so the export is usable on its own (`hybridlm generate --prompt`). A split model's weights come from the
    checkpoint the run has just written at its last step, loaded whole in one process."""
    where = out / "final"
    tokenizer = next((p for p in (ds.tokenizer_path() for ds in datasets) if p is not None), None)
    if ctx.enabled:
        if ctx.is_main:
            with torch.device("meta"):
                plain = HybridLM(mcfg)
            plain.to_empty(device="cpu")
            ckpt.load_checkpoint(ckpt.latest_checkpoint(out / "checkpoints"), plain, None, restore_rng=False,
                                 no_dist=True)
            plain.save_pretrained(where)
            if tokenizer is not None:
                copy_tokenizer(tokenizer, where)
        ctx_barrier(ctx)
        return where if ctx.is_main else None
    if not ctx.is_main:
        return None
    model.save_pretrained(where)
    if tokenizer is not None:
        copy_tokenizer(tokenizer, where)
    return where
