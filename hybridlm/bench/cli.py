"""`hybridlm bench ...`: thin typer commands over the bench API (blocks, comms, gemm, compare)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
import yaml
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from hybridlm.bench import report
from hybridlm.bench.blocks import BLOCKS, PASSES, BlockSweep, load_sweep, plan_blocks, run_blocks
from hybridlm.bench.comms import CommsConfig, parse_size, run_comms, size_scan
from hybridlm.bench.comms_math import OPS
from hybridlm.bench.compare import compare_records, run_differences
from hybridlm.bench.decode import MODES as DECODE_MODES
from hybridlm.bench.decode import DecodeSweep, parse_tokens, plot_decode, run_decode
from hybridlm.bench.gemm import SWEEPS, gemm_sweep, suggest
from hybridlm.bench.report import Column, fmt_float, fmt_us, human_bytes
from hybridlm.errors import HybridLMError, check_output_file

app = typer.Typer(
    help="Benchmarks: model blocks (blocks), collectives (comms), GEMM shapes (gemm), long-context decoding across "
    "ranks (decode), comparing runs.",
    no_args_is_help=True,
)

JsonOpt = Annotated[Path | None, typer.Option("--json", help="Write the records (a JSON list) here.")]
CsvOpt = Annotated[Path | None, typer.Option("--csv", help="Write the records as CSV here.")]
PlotOpt = Annotated[Path | None, typer.Option("--plot", help="Save a PNG plot here.")]


def check_outputs(json_path: Path | None = None, csv_path: Path | None = None, plot: Path | None = None) -> None:
    """Before the benchmark runs: each output path can be written (a mistyped directory is found now, not after
    minutes of measuring)."""
    for option, path in (("--json", json_path), ("--csv", csv_path), ("--plot", plot)):
        if path is not None:
            check_output_file(path, option)


@contextmanager
def progress_bar(label: str) -> Iterator:
    """A transient bar on stderr; yields a callback (done, total, what).

    Redrawn only on updates: rich's refresh thread would otherwise wake up mid-measurement and
    compete with the benchmark's threads for the cores.
    """
    bar = Progress(
        TextColumn(label), BarColumn(), MofNCompleteColumn(), TextColumn("{task.description}"),
        TimeElapsedColumn(), console=Console(stderr=True), transient=True, auto_refresh=False,
    )  # fmt: skip
    with bar:
        task = bar.add_task("", total=None)

        def update(done: int, total: int, *what: object) -> None:
            bar.update(task, completed=done, total=total, description=" ".join(map(str, what)), refresh=True)

        yield update


@app.command()
def blocks(
    config: Annotated[
        str | None, typer.Option(help="Preset or config file the blocks are built from.")
    ] = None,
    block: Annotated[
        list[str] | None, typer.Option("--block", help=f"Repeatable: {', '.join(BLOCKS)}; default all.")
    ] = None,
    d_model: Annotated[list[int] | None, typer.Option(help="Repeatable; default the config's.")] = None,
    seq_len: Annotated[list[int] | None, typer.Option(help="Repeatable; default 64 and 256.")] = None,
    batch: Annotated[list[int] | None, typer.Option(help="Repeatable; default 1.")] = None,
    pass_: Annotated[
        list[str] | None, typer.Option("--pass", help=f"Repeatable: {', '.join(PASSES)}; default all.")
    ] = None,
    threads: Annotated[
        list[int] | None, typer.Option(help="Repeatable CPU thread counts; default torch's.")
    ] = None,
    warmup: Annotated[int | None, typer.Option(help="Untimed calls per point (default 1).")] = None,
    trials: Annotated[int | None, typer.Option(help="Timed calls per point (default 3).")] = None,
    dtype: Annotated[
        str | None, typer.Option(help="auto (CUDA bf16, CPU fp32), float32, bfloat16, float16.")
    ] = None,
    device: Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Repeatable config override, e.g. mlp.activation=silu.")
    ] = None,
    sweep: Annotated[
        Path | None, typer.Option(help="YAML sweep (keys as these flags); flags override it.")
    ] = None,
    force: Annotated[bool, typer.Option(help="Allow half precision on CPU (emulated, very slow).")] = False,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Time forward, backward and forward+backward of each block type; TFLOP/s from the planner's FLOPs."""
    check_outputs(json_path, csv_path, plot)
    fields = load_sweep(sweep) if sweep is not None else {}
    flags = {"config": config, "blocks": block, "d_model": d_model, "seq_len": seq_len, "batch": batch,
             "passes": pass_, "threads": threads, "warmup": warmup, "trials": trials, "dtype": dtype,
             "device": device}  # fmt: skip
    fields.update({k: v for k, v in flags.items() if v is not None})
    if set_:
        fields["overrides"] = {**fields.get("overrides", {}), **_parse_overrides(set_)}
    config_sweep = BlockSweep(**fields, force=force)
    plan_blocks(config_sweep)  # bad input fails before the progress bar starts
    with progress_bar("blocks") as update:
        records = run_blocks(config_sweep, progress=update)
    _blocks_table(records)
    report.write_outputs(records, json_path, csv_path)
    if plot is not None:
        r = records[0]
        # colour: the block (with any other varied setting); line style: the first of pass / threads that varies
        varied = [k for k in ("pass", "threads", "d_model", "batch") if len({x[k] for x in records}) > 1]
        style = varied.pop(0) if varied and varied[0] in ("pass", "threads") else None
        rows = [{**x, "block": " ".join([x["block"], *(_label(k, x[k]) for k in varied)])} for x in records]
        report.plot_series(
            rows, x="seq_len", y="tokens_per_s", group="block", style=style,
            path=plot, logx=True, logy=True, xlabel="sequence length (tokens)", ylabel="tokens/s",
            title=f"block throughput ({r['config']}{', ' + r['set'] if r.get('set') else ''}, {r['device']}, "
            f"{r['dtype']})",
        )  # fmt: skip


