"""Context parallelism (hybridlm.parallel): the log-sum-exp merge against attention written from the
definition, split-KV decoding on one device against plain decoding, state passing against one scan,
the shard layout, and every tiny family sharded over 2, 3 and 4 gloo ranks against one process (one
torchrun launch)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from hybridlm import HybridLM, HybridLMError, ModelConfig
from hybridlm.config.presets import tiny_presets
from hybridlm.kinds import KINDS
from hybridlm.kinds.base import LayerKind
from hybridlm.layers.selective_scan import selective_scan
from hybridlm.layers.selective_scan import state_output as scan_state_output
from hybridlm.layers.ssd import ssd_chunked
from hybridlm.layers.ssd import state_output as ssd_state_output
from hybridlm.parallel import ContextParallel, attend, merge, split_kv_attention
from hybridlm.parallel.layout import SequenceLayout

ROOT = Path(__file__).resolve().parents[1]


def _qkv(b=2, h=4, kv=2, lq=3, n=37, d=8, dtype=torch.float32):
    g = torch.Generator().manual_seed(0)
    return (torch.randn(b, h, lq, d, generator=g).to(dtype), torch.randn(b, kv, n, d, generator=g).to(dtype),
            torch.randn(b, kv, n, d, generator=g).to(dtype))


def _reference(q, k, v, scale, mask=None):
    """Softmax attention from the definition in float64, GQA by repeating K/V."""
    e = q.shape[1] // k.shape[1]
    k, v = (t.double().repeat_interleave(e, dim=1) for t in (k, v))
    s = q.double() @ k.transpose(-1, -2) * scale
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    return s.softmax(-1) @ v, torch.logsumexp(s, -1)


def test_merged_partials_over_disjoint_keys_equal_attention_over_all_of_them():
    """Batch 2, GQA (4 query heads on 2 kv heads), an empty part among uneven splits."""
    q, k, v = _qkv()
    parts = [attend(q, k[:, :, a:b], v[:, :, a:b], 0.3) for a, b in ((0, 5), (5, 5), (5, 30), (30, 37))]
    assert torch.isneginf(parts[1].lse).all() and parts[1].out.abs().max() == 0  # empty: lse -inf, not 0
    out, lse = _reference(q, k, v, 0.3)
    merged = merge(parts)
    torch.testing.assert_close(merged.out.double(), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merged.lse.double(), lse, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(merge(parts[::-1]).out, merged.out)  # order does not matter (up to rounding)


def test_all_empty_parts_and_rows_that_see_no_key_give_zero_and_minus_inf_not_nan():
    q, k, v = _qkv(n=6)
    empty = merge([attend(q, k[:, :, :0], v[:, :, :0], 0.3)] * 2)
    assert empty.out.abs().max() == 0 and torch.isneginf(empty.lse).all()
    q_pos, k_pos = torch.tensor([0, 1, 8]), torch.arange(2, 8)  # queries 0 and 1 come before every key
    part = attend(q, k, v, 0.3, q_pos, k_pos)
    assert not part.out.isnan().any() and torch.isneginf(part.lse[:, :, :2]).all()
    assert part.out[:, :, :2].abs().max() == 0


def test_bf16_inputs_accumulate_in_fp32():
    q, k, v = _qkv(n=4096, dtype=torch.bfloat16)
    out, _ = _reference(q, k, v, 0.3)  # the same bf16 values, exactly in float64
    got = split_kv_attention(q.float(), k, v, 0.3, kv_block=1000)
    assert got.dtype == torch.float32 and (got.double() - out).abs().max() < 1e-5


@pytest.mark.parametrize("window", [None, 4])
def test_positions_give_causal_and_windowed_masks(window):
    q, k, v = _qkv(lq=9, n=9)
    pos = torch.arange(10, 19)
    mask = (pos[None, :] <= pos[:, None]) & ((pos[None, :] > pos[:, None] - window) if window else True)
    out, lse = _reference(q, k, v, 0.5, mask)
    got = attend(q, k, v, 0.5, pos, pos, window=window, kv_block=2, q_block=4)  # tiles and blocks split
    torch.testing.assert_close(got.out.double(), out, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got.lse.double(), lse, atol=1e-5, rtol=1e-5)


def test_split_kv_decoding_equals_sdpa():
    q, k, v = _qkv(lq=1, n=1000)
    ref = F.scaled_dot_product_attention(q, k, v, scale=0.2, enable_gqa=True)
    for block in (1000, 333, 64):
        torch.testing.assert_close(split_kv_attention(q, k, v, 0.2, kv_block=block), ref, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("name", tiny_presets())
def test_split_kv_decoding_on_one_device_equals_plain_decoding(name):
    """Outside a process group "tree" is one rank: the caches are read in blocks of 3 keys and merged."""
    model = HybridLM(ModelConfig.from_preset(name)).eval()
    ids = torch.randint(0, model.config.vocab_size, (2, 11))
    ref, ref_scores = model.generate(ids, max_new_tokens=6, return_scores=True)
    got, scores = model.generate(ids, max_new_tokens=6, return_scores=True,
                                 context_parallel=ContextParallel("tree", kv_block=3))
    assert torch.equal(got, ref)
    torch.testing.assert_close(scores, ref_scores, atol=1e-5, rtol=1e-5)


def test_state_passing_continues_a_mamba2_scan_exactly():
    """Two halves scanned from zero, the second corrected by the first's final state, equal one scan."""
    g = torch.Generator().manual_seed(0)
    b, l, h, p, gr, n = 2, 40, 4, 3, 2, 5
    x = torch.randn(b, l, h, p, generator=g)
    B, C = torch.randn(2, b, l, gr, n, generator=g)
    dt, A = torch.rand(b, l, h, generator=g) * 0.5, -torch.rand(h, generator=g) - 0.1
    y, final = ssd_chunked(x, dt, A, B, C, 8)
    y1, f1 = ssd_chunked(x[:, :17], dt[:, :17], A, B[:, :17], C[:, :17], 8)
    y2, f2 = ssd_chunked(x[:, 17:], dt[:, 17:], A, B[:, 17:], C[:, 17:], 8)
    y2 = y2 + ssd_state_output(C[:, 17:], dt[:, 17:], A, f1)
    decay = torch.exp(A * dt[:, 17:].sum(1))[..., None, None]
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(decay * f1 + f2, final, atol=1e-5, rtol=1e-5)


