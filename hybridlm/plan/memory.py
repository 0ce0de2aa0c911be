"""Memory: inference (weights + the cache HybridLM.allocate_cache makes) and training (weights,
gradients, optimizer states and activations per GPU under data, tensor and pipeline parallelism).

Bytes-per-parameter convention for training (mixed precision with Adam), the 16-byte rule:
    weights 2 (bf16/fp16) + gradients 2 + fp32 master weights 4 + Adam m 4 + Adam v 4 = 16.
Parallelism: tensor (tp) and pipeline (pp) parallelism split the model's parameters evenly over
tp x pp GPUs (an assumption: real splits are slightly uneven); data parallelism replicates them over
dp = gpus / (tp x pp). ZeRO divides by dp only: stage 1 the optimizer states (master + m + v),
stage 2 also the gradients, stage 3 also the weights.
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


def check_parallel(cfg: ModelConfig, gpus: int, tp: int, pp: int, zero: int) -> int:
    """Validate the parallel layout and return the data-parallel degree."""
    _check_sizes(gpus=gpus, tp=tp, pp=pp)
    if zero not in (0, 1, 2, 3):
        raise ConfigError(f"zero must be 0, 1, 2 or 3, got {zero}")
    if gpus % (tp * pp):
        raise ConfigError(f"gpus={gpus} must be a multiple of tp x pp = {tp} x {pp} = {tp * pp}")
    n_sub = sum(not KINDS[t].call for t in cfg.tokens)
    if pp > n_sub:
        raise ConfigError(f"pp={pp} exceeds the number of sub-layers ({n_sub})")
    for token in sorted(set(cfg.tokens)):
        for what, size in KINDS[token].tp_splits(cfg):
            if size % tp:
                raise ConfigError(f"tp={tp} must divide the {what} ({size})")
    return gpus // (tp * pp)


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
) -> MemoryReport:
    """Inference and training memory of HybridLM(cfg). `batch` is the micro-batch per data-parallel rank."""
    _check_sizes(batch=batch, seq_len=seq_len, dtype_bytes=dtype_bytes)
    _check_choice("recompute", recompute, RECOMPUTE)
    _check_choice("optimizer", optimizer, tuple(OPTIMIZER_BYTES))
    dp = check_parallel(cfg, gpus, tp, pp, zero)
    n = params(cfg).total
    cache = cache_bytes_by_kind(cfg, batch, seq_len, dtype_bytes)
    per_param = {"weights": dtype_bytes, "grads": dtype_bytes, "optimizer": OPTIMIZER_BYTES[optimizer]}
    shard = n / (tp * pp)  # parameters held by one model-parallel rank
    w = shard * per_param["weights"] / (dp if zero >= 3 else 1)
    g = shard * per_param["grads"] / (dp if zero >= 2 else 1)
    o = shard * per_param["optimizer"] / (dp if zero >= 1 else 1)
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
        recompute=recompute,
        bytes_per_param=per_param,
        train_weights_bytes=w,
        train_grads_bytes=g,
        train_optimizer_bytes=o,
        train_activation_bytes=act,
        train_total_bytes=w + g + o + act,
        activation_by_kind=acts,
    )
