"""`HybridLM`: the model assembled from a `ModelConfig`, its forward pass with loss, and generation.

    x0 = embed(tokens); x = x0; t = None
    for token in config.tokens:                      (each token's kind: hybridlm.kinds.KINDS[token])
        a call (g):      t = shared[j % n_blocks](x, x0, call_j)    (Zamba; feeds the next mixer)
        any other kind:  x = x + sublayer(norm(x + t if t else x)); t = None
    logits = norm_f(x) @ (embed.weight if tied else lm_head.weight).T
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from hybridlm.allocation import check_model_fits
from hybridlm.cache import InferenceCache
from hybridlm.config import ModelConfig
from hybridlm.errors import HybridLMError
from hybridlm.init import Constant, Init, Normal, draw_seed, fill_
from hybridlm.kinds import KINDS, LayerKind
from hybridlm.layers.moe import MoE
from hybridlm.layers.norms import GatedRMSNorm, LayerNorm, RMSNorm, make_norm
from hybridlm.layers.segments import Segments
from hybridlm.parallel.context import ContextParallel

RESIDUAL_OUTPUTS = ("o_proj", "down", "out_proj")  # projections back into the residual stream


@dataclass
class LMOutput:
    logits: torch.Tensor
    loss: torch.Tensor | None = None  # cross-entropy (+ aux_loss_coef * aux_loss when the model has MoE)
    aux_loss: torch.Tensor | None = None  # mean MoE load-balancing loss over MoE layers


class Block(nn.Module):
    """A pre-norm residual sub-layer of one kind: x + sublayer(norm(x [+ t]))."""

    def __init__(self, token: str, cfg: ModelConfig):
        super().__init__()
        self.spec = KINDS[token]
        self.d_model = cfg.d_model
        self.norm = make_norm(cfg.norm, cfg.d_model, cfg.norm_eps)
        self.mixer = self.spec.build(cfg)

    @property
    def kind(self) -> str:
        return self.spec.token

    def forward(self, x: torch.Tensor, t: torch.Tensor | None = None, cache=None, offset: int = 0,
                segments: Segments | None = None):
        y, aux = self.spec.run(self.mixer, self.norm(x if t is None else x + t), cache, offset, segments)
        return x + y, aux

    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype, device) -> dict | None:
        return self.spec.allocate_cache(self.mixer, batch, max_len, dtype, device)


class HybridLM(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        if not isinstance(config, ModelConfig):
            raise HybridLMError(f"HybridLM needs a ModelConfig, got {type(config).__name__}")
        check_model_fits(config)  # a mistyped size is one line, not an allocator failure
        self.config = cfg = config
        self.init_seed = draw_seed()  # first, so the seed does not depend on what the constructors draw
        self.embed = nn.Embedding(cfg.padded_vocab_size, cfg.d_model)
        specs = [KINDS[t] for t in cfg.tokens]
        self.layers = nn.ModuleList([Block(s.token, cfg) for s in specs if not s.call])
        call_specs = [s for s in specs if s.call]
        # Zamba's shared blocks (used round-robin) and what each call owns; names as in checkpoints
        self.shared = nn.ModuleList(call_specs[0].build_blocks(cfg)) if call_specs else None
        self.calls = nn.ModuleList([s.build(cfg) for s in call_specs]) if call_specs else None
        self.norm_f = make_norm(cfg.final_norm_kind, cfg.d_model, cfg.norm_eps)
        self.lm_head = None if cfg.tie_embeddings else nn.Linear(cfg.d_model, cfg.padded_vocab_size, bias=False)
        # execution plan: ("call", j) or ("layer", i), in token order
        self._plan: list[tuple[str, int]] = []
        n = {"call": 0, "layer": 0}
        for s in specs:
            role = "call" if s.call else "layer"
            self._plan.append((role, n[role]))
            n[role] += 1
        self.gradient_checkpointing = False
        self.reset_parameters()

    # ----- construction -----
    def init_rules(self) -> dict[str, Init]:
        """How every parameter starts: N(0, init_std) for projections and embeddings; residual output
        projections scaled by 1/sqrt(2 * number of residual sub-layers) (GPT-2 / mamba_ssm); norms at 1
        (biases 0); the Mamba mixers' own parameters by their `init_rules` (mamba_ssm's init)."""
        std = self.config.init_std
        out_std = std / math.sqrt(2 * max(1, len(self.layers)))
        rules: dict[str, Init] = {}
        for name, module in self.named_modules():
            prefix = f"{name}." if name else ""
            own: dict[str, Init] = {}
            if module is not self and hasattr(module, "init_rules"):
                own = module.init_rules()
            elif isinstance(module, nn.Linear):
                leaf = name.rsplit(".", 1)[-1]
                own = {"weight": Normal(out_std if leaf in RESIDUAL_OUTPUTS else std), "bias": Constant(0.0)}
            elif isinstance(module, nn.Embedding):
                own = {"weight": Normal(std)}
            elif isinstance(module, MoE):
                own = {"up": Normal(std), "down": Normal(out_std), "up_bias": Constant(0.0),
                       "down_bias": Constant(0.0)}
            elif isinstance(module, (RMSNorm, LayerNorm, GatedRMSNorm)):
                own = {"weight": Constant(1.0), "bias": Constant(0.0)}
            for leaf, rule in own.items():
                rules.setdefault(prefix + leaf, rule)
        names = [n for n, _ in self.named_parameters()]
        missing = [n for n in names if n not in rules]
        if missing:
            raise RuntimeError(f"no init rule for parameters {missing}")
        return {n: rules[n] for n in names}

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Every parameter from its rule and (self.init_seed, its name): the same values whichever ranks
        later hold which shards (`hybridlm.init`)."""
        params = dict(self.named_parameters())
        for name, rule in self.init_rules().items():
            fill_(params[name], rule, self.init_seed, name)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ----- forward -----
    def forward(self, input_ids: torch.Tensor, labels: torch.Tensor | None = None,
                cache: InferenceCache | None = None, logits_to_keep: int = 0,
                attention_mask: torch.Tensor | None = None, seq_idx: torch.Tensor | None = None,
                shift_labels: torch.Tensor | None = None) -> LMOutput:
        """input_ids (batch, len). `labels` like transformers: the loss predicts labels[:, 1:] from
        positions [:-1]; -100 is ignored. `shift_labels` (batch, len) are targets already aligned with the
        positions (shift_labels[:, i] follows input i) and already masked (-100) where they must not be
        predicted, as in training, where the model runs on exactly the inputs of a window and predicts every
        next token. `logits_to_keep` > 0 computes only the last positions' logits.

        Several sequences per row (`hybridlm.layers.segments`): `attention_mask` (1 = token, 0 =
        padding; left padding for generation) and/or `seq_idx` (the document index of each token, for
        packed training). Each sequence is then computed exactly as if it ran alone, and no token is
        trained to predict across a boundary or to predict padding."""
        if input_ids.dim() != 2:
            raise HybridLMError(f"input_ids must be (batch, length), got shape {tuple(input_ids.shape)}")
        if input_ids.dtype.is_floating_point or input_ids.dtype == torch.bool:
            raise HybridLMError(f"input_ids must be integer token ids, got {input_ids.dtype}")
        b, l = input_ids.shape
        offset = 0
        if cache is not None:
            cache.reserve(l, b)
            offset = cache.offset
        segments = None
        if attention_mask is not None or seq_idx is not None:
            continuing = cache.seg_start if cache is not None and offset > 0 else None
            segments = Segments.from_masks((b, l), offset, attention_mask, seq_idx, continuing, input_ids.device)
        elif cache is not None and cache.seg_start is not None:
            segments = Segments.continuing(cache.seg_start, l, offset)
        decode = cache is not None and l == 1  # one token per row: every layer works on (b, d)
        x = self.embed(input_ids[:, 0] if decode else input_ids)
        x0 = x
        t = None
        aux_losses = []
        ckpt = self.gradient_checkpointing and self.training and cache is None
        for pos, (role, idx) in enumerate(self._plan):
            slot = cache.slots[pos] if cache is not None else None
            if role == "call":
                block = self.shared[idx % len(self.shared)]
                args = (x, x0, self.calls[idx], slot, offset, segments)
                t = checkpoint(block, *args, use_reentrant=False) if ckpt else block(*args)
            else:
                layer = self.layers[idx]
                args = (x, t, slot, offset, segments)
                x, aux = checkpoint(layer, *args, use_reentrant=False) if ckpt else layer(*args)
                t = None
                if aux is not None:
                    aux_losses.append(aux)
        if cache is not None:
            cache.offset += l
            if segments is not None:
                cache.seg_start = segments.start[:, -1].clone()
        if logits_to_keep and not decode:
            x = x[:, -logits_to_keep:]
        logits = self.logits(self.norm_f(x))
        if decode:
            logits = logits[:, None]
        aux_loss = torch.stack(aux_losses).mean() if aux_losses else None
        loss = None
        if shift_labels is not None:
            loss = self.cross_entropy(logits, shift_labels)
        elif labels is not None:
            targets = labels[:, 1:]
            if segments is not None:
                keep = segments.labels_mask()
                if attention_mask is not None:
                    keep = keep & attention_mask[:, 1:].bool()
                targets = targets.masked_fill(~keep, -100)
            loss = self.cross_entropy(logits[:, :-1], targets)
        if loss is not None:
            if aux_loss is not None:
                loss = loss + self.config.moe.aux_loss_coef * aux_loss
        return LMOutput(logits=logits, loss=loss, aux_loss=aux_loss)

    def cross_entropy(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
        """Next-token cross-entropy of logits (..., vocab) against targets (...) in fp32; -100 is ignored.
        (Tensor parallelism replaces it with the vocabulary-parallel version.)"""
        return F.cross_entropy(logits.flatten(0, -2).float(), targets.flatten(), ignore_index=-100,
                               reduction=reduction)

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        weight = self.embed.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(h, weight)

    # ----- inference -----
    def allocate_cache(self, batch: int, max_len: int, dtype: torch.dtype | None = None,
                       device: torch.device | str | None = None) -> InferenceCache:
        param = self.embed.weight
        dtype, device = dtype or param.dtype, device or param.device
        slots = [spec.allocate_cache(module, batch, max_len, dtype, device) for spec, module in self.cache_owners()]
        return InferenceCache(slots, batch, max_len)

    def cache_owners(self) -> list[tuple[LayerKind, nn.Module]]:
        """For each position of the plan, its spec and the module whose state its cache slot holds: a
        layer's mixer, or the shared block a call runs."""
        call_specs = [KINDS[t] for t in self.config.tokens if KINDS[t].call]
        return [(call_specs[idx], self.shared[idx % len(self.shared)]) if role == "call"
                else (self.layers[idx].spec, self.layers[idx].mixer) for role, idx in self._plan]

    @torch.no_grad()
    def generate(self, input_ids: torch.Tensor, max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, eos_token_id: int | None = None,
                 seed: int | None = None, return_scores: bool = False, attention_mask: torch.Tensor | None = None,
                 context_parallel: str | ContextParallel | None = None):
        """Greedy or sampled continuation with a constant-size SSM state and KV caches for attention.

        Returns the ids (batch, prompt + new); with `return_scores`, also the per-step logits
        (batch, new, vocab). After `eos_token_id`, a sequence keeps emitting eos. Prompts of different
        lengths batch with left padding and `attention_mask` (0 on the padding): each row then
        generates exactly what it would alone.
        `context_parallel` ("tree" or "ring"), called on every rank of a torch.distributed process group
        with the same prompt, shards the sequence over the ranks and returns the same tokens on each
        (`hybridlm.parallel.context`); outside a process group, "tree" is split-KV decoding."""
        from hybridlm.generation import as_prompt, check_length, pick_next

        vocab = self.config.vocab_size
        input_ids = as_prompt(input_ids, vocab)
        check_length(self.config, *input_ids.shape, max_new_tokens, self.embed.weight.dtype, self.embed.weight.device)
        if attention_mask is not None:
            if attention_mask.dim() == 1:
                attention_mask = attention_mask[None]
            if tuple(attention_mask.shape) != tuple(input_ids.shape):
                raise HybridLMError(f"attention_mask must have the prompt's shape {tuple(input_ids.shape)}, "
                                    f"got {tuple(attention_mask.shape)}")
            m = attention_mask.bool()
            if not bool(m[:, -1].all()) or bool((m[:, 1:] < m[:, :-1]).any()):
                raise HybridLMError("attention_mask must be left padding: 0s then 1s in each row, ending with a token")
        was_training = self.training
        self.eval()
        b, l = input_ids.shape
        generator = None
        cp = None if context_parallel is None else ContextParallel.of(context_parallel)
        if cp is not None and attention_mask is not None:
            raise HybridLMError("context_parallel takes prompts of one length; no attention_mask")
        if do_sample:
            generator = torch.Generator(device=input_ids.device)
            seed = cp.common_seed(seed, input_ids.device) if cp is not None else seed
            generator.manual_seed(seed if seed is not None else torch.seed())
        if cp is None:
            cache, prompt = self.allocate_cache(b, l + max_new_tokens), input_ids
        else:
            cache, prompt = cp.start(self, input_ids, l + max_new_tokens)
        logits = self(prompt, cache=cache, logits_to_keep=1, attention_mask=attention_mask).logits[:, -1]
        if cp is not None:
            logits = cp.finish_prefill(logits, cache)
        new_tokens, scores = [], []
        finished = torch.zeros(b, dtype=torch.bool, device=input_ids.device)
        for step in range(max_new_tokens):
            logits = logits[:, :vocab].float()
            scores.append(logits)
            nxt = pick_next(logits, do_sample, temperature, top_k, top_p, generator)
            if eos_token_id is not None:
                nxt = torch.where(finished, torch.full_like(nxt, eos_token_id), nxt)
                finished |= nxt == eos_token_id
            new_tokens.append(nxt)
            if step + 1 == max_new_tokens or (eos_token_id is not None and bool(finished.all())):
                break
            logits = self(nxt[:, None], cache=cache).logits[:, -1]
        self.train(was_training)
        ids = torch.cat([input_ids, torch.stack(new_tokens, dim=1)], dim=1)
        return (ids, torch.stack(scores, dim=1)) if return_scores else ids

    # ----- checkpoints -----
    @classmethod
    def from_pretrained(cls, directory: str | Path, dtype: torch.dtype | str | None = None,
                        device: torch.device | str | None = None) -> HybridLM:
        """Load a checkpoint directory: transformers (Zamba2, Zamba, Mamba, Mamba2, Llama, Jamba), mamba_ssm,
        Zyphra's BlackMamba, or one written by `save_pretrained`; safetensors (sharded too) or .bin.
        Built on the meta device and filled tensor by tensor: host memory stays near one copy of the
        weights in `dtype` (default float32; 'auto' keeps the checkpoint's) on `device` (default cpu)."""
        from hybridlm.hf import load_pretrained

        return load_pretrained(directory, dtype, device)

    def save_pretrained(self, directory: str | Path, format: str | None = None,
                        max_shard_size: int | str | None = None) -> Path:
        """Write config.json + weights in `format`: by default the transformers layout of this architecture's
        family (loadable with transformers' AutoModelForCausalLM) or hybridlm's own when none fits; also
        'mamba_ssm' and 'blackmamba'. Safetensors are sharded at `max_shard_size` with an index."""
        from hybridlm.hf import save_pretrained

        return save_pretrained(self, directory, format, max_shard_size)
