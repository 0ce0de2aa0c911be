"""Training and annealing (phase 1 and phase 2 of Zyphra's recipe) on packed token shards.

    run_training(config, output_dir, resume=False) -> summary dict      (`hybridlm train`)
    run_anneal(from_checkpoint, output_dir, ...) -> summary dict         (`hybridlm anneal`)
    evaluate_loss(model, dataset, seq_len) -> {"loss", "ppl", "tokens"}

One module per concern: config, schedules, blend, data, optim, checkpoint, rundir (what a run may do with its
output directory), distributed, evaluate, throughput, metrics, plots, anneal, loop (small, delegating), cli.
"""

from hybridlm.train.anneal import AnnealWarning, anneal_config, run_anneal
from hybridlm.train.config import RunConfig
from hybridlm.train.evaluate import evaluate_loss
from hybridlm.train.loop import TrainingError, run_training

__all__ = [
    "AnnealWarning",
    "RunConfig",
    "TrainingError",
    "anneal_config",
    "evaluate_loss",
    "run_anneal",
    "run_training",
]
