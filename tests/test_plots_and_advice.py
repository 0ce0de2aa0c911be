"""Plots a person reads at a glance (checked on the figures themselves), GEMM advice that knows its noise, and
`bench compare` of two runs made with different settings."""

import json

import matplotlib
import pytest
from cli_helpers import run_cli

matplotlib.use("Agg")


def _block(block, pass_, seq_len, tps):
    return {"block": block, "pass": pass_, "seq_len": seq_len, "tokens_per_s": tps}


def test_block_plot_separates_passes_by_line_style_and_keeps_legends_off_the_lines():
    from hybridlm.bench.report import series_figure

    recs = [_block(b, p, s, 1000.0 * (i + 1)) for i, b in enumerate(["attention", "mamba2", "mlp"])
            for p in ("fwd", "fwd_bwd") for s in (64, 256, 1024)]
    fig = series_figure(recs, x="seq_len", y="tokens_per_s", group="block", style="pass", title="t", xlabel="x",
                        ylabel="y", logx=True, logy=True)
    ax = fig.axes[0]
    lines = {(line.get_color(), line.get_linestyle()) for line in ax.get_lines()}
    assert len(lines) == 6  # every (block, pass) its own line
    colours = {c for c, _ in lines}
    assert len(colours) == 3 and {s for _, s in lines} == {"-", "--"}  # colour = block, style = pass
    fig.canvas.draw()
    box = ax.get_window_extent()
    legends = [a for a in ax.get_children() if isinstance(a, matplotlib.legend.Legend)]
    assert len(legends) == 2 and {lg.get_title().get_text() for lg in legends} == {"block", "pass"}
    assert all(lg.get_window_extent().x0 >= box.x1 for lg in legends)  # outside the axes: nothing covered


def test_gemm_plot_names_its_marks_in_the_legend_not_on_the_lines():
    from hybridlm.bench.report import series_figure

    recs = [{"gemm": g, "hidden": h, "tflops": 1.0, "tflops_low": 0.8, "tflops_high": 1.2} for g in ("qkv", "total")
            for h in (496, 504, 512, 520)]
    fig = series_figure(recs, x="hidden", y="tflops", group="gemm", title="t", xlabel="h", ylabel="TFLOP/s",
                        marks=[(512, "requested h=512"), (520, "suggested h=520")])
    ax = fig.axes[0]
    assert not ax.texts  # no labels drawn over the lines
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "requested h=512" in labels and "suggested h=520" in labels
    assert len(ax.collections) == 2  # the trials' bands


def _total(hidden, time_s, spread):
    return {"sweep": "hidden", "gemm": "total", "hidden": hidden, "align": 8, "flops": 1e9, "time_s": time_s,
            "tflops": 1e9 / time_s / 1e12, "time_min_s": time_s * (1 - spread / 2),
            "time_max_s": time_s * (1 + spread / 2), "trials": 5}


def test_gemm_advice_is_judged_against_the_trials_spread():
    from hybridlm.bench.cli import _advice
    from hybridlm.bench.gemm import suggest

    noisy = [_total(1000, 1.0, 0.30), _total(1024, 0.85, 0.30)]  # 18% faster, but the trials spread 30%
    tip = suggest(noisy, hidden=1000, heads=8, vocab=1)["hidden"]
    assert tip["best"] == 1000 and tip["fastest"] == 1024 and tip["noise"] == pytest.approx(0.30)
    line = _advice("hidden", tip, 5)
    assert "within the noise (trials spread 30%" in line and line.endswith("keep it")
    quiet = [_total(1000, 1.0, 0.02), _total(1024, 0.85, 0.02)]
    tip = suggest(quiet, hidden=1000, heads=8, vocab=1)["hidden"]
    assert tip["best"] == 1024 and "beyond the noise (trials spread 2%)" in _advice("hidden", tip, 5)
    one = [dict(r, trials=1, time_min_s=r["time_s"], time_max_s=r["time_s"]) for r in quiet]
    assert "no noise estimate" in _advice("hidden", suggest(one, hidden=1000, heads=8, vocab=1)["hidden"], 1)


def test_bench_compare_is_titled_a_vs_b_and_matches_runs_of_other_settings(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    base = {"block": "mlp", "kind": "f", "config": "zamba2-20m", "batch": 1, "seq_len": 256, "d_model": 384,
            "pass": "fwd", "threads": 1, "dtype": "float32", "device": "cpu", "trials": 3}
    a = [{**base, "set": "mlp.activation=gelu", "time_s": 0.02, "flops": 4e9, "tflops": 0.2}]
    b = [{**base, "set": "mlp.activation=silu", "time_s": 0.01, "flops": 4.2e9, "tflops": 0.42}]
    (tmp_path / "a.json").write_text(json.dumps(a))
    (tmp_path / "b.json").write_text(json.dumps(b))
    res = run_cli(capsys, "bench", "compare", tmp_path / "a.json", tmp_path / "b.json")
    assert res.code == 0, res
    lines = [line.strip() for line in res.out.splitlines() if line.strip()]
    assert lines[0].startswith(f"A = {tmp_path / 'a.json'} vs B = {tmp_path / 'b.json'}")
    assert "set: A mlp.activation=gelu, B mlp.activation=silu" in res.out
    assert "2.00" in res.out and "matched nothing" not in res.err


def test_block_records_say_which_settings_made_them():
    from hybridlm.bench.blocks import BlockSweep, run_blocks

    recs = run_blocks(BlockSweep(config="zamba2-tiny", blocks=["mlp"], seq_len=[16], passes=["fwd"], warmup=0,
                                 trials=1, overrides={"mlp.activation": "silu"}))
    assert recs[0]["set"] == "mlp.activation=silu"


def test_anneal_loss_plot_labels_before_and_after():
    from hybridlm.train.plots import loss_figure

    records = [{"step": s, "loss": 5.0 - 0.1 * s, "lr": 1e-3} for s in range(1, 6)]
    records[-1]["eval_loss"] = 4.321
    fig = loss_figure(records, eval_before={"loss": 4.987, "ppl": 146.5})
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts]
    assert texts == ["before: 4.987", "after: 4.321"]
    assert "4.987 -> 4.321" in ax.get_title()
    held_out = [line for line in ax.get_lines() if line.get_label() == "held-out loss"][0]
    assert list(held_out.get_xdata()) == [0, 5]  # the starting weights' point at step 0
    plain = loss_figure(records).axes[0]  # pretraining from scratch: no "before"
    assert [t.get_text() for t in plain.texts] == ["final: 4.321"]
