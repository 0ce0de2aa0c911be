"""Memory: inference (weights + the cache HybridLM.allocate_cache makes) and training (weights,
gradients, optimizer states and activations per GPU under data, tensor, expert and pipeline parallelism).

Bytes-per-parameter convention for training (mixed precision with Adam), the 16-byte rule:
    weights 2 (bf16/fp16) + gradients 2 + fp32 master weights 4 + Adam m 4 + Adam v 4 = 16.
With `master_weights=False` the weights themselves are the fp32 master (hybridlm's trainer: fp32
parameters, bf16 compute by autocast or FSDP2's mixed precision): use dtype_bytes=4, and the optimizer
holds only m and v.

Per-GPU weights, gradients and optimizer state are exact for tensor (tp), expert (ep) and data
parallelism with ZeRO 0-3 as the trainer runs them (`hybridlm.parallel.footprint`: the same parameter
layouts the trainer splits the model with; replicated norms, routers and Mamba2's B/C with one group
counted on every rank). Pipeline parallelism (pp) divides them evenly over the stages (an
approximation: real stages are uneven). dp = gpus / (tp x pp) data-parallel ranks, ep of which share one
set of experts.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from hybridlm.config import ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.kinds import KINDS
from hybridlm.plan.flops import RECOMPUTE, _check_choice, _check_sizes
from hybridlm.plan.params import params

FP32 = 4
OPTIMIZER_BYTES = {"adam": 12, "sgd": 4}  # fp32 master weights (+ m and v for Adam)


# ----- inference cache -----
def cache_bytes_by_kind(cfg: ModelConfig, batch: int, max_len: int, dtype_bytes: int = 2) -> dict[str, int]:
    """Bytes of the tensors HybridLM.allocate_cache(batch, max_len) creates, by cache component, summed
    over the layers' specs:
    kv    K and V (factor 2), n_kv_heads x head_dim each, preallocated to max_len (a sliding window:
          to the window), for each attention layer and each shared-block call (GQA-aware);
    conv  the last (d_conv - 1) inputs of each Mamba conv, model dtype, constant in length;
    ssm   each Mamba layer's state (d_inner x d_state), fp32, constant in length."""
    out = {"kv": 0, "conv": 0, "ssm": 0}
    for token in cfg.tokens:
        for name, n in KINDS[token].cache_bytes(cfg, batch, max_len, dtype_bytes).items():
            out[name] += n
    return out


def inference_cache_bytes(cfg: ModelConfig, batch: int, max_len: int, dtype_bytes: int = 2) -> int:
    return sum(cache_bytes_by_kind(cfg, batch, max_len, dtype_bytes).values())


# ----- activations -----
def activation_bytes_per_token(
    cfg: ModelConfig, kind: str, seq_len: int, recompute: str = "none", dtype_bytes: int = 2
) -> int:
    """Bytes one sub-layer of `kind` keeps per token for the backward pass (its pre-norm included).

    'none' stores what an unfused implementation saves, including the cores' big intermediates:
    attention's softmax probabilities (heads x keys per token: the quadratic term), the SSD's intra-chunk
    decay matrix L and C B^T (heads x Q and groups x Q, fp32), Mamba1's per-step states (3 x d_inner
    x d_state, fp32). 'selective' recomputes those cores in the backward pass (as flash attention and
    the mamba_ssm kernels do) and keeps only their inputs and outputs (+ softmax statistics / chunk
    states). 'full' is handled by `activation_bytes`: only each sub-layer's input is kept. The terms
    of each kind are in its spec (`hybridlm.kinds`)."""
    return KINDS[kind].activation_bytes_per_token(cfg, seq_len, recompute, dtype_bytes)


def activation_bytes(
    cfg: ModelConfig, batch: int, seq_len: int, recompute: str = "none", dtype_bytes: int = 2
) -> dict[str, int]:
    """Activation bytes of one micro-batch of (batch, seq_len) on one model replica, by kind, plus
    'logits' (final norm input, logits, and their fp32 copy for the loss)."""
    tokens = batch * seq_len
    a, d = dtype_bytes, cfg.d_model
    out: dict[str, int] = {"logits": tokens * (a * d + (a + FP32) * cfg.padded_vocab_size)}
    if recompute == "full":
        # checkpointed: each sub-layer's input (and x0 once for Zamba), plus one sub-layer's full
        # activations while it is recomputed in the backward pass
        n_inputs = len(cfg.tokens) + (1 if cfg.n_shared_calls else 0)
        out["layer_inputs"] = tokens * a * d * n_inputs
        out["recompute_working_set"] = tokens * max(
            activation_bytes_per_token(cfg, k, seq_len, "none", a) for k in set(cfg.tokens)
        )
        return out
    for token in cfg.tokens:
        name = KINDS[token].name
        out[name] = out.get(name, 0) + tokens * activation_bytes_per_token(cfg, token, seq_len, recompute, a)
    return out


