"""Parity with the real transformers implementations: random tiny checkpoints (every parameter, norms,
D and dt_bias included, randomized) load into HybridLM with the same logits and greedy generations,
and HybridLM exports back to checkpoints transformers loads with the same logits."""

import pytest
import torch
import transformers as tf

from hybridlm import HybridLM, ModelConfig
from hybridlm.errors import CheckpointError


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "A_log" in name:
                p.copy_(torch.log(torch.rand_like(p) * 4 + 0.5))
            elif "dt_bias" in name or "dt_proj_bias" in name or "dt_proj.bias" in name:
                p.copy_(torch.rand_like(p) * 4 - 5)  # dt from ~0.007 to ~0.3, some under the 1e-3 clamp
            elif p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) * 0.15)
    return model.eval()


def zamba2(**kw):
    base = dict(vocab_size=96, hidden_size=32, num_hidden_layers=5, mamba_d_state=8, n_mamba_heads=4,
                num_attention_heads=4, adapter_rank=4, intermediate_size=64, chunk_size=4,
                layers_block_type=["mamba", "hybrid", "mamba", "hybrid", "hybrid"])
    return tf.Zamba2ForCausalLM(tf.Zamba2Config(**{**base, **kw}))


def jamba(**kw):
    base = dict(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=4, num_attention_heads=4,
                num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, attn_layer_period=4, attn_layer_offset=2,
                expert_layer_period=2, expert_layer_offset=1, mamba_d_state=8, mamba_dt_rank=4, rms_norm_eps=1e-5)
    return tf.JambaForCausalLM(tf.JambaConfig(**{**base, **kw}))


CASES = {
    "zamba2-1block": lambda: zamba2(num_mem_blocks=1),
    "zamba2-2blocks-qkv-rope-groups": lambda: zamba2(num_mem_blocks=2, use_shared_attention_adapter=True,
                                                     use_mem_rope=True, mamba_ngroups=2),
    "zamba2-2blocks-rope-gqa": lambda: zamba2(num_mem_blocks=2, use_mem_rope=True, num_key_value_heads=2),
    "zamba": lambda: tf.ZambaForCausalLM(tf.ZambaConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=7, attn_layer_period=2, attn_layer_offset=1,
        mamba_d_state=8, n_mamba_heads=2, num_attention_heads=4, num_key_value_heads=4, intermediate_size=64,
        mamba_dt_rank=4)),
    "mamba": lambda: tf.MambaForCausalLM(tf.MambaConfig(vocab_size=96, hidden_size=32, num_hidden_layers=3,
                                                        state_size=8)),
    "mamba2": lambda: tf.Mamba2ForCausalLM(tf.Mamba2Config(
        vocab_size=96, hidden_size=32, num_hidden_layers=3, state_size=8, num_heads=8, head_dim=8, n_groups=2,
        chunk_size=4)),
    "jamba-moe-top2-gqa": lambda: jamba(),
    "jamba-attn-first-top1-tied-biases": lambda: jamba(
        num_hidden_layers=6, attn_layer_period=3, attn_layer_offset=0, expert_layer_period=3, expert_layer_offset=2,
        num_experts=3, num_experts_per_tok=1, tie_word_embeddings=True, mamba_conv_bias=False, mamba_proj_bias=True,
        num_key_value_heads=4),
    "jamba-dense": lambda: jamba(num_experts=1, attn_layer_period=2, attn_layer_offset=1),
    "llama": lambda: tf.LlamaForCausalLM(tf.LlamaConfig(
        vocab_size=96, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=48, rope_parameters={"rope_type": "default", "rope_theta": 500.0})),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_transformers_checkpoint_parity_and_roundtrip(case, tmp_path):
    torch.manual_seed(0)
    theirs = randomize(CASES[case]())
    theirs.generation_config.eos_token_id = None
    theirs.generation_config.pad_token_id = 0
    theirs.save_pretrained(tmp_path / "hf")
    ours = HybridLM.from_pretrained(tmp_path / "hf")
    ids = torch.randint(0, 96, (2, 19))
    with torch.no_grad():
        ref = theirs(ids).logits
        assert (ours(ids).logits - ref).abs().max().item() <= 1e-4
    prompt = ids[:, :7]
    greedy_theirs = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=10,
                                    do_sample=False, min_new_tokens=10)
    assert torch.equal(ours.generate(prompt, max_new_tokens=10), greedy_theirs)

    ours.save_pretrained(tmp_path / "back")
    back = type(theirs).from_pretrained(tmp_path / "back").eval()
    with torch.no_grad():
        assert (back(ids).logits - ref).abs().max().item() <= 1e-5


