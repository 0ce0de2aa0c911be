"""`hybridlm data ...`: a thin typer shell over `hybridlm.data` (every command has a Python function behind it)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from hybridlm.data.errors import DataError
from hybridlm.units import plural

app = typer.Typer(
    name="data",
    help="Data stage: count, train-tokenizer, partition, filter, dedup, pack, synth.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console(stderr=True)
out_console = Console()

INPUTS = typer.Argument(..., help="Input files or directories (JSONL[.zst|.gz], JSON, Parquet, Arrow).")
TEXT_KEY = typer.Option("text", "--text-key", help="Field holding the document text.")
WORKERS = typer.Option(None, "--workers", "-j", min=1, help="Worker processes (default: all cores).")
MAX_DOC_BYTES = typer.Option(
    None,
    "--max-doc-bytes",
    help="Reject input records (lines) longer than this many bytes, with file and line (0: no limit) [4 MiB].",
)


def _limit(max_doc_bytes: int | None) -> None:
    from hybridlm.data.io import set_max_doc_bytes

    if max_doc_bytes is not None:
        set_max_doc_bytes(max_doc_bytes)


def _bytes_bar(inputs: list[Path], desc: str):
    """A progress bar over the input bytes (ETA is approximate: text bytes vs file bytes)."""
    from hybridlm.data.engine import progress_bar
    from hybridlm.data.io import expand_inputs

    total = sum(f.path.stat().st_size for f in expand_inputs(inputs))
    bar = progress_bar(disable=not console.is_terminal)
    task = bar.add_task(desc, total=total)
    return bar, lambda n: bar.advance(task, n)


def _print_rejects(count: int, examples: list[dict], where: str | None, empty_files: list[str] = ()) -> None:
    if empty_files:
        console.print(f"[yellow]{plural(len(empty_files), 'empty input file')}[/]: " + ", ".join(empty_files[:5]))
    if not count:
        return
    console.print(f"[yellow]{plural(count, 'input record')} rejected[/]" + (f" (all in {where})" if where else ""))
    for e in examples[:10]:
        console.print(f"  {e['file']}:{e['line']}: {e['reason']}", markup=False, highlight=False)


@app.command()
def count(
    inputs: list[Path] = INPUTS,
    tokenizer: Path = typer.Option(
        ..., "--tokenizer", "-t", help="tokenizer.json or a directory saved by save_pretrained."
    ),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    output_dir: Path | None = typer.Option(
        None, "-o", "--output-dir", help="Write report.json, rejects and --save output here."
    ),
    save: bool = typer.Option(
        False, "--save", help="Also write the token ids (Parquet, column input_ids) under OUTPUT/tokenized/."
    ),
    batch_size: int = typer.Option(1024, help="Documents per tokenizer batch (bounds memory)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Tokenize a dataset and print documents, tokens and bytes per file and in total."""
    _limit(max_doc_bytes)
    from hybridlm.data.count import count_tokens

    bar, advance = _bytes_bar(inputs, "count")
    with bar:
        rep = count_tokens(inputs, tokenizer, text_key, output_dir, save, batch_size, progress=advance)
    if as_json:
        out_console.print_json(json.dumps(rep))
        return
    t = Table(title="Token count")
    for col in ("file", "documents", "tokens", "bytes", "tokens/doc"):
        t.add_column(col, justify="left" if col == "file" else "right")
    for r in rep["files"] + [
        {"file": "[b]total[/]", **{k: rep[k] for k in ("documents", "tokens", "bytes")}}
    ]:
        t.add_row(
            r["file"],
            f"{r['documents']:,}",
            f"{r['tokens']:,}",
            f"{r['bytes']:,}",
            f"{r['tokens'] / max(1, r['documents']):.1f}",
        )
    out_console.print(t)
    rj = rep["rejects"]
    _print_rejects(
        rj["rejected"], rj["examples"], str(output_dir / "rejects.jsonl") if output_dir else None, rj["empty_files"]
    )