def _blocks_table(records: list[report.Record]) -> None:
    varying = [k for k in ("threads", "dtype") if len({r[k] for r in records}) > 1]
    ms = lambda v: f"{v * 1e3:.2f}"  # noqa: E731
    cols = [Column(k, k) for k in ("block", "batch", "seq_len", "d_model", "pass", *varying)]
    cols += [
        Column("time_s", "ms (median)", ms),
        Column("time_min_s", "min", ms),
        Column("time_max_s", "max", ms),
    ]
    cols += [
        Column("tokens_per_s", "tokens/s", lambda v: f"{v:,.0f}"),
        Column("tflops", "TFLOP/s", fmt_float(3)),
    ]
    cols += [Column("mem_bytes", "mem MiB", lambda v: f"{v / 2**20:.1f}")]
    r0 = records[0]
    threads = "" if "threads" in varying else f", threads={r0['threads']}"
    mem = "peak allocated" if r0["device"] == "cuda" else "peak RSS delta"
    where = f"{r0['device']}, {r0['dtype']}{threads}"
    report.render_table(
        records, cols, f"blocks of {r0['config']}: {where}; {r0['trials']} trials; mem = {mem}"
    )


def _label(key: str, value: object) -> str:
    return str(value) if key == "pass" else f"{ {'d_model': 'd', 'batch': 'b', 'threads': 't'}[key] }={value}"