@pytest.mark.parametrize("preset", ["blackmamba-tiny", "moe-tiny"])
def test_native_layout_roundtrip_for_architectures_transformers_lacks(preset, tmp_path):
    model = HybridLM(ModelConfig.from_preset(preset)).eval()
    model.save_pretrained(tmp_path / "ckpt")
    loaded = HybridLM.from_pretrained(tmp_path / "ckpt")
    assert loaded.config == model.config
    ref = model.state_dict()
    assert ref.keys() == loaded.state_dict().keys()
    assert all(torch.equal(v, ref[k]) for k, v in loaded.state_dict().items())
    ids = torch.randint(0, 512, (1, 9))
    with torch.no_grad():
        assert torch.allclose(loaded(ids).logits, model(ids).logits, atol=1e-6)


def test_export_picks_the_transformers_family(tmp_path):
    from hybridlm.hf import export_family

    assert export_family(ModelConfig.from_preset("zamba2-tiny")) == "zamba2"
    assert export_family(ModelConfig.from_preset("zamba-tiny")) == "zamba"
    assert export_family(ModelConfig.from_preset("mamba2-tiny")) == "mamba2"
    assert export_family(ModelConfig.from_preset("transformer-tiny")) == "llama"
    assert export_family(ModelConfig.from_preset("jamba-tiny")) == "jamba"
    assert export_family(ModelConfig.from_preset("jamba-v0.1")) == "jamba"
    assert export_family(ModelConfig.from_preset("blackmamba-tiny")) == "hybridlm"


def test_broken_checkpoints_are_clear(tmp_path):
    with pytest.raises(CheckpointError, match="not found"):
        HybridLM.from_pretrained(tmp_path / "nowhere")
    model = HybridLM(ModelConfig.from_preset("mamba2-tiny"))
    model.save_pretrained(tmp_path / "ok")
    cfg = (tmp_path / "ok" / "config.json").read_text().replace('"num_hidden_layers": 4', '"num_hidden_layers": 5')
    (tmp_path / "ok" / "config.json").write_text(cfg)
    with pytest.raises(CheckpointError, match="missing"):
        HybridLM.from_pretrained(tmp_path / "ok")


@pytest.mark.parametrize("case", sorted(c for c in CASES if c.startswith("jamba")))
def test_jamba_layer_kinds_follow_periods_and_offsets(case):
    from hybridlm.hf import config_from_hf
    from hybridlm.kinds import ATTENTION, MOE

    theirs = CASES[case]().config
    cfg = config_from_hf(theirs.to_dict())
    mixers, ffns = cfg.tokens[0::2], cfg.tokens[1::2]
    assert [t == ATTENTION.token for t in mixers] == [k == "attention" for k in theirs.layers_block_type]
    assert [t == MOE.token for t in ffns] == [n > 1 for n in theirs.layers_num_experts]


def test_jamba_v01_preset_is_transformers_default_config():
    """transformers' JambaConfig defaults are Jamba-v0.1's; the preset reads and writes them."""
    from hybridlm.hf import FAMILIES, config_from_hf

    published = tf.JambaConfig().to_dict()
    preset = ModelConfig.from_preset("jamba-v0.1")
    assert config_from_hf(published).tokens == preset.tokens
    exported = FAMILIES["jamba"].config_to_hf(preset)
    for key in ("attn_layer_period", "attn_layer_offset", "expert_layer_period", "expert_layer_offset",
                "num_experts", "num_experts_per_tok", "intermediate_size", "num_key_value_heads", "mamba_dt_rank",
                "vocab_size", "hidden_size", "num_hidden_layers", "rms_norm_eps", "tie_word_embeddings"):
        assert exported[key] == published[key], key
