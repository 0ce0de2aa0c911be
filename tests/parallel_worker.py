"""Run under torchrun (gloo): for each layout, train the run, then check one step of a freshly built split model
against the single-process model on this rank, measure its local bytes, and write a checkpoint with the live
shards beside it (for the resharding checks in tests/test_parallel.py).

argv: ROOT BASE_CONFIG_JSON LAYOUTS_JSON [SINGLE_PROCESS_CHECKPOINT]
Writes ROOT/<layout>/metrics.jsonl (the run), ROOT/<layout>/rank<r>.json, ROOT/<layout>/shards<r>.pt and
ROOT/<layout>/reshard/ (a checkpoint of the live model after one optimizer step)."""

import faulthandler
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist

from hybridlm import HybridLM
from hybridlm.parallel.model import ParallelModel, local_tensor
from hybridlm.train import checkpoint as ckpt
from hybridlm.train import run_training
from hybridlm.train.config import RunConfig
from hybridlm.train.data import BatchStream, document_ids
from hybridlm.train.distributed import init_distributed
from hybridlm.train.optim import build_optimizer, plain_no_decay_names

root, base, layouts = Path(sys.argv[1]), json.loads(sys.argv[2]), json.loads(sys.argv[3])
single_ckpt = Path(sys.argv[4]) if len(sys.argv) > 4 else None
torch.set_num_threads(1)
faulthandler.enable()  # a crash in a collective prints where every thread was
dist.init_process_group("gloo")
rank, cpu = dist.get_rank(), torch.device("cpu")


def adam_state(optimizer):
    return getattr(optimizer, "optim", optimizer).state  # ZeroRedundancyOptimizer keeps its shard's in .optim


def packed(ids: torch.Tensor, eos: int = 0) -> dict:
    """The trainer's inputs for rows that hold three documents each (EOS at 5 and 11): every layer kind then
    runs its segment path (attention masks, conv taps, state resets) inside the split regions too."""
    ids = ids.clone()
    ids[:, [5, 11]] = eos
    docs = document_ids(ids, eos)
    targets = ids[:, 1:].masked_fill(docs[:, 1:] != docs[:, :-1], -100)
    return {"input_ids": ids[:, :-1], "seq_idx": docs[:, :-1], "shift_labels": targets}


def one_step(cfg: RunConfig, out: Path) -> dict:
    ctx = init_distributed(cfg.distributed, cpu)
    mcfg, dims = cfg.model_config_obj(), ctx.pmesh.dims
    torch.manual_seed(cfg.train.seed)
    pm = ParallelModel.build(mcfg, ctx.pmesh, ctx.mode, cpu, None, cfg.data.seq_len)
    torch.manual_seed(cfg.train.seed)
    ref = HybridLM(mcfg)
    ref_params = dict(ref.named_parameters())
    index = {n: pm.layouts[n].local_index() for n, _ in pm.model.named_parameters()}
    report = {"init_equal": all(torch.equal(local_tensor(p.data), ref_params[n].detach().flatten()[index[n]])
                                for n, p in pm.model.named_parameters())}
    ids = BatchStream(cfg.data, cfg.train, dims.data, ctx.data_rank).micro_batches(0)[0]
    pm.wrapped(**packed(ids)).loss.backward()  # every rank has as many targets: token weight 1
    pm.finish_grads()
    full = BatchStream(cfg.data, cfg.train).micro_batches(0)[0]
    ref(**packed(full)).loss.backward()
    report["grad_rel_err"] = max(
        float(torch.cat([(local_tensor(p.grad) - ref_params[n].grad.flatten()[index[n]]).abs().flatten(),
                         torch.zeros(1)]).max())
        / float(ref_params[n].grad.abs().max()) for n, p in pm.model.named_parameters())
    report["grad_norm"] = pm.clip_grad_norm_(0.0)
    report["ref_grad_norm"] = float(torch.nn.utils.clip_grad_norm_(ref.parameters(), float("inf")))
    exempt = plain_no_decay_names(mcfg, cfg.optim)
    optimizer = build_optimizer(pm.model, cfg.optim, cfg.schedule.lr, zero1=ctx.mode == "zero1", exempt=exempt,
                                process_group=ctx.pmesh.data_group)
    optimizer.step()
    report["bytes"] = pm.local_bytes()
    state = adam_state(optimizer)
    report["bytes"]["optimizer"] = sum(local_tensor(s[k]).numel() * 4 for s in state.values()
                                       for k in ("exp_avg", "exp_avg_sq"))
    if ckpt.checkpoint_format(ctx) == "dcp":  # the live shards beside a checkpoint of them
        ckpt.save_checkpoint(out / "reshard", 1, pm, optimizer, {"tokens": 0}, ctx, keep_last=1)
        torch.save({n: {"index": index[n], "weight": local_tensor(p.data).clone(),
                        "exp_avg": local_tensor(state[p]["exp_avg"]).clone()}
                    for n, p in pm.model.named_parameters()}, out / f"shards{rank}.pt")
    if single_ckpt is not None and dims.sharded:  # a one-process checkpoint into this layout, bit for bit
        fresh = ParallelModel.build(mcfg, ctx.pmesh, ctx.mode, cpu, None, cfg.data.seq_len)
        opt = build_optimizer(fresh.model, cfg.optim, cfg.schedule.lr, exempt=exempt)
        ckpt.load_checkpoint(single_ckpt, fresh, opt, restore_rng=False)
        weights = torch.load(single_ckpt / "model.pt", weights_only=True)
        report["from_single_equal"] = all(
            torch.equal(local_tensor(p.data), weights[n].flatten()[fresh.layouts[n].local_index()])
            for n, p in fresh.model.named_parameters())
        report["from_single_adam_steps"] = sorted({float(s["step"]) for s in opt.state.values()})
    return report


for name, overrides in layouts.items():
    cfg = RunConfig.from_dict(base, overrides)
    out = root / name
    run_training(cfg, out)
    dist.barrier()
    result = one_step(cfg, out)
    (out / f"rank{rank}.json").write_text(json.dumps(result))
    dist.barrier()
dist.barrier()
dist.destroy_process_group()
