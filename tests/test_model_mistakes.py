"""Model-side mistakes, on the command line and in Python: damaged checkpoints, impossible sizes, NaN settings, huge
generations, prompts of the wrong type, runaway layer patterns; and the thread count generate picks."""

import json
import math
import time

import pytest
import torch
import yaml
from cli_helpers import one_line_error, run_cli

from hybridlm import HybridLM, HybridLMError, ModelConfig
from hybridlm.errors import ConfigError


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("ckpt") / "m"
    HybridLM(ModelConfig.from_preset("mamba2-tiny")).save_pretrained(d)
    return d


def _copy(src, dst, **files):
    import shutil

    shutil.copytree(src, dst)
    for name, content in files.items():
        (dst / name.replace("__", ".")).write_bytes(content)
    return dst


def test_damaged_checkpoints_are_one_line(saved, tmp_path, capsys):
    weights = (saved / "model.safetensors").read_bytes()
    cases = {
        "truncated": ({"model__safetensors": weights[: len(weights) // 2]}, "not a readable safetensors file"),
        "empty": ({"model__safetensors": b""}, "not a readable safetensors file"),
        "list": ({"config__json": b"[1, 2]"}, "config fields"),
        "no-section": ({"config__json": b'{"model_type": "hybridlm"}'}, "no 'hybridlm' section"),
    }
    for name, (files, why) in cases.items():
        d = _copy(saved, tmp_path / name, **files)
        one_line_error(capsys, "generate", d, "-n", "2", contains=(why,))
        with pytest.raises(HybridLMError, match=why.split("'")[0]):
            HybridLM.from_pretrained(d)


def test_impossible_sizes_and_nan_settings_are_one_line(tmp_path, capsys):
    base = ModelConfig.from_preset("zamba2-tiny").to_dict()
    cases = {
        "huge": ({"d_model": 10**9}, "parameters"),
        "nan-eps": ({"norm_eps": math.nan}, "norm_eps: must be a finite number, got nan"),
        "nan-std": ({"init_std": math.nan}, "init_std: must be a finite number"),
        "neg-std": ({"init_std": -0.02}, "init_std must be >= 0"),
        "inf-theta": ({"shared": {**base["shared"], "rope_theta": math.inf}}, "rope_theta"),
        "runaway": ({"layers": "m*1000000000"}, "more than 10,000 sub-layers"),
        "nested": ({"layers": "(((m)*1000)*1000)*1000"}, "more than 10,000 sub-layers"),
    }
    for name, (change, why) in cases.items():
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, **change}))
        t0 = time.perf_counter()
        one_line_error(capsys, "generate", path, "-n", "2", contains=(why,))
        assert time.perf_counter() - t0 < 30  # refused up front, not after allocating or expanding
    # planning needs no memory: a model too large to build is planned; one too large for torch is one line
    (tmp_path / "large.yaml").write_text(yaml.safe_dump({**base, "d_model": 10**6}))
    one_line_error(capsys, "generate", tmp_path / "large.yaml", contains=("more than the",))
    res = run_cli(capsys, "plan", tmp_path / "large.yaml", "--json")
    assert res.code == 0 and json.loads(res.out)["params"]["total"] > 10**12
    one_line_error(capsys, "plan", tmp_path / "huge.yaml", contains=("too large",))
    with pytest.raises(ConfigError, match="more than the"):
        HybridLM(ModelConfig.from_preset("zamba2-tiny").replace(d_model=10**9))
    one_line_error(capsys, "plan", "mamba2-tiny", "--layers", "m*" + "9" * 5000, contains=("sub-layers",))


def test_generation_is_bounded_by_the_context_its_cache_holds(capsys):
    one_line_error(capsys, "generate", "zamba2-tiny", "-n", "10000000",
                   contains=("exceed the model's max_seq_len 1,024", "KV cache", "at most 1,020"))
    from hybridlm.generation import check_length

    mamba = ModelConfig.from_preset("mamba2-tiny")  # a fixed-size state: may run past max_seq_len
    check_length(mamba, 1, 4, 10 * mamba.max_seq_len, torch.float32, torch.device("cpu"))
    model = HybridLM(ModelConfig.from_preset("transformer-tiny"))
    with pytest.raises(HybridLMError, match="max_seq_len"):
        model.generate(torch.tensor([[1, 2]]), max_new_tokens=model.config.max_seq_len)


def test_python_prompts_of_every_shape(capsys):
    model = HybridLM(ModelConfig.from_preset("mamba2-tiny")).eval()
    want = model.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=3)
    assert torch.equal(model.generate([5, 6, 7], max_new_tokens=3), want)
    assert torch.equal(model.generate([[5, 6, 7]], max_new_tokens=3), want)
    assert torch.equal(model.generate(torch.tensor([5, 6, 7], dtype=torch.int32), max_new_tokens=3), want)
    for bad, why in (
        (torch.tensor([[1.0, 2.0]]), "must be integers, got a float32"),
        (torch.zeros(1, 2, 3, dtype=torch.long), "got shape (1, 2, 3)"),
        ([[1, 2], [3]], "all rows the same length"),
        ("1 2 3", "got str"),
        (1.5, "got float"),
        ([], "at least one token"),
    ):
        with pytest.raises(HybridLMError, match=__import__("re").escape(why)):
            model.generate(bad, max_new_tokens=2)
    with pytest.raises(HybridLMError, match="integer token ids"):
        model(torch.tensor([[1.0, 2.0]]))
    with pytest.raises(HybridLMError, match="max_new_tokens"):
        model.generate([1], max_new_tokens=0)


def test_threads(capsys):
    one_line_error(capsys, "generate", "zamba2-tiny", "--threads", "-1", contains=("--threads",))
    torch.set_num_threads(2)
    res = run_cli(capsys, "generate", "zamba2-tiny", "-n", "2")  # 0.4M parameters: one thread decodes fastest
    assert res.code == 0 and torch.get_num_threads() == 1
    from hybridlm.threads import default_threads

    assert default_threads(432_520) == 1 and default_threads(21_973_020) is None  # 22M: torch's default
    torch.set_num_threads(2)
    res = run_cli(capsys, "generate", "zamba2-tiny", "-n", "2", "--threads", "2")
    assert res.code == 0 and torch.get_num_threads() == 2
