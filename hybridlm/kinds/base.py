"""`LayerKind`: everything hybridlm knows about one kind of residual sub-layer, in one object.

A kind is named by a token of the layer-pattern language (`hybridlm.config.pattern`) and reads one
section of `ModelConfig`. Its spec says how to validate that section, build the module, run it and
allocate its inference cache (model), and gives its exact parameter count, FLOP terms, cache bytes,
activation bytes, tensor-parallel split sizes and sizing rules (planner) and its block-benchmark
entries (bench). The model, the planner and the benchmarks iterate over the registry
(`hybridlm.kinds.KINDS`) instead of branching on tokens.

Specs import no torch at module level (the config validates through them, and `import hybridlm`
must stay light); `build` and `bench_unit` import the layer modules when called.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from hybridlm.kinds.counting import BACKWARD_FACTOR
from hybridlm.kinds.tp import TPPlan

if TYPE_CHECKING:
    from torch import nn

    from hybridlm.config import ModelConfig


class LayerKind:
    token: ClassVar[str]  # in the layer-pattern language
    name: ClassVar[str]  # in reports: parameter components, activation memory, per-layer rows
    section: ClassVar[str]  # the ModelConfig section it reads
    mixer: ClassVar[bool] = False  # a sequence mixer: one of the 'layers' a paper counts
    ssm: ClassVar[bool] = False  # a Mamba mixer: may consume a shared-block call's output
    call: ClassVar[bool] = False  # not a residual sub-layer: computes t for the next mixer (Zamba)
    core_terms: ClassVar[tuple[str, ...]] = ()  # FLOP terms selective recomputation runs again
    bench: ClassVar[dict[str, dict[str, Any]]] = {}  # bench-blocks entry -> config overrides for it

    # ----- config -----
    def validate(self, cfg: ModelConfig) -> None:
        """Raise ValueError naming the field when `cfg` cannot build this kind (called only if it is used)."""

    # ----- model -----
    def build(self, cfg: ModelConfig) -> nn.Module:
        raise NotImplementedError

    def run(self, module: nn.Module, h, cache, offset: int, segments=None):
        """One forward of the built module on its normed input: (output, auxiliary loss or None).
        `segments` (hybridlm.layers.segments) marks packed documents and padding."""
        return module(h, cache, offset, segments=segments), None

    def allocate_cache(self, module: nn.Module, batch: int, max_len: int, dtype, device) -> dict | None:
        """The module's decoding state; None for a kind without one."""
        return None

    def allocate_sharded_cache(self, module: nn.Module, batch: int, max_len: int, dtype, device, cp):
        """This rank's decoding state under context parallelism (`hybridlm.parallel.ContextParallel` `cp`,
        each rank holding a slice of the sequence): a cache slot that says how the kind works across ranks.
        A kind without a decoding state mixes no tokens and runs on the slice as it is; a kind with one must
        say how it shards."""
        if self.allocate_cache(module, batch, 1, dtype, device) is not None:
            from hybridlm.errors import HybridLMError

            raise HybridLMError(f"{self.name} layers do not support context parallelism")
        return None

    # ----- planner -----
    def params(self, cfg: ModelConfig) -> dict[str, int]:
        """Parameters of one sub-layer of this kind by report component, without its pre-norm."""
        raise NotImplementedError

    def inactive_params(self, cfg: ModelConfig) -> int:
        """Parameters of one sub-layer that a token does not use (MoE experts outside its top-k)."""
        return 0

    def shared_params(self, cfg: ModelConfig) -> dict[str, int]:
        """Parameters held once per model when the kind is used at all (Zamba's shared blocks)."""
        return {}

    def flops(self, cfg: ModelConfig, batch: int, seq_len: int, attention: str, device: str) -> dict[str, int]:
        """Forward matmul FLOPs of one sub-layer on (batch, seq_len), by term."""
        raise NotImplementedError

    def backward_flops(self, cfg: ModelConfig, batch: int, seq_len: int, attention: str, device: str,
                       forward: dict[str, int]) -> dict[str, int]:
        """Backward matmul FLOPs by term, given the forward terms: a gradient for each operand of every
        product (BACKWARD_FACTOR x forward), unless the kind knows an operand needs none."""
        return {name: BACKWARD_FACTOR * v for name, v in forward.items()}

    def final_projection_width(self, cfg: ModelConfig) -> int | None:
        """Input width of the sub-layer's last matmul (into d_model), whose output nothing saves for
        backward, so full recomputation skips it; None when the last op is not such a matmul."""
        return None

    def cache_bytes(self, cfg: ModelConfig, batch: int, max_len: int, dtype_bytes: int) -> dict[str, int]:
        """Bytes of what `allocate_cache` makes, by cache component (kv, conv, ssm)."""
        return {}

    def activation_bytes_per_token(self, cfg: ModelConfig, seq_len: int, recompute: str, dtype_bytes: int) -> int:
        raise NotImplementedError

    def tp_splits(self, cfg: ModelConfig) -> list[tuple[str, int]]:
        """(what, size) that tensor parallelism splits; tp must divide every size."""
        return []

    def tp_plan(self, cfg: ModelConfig, tp: int) -> TPPlan:
        """How tensor (and expert) parallelism splits the built module over `tp` ranks (`hybridlm.kinds.tp`);
        raise ValueError naming the field when it cannot."""
        raise NotImplementedError(f"{self.name}: no tensor-parallel plan")

    def sizing(self, cfg: ModelConfig) -> list[tuple[str, int, int, str]]:
        """(label, value, multiple, advice) for the GPU-friendly-size rules."""
        return []

    # ----- bench -----
    def bench_config(self, cfg: ModelConfig, d_model: int) -> dict[str, Any]:
        """Extra config fields a one-block config of this kind needs at `d_model`."""
        return {"layers": self.token}

    def bench_unit(self, cfg: ModelConfig) -> nn.Module:
        """The timed module: by default the model's own residual Block (norm, sub-layer, residual)."""
        from hybridlm.model import Block

        return Block(self.token, cfg)

    bench_inputs: ClassVar[int] = 1  # tensors of shape (batch, seq_len, d_model) the unit takes
