"""BlackMamba in Zyphra's released format, against a reference forward written from their published code
(tests/blackmamba_reference.py): their loader reads our export strictly and gives the same logits and
greedy tokens; our loader reads their layout with the same result; parameter counts agree."""

import json

import pytest
import torch
import torch.nn.functional as F
from blackmamba_reference import MambaModel, config, load, save_released
from test_hf_parity import randomize

from hybridlm import HybridLM, ModelConfig
from hybridlm.errors import ConfigError

FIELDS = {"num_layers": 6, "hidden_size": 32, "state_size": 8, "conv_dimension": 4, "vocab_size": 96,
          "expansion_factor": 2, "mamba_moe_layers": ["r", "4", "r", "1", "r", "4"], "ffn_hidden_size": 48,
          "add_bias_linear": False, "swiglu": True, "max_sequence_length": 2048}


def _compare(ours: HybridLM, theirs: MambaModel):
    ids = torch.randint(0, 96, (2, 17))
    with torch.no_grad():
        ref = theirs(ids)
        assert (ours(ids).logits - ref).abs().max().item() <= 1e-4
        assert ref.abs().max() > 1  # not a vanishing signal
    prompt = ids[:, :5]
    assert torch.equal(ours.generate(prompt, max_new_tokens=8), theirs.greedy(prompt, 8))


def _their_model(fields, activation=F.silu):
    torch.manual_seed(0)
    return randomize(MambaModel(config(fields, activation)))


@pytest.mark.parametrize("variant", ["swiglu-sigmoid", "gelu-their-default", "top1-softmax", "unwrapped"])
def test_their_checkpoint_loads_with_same_logits(variant, tmp_path):
    fields = dict(FIELDS)
    activation = F.silu
    if variant == "gelu-their-default":  # what their code runs: MambaConfig.activation_func stays F.gelu
        fields["activation_func"], activation = "gelu", F.gelu
    if variant == "top1-softmax":
        fields["routing_mode"] = "top1"
    theirs = _their_model(fields, activation)
    save_released(theirs, fields, tmp_path / "bm")
    if variant == "unwrapped":  # their save_pretrained: the module's own state dict, no "model" wrapper
        torch.save(theirs.state_dict(), tmp_path / "bm" / "pytorch_model.bin")
    ours = HybridLM.from_pretrained(tmp_path / "bm")
    assert ours.config.moe.router_activation == ("softmax" if variant == "top1-softmax" else "sigmoid")
    assert ours.num_parameters() == sum(p.numel() for p in theirs.parameters())
    _compare(ours, theirs)


def test_export_loads_strictly_in_their_loader(tmp_path):
    torch.manual_seed(1)
    ours = randomize(HybridLM(ModelConfig.from_preset("blackmamba-tiny").replace(
        layers="r e r f r e", **{"mlp.ffn_dim": 96, "mlp.gated": True, "mlp.activation": "silu"})))
    ours.save_pretrained(tmp_path / "bm", format="blackmamba")
    written = json.loads((tmp_path / "bm" / "config.json").read_text())
    assert written["mamba_moe_layers"] == ["r", "4", "r", "1", "r", "4"] and written["swiglu"] is True
    theirs = load(tmp_path / "bm", activation=F.silu)  # strict load_state_dict inside
    _compare(ours, theirs)
    back = HybridLM.from_pretrained(tmp_path / "bm")
    assert back.config.tokens == ours.config.tokens
    assert all(torch.equal(v, ours.state_dict()[k]) for k, v in back.state_dict().items())


def test_published_size_equals_their_module_tree():
    fields = {"num_layers": 36, "hidden_size": 1472, "state_size": 16, "conv_dimension": 4, "vocab_size": 50304,
              "expansion_factor": 2, "mamba_moe_layers": ["r", "8"] * 18, "ffn_hidden_size": 3872,
              "add_bias_linear": False, "swiglu": True, "max_sequence_length": 2048}
    with torch.device("meta"):
        theirs = sum(p.numel() for p in MambaModel(config(fields)).parameters())  # tied head counted once
        preset = ModelConfig.from_preset("blackmamba-2.8b")
        assert HybridLM(preset).num_parameters() == theirs == 2_783_213_584
    from hybridlm.hf import config_from_hf

    loaded = config_from_hf(fields)
    assert loaded.tokens == preset.tokens and loaded.moe == preset.moe and loaded.final_norm_kind == "layernorm"


@pytest.mark.parametrize("change, message", [
    ({"mamba_moe_layers": ["r8"] * 6}, "'r8' is not supported"),
    ({"mamba_moe_layers": ["r", "4", "r", "2", "r", "4"]}, "different expert counts"),
    ({"add_bias_linear": True}, "add_bias_linear"),
    ({"mamba_moe_layers": ["r", "4"]}, "2 entries for num_layers=6"),
])
def test_unsupported_configs_are_one_clear_error(change, message):
    from hybridlm.hf import config_from_hf

    with pytest.raises(ConfigError, match=message):
        config_from_hf({**FIELDS, **change})


def test_softmax_routing_does_not_export():
    cfg = ModelConfig.from_preset("blackmamba-tiny").replace(**{"moe.router_activation": "softmax"})
    with pytest.raises(ConfigError, match="sigmoid"):
        HybridLM(cfg).save_pretrained("unused", format="blackmamba")
