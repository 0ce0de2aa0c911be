"""Each published preset has exactly the parameter count of its checkpoint: transformers' own model,
built on the meta device from the published config values (written out here by hand), is the reference."""

import pytest
import torch
import transformers as tf

from hybridlm import HybridLM, ModelConfig


def _hybrid_types(n, hybrid):
    return ["hybrid" if i in hybrid else "mamba" for i in range(n)]


PUBLISHED = {
    "zamba2-1.2b": lambda: tf.Zamba2ForCausalLM(tf.Zamba2Config(
        hidden_size=2048, num_hidden_layers=38, layers_block_type=_hybrid_types(38, range(5, 36, 6)),
        mamba_d_state=128, n_mamba_heads=64, mamba_ngroups=1, num_attention_heads=32, num_mem_blocks=1,
        use_shared_attention_adapter=True, adapter_rank=128, use_mem_rope=True, intermediate_size=8192,
        vocab_size=32000)),
    "zamba2-2.7b": lambda: tf.Zamba2ForCausalLM(tf.Zamba2Config(
        hidden_size=2560, num_hidden_layers=54,
        layers_block_type=_hybrid_types(54, [6, 12, 18, 24, 30, 36, 42, 47, 51]), mamba_d_state=64,
        n_mamba_heads=80, mamba_ngroups=1, num_attention_heads=32, num_mem_blocks=2, adapter_rank=128,
        use_shared_attention_adapter=False, use_mem_rope=False, intermediate_size=10240, vocab_size=32000)),
    "zamba2-7b": lambda: tf.Zamba2ForCausalLM(tf.Zamba2Config(
        hidden_size=3584, num_hidden_layers=81, layers_block_type=_hybrid_types(81, [6, 11, *range(17, 78, 6)]),
        mamba_d_state=64, n_mamba_heads=112, mamba_ngroups=2, num_attention_heads=32, num_mem_blocks=2,
        adapter_rank=128, use_shared_attention_adapter=False, use_mem_rope=True, intermediate_size=14336,
        vocab_size=32000)),
    "zamba-7b": lambda: tf.ZambaForCausalLM(tf.ZambaConfig(
        hidden_size=3712, num_hidden_layers=76, num_attention_heads=16, num_key_value_heads=16,
        intermediate_size=14848, n_mamba_heads=2, mamba_d_state=16, mamba_dt_rank=232, vocab_size=32000,
        attn_layer_period=6, attn_layer_offset=4)),
    "mamba2-2.7b": lambda: tf.Mamba2ForCausalLM(tf.Mamba2Config(
        hidden_size=2560, num_hidden_layers=64, vocab_size=50288, state_size=128, head_dim=64, num_heads=80,
        n_groups=1, tie_word_embeddings=True)),
    "llama-2-7b": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, intermediate_size=11008, vocab_size=32000)),
    "jamba-v0.1": lambda: tf.JambaForCausalLM(tf.JambaConfig(
        hidden_size=4096, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8,
        intermediate_size=14336, num_experts=16, num_experts_per_tok=2, expert_layer_period=2,
        expert_layer_offset=1, attn_layer_period=8, attn_layer_offset=4, mamba_d_state=16, mamba_dt_rank=256,
        vocab_size=65536, tie_word_embeddings=False)),
}
for size, (d, n) in {"130m": (768, 24), "370m": (1024, 48), "790m": (1536, 48), "1.4b": (2048, 48),
                     "2.8b": (2560, 64)}.items():
    PUBLISHED[f"mamba-{size}"] = (lambda d=d, n=n: tf.MambaForCausalLM(tf.MambaConfig(
        hidden_size=d, num_hidden_layers=n, vocab_size=50280, state_size=16)))


def count(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_preset_matches_transformers_count(name):
    with torch.device("meta"):
        theirs = count(PUBLISHED[name]())
        ours = HybridLM(ModelConfig.from_preset(name)).num_parameters()
    assert ours == theirs


def test_known_published_totals():
    def n(name):
        with torch.device("meta"):
            return HybridLM(ModelConfig.from_preset(name)).num_parameters()

    assert n("llama-2-7b") == 6_738_415_616
    assert n("mamba-130m") == 129_135_360
    assert n("jamba-v0.1") == 51_570_323_328  # "52B total"


def test_blackmamba_total_and_active():
    """BlackMamba 2.8B as Zyphra released it: 18 Mamba1 + 18 MoE (8 SwiGLU experts of 3872, top-1, router with
    bias) layers, d 1472, vocab 50304, tied, RMSNorm pre-norms and a final LayerNorm with bias."""
    d, di, n, r, f, vocab = 1472, 2944, 16, 92, 3872, 50304
    mamba = d * 2 * di + di * 4 + di + di * (r + 2 * n) + r * di + di + di * n + di + di * d + d
    expert = 3 * d * f
    moe = 8 * expert + (8 * d + 8) + d
    total = vocab * d + 18 * (mamba + moe) + 2 * d
    assert total == 2_783_213_584
    with torch.device("meta"):
        model = HybridLM(ModelConfig.from_preset("blackmamba-2.8b"))
    assert model.num_parameters() == total
    assert sum(p.numel() for p in model.norm_f.parameters()) == 2 * d  # LayerNorm weight and bias
    assert all(layer.mixer.router.bias is not None for layer in model.layers[1::2])
    from hybridlm.plan import params

    report = params(ModelConfig.from_preset("blackmamba-2.8b"))
    assert report.total == total
    assert report.active == total - 18 * 7 * expert == 628_770_832
