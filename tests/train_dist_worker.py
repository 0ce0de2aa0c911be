"""Run under torchrun (2 ranks, gloo): train the same tiny run in ddp, zero1 and fsdp2 modes, in one launch.

argv: OUTPUT_ROOT CONFIG_JSON. Writes OUTPUT_ROOT/<mode>/metrics.jsonl (rank 0) and checkpoints."""

import json
import sys

import torch
import torch.distributed as dist

from hybridlm.train import run_training
from hybridlm.train.config import RunConfig

root, cfg = sys.argv[1], json.loads(sys.argv[2])
torch.set_num_threads(1)
dist.init_process_group("gloo")
for mode in ("ddp", "zero1", "fsdp2"):
    run_training(RunConfig.from_dict(cfg, {"distributed.mode": mode}), f"{root}/{mode}")
    dist.barrier()
dist.destroy_process_group()
