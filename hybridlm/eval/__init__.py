"""Evaluation: lm-evaluation-harness tasks (`harness`, `evaluate`) and the in-context recall suite (`recall`).

Importing this package registers the model name `hybridlm` with lm-evaluation-harness (when it is installed,
`pip install -e ".[eval]"`), so `lm_eval.simple_evaluate(model="hybridlm", model_args="pretrained=DIR,...")`
works after `import hybridlm.eval`. The registration is lazy: lm-eval's registry module is imported (a few
milliseconds, no torch), the adapter itself only when lm-eval asks for the model.
"""

from __future__ import annotations

MODEL_NAME = "hybridlm"


def _register_with_lm_eval() -> None:
    try:
        # lm-eval fills its registry with its own models only while the registry is empty: fill it first,
        # or registering ours would hide `hf` and the others.
        import lm_eval.models  # noqa: F401
        from lm_eval.api.registry import model_registry
    except ImportError:  # lm-eval is an optional extra
        return
    if MODEL_NAME not in model_registry:
        model_registry.register(MODEL_NAME, target="hybridlm.eval.harness:HybridLMEval")


_register_with_lm_eval()
