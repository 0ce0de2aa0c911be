import json

import pytest

from hybridlm import ConfigError, ModelConfig, presets
from hybridlm.config import pattern as pat


def test_pattern_expansion_and_groups():
    assert pat.expand("m*2 (g m r)*2 a") == ["m", "m", "g", "m", "r", "g", "m", "r", "a"]
    assert pat.expand("((a f)*2 e)*2") == ["a", "f", "a", "f", "e"] * 2
    tokens = pat.expand("m*5 (g m m*5)*5 g m m*2")
    assert pat.expand(pat.compress(tokens)) == tokens


def test_foreign_formats():
    layers, experts = pat.from_cookbook("r 8 r 8 m g m a")
    assert layers == "r e r e m g m a" and experts == 8
    assert pat.from_megatron("M-M*|E") == "m f m a e"
    assert pat.from_attn_layer_idx(4, [1, 3], "m", mlp=True) == "m f a f m f a f"
    assert pat.to_megatron(pat.expand("m f a e")) == "M-*E"
    cfg = ModelConfig.from_dict({"d_model": 64, "vocab_size": 100, "cookbook_layers": "r 4 r 4",
                                 "moe": {"top_k": 2}})
    assert cfg.tokens == ["r", "e", "r", "e"] and cfg.moe.n_experts == 4 and cfg.moe.top_k == 2
    cfg = ModelConfig.from_dict({"d_model": 64, "vocab_size": 100, "n_layer": 3, "attn_layer_idx": [1],
                                 "attention": {"n_heads": 4}})
    assert cfg.tokens == ["m", "a", "m"]


@pytest.mark.parametrize("overrides, field", [
    ({"layers": "m x"}, "layers"),
    ({"layers": "m g"}, "layers"),
    ({"layers": "g a"}, "layers"),
    ({"layers": "(m m"}, "layers"),
    ({"layers": "a", "attention": {"n_heads": 5}}, "attention.n_heads"),
    ({"layers": "a", "attention": {"n_heads": 4, "n_kv_heads": 3}}, "attention"),
    ({"layers": "e", "moe": {"n_experts": 4, "top_k": 5}}, "top_k"),
    ({"layers": "g m", "shared": {"n_heads": 4, "lora_rank": 1000, "lora_mlp": True}}, "shared.lora_rank"),
    ({"layers": "g m", "shared": {"n_heads": 4, "lora_qkv": True}}, "lora_rank"),
    ({"layers": "m", "mamba2": {"headdim": 48}}, "mamba2.headdim"),
    ({"layers": "m", "mamba2": {"headdim": 16, "ngroups": 3}}, "mamba2.ngroups"),
    ({"layers": "m", "d_model": -4}, "d_model"),
    ({"layers": "m", "colour": "red"}, "colour"),
    ({"layers": "r", "mamba1": {"n_heads": 3}}, "mamba1.n_heads"),
])
def test_bad_config_is_one_line_naming_the_field(overrides, field):
    base = {"d_model": 64, "vocab_size": 100}
    with pytest.raises(ConfigError) as err:
        ModelConfig(**{**base, **overrides})
    msg = str(err.value)
    assert "\n" not in msg and field in msg, msg


def test_save_load_roundtrip_yaml_json(tmp_path):
    cfg = ModelConfig.from_preset("zamba2-tiny")
    for suffix in (".yaml", ".json"):
        path = cfg.save(tmp_path / f"cfg{suffix}")
        assert ModelConfig.from_file(path) == cfg


def test_from_file_reads_transformers_config(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({
        "model_type": "mamba2", "hidden_size": 64, "num_hidden_layers": 3, "vocab_size": 128, "state_size": 16,
        "head_dim": 16, "num_heads": 8, "n_groups": 2, "expand": 2}))
    cfg = ModelConfig.from_file(tmp_path)
    assert cfg.tokens == ["m"] * 3 and cfg.mamba2.ngroups == 2 and cfg.mamba2_n_heads == 8


def test_bad_files_are_clear(tmp_path):
    (tmp_path / "bad.yaml").write_text("d_model: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        ModelConfig.from_file(tmp_path / "bad.yaml")
    with pytest.raises(ConfigError, match="not found"):
        ModelConfig.from_file(tmp_path / "missing.yaml")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt_neox"}))
    with pytest.raises(ConfigError, match="model_type 'gpt_neox' is not supported"):
        ModelConfig.from_file(tmp_path)


def test_replace_revalidates():
    cfg = ModelConfig.from_preset("zamba2-tiny")
    assert cfg.replace(**{"mamba2.d_state": 8}).mamba2.d_state == 8
    with pytest.raises(ConfigError, match="headdim"):
        cfg.replace(**{"mamba2.headdim": 48})


def test_preset_names_and_unknown():
    names = presets()
    for expected in ("zamba2-1.2b", "zamba2-2.7b", "zamba2-7b", "zamba-7b", "mamba-130m", "mamba-370m", "mamba-790m",
                     "mamba-1.4b", "mamba-2.8b", "mamba2-2.7b", "blackmamba-2.8b", "jamba-v0.1", "llama-2-7b"):
        assert expected in names
    with pytest.raises(ConfigError, match="unknown preset"):
        ModelConfig.from_preset("gpt-5")


def test_published_hybrid_layer_positions():
    def hybrid_layers(name):
        out, i = [], 0
        for t in ModelConfig.from_preset(name).tokens:
            if t == "g":
                out.append(i)
            else:
                i += 1
        return out

    assert hybrid_layers("zamba2-1.2b") == [5, 11, 17, 23, 29, 35]
    assert hybrid_layers("zamba2-2.7b") == [6, 12, 18, 24, 30, 36, 42, 47, 51]
    assert hybrid_layers("zamba2-7b") == [6, 11] + list(range(17, 78, 6))
    assert hybrid_layers("zamba-7b") == [2, 7] + list(range(13, 74, 6))


def test_compress_roundtrips_random_patterns():
    import random

    rng = random.Random(0)
    for _ in range(300):
        tokens = [rng.choice("rmafe") for _ in range(rng.randint(1, 40))]
        if rng.random() < 0.5:
            tokens = tokens[: rng.randint(1, 5)] * rng.randint(2, 6)
        assert pat.expand(pat.compress(tokens)) == tokens
    assert pat.compress(pat.expand("(r e)*18")) == "(r e)*18"