# ----- the report -----
@dataclass
class MemoryReport:
    batch: int
    seq_len: int
    dtype_bytes: int
    weights_bytes: int  # all parameters at dtype_bytes (one inference replica)
    inference_cache_bytes: int  # = HybridLM.allocate_cache(batch, seq_len).nbytes at that dtype
    inference_total_bytes: int
    inference_cache_by_kind: dict[str, int]
    gpus: int
    dp: int
    tp: int
    pp: int
    zero: int
    ep: int
    recompute: str
    bytes_per_param: dict[str, int]
    train_weights_bytes: float  # per GPU
    train_grads_bytes: float
    train_optimizer_bytes: float
    train_activation_bytes: float
    train_total_bytes: float
    activation_by_kind: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)


def check_parallel(cfg: ModelConfig, gpus: int, tp: int, pp: int, zero: int, ep: int = 1) -> int:
    """Validate the parallel layout and return the data-parallel degree."""
    from hybridlm.parallel.shards import validate

    _check_sizes(gpus=gpus, tp=tp, pp=pp, ep=ep)
    if zero not in (0, 1, 2, 3):
        raise ConfigError(f"zero must be 0, 1, 2 or 3, got {zero}")
    if gpus % (tp * pp):
        raise ConfigError(f"gpus={gpus} must be a multiple of tp x pp = {tp} x {pp} = {tp * pp}")
    n_sub = sum(not KINDS[t].call for t in cfg.tokens)
    if pp > n_sub:
        raise ConfigError(f"pp={pp} exceeds the number of sub-layers ({n_sub})")
    dp = gpus // (tp * pp)
    if dp % ep:
        raise ConfigError(f"ep={ep} must divide the data-parallel degree gpus / (tp x pp) = {dp}")
    validate(cfg, tp, ep)
    return dp


def memory(
    cfg: ModelConfig,
    *,
    batch: int,
    seq_len: int,
    dtype_bytes: int = 2,
    gpus: int = 1,
    tp: int = 1,
    pp: int = 1,
    zero: int = 0,
    recompute: str = "none",
    optimizer: str = "adam",
    ep: int = 1,
    master_weights: bool = True,
) -> MemoryReport:
    """Inference and training memory of HybridLM(cfg). `batch` is the micro-batch per data-parallel rank."""
    from hybridlm.parallel.footprint import local_elements

    _check_sizes(batch=batch, seq_len=seq_len, dtype_bytes=dtype_bytes)
    _check_choice("recompute", recompute, RECOMPUTE)
    _check_choice("optimizer", optimizer, tuple(OPTIMIZER_BYTES))
    dp = check_parallel(cfg, gpus, tp, pp, zero, ep)
    n = params(cfg).total
    cache = cache_bytes_by_kind(cfg, batch, seq_len, dtype_bytes)
    per_param = {"weights": dtype_bytes, "grads": dtype_bytes,
                 "optimizer": OPTIMIZER_BYTES[optimizer] - (0 if master_weights else FP32)}
    local = local_elements(cfg, tp, ep, zero, dp)  # on the most loaded rank, before pipeline stages
    w, g, o = (local[k] * per_param[k] / pp for k in ("weights", "grads", "optimizer"))
    acts = activation_bytes(cfg, batch, seq_len, recompute, dtype_bytes)
    # tensor (+ sequence) parallelism splits activations over tp; with 1F1B the first pipeline stage
    # holds pp micro-batches of 1/pp of the layers, i.e. the whole model's worth.
    act = sum(acts.values()) / tp
    weights = n * dtype_bytes
    return MemoryReport(
        batch=batch,
        seq_len=seq_len,
        dtype_bytes=dtype_bytes,
        weights_bytes=weights,
        inference_cache_bytes=sum(cache.values()),
        inference_total_bytes=weights + sum(cache.values()),
        inference_cache_by_kind=cache,
        gpus=gpus,
        dp=dp,
        tp=tp,
        pp=pp,
        zero=zero,
        ep=ep,
        recompute=recompute,
        bytes_per_param=per_param,
        train_weights_bytes=w,
        train_grads_bytes=g,
        train_optimizer_bytes=o,
        train_activation_bytes=act,
        train_total_bytes=w + g + o + act,
        activation_by_kind=acts,
    )
