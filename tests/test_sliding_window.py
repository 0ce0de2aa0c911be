"""Sliding-window attention ('w'), added through the layer-kind registry: exact against a masked
reference written from the definition, incremental decoding equal to the full forward, a cache of
`window` entries, exact planner counts, block benchmark and training."""

import json

import pytest
import torch
import torch.nn.functional as F
from _plan_helpers import count_flops
from typer.testing import CliRunner

from hybridlm import HybridLM, ModelConfig
from hybridlm.bench.blocks import BLOCKS, PassRunner, block_config, block_flops, build_block
from hybridlm.cli import app
from hybridlm.layers.sliding_window import SlidingWindowAttention
from hybridlm.plan import flops, memory, params

WINDOW = 5


def _cfg(layers="(m m w m)*2 a", window=WINDOW, **fields):
    data = {"name": "swa", "d_model": 32, "layers": layers, "vocab_size": 64,
            "attention": {"n_heads": 4, "n_kv_heads": 2, "window": window},
            "mamba2": {"d_state": 8, "headdim": 8, "chunk_size": 8}, **fields}
    return ModelConfig(**data)


def _reference(layer, x):
    """Definition: position i attends positions j with i - window < j <= i; one dense masked softmax."""
    b, l, _ = x.shape
    q, k, v = layer.project(x, 0)
    i, j = torch.arange(l)[:, None], torch.arange(l)[None, :]
    mask = (j <= i) & (j > i - layer.window)
    k, v = (t.repeat_interleave(layer.n_heads // layer.n_kv_heads, dim=1) for t in (k, v))
    scores = (q @ k.transpose(-1, -2)) * layer.scale
    y = scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v
    return layer.o_proj(y.transpose(1, 2).reshape(b, l, -1))


@pytest.mark.parametrize("seq_len", [1, 4, 5, 6, 10, 23])
@pytest.mark.parametrize("kv_heads", [1, 4])
def test_layer_equals_the_masked_definition(seq_len, kv_heads):
    torch.manual_seed(seq_len)
    layer = SlidingWindowAttention(16, 16, 4, kv_heads, 8, rope=True, window=WINDOW)
    x = torch.randn(2, seq_len, 16)
    torch.testing.assert_close(layer(x), _reference(layer, x), atol=1e-5, rtol=1e-5)


def test_window_changes_the_output_only_beyond_the_window():
    torch.manual_seed(0)
    full = ModelConfig(**{**_cfg().to_dict(), "layers": "(m m a m)*2 a"})
    swa = _cfg()
    a, w = HybridLM(full), HybridLM(swa)
    w.load_state_dict(a.state_dict())  # same weights: the 'w' layers are attention layers with a window
    ids = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        la, lw = a(ids).logits, w(ids).logits
    torch.testing.assert_close(la[:, :WINDOW], lw[:, :WINDOW])  # inside the window: identical
    assert (la[:, WINDOW:] - lw[:, WINDOW:]).abs().max() > 1e-3


def test_incremental_decoding_reproduces_the_full_forward():
    torch.manual_seed(1)
    model = HybridLM(_cfg()).eval()
    ids = torch.randint(0, 64, (2, 31))
    with torch.no_grad():
        full = model(ids).logits
        cache = model.allocate_cache(2, 31)
        # a prompt longer than the window, single steps, a chunk after earlier tokens, steps again
        pieces = [(0, 9), (9, 10), (10, 11), (11, 19), *[(t, t + 1) for t in range(19, 31)]]
        inc = torch.cat([model(ids[:, a:b], cache=cache).logits for a, b in pieces], dim=1)
    torch.testing.assert_close(inc, full, atol=1e-4, rtol=1e-4)


def test_generation_crossing_the_window_equals_greedy_without_cache():
    torch.manual_seed(2)
    model = HybridLM(_cfg()).eval()
    prompt = torch.randint(0, 64, (2, 8))  # longer than the window; 14 new tokens cross it again
    out = model.generate(prompt, max_new_tokens=14)
    ids = prompt
    with torch.no_grad():
        for _ in range(14):
            ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(out, ids)


@pytest.mark.parametrize("max_len", [3, WINDOW, 100, 10_000])
def test_cache_holds_at_most_the_window_and_the_planner_counts_it(max_len):
    cfg = _cfg()
    model = HybridLM(cfg)
    cache = model.allocate_cache(2, max_len)
    w_slots = [slot for slot, t in zip(cache.slots, cfg.tokens, strict=True) if t == "w"]
    assert all(slot["k"].shape[2] == min(WINDOW, max_len) for slot in w_slots)
    assert memory(cfg, batch=2, seq_len=max_len, dtype_bytes=4).inference_cache_bytes == cache.nbytes


def test_parameters_equal_the_meta_model():
    cfg = _cfg()
    with torch.device("meta"):
        n = HybridLM(cfg).num_parameters()
    report = params(cfg)
    assert report.total == n and report.by_component["sliding_window"] > 0
    assert [r["name"] for r in report.per_layer].count("sliding_window") == 2


@pytest.mark.parametrize("seq_len", [4, WINDOW, 12, 15])  # one causal pass; blocks, exact and padded
def test_flops_equal_the_flop_counter(seq_len):
    cfg = _cfg()
    torch.manual_seed(0)
    model = HybridLM(cfg)
    ids = torch.randint(0, 64, (2, seq_len))
    with torch.no_grad():
        fwd, _ = count_flops(lambda: model(ids))
    train, _ = count_flops(lambda: model(ids).logits.sum().backward())
    r = flops(cfg, seq_len, batch=2, device="cpu")
    assert r.forward_per_token * 2 * seq_len == pytest.approx(fwd, rel=1e-9)
    assert r.train_per_token * 2 * seq_len == pytest.approx(train, rel=1e-9)


def test_window_work_grows_linearly_where_full_attention_grows_quadratically():
    cfg = _cfg(layers="w", window=64)
    core = [flops(cfg, n, attention=a).by_component["sliding_window_core"] * n
            for n in (1024, 2048) for a in ("kernel", "causal")]
    assert core[2] == 2 * core[0] and core[3] == pytest.approx(2 * core[1], rel=0.02)
    assert core[1] < core[0]  # the ideal counts only pairs inside the window


def test_block_benchmark_entry_times_the_planner_flops():
    assert BLOCKS["sliding-window"] == "w"
    cfg = block_config(_cfg(), "sliding-window")
    module = build_block(cfg, "sliding-window")
    runner = PassRunner(module, 1, 2, 17, "fwd_bwd")
    runner.setup()
    measured, _ = count_flops(runner.fn)
    assert measured == block_flops(cfg, "sliding-window", 2, 17, "fwd_bwd")


def test_plan_compare_and_train_with_sliding_window(tmp_path):
    cfg_path = tmp_path / "swa.yaml"
    _cfg().save(cfg_path)
    runner = CliRunner()
    res = runner.invoke(app, ["plan", str(cfg_path), "--json", "--seq-len", "64"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["params"]["total"] == params(_cfg()).total
    run = {"model": {**_cfg().to_dict(), "vocab_size": 512},
           "data": {"sources": [{"path": "synth://web", "weight": 1.0}], "seq_len": 24, "eval_path": None},
           "train": {"steps": 3, "batch_size": 2, "threads": 1, "progress": False, "plots": False, "export": False}}
    (tmp_path / "run.json").write_text(json.dumps(run))
    res = runner.invoke(app, ["train", str(tmp_path / "run.json"), "-o", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.output.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["final_loss"] == summary["final_loss"]  # finite, not NaN


def test_bad_window_is_one_line():
    with pytest.raises(Exception, match=r"attention: window must be >= 1, got 0"):
        _cfg(window=0)


def test_gradients_flow_through_the_blocked_path():
    torch.manual_seed(3)
    layer = SlidingWindowAttention(16, 16, 4, 2, 8, window=4)
    x = torch.randn(1, 11, 16, requires_grad=True)
    ref_x = x.detach().clone().requires_grad_()
    layer(x).square().sum().backward()
    _reference(layer, ref_x).square().sum().backward()
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-5, rtol=1e-5)
    assert F.mse_loss(x.grad, ref_x.grad) < 1e-10
