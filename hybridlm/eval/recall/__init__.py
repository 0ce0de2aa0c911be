"""The in-context recall suite: synthetic tasks (`tasks`), scoring (`score`), running a model over context
lengths (`run`) and the accuracy-against-length plot (`plot`)."""

from hybridlm.eval.recall.score import score
from hybridlm.eval.recall.tasks import TASKS, RecallBatch, generate

__all__ = ["TASKS", "RecallBatch", "generate", "score"]