@app.command("train-tokenizer")
def train_tokenizer_cmd(
    inputs: list[Path] = INPUTS,
    output_dir: Path = typer.Option(
        ..., "-o", "--output-dir", help="Where to save the tokenizer (save_pretrained)."
    ),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    vocab_size: int = typer.Option(8192, help="Vocabulary size including the 256 bytes and special tokens."),
    min_frequency: int = typer.Option(2, help="Minimum pair frequency for a merge."),
) -> None:
    """Train a byte-level BPE tokenizer locally; `AutoTokenizer.from_pretrained(OUTPUT)` loads it."""
    _limit(max_doc_bytes)
    from hybridlm.data.tokenizer import train_tokenizer

    with console.status("training tokenizer"):
        rep = train_tokenizer(inputs, output_dir, vocab_size, text_key, min_frequency)
    out_console.print(
        f"trained on {plural(rep['documents'], 'document')}: vocab {rep['vocab_size']:,} -> {output_dir}"
    )
    if rep["rejected_records"]:
        console.print(
            f"[yellow]{plural(rep['rejected_records'], 'record')} rejected (see {output_dir}/rejects.jsonl)[/]"
        )


@app.command()
def partition(
    inputs: list[Path] = INPUTS,
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Directory for the partitions (part_*.jsonl)."),
    num_partitions: int = typer.Option(..., "-n", "--num-partitions", min=1, help="Number of output files."),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    zstd: bool = typer.Option(False, "--zstd", help="Write .jsonl.zst."),
) -> None:
    """Split a dataset into N JSONL partitions (round-robin), preserving every record and all its fields."""
    _limit(max_doc_bytes)
    from hybridlm.data.partition import partition as run

    del text_key  # partitioning keeps records whether or not they have a text field
    rep = run(inputs, output_dir, num_partitions, compress=zstd)
    out_console.print(f"{rep['input_records']:,} records -> {num_partitions} partitions in {output_dir}")
    _print_rejects(
        rep["rejected_records"], rep["reject_examples"], str(output_dir / "_rejects.jsonl"), rep["empty_files"]
    )


def _kv(items: list[str], cast, what: str) -> dict:
    out = {}
    for it in items:
        if "=" not in it:
            raise DataError(f"{what} expects PATTERN=VALUE, got {it!r}")
        k, v = it.rsplit("=", 1)
        try:
            out[k] = cast(v)
        except ValueError:
            raise DataError(f"{what}: {v!r} is not a number") from None
    return out


def _word_list(spec: str):
    from hybridlm.data.filters import WordList

    parts = spec.split(":")
    path = Path(parts[0])
    if not path.is_file():
        raise DataError(f"word list not found: {path}")
    text = path.read_text(encoding="utf-8")
    words = (
        json.loads(text)["words"] if path.suffix == ".json" else [w for w in text.splitlines() if w.strip()]
    )
    max_count = int(parts[1]) if len(parts) > 1 and parts[1] else None
    max_fraction = float(parts[2]) if len(parts) > 2 and parts[2] else None
    if max_count is None and max_fraction is None:
        raise DataError(
            f"word list {spec!r}: give FILE:MAX_COUNT, FILE::MAX_FRACTION or FILE:MAX_COUNT:MAX_FRACTION"
        )
    return WordList(path.stem, words, max_count, max_fraction)


FILTER_FLAGS = {
    "min_length": "--min-length",
    "min_mean_word_length": "--min-mean-word-length",
    "max_mean_word_length": "--max-mean-word-length",
    "max_fraction_non_alphanumeric": "--max-non-alnum",
    "max_fraction_numerical": "--max-numeric",
    "max_repeated_substrings": "--max-repeats",
    "repeat_run_length": "--repeat-run-length",
}


