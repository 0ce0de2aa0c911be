"""`w`: sliding-window causal attention over the last `attention.window` tokens; the other fields of
the `attention` section are shared with `a`. Module `hybridlm.layers.sliding_window.SlidingWindowAttention`.

Its work and its decoding cache are bounded by the window: with it, one pattern language expresses
both Mamba + full-attention hybrids and sliding-window + full-attention models (Character.AI style)."""

from __future__ import annotations

from hybridlm.kinds.attention import AttentionKind


def window_blocks(seq_len: int, window: int) -> int | None:
    """Query blocks the layer runs on a sequence from scratch; None when it runs one plain causal pass."""
    return None if seq_len <= window else -(-seq_len // window)


class SlidingWindowKind(AttentionKind):
    token, name, section = "w", "sliding_window", "attention"
    core_terms = ("sliding_window_core",)
    bench = {"sliding-window": {}}

    def build(self, cfg):
        from hybridlm.layers.sliding_window import SlidingWindowAttention

        a, d = cfg.attention, cfg.d_model
        return SlidingWindowAttention(d, d, a.n_heads, cfg.attention_kv_heads, cfg.attention_head_dim, a.rope,
                                      a.rope_theta, qkv_bias=a.qkv_bias, out_bias=a.out_bias, window=a.window)

    def allocate_sharded_cache(self, module, batch, max_len, dtype, device, cp):
        """The rolling window is as small as an SSM state: replicated, filled from a halo in prefill."""
        return cp.replicated_window(module.allocate_cache(batch, max_len, dtype, device))

    def core_flops(self, cfg, batch, seq_len, attention):
        """kernel: what the layer computes, l^2 pairs up to the window, then blocks of w queries x 2w keys;
        causal: only the pairs inside the window, sum_i min(i + 1, w)."""
        w = cfg.attention.window
        if attention == "kernel":
            blocks = window_blocks(seq_len, w)
            pairs = seq_len * seq_len if blocks is None else blocks * w * 2 * w
        else:
            inside = min(seq_len, w)
            pairs = inside * (inside + 1) // 2 + (seq_len - inside) * w
        return 2 * 2 * batch * cfg.attention.n_heads * cfg.attention_head_dim * pairs

    def cache_length(self, cfg, max_len):
        return min(cfg.attention.window, max_len)  # the rolling window

    def keys_per_query(self, cfg, seq_len):
        return seq_len if window_blocks(seq_len, cfg.attention.window) is None else 2 * cfg.attention.window