def test_state_passing_continues_a_mamba1_scan_exactly():
    g = torch.Generator().manual_seed(0)
    b, l, h, p, n = 2, 30, 2, 3, 4
    x, dt = torch.randn(b, l, h, p, generator=g), torch.rand(b, l, h, p, generator=g) * 0.5
    A = -torch.rand(h, p, n, generator=g) - 0.1
    B, C = torch.randn(2, b, l, h, n, generator=g)
    y, final = selective_scan(x, dt, A, B, C)
    y1, f1 = selective_scan(x[:, :11], dt[:, :11], A, B[:, :11], C[:, :11])
    y2, f2 = selective_scan(x[:, 11:], dt[:, 11:], A, B[:, 11:], C[:, 11:])
    y2 = y2 + scan_state_output(C[:, 11:], dt[:, 11:], A, f1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(torch.exp(A * dt[:, 11:].sum(1)[..., None]) * f1 + f2, final, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("length,world", [(13, 4), (8, 4), (5, 3), (7, 1)])
def test_layout_slices_the_prompt_and_keeps_shards_balanced(length, world):
    layout = SequenceLayout(length, world)
    assert sum(layout.lengths) == length and max(layout.lengths) - min(layout.lengths) <= 1
    starts_stops = [(s, s + n) for s, n in zip(layout.starts, layout.lengths, strict=True)]
    assert [layout.slice(r) for r in range(world)] == starts_stops
    counts = list(layout.lengths)
    for pos in range(length, length + 3 * world + 1):
        counts[layout.owner(pos)] += 1
        assert [layout.shard_length(r, pos + 1) for r in range(world)] == counts
        assert max(counts) - min(counts) <= 1 and max(counts) <= layout.capacity(pos + 1)


def test_a_kind_with_a_state_must_say_how_it_shards():
    class Stateful(LayerKind):
        token, name, section = "?", "stateful", "none"

        def allocate_cache(self, module, batch, max_len, dtype, device):
            return {"s": torch.zeros(batch)}

    with pytest.raises(HybridLMError, match="stateful layers do not support context parallelism"):
        Stateful().allocate_sharded_cache(None, 1, 8, torch.float32, "cpu", ContextParallel())
    assert KINDS["f"].allocate_sharded_cache(None, 1, 8, torch.float32, "cpu", ContextParallel()) is None


def test_prompt_shorter_than_the_ranks_and_bad_modes_are_one_line_errors():
    with pytest.raises(HybridLMError, match="context_parallel must be one of tree, ring"):
        ContextParallel("star")
    model = HybridLM(ModelConfig.from_preset("mamba2-tiny"))
    with pytest.raises(HybridLMError, match="context_parallel must be one of"):
        model.generate(torch.tensor([[1, 2]]), 2, context_parallel="allreduce")
    with pytest.raises(HybridLMError, match="prompts of one length"):
        model.generate(torch.tensor([[1, 2]]), 2, attention_mask=torch.tensor([[0, 1]]), context_parallel="tree")


def test_every_family_sharded_over_2_3_4_ranks_equals_one_process(tmp_path):
    """One launch of 4 gloo ranks checks groups of 2, 3 and 4: prefill logits at every position (ring and
    all-gather prefill) and greedy tokens and logits (tree and ring decoding), batch 2, prompts of N + 1
    and 41 tokens, for Zamba2 (shared blocks, LoRA), Zamba1, Jamba, transformer, sliding window (w),
    Mamba1 and Mamba2."""
    out = tmp_path / "records.json"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "4",
           str(ROOT / "tests" / "context_parallel_worker.py"), str(out)]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    records = json.loads(out.read_text())
    families = {"zamba2-tiny", "zamba-tiny", "jamba-tiny", "transformer-tiny", "swa", "mamba-tiny", "mamba2-tiny"}
    assert {r["config"] for r in records} >= families
    assert {(r["world"], r["check"]) for r in records} == {
        (w, c) for w in (2, 3, 4) for c in ("prefill-ring", "prefill-allgather", "decode-tree", "decode-ring")}
    bad = [r for r in records if r["max_diff"] > 1e-4 or not r["same_tokens"] or not r.get("same_on_every_rank", 1)]
    assert not bad, bad[:5]


def test_generate_cli_on_two_ranks_gives_the_single_process_tokens_and_counts_bytes(tmp_path):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    ids = tmp_path / "ids.txt"
    ids.write_text("5 6 7 8 9\n10 11 12\t13 14 15 16 17\n")  # 13 tokens, not a multiple of 2
    args = ["generate", "zamba2-tiny", "--prompt-ids-file", str(ids), "-n", "5", "--json"]
    runner = CliRunner()
    one = runner.invoke(app, args)
    two = runner.invoke(app, [*args, "--nproc", "2"])
    assert one.exit_code == 0 and two.exit_code == 0, (one.output, two.output)
    one, two = (json.loads(r.stdout.strip().splitlines()[-1]) for r in (one, two))
    assert two["prompt_ids"] == list(range(5, 18)) and two["new_ids"] == one["new_ids"]
    cfg = ModelConfig.from_preset("zamba2-tiny")  # 3 shared-attention calls: lse, then [out * w, w], in fp32
    calls = sum(KINDS[t].call for t in cfg.tokens)
    assert two["comm_bytes"]["decode_per_step"] == calls * cfg.shared.n_heads * (cfg.shared_head_dim + 2) * 4
    assert two["comm_bytes"]["prefill"] > 0 and "comm_bytes" not in one


def test_generate_cli_mistakes_are_one_line_before_any_rank_starts(tmp_path):
    from typer.testing import CliRunner

    from hybridlm.cli import app

    (tmp_path / "ids.txt").write_text("1 2 x")
    for extra, message in ((["--context-parallel", "star"], "--context-parallel must be one of tree, ring"),
                           (["--prompt-ids-file", str(tmp_path / "none.txt")], "no such file"),
                           (["--prompt-ids-file", str(tmp_path / "ids.txt")], "got 'x'"),
                           (["--prompt-ids", "1", "--prompt-ids-file", str(tmp_path / "ids.txt")], "give one prompt")):
        res = CliRunner().invoke(app, ["generate", "mamba2-tiny", *extra])
        assert isinstance(res.exception, HybridLMError) and message in str(res.exception), (extra, res.output)
    proc = subprocess.run([sys.executable, "-m", "hybridlm", "generate", "mamba2-tiny", "--prompt-ids", "1 2",
                           "--nproc", "3"], capture_output=True, text=True)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and lines == ["error: --nproc 3 needs a prompt of at least 3 tokens (one per rank), "
                                              "got 2"]
