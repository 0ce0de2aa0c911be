"""Training and annealing: `run_training(config, output_dir, resume=False)`, `run_anneal(...)`,
`evaluate_loss(model, dataset)`; the `hybridlm train` / `hybridlm anneal` commands are in `cli`."""

from hybridlm.train.config import RunConfig
from hybridlm.train.evaluate import evaluate_loss
from hybridlm.train.loop import TrainingError, run_training

__all__ = ["RunConfig", "TrainingError", "evaluate_loss", "run_training"]
from hybridlm.train.anneal import AnnealWarning, anneal_config, run_anneal  # noqa: E402

__all__ += ["AnnealWarning", "anneal_config", "run_anneal"]
