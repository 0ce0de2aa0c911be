"""Generation's inputs and choices: the prompt as given (tensor or lists of ids), how far decoding may run, and
the next token from logits (greedy, or sampling with temperature, top-k and top-p)."""

from __future__ import annotations

import torch

from hybridlm.errors import HybridLMError


def as_prompt(input_ids, vocab_size: int) -> torch.Tensor:
    """The prompt as a (batch, length) tensor of token ids: a tensor of ids, one row (length,), or lists of ints;
    one line naming what is wrong otherwise (a float or 3-D tensor, ragged lists, ids outside the vocabulary)."""
    if isinstance(input_ids, (list, tuple)):
        try:
            input_ids = torch.tensor(input_ids)
        except (TypeError, ValueError, RuntimeError):
            raise HybridLMError("a prompt given as lists must hold token ids (ints): one list, or one list per row, "
                                "all rows the same length (pad with attention_mask)") from None
    if not isinstance(input_ids, torch.Tensor):
        raise HybridLMError(f"the prompt must be a tensor or a list of token ids, got {type(input_ids).__name__}")
    if input_ids.numel() == 0:
        raise HybridLMError("generate needs a prompt of at least one token")
    if input_ids.dtype.is_floating_point or input_ids.dtype.is_complex or input_ids.dtype == torch.bool:
        raise HybridLMError(f"prompt token ids must be integers, got a {str(input_ids.dtype).removeprefix('torch.')} "
                            "tensor")
    if input_ids.dim() == 1:
        input_ids = input_ids[None]
    if input_ids.dim() != 2:
        raise HybridLMError(f"the prompt must be (batch, length) token ids or one row (length,), got shape "
                            f"{tuple(input_ids.shape)}")
    if int(input_ids.max()) >= vocab_size or int(input_ids.min()) < 0:
        raise HybridLMError(f"prompt token ids must be in [0, {vocab_size - 1}]")
    return input_ids.long()


def check_length(cfg, batch: int, prompt_len: int, max_new_tokens: int, dtype: torch.dtype, device) -> None:
    """Refuse a generation whose preallocated cache grows past the model's max_seq_len (a KV cache holds every
    position), or one whose cache would not fit in memory. A model whose decoding state has a fixed size (Mamba,
    sliding windows) may run past max_seq_len."""
    from hybridlm.allocation import check_cache_fits
    from hybridlm.kinds import KINDS
    from hybridlm.units import binary_bytes

    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
        raise HybridLMError(f"max_new_tokens must be a whole number >= 1, got {max_new_tokens!r}")
    total = prompt_len + max_new_tokens

    def cache(length: int) -> int:
        return sum(sum(KINDS[t].cache_bytes(cfg, batch, length, dtype.itemsize).values()) for t in cfg.tokens)

    if total > cfg.max_seq_len and cache(total) > cache(cfg.max_seq_len):
        room = cfg.max_seq_len - prompt_len
        raise HybridLMError(
            f"prompt ({prompt_len:,} tokens) + max_new_tokens ({max_new_tokens:,}) = {total:,} positions exceed the "
            f"model's max_seq_len {cfg.max_seq_len:,}; its attention layers keep a KV cache of every position, "
            f"allocated up front ({binary_bytes(cache(total))} here); "
            + (f"generate at most {room:,} tokens" if room > 0 else "shorten the prompt")
            + " or raise max_seq_len"
        )
    check_cache_fits(cfg, batch, total, dtype, device)


def pick_next(logits: torch.Tensor, do_sample: bool, temperature: float = 1.0, top_k: int = 0,
              top_p: float = 1.0, generator: torch.Generator | None = None) -> torch.Tensor:
    """logits (batch, vocab) -> token ids (batch,)."""
    if not do_sample:
        return logits.argmax(dim=-1)
    if temperature <= 0:
        raise HybridLMError(f"temperature must be > 0 when sampling, got {temperature}")
    if not 0 < top_p <= 1:
        raise HybridLMError(f"top_p must be in (0, 1], got {top_p}")
    if top_k < 0:
        raise HybridLMError(f"top_k must be >= 0 (0 = off), got {top_k}")
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        cum = sorted_logits.softmax(-1).cumsum(-1)
        drop = cum - sorted_logits.softmax(-1) >= top_p  # keep the smallest prefix reaching top_p
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]