def _parse_overrides(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise HybridLMError(f"--set expects field=value (e.g. mlp.activation=silu), got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


@app.command()
def comms(
    op: Annotated[
        list[str] | None, typer.Option("--op", help=f"Repeatable: {', '.join(OPS)}; default all.")
    ] = None,
    nproc: Annotated[int, typer.Option(help="Local processes to start (ignored under torchrun).")] = 2,
    size: Annotated[str | None, typer.Option(help="One message size, e.g. 4M (instead of a scan).")] = None,
    min_bytes: Annotated[str, typer.Option("--min-bytes", "-b", help="Scan start (nccl-tests -b).")] = "1K",
    max_bytes: Annotated[str, typer.Option("--max-bytes", "-e", help="Scan end (nccl-tests -e).")] = "4M",
    factor: Annotated[int, typer.Option("--factor", "-f", help="Scan step factor (nccl-tests -f).")] = 4,
    dtype: Annotated[str, typer.Option(help="float32, float16, bfloat16 or float64.")] = "float32",
    warmup: Annotated[int, typer.Option(help="Untimed iterations per size.")] = 5,
    trials: Annotated[int, typer.Option(help="Timed iterations per size.")] = 20,
    backend: Annotated[str, typer.Option(help="auto (nccl with CUDA, else gloo), gloo or nccl.")] = "auto",
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
    corrupt_rank: Annotated[
        int | None, typer.Option(hidden=True, help="Test hook: this rank corrupts its input.")
    ] = None,
) -> None:
    """Time torch.distributed collectives and point-to-point transfers (nccl-tests conventions)."""
    check_outputs(json_path, csv_path, plot)
    ops = list(OPS) if not op or op == ["all"] else op
    if size is not None:
        sizes = [parse_size(size)]
    else:
        sizes = size_scan(parse_size(min_bytes), parse_size(max_bytes), factor)
    config = CommsConfig(ops, sizes, dtype, warmup, trials, backend, size is not None, corrupt_rank)
    with progress_bar("comms") as update:
        records = run_comms(config, nproc, progress=update)
    if not records:  # a rank other than 0 under torchrun
        return
    n = records[0]["world_size"]
    report.render_table(
        records,
        [
            Column("op", "op"),
            Column("bytes", "size", human_bytes),
            Column("count", "count"),
            Column("time_s", "time us (median)", fmt_us),
            Column("time_min_s", "min", fmt_us),
            Column("time_p99_s", "p99", fmt_us),
            Column("algbw_gbps", "algbw GB/s", fmt_float(3)),
            Column("busbw_gbps", "busbw GB/s", fmt_float(3)),
            Column("wrong", "#wrong"),
        ],  # fmt: skip
        title=f"comms: {n} ranks, {records[0]['backend']}, {dtype}; time = max over ranks",
    )
    report.write_outputs(records, json_path, csv_path)
    if plot is not None:
        report.plot_series(
            records, x="bytes", y="busbw_gbps", group="op", path=plot, logx=True,
            title=f"busbw, {n} ranks ({records[0]['backend']})", xlabel="message size S (bytes)",
            ylabel="busbw (GB/s)",
        )  # fmt: skip
    wrong = sum(r["wrong"] for r in records)
    if wrong:
        typer.secho(f"data check FAILED: {wrong} wrong elements (see #wrong)", fg="red", err=True)
        raise typer.Exit(1)


@app.command()
def decode(
    config: Annotated[str, typer.Option(help="Preset or config file of the model.")] = "zamba2-tiny",
    context: Annotated[
        list[str] | None, typer.Option("--context", help="Repeatable context length, e.g. 4096 or 256k.")
    ] = None,
    nproc: Annotated[list[int] | None, typer.Option("--nproc", help="Repeatable rank count; default 2 and 4.")] = None,
    mode: Annotated[
        list[str] | None, typer.Option("--mode", help=f"Repeatable: {', '.join(DECODE_MODES)}; default all.")
    ] = None,
    steps: Annotated[int, typer.Option(help="Timed decoding steps per point.")] = 5,
    warmup: Annotated[int, typer.Option(help="Untimed steps before them.")] = 1,
    batch: Annotated[int, typer.Option(help="Sequences decoded together.")] = 1,
    threads: Annotated[int, typer.Option(help="CPU threads per rank (and for the single device).")] = 1,
    backend: Annotated[str, typer.Option(help="auto (nccl with CUDA, else gloo), gloo or nccl.")] = "auto",
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Decoding steps at long contexts: Tree Attention vs Ring Attention across ranks vs one device (latency,
    bytes per step per rank, peak memory per rank)."""
    sweep = DecodeSweep(config, [parse_tokens(c) for c in context] if context else DecodeSweep().contexts,
                        nproc or DecodeSweep().nprocs, mode or list(DECODE_MODES), steps, warmup, batch, threads,
                        backend).validate()  # bad input fails before the progress bar starts
    with progress_bar("decode") as update:
        records = run_decode(sweep, progress=update)
    records.sort(key=lambda r: (r["context"], r["mode"] != "single", r["mode"], r["nproc"]))
    mib = lambda v: f"{v / 2**20:.1f}"  # noqa: E731
    report.render_table(
        records,
        [Column("context", "context"), Column("mode", "mode"), Column("nproc", "ranks"),
         Column("step_s", "ms/step (median)", lambda v: f"{v * 1e3:.2f}"),
         Column("step_min_s", "min", lambda v: f"{v * 1e3:.2f}"),
         Column("bytes_per_step", "bytes/step/rank", lambda v: f"{v:,}"),
         Column("peak_bytes", "peak MiB/rank", mib), Column("cache_bytes", "cache MiB/rank", mib)],
        title=f"decode: {sweep.config}, batch {sweep.batch}, {records[0]['device']}; time = slowest rank; "
              "bytes and memory = largest rank",
    )  # fmt: skip
    report.write_outputs(records, json_path, csv_path)
    if plot is not None:
        plot_decode(records, plot)


@app.command()
def gemm(
    hidden: Annotated[int, typer.Option(help="Model hidden size h.")] = 1024,
    ffn: Annotated[int, typer.Option(help="FFN inner size (scaled with h in the hidden sweep).")] = 4096,
    heads: Annotated[int, typer.Option(help="Attention heads a (head dim = h / a).")] = 16,
    vocab: Annotated[int, typer.Option(help="Vocabulary size V (unpadded).")] = 50277,
    tokens: Annotated[int, typer.Option(help="Tokens per GEMM (batch x sequence).")] = 128,
    window: Annotated[float, typer.Option(help="Hidden sizes within +-window of h (fraction).")] = 0.1,
    step: Annotated[int | None, typer.Option(help="Hidden size step (default lcm(heads, 8)).")] = None,
    sweep: Annotated[
        list[str] | None, typer.Option(help="Repeatable: hidden, head_dim, vocab; default all.")
    ] = None,
    dtype: Annotated[
        str, typer.Option(help="auto (CUDA bf16, CPU fp32), float32, bfloat16, float16.")
    ] = "auto",
    device: Annotated[str, typer.Option(help="auto, cpu, cuda or cuda:N.")] = "auto",
    warmup: Annotated[int, typer.Option(help="Untimed calls per GEMM.")] = 1,
    trials: Annotated[int, typer.Option(help="Timed calls per GEMM.")] = 3,
    min_gain: Annotated[float, typer.Option(help="Speedup a neighbour needs to be suggested.")] = 0.03,
    json_path: JsonOpt = None,
    csv_path: CsvOpt = None,
    plot: PlotOpt = None,
) -> None:
    """Sweep GEMM shapes around a model's dims and suggest hardware-friendly sizes (arXiv 2401.14489)."""
    check_outputs(json_path, csv_path, plot)
    with progress_bar("gemm") as update:
        records = gemm_sweep(
            hidden, ffn, heads, vocab, tokens, dtype, device, window=window, step=step,
            warmup=warmup, trials=trials, sweeps=tuple(sweep or SWEEPS), progress=update,
        )  # fmt: skip
    console = Console()
    _gemm_tables(records, console)
    tips = suggest(records, hidden, heads, vocab, min_gain=min_gain)
    for name, tip in tips.items():
        console.print(f"[bold]{name}[/]: {_advice(name, tip, trials)}", soft_wrap=True)
    report.write_outputs(records, json_path, csv_path)
    if plot is not None:
        rows = [_with_band(r) for r in records if r["sweep"] == "hidden"]
        marks = [(hidden, f"requested h={hidden}")]
        if "hidden" in tips and tips["hidden"]["best"] != hidden:
            marks.append((tips["hidden"]["best"], f"suggested h={tips['hidden']['best']}"))
        report.plot_series(
            rows, x="hidden", y="tflops", group="gemm", path=plot, marks=marks,
            title=f"GEMM throughput vs hidden size ({rows[0]['device'] if rows else ''}, tokens={tokens}; "
            f"band: total's min-max over {trials} trials)",
            xlabel="hidden size h", ylabel="TFLOP/s",
        )  # fmt: skip


def _with_band(rec: report.Record) -> report.Record:
    """A layer total with its TFLOP/s range over the trials (fastest and slowest trial) for the plot's band: the
    spread the advice is judged against."""
    if rec["gemm"] != "total" or "time_min_s" not in rec:
        return rec
    return {**rec, "tflops_low": rec["flops"] / rec["time_max_s"] / 1e12,
            "tflops_high": rec["flops"] / rec["time_min_s"] / 1e12}


def _advice(name: str, tip: dict, trials: int) -> str:
    """One line: the request, the fastest candidate, the trials' spread, and whether the difference is beyond it."""
    noise = tip["noise"]
    spread = f"trials spread {noise:.0%}" if noise is not None else "1 trial, no noise estimate (use --trials 5)"
    head = f"requested {tip['requested']} at {tip['requested_tflops']:.3f} TFLOP/s"
    if tip["best"] != tip["requested"]:
        return (f"{head}; {tip['best']} at {tip['best_tflops']:.3f} TFLOP/s is {tip['speedup']:.2f}x faster, beyond "
                f"the noise ({spread}) -> try {name} = {tip['best']} (/{tip['best_align']})")
    if tip["fastest"] != tip["requested"] and tip["fastest_gain"] is not None:
        return (f"{head}; fastest {tip['fastest']} is {tip['fastest_gain']:+.0%}, within the noise ({spread}; "
                f"{trials} trials) -> keep it")
    return f"{head}, the fastest ({spread}) -> keep it"


def _gemm_tables(records: list[report.Record], console: Console) -> None:
    tf = fmt_float(3)
    hidden_rows = {}
    for r in (r for r in records if r["sweep"] == "hidden"):
        row = hidden_rows.setdefault(r["hidden"], {k: r[k] for k in ("hidden", "head_dim", "align")})
        row[r["gemm"]] = r["tflops"]
    if hidden_rows:
        short = {"qkv": "qkv", "attn_out": "out", "ffn_up": "up", "ffn_down": "down",
                 "attn_scores": "scores", "attn_values": "values", "total": "total"}  # fmt: skip
        cols = [Column("hidden", "hidden"), Column("align", "align"), Column("head_dim", "d_head")]
        cols += [Column(g, label, tf) for g, label in short.items()]
        report.render_table(list(hidden_rows.values()), cols, "hidden sweep: TFLOP/s per GEMM", console)
    heads_rows = [r for r in records if r["sweep"] == "head_dim" and r["gemm"] == "total"]
    if heads_rows:
        cols = [Column("head_dim", "head dim"), Column("align", "align"), Column("heads", "heads"),
                Column("time_s", "time us", fmt_us), Column("tflops", "attention TFLOP/s", tf)]  # fmt: skip
        report.render_table(heads_rows, cols, "head-dim sweep (attention GEMMs)", console)
    vocab_rows = [r for r in records if r["sweep"] == "vocab"]
    if vocab_rows:
        cols = [Column("vocab", "vocab"), Column("align", "align"), Column("time_s", "time us", fmt_us),
                Column("tflops", "TFLOP/s", tf), Column("useful_tflops", "useful TFLOP/s", tf)]  # fmt: skip
        report.render_table(vocab_rows, cols, "vocab padding sweep (logits GEMM)", console)


@app.command()
def compare(
    a: Annotated[Path, typer.Argument(help="JSON records of run A (the baseline).")],
    b: Annotated[Path, typer.Argument(help="JSON records of run B.")],
    json_path: JsonOpt = None,
) -> None:
    """Print run B against run A, record by record: times and speedup (time A / time B)."""
    check_outputs(json_path)
    records_a, records_b = report.read_json(a), report.read_json(b)
    rows, unmatched = compare_records(records_a, records_b)
    measured = ("time_a_s", "time_b_s", "speedup")
    shown = [k for k in rows[0] if k not in measured and not k.endswith(("_a", "_b"))]
    keys = [k for k in shown if len({str(r[k]) for r in rows}) > 1] or shown[:1]  # hide constant columns
    cols = [Column(k, k, human_bytes if k == "bytes" else str) for k in keys]
    cols += [Column("time_a_s", "A us", fmt_us), Column("time_b_s", "B us", fmt_us)]
    rates = [k for k in rows[0] if k.endswith(("_a", "_b"))]
    cols += [Column(k, k.replace("_gbps", " GB/s"), fmt_float(3)) for k in rates]
    cols += [Column("speedup", "speedup (A/B time)", fmt_float(2))]
    console = Console()
    console.print(f"A = {a} vs B = {b}; speedup = A time / B time (> 1: B is faster)", soft_wrap=True,
                  markup=False, highlight=False)
    for key, (va, vb) in run_differences(records_a, records_b).items():
        console.print(f"{key}: A {va}, B {vb}", soft_wrap=True, markup=False, highlight=False)
    report.render_table(rows, cols, console=console)
    if unmatched:
        typer.secho(f"{unmatched} records matched nothing in the other run and are left out", err=True)
    report.write_outputs(rows, json_path, None)
