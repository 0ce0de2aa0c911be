"""mamba_ssm's native checkpoints (config.json with d_model / n_layer / ssm_cfg, pytorch_model.bin with
backbone.* names): written by hand from transformers' random models as mamba_ssm lays them out, they load
with the logits of transformers' own Mamba / Mamba2; hybridlm's export reads back and converts to the
transformers formats with the same logits."""

import json

import pytest
import torch
import transformers as tf
from test_hf_parity import randomize

from hybridlm import HybridLM, ModelConfig
from hybridlm.errors import ConfigError
from hybridlm.plan import params

MAMBA1 = dict(vocab_size=93, hidden_size=32, num_hidden_layers=3, state_size=8, time_step_rank=5)
MAMBA2 = dict(vocab_size=93, hidden_size=32, num_hidden_layers=3, state_size=8, num_heads=8, head_dim=8, n_groups=2,
              chunk_size=4)


def _as_mamba_ssm(theirs, directory, mamba2: bool):
    """What MambaLMHeadModel.save_pretrained writes for these weights: its config fields and state dict."""
    c = theirs.config
    ssm = ({"layer": "Mamba2", "d_state": c.state_size, "headdim": c.head_dim, "ngroups": c.n_groups,
            "chunk_size": c.chunk_size} if mamba2 else {"d_state": c.state_size, "dt_rank": c.time_step_rank})
    config = {"d_model": c.hidden_size, "n_layer": c.num_hidden_layers, "vocab_size": c.vocab_size, "ssm_cfg": ssm,
              "rms_norm": True, "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 1}
    state = {k.replace("backbone.embeddings.", "backbone.embedding."): v for k, v in theirs.state_dict().items()}
    state["lm_head.weight"] = state["backbone.embedding.weight"]  # tied, saved under both names
    directory.mkdir()
    torch.save(state, directory / "pytorch_model.bin")
    (directory / "config.json").write_text(json.dumps(config))


@pytest.mark.parametrize("mamba2", [False, True], ids=["mamba1", "mamba2"])
def test_mamba_ssm_checkpoint_matches_transformers(mamba2, tmp_path):
    torch.manual_seed(0)
    cls, kw = (tf.Mamba2ForCausalLM, MAMBA2) if mamba2 else (tf.MambaForCausalLM, MAMBA1)
    theirs = randomize(cls((tf.Mamba2Config if mamba2 else tf.MambaConfig)(**kw, tie_word_embeddings=True)))
    _as_mamba_ssm(theirs, tmp_path / "ssm", mamba2)
    ours = HybridLM.from_pretrained(tmp_path / "ssm")
    ids = torch.randint(0, 93, (2, 13))
    with torch.no_grad():
        ref = theirs(ids).logits
        assert (ours(ids).logits - ref).abs().max().item() <= 1e-4
    prompt = ids[:, :4]
    greedy = theirs.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6, do_sample=False,
                             min_new_tokens=6, eos_token_id=None, pad_token_id=0)
    assert torch.equal(ours.generate(prompt, max_new_tokens=6), greedy)


@pytest.mark.parametrize("preset", ["mamba-tiny", "mamba2-tiny"])
def test_export_reads_back_and_converts_to_transformers(preset, tmp_path):
    torch.manual_seed(1)
    model = randomize(HybridLM(ModelConfig.from_preset(preset)))
    model.save_pretrained(tmp_path / "ssm", format="mamba_ssm")
    written = json.loads((tmp_path / "ssm" / "config.json").read_text())
    assert written["vocab_size"] == 500 and written["pad_vocab_size_multiple"] == model.config.pad_vocab_multiple
    assert written["ssm_cfg"].get("layer", "Mamba1") == ("Mamba2" if preset == "mamba2-tiny" else "Mamba1")
    keys = torch.load(tmp_path / "ssm" / "pytorch_model.bin", weights_only=True).keys()
    assert {"backbone.embedding.weight", "lm_head.weight", "backbone.norm_f.weight"} <= set(keys)
    back = HybridLM.from_pretrained(tmp_path / "ssm")
    assert back.config.tokens == model.config.tokens
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())

    back.save_pretrained(tmp_path / "hf", format="hf")
    theirs = tf.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    ids = torch.randint(0, 500, (1, 11))
    with torch.no_grad():
        assert (theirs(ids).logits - model(ids).logits).abs().max().item() <= 1e-4


def test_published_configs_give_the_published_sizes():
    from hybridlm.hf import config_from_hf

    mamba_130m = {"d_model": 768, "n_layer": 24, "vocab_size": 50277, "ssm_cfg": {}, "rms_norm": True,
                  "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 8}
    mamba2_27b = {"d_model": 2560, "d_intermediate": 0, "n_layer": 64, "vocab_size": 50277,
                  "ssm_cfg": {"layer": "Mamba2"}, "attn_layer_idx": [], "attn_cfg": {}, "rms_norm": True,
                  "residual_in_fp32": True, "fused_add_norm": True, "pad_vocab_size_multiple": 16,
                  "tie_embeddings": True}
    for data, preset in ((mamba_130m, "mamba-130m"), (mamba2_27b, "mamba2-2.7b")):
        cfg = config_from_hf(data)
        assert cfg.tokens == ModelConfig.from_preset(preset).tokens
        assert params(cfg).total == params(ModelConfig.from_preset(preset)).total


@pytest.mark.parametrize("change, message", [
    ({"attn_layer_idx": [1]}, "attn_layer_idx"),
    ({"d_intermediate": 64}, "d_intermediate"),
    ({"ssm_cfg": {"layer": "Mamba3"}}, "Mamba3"),
    ({"ssm_cfg": {"layer": "Mamba2", "norm_before_gate": True}}, "norm_before_gate"),
    ({"ssm_cfg": {"d_stat": 8}}, "d_stat"),
])
def test_unsupported_configs_are_one_clear_error(change, message):
    from hybridlm.hf import config_from_hf

    with pytest.raises(ConfigError, match=message):
        config_from_hf({"d_model": 32, "n_layer": 2, "vocab_size": 64, **change})


def test_legacy_pickle_bin_loads_without_mmap(tmp_path):
    model = HybridLM(ModelConfig.from_preset("mamba-tiny"))
    model.save_pretrained(tmp_path / "ssm", format="mamba_ssm")
    state = torch.load(tmp_path / "ssm" / "pytorch_model.bin", weights_only=True)
    torch.save(state, tmp_path / "ssm" / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    back = HybridLM.from_pretrained(tmp_path / "ssm")
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in back.state_dict().items())