def _filter_settings_file(path: Path) -> dict:
    """The --config file: a JSON object of FilterConfig fields."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"--config {path}: no such file") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"--config {path}: cannot read it ({err})") from None
    try:
        d = json.loads(text)
    except json.JSONDecodeError as err:
        raise DataError(f"--config {path}: not valid JSON ({err.msg}, line {err.lineno} column {err.colno})") from None
    if not isinstance(d, dict):
        raise DataError(f"--config {path}: expected a JSON object of filter settings, got a {type(d).__name__}")
    return d


@app.command("filter")
def filter_cmd(
    inputs: list[Path] = INPUTS,
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Directory for kept/, removed/, report.json."),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    config: Path | None = typer.Option(None, "--config", help="JSON file with any FilterConfig fields."),
    min_length: int | None = typer.Option(None, help="Minimum length after collapsing runs [100]."),
    min_mean_word_length: float | None = typer.Option(None, help="[3]"),
    max_mean_word_length: float | None = typer.Option(None, help="[12]"),
    max_fraction_non_alphanumeric: float | None = typer.Option(None, "--max-non-alnum", help="[0.3]"),
    max_fraction_numerical: float | None = typer.Option(None, "--max-numeric", help="[0.2]"),
    max_repeated_substrings: int | None = typer.Option(
        None, "--max-repeats", help="Max runs of repeated word characters [50]."
    ),
    repeat_run_length: int | None = typer.Option(None, help="Run length that counts as a repeat [7]."),
    pattern_count: list[str] = typer.Option(
        [], "--pattern-count", help="PATTERN=MAX_COUNT (replaces the defaults)."
    ),
    pattern_fraction: list[str] = typer.Option(
        [], "--pattern-fraction", help="PATTERN=MAX_FRACTION (replaces the defaults)."
    ),
    word_list: list[str] = typer.Option(
        [], "--word-list", help="FILE[:MAX_COUNT[:MAX_FRACTION]] (.json {'words': [...]} or one per line)."
    ),
    write_removed: bool = typer.Option(
        True, "--write-removed/--no-write-removed", help="Write removed documents to OUTPUT/removed/."
    ),
    collapse_runs: bool = typer.Option(
        False, "--collapse-runs", help="Write kept texts with repeated runs collapsed (as Zyda did)."
    ),
    workers: int | None = WORKERS,
    engine: str = typer.Option(
        "local", "--engine", help="local (multiprocessing) or datatrove (LocalPipelineExecutor)."
    ),
) -> None:
    """Apply the Zyda-1 heuristic filters; writes OUTPUT/kept/, OUTPUT/removed/ and OUTPUT/report.json."""
    _limit(max_doc_bytes)
    from hybridlm.data.filters import FilterConfig, run_filter

    d = _filter_settings_file(config) if config else {}
    scalars = {
        "min_length": min_length,
        "min_mean_word_length": min_mean_word_length,
        "max_mean_word_length": max_mean_word_length,
        "max_fraction_non_alphanumeric": max_fraction_non_alphanumeric,
        "max_fraction_numerical": max_fraction_numerical,
        "max_repeated_substrings": max_repeated_substrings,
        "repeat_run_length": repeat_run_length,
    }
    d.update({k: v for k, v in scalars.items() if v is not None})
    if pattern_count:
        d["pattern_max_counts"] = _kv(pattern_count, int, "--pattern-count")
    if pattern_fraction:
        d["pattern_max_fractions"] = _kv(pattern_fraction, float, "--pattern-fraction")
    given = {k for k, v in scalars.items() if v is not None}
    try:
        cfg = FilterConfig.from_dict(d)
    except DataError as err:  # name the flag or the file the bad value came from
        field = str(err).split(" ", 1)[0]
        where = FILTER_FLAGS.get(field) if field in given else str(config) if config else None
        raise DataError(f"{where}: {err}" if where else str(err)) from None
    cfg.word_lists += [_word_list(w) for w in word_list]
    if engine == "datatrove":
        from hybridlm.data.dt_steps import run_filter_datatrove

        rep = run_filter_datatrove(inputs, output_dir, text_key, cfg, workers=workers)
    elif engine == "local":
        rep = run_filter(
            inputs, output_dir, text_key, cfg, workers, write_removed, collapse_runs, quiet=False
        )
    else:
        raise DataError(f"--engine must be 'local' or 'datatrove', not {engine!r}")
    t = Table(title=f"Filter: kept {rep['kept_documents']:,} / {rep['input_documents']:,}")
    t.add_column("filter")
    t.add_column("removed", justify="right")
    for k, v in rep["removed_by_filter"].items():
        t.add_row(k, f"{v:,}")
    t.add_row("[b]total removed[/]", f"{rep['removed_documents']:,}")
    out_console.print(t)
    _print_rejects(
        rep["rejected_records"], rep["reject_examples"], str(output_dir / "rejects"), rep.get("empty_files", [])
    )


def _sbatch_args(items: list[str]) -> dict | None:
    return _kv(items, str, "--slurm-sbatch-arg") if items else None


@app.command()
def dedup(
    inputs: list[Path] = INPUTS,
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Directory for kept/, removed/, report.json."),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    preset: str = typer.Option(
        "default", "--preset", help="default (verified default), zyda1 (word 13-grams, 32x4 bands) or zyda2 "
        "(char 25-grams, 8x16 bands, cross-dataset only); the options below override it."
    ),
    threshold: float | None = typer.Option(
        None, "--threshold", help="Jaccard similarity that makes two documents duplicates (default: 0.8)."
    ),
    verify: bool | None = typer.Option(
        None, "--verify/--no-verify", help="Keep only candidate pairs whose exact Jaccard >= threshold."
    ),
    ngram: int | None = typer.Option(None, "--ngram", help="Shingle size (words or characters; default: 13)."),
    shingle: str | None = typer.Option(
        None, "--shingle", help="word (Zyda-1) or char (Zyda-2) n-grams (default: word)."
    ),
    num_perm: int | None = typer.Option(None, "--num-perm", help="MinHash permutations (default: 128)."),
    bands: int | None = typer.Option(None, "--bands", help="LSH bands (default: chosen from --threshold)."),
    rows: int | None = typer.Option(None, "--rows", help="Rows per band (default: chosen from --threshold)."),
    rank: list[str] = typer.Option(
        [], "--rank", help="Source names, best first (repeat or comma-separate; default: input order)."
    ),
    cross_only: bool | None = typer.Option(
        None, "--cross-only/--within-too", help="Only remove duplicates across datasets (Zyda-2)."
    ),
    seed: int | None = typer.Option(None, "--seed", help="Seed of the MinHash permutations (default: 0)."),
    memory: str = typer.Option("1G", "--memory", help="Memory budget per task (e.g. 512M, 4G)."),
    band_tasks: int | None = typer.Option(
        None, "--band-tasks", help="Tasks for the bucket stage (ranges of bands; default: --workers or all cores)."
    ),
    workers: int | None = WORKERS,
    top_clusters: int = typer.Option(10, help="Largest clusters listed with examples in the report."),
    executor: str = typer.Option(
        "processes", "--executor", help="processes (this machine's cores), or datatrove's local, slurm or ray."
    ),
    slurm_partition: str | None = typer.Option(None, "--slurm-partition", help="slurm: partition (required)."),
    slurm_time: str | None = typer.Option(None, "--slurm-time", help="slurm: time limit per job, e.g. 4:00:00."),
    slurm_qos: str | None = typer.Option(None, "--slurm-qos", help="slurm: quality of service."),
    slurm_job_name: str | None = typer.Option(None, "--slurm-job-name", help="slurm: job name prefix."),
    slurm_env_command: str | None = typer.Option(
        None, "--slurm-env-command", help="slurm: shell command that sets up Python in each job."
    ),
    slurm_venv: str | None = typer.Option(None, "--slurm-venv", help="slurm: virtualenv to activate in each job."),
    slurm_sbatch_arg: list[str] = typer.Option(
        [], "--slurm-sbatch-arg", help="slurm: extra sbatch directive KEY=VALUE (repeatable)."
    ),
    cpus_per_task: int | None = typer.Option(None, "--cpus-per-task", help="slurm/ray: CPUs per task."),
    mem_per_cpu_gb: float | None = typer.Option(None, "--mem-per-cpu-gb", help="slurm/ray: memory per CPU (GB)."),
    tasks_per_job: int | None = typer.Option(None, "--tasks-per-job", help="slurm/ray: tasks run by one job."),
    engine: str | None = typer.Option(None, "--engine", hidden=True, help="Deprecated: --executor local."),
) -> None:
    """MinHash-LSH near-deduplication within and across datasets; writes kept/, removed/, report.json, a plot.

    Out of core: each task keeps within --memory; runs on this machine's cores or on datatrove's executors."""
    _limit(max_doc_bytes)
    from hybridlm.data.dedup import DedupConfig, run_dedup

    if engine is not None:
        if engine not in ("local", "datatrove"):
            raise DataError(f"--engine must be 'local' or 'datatrove', not {engine!r} (prefer --executor)")
        executor = "local" if engine == "datatrove" else "processes"
    cfg = DedupConfig.preset(
        preset,
        threshold=threshold,
        num_perm=num_perm,
        ngram=ngram,
        shingle=shingle,
        bands=bands,
        rows=rows,
        verify=verify,
        cross_only=cross_only,
        seed=seed,
    )
    options = {
        "slurm": {
            "partition": slurm_partition,
            "time": slurm_time,
            "qos": slurm_qos,
            "job_name": slurm_job_name,
            "env_command": slurm_env_command,
            "venv_path": slurm_venv,
            "sbatch_args": _sbatch_args(slurm_sbatch_arg),
            "cpus_per_task": cpus_per_task,
            "mem_per_cpu_gb": None if mem_per_cpu_gb is None else int(mem_per_cpu_gb),
            "tasks_per_job": tasks_per_job,
        },
        "ray": {"cpus_per_task": cpus_per_task, "mem_per_cpu_gb": mem_per_cpu_gb, "tasks_per_job": tasks_per_job},
    }.get(executor, {})
    given = [k for k, v in options.items() if v is not None]
    if executor not in ("slurm", "ray") and (slurm_partition or slurm_time or cpus_per_task or tasks_per_job):
        raise DataError("--slurm-* / --cpus-per-task / --tasks-per-job need --executor slurm or ray")
    rep = run_dedup(
        inputs,
        output_dir,
        text_key,
        cfg,
        rank,
        workers,
        top_clusters,
        quiet=False,
        memory=memory,
        band_tasks=band_tasks,
        executor=executor,
        executor_options={k: options[k] for k in given},
    )
    if rep.get("submitted"):
        out_console.print(
            f"submitted {len(rep['jobs'])} Slurm jobs ({', '.join(map(str, rep['jobs']))}); "
            f"the report will be {rep['report']}; logs in {rep['logs']}"
        )
        return
    p = rep["params"]
    out_console.print(
        f"dedup ({p['shingle']} {p['ngram']}-grams, {p['num_perm']} perms, {p['bands']}x{p['rows']} bands, "
        f"threshold {p['threshold']}{', verified' if p['verify'] else ''}"
        f"{', cross-dataset only' if p['cross_only'] else ''})"
    )
    t = Table()
    for col in ("source", "input", "kept", "removed"):
        t.add_column(col, justify="left" if col == "source" else "right")
    for s, v in rep["per_source"].items():
        t.add_row(s, f"{v['input']:,}", f"{v['kept']:,}", f"{v['removed']:,}")
    t.add_row(
        "[b]total[/]",
        f"{rep['input_documents']:,}",
        f"{rep['kept_documents']:,}",
        f"{rep['removed_documents']:,}",
    )
    out_console.print(t)
    ex = rep["execution"]
    out_console.print(
        f"{rep['clusters']:,} duplicate clusters; peak RSS per task {max(ex['peak_rss_mb'].values()):.0f} MB "
        f"(budget {ex['memory_budget_mb']:.0f} MB); report: {output_dir / 'report.json'}"
    )
    _print_rejects(rep["rejected_records"], rep["reject_examples"], str(output_dir / "rejects"), rep["empty_files"])


@app.command("pack")
def pack_cmd(
    inputs: list[Path] = INPUTS,
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Directory for the shards and index.json."),
    tokenizer: Path = typer.Option(
        ..., "--tokenizer", "-t", help="tokenizer.json or a directory saved by save_pretrained."
    ),
    text_key: str = TEXT_KEY,
    max_doc_bytes: int | None = MAX_DOC_BYTES,
    eos: bool = typer.Option(True, "--eos/--no-eos", help="Append the EOS token to every document."),
) -> None:
    """Tokenize into contiguous token shards (.bin + .idx, uint16 when the vocab fits) readable by the trainer."""
    _limit(max_doc_bytes)
    from hybridlm.data.pack import pack

    bar, advance = _bytes_bar(inputs, "pack")
    with bar:
        idx = pack(inputs, output_dir, tokenizer, text_key, eos, progress=advance)
    out_console.print(
        f"{plural(idx['documents'], 'document')}, {plural(idx['tokens'], 'token')} ({idx['dtype']}) in "
        f"{plural(len(idx['shards']), 'shard')} "
        f"-> {output_dir}"
    )
    if idx["rejected_records"]:
        console.print(f"[yellow]{plural(idx['rejected_records'], 'record')} rejected (see {output_dir}/rejects/)[/]")


@app.command()
def synth(
    output_dir: Path = typer.Option(..., "-o", "--output-dir", help="Directory for web/hq/eval.jsonl."),
    seed: int = typer.Option(0, "--seed", help="Seed of the corpus (same seed, same bytes)."),
    n_web: int = typer.Option(2000, "--n-web", help="Web documents (with planted duplicates and junk)."),
    n_hq: int = typer.Option(500, "--n-hq", help="High-quality fact documents."),
    n_eval: int = typer.Option(200, "--n-eval", help="Held-out documents."),
) -> None:
    """Generate the deterministic synthetic corpus (web with planted duplicates and junk, high-quality, eval)."""
    from hybridlm.data.synth import generate_corpus

    m = generate_corpus(output_dir, seed, n_web, n_hq, n_eval)
    out_console.print(
        f"web {m['web_documents']:,} ({plural(m['dup_groups'], 'duplicate group')}, {m['junk_documents']} junk), "
        f"hq {m['hq_documents']:,}, eval {m['eval_documents']:,} -> {output_dir}"
    )
