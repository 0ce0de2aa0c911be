"""Reading inputs record by record, writing JSONL outputs, and keeping rejects.

Inputs are local files or directories of them: JSONL (optionally .zst/.gz) is read line by line by hand so that a
malformed line, a record without the text field or non-UTF-8 bytes is rejected *with its file and line* while the run
goes on (Hugging Face's JSON loader aborts the whole file on the first bad line). JSON, Parquet and Arrow files are
streamed through Hugging Face `datasets` (bounded memory). Every rejected input line is written to a rejects file,
so nothing is silently lost.
"""

from __future__ import annotations

import gzip
import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridlm.data.errors import DataError, MissingTextColumnError

JSONL_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".ndjson")
HF_SUFFIXES = (".json", ".parquet", ".arrow")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + HF_SUFFIXES


@dataclass(frozen=True)
class InputFile:
    """One input file: `source` is the dataset it belongs to (the name of the argument it came from)."""

    path: Path
    source: str
    relpath: str  # path relative to the source argument, used to mirror outputs

    @property
    def key(self) -> str:
        """A filesystem-safe unique name for this file (used for per-shard state and rejects)."""
        return f"{self.source}__{self.relpath}".replace("/", "__")

    @property
    def out_relpath(self) -> str:
        """Output path (relative) of the JSONL written for this input."""
        return f"{self.source}/{strip_suffix(self.relpath)}.jsonl"


def strip_suffix(name: str) -> str:
    for suf in sorted(SUPPORTED_SUFFIXES, key=len, reverse=True):
        if name.endswith(suf):
            return name[: -len(suf)]
    return name


def _supported(p: Path) -> bool:
    return p.is_file() and p.name.endswith(SUPPORTED_SUFFIXES) and not p.name.startswith((".", "_"))


def expand_inputs(paths: list[str | Path]) -> list[InputFile]:
    """Files named on the command line, directories expanded (recursive, sorted); one source per argument."""
    if not paths:
        raise DataError("no input given: pass one or more files or directories")
    files: list[InputFile] = []
    seen_sources: dict[str, int] = {}
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"input not found: {p}")
        source = strip_suffix(p.name.rstrip("/")) or "data"
        if source in seen_sources:  # two arguments with the same name stay distinct sources
            seen_sources[source] += 1
            source = f"{source}_{seen_sources[source]}"
        else:
            seen_sources[source] = 0
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if _supported(q) and not _hidden(q.relative_to(p)))
            if not found:
                raise DataError(f"no {', '.join(SUPPORTED_SUFFIXES)} files under {p}")
            files.extend(InputFile(q, source, q.relative_to(p).as_posix()) for q in found)
        else:
            if not p.name.endswith(SUPPORTED_SUFFIXES):
                raise DataError(f"unsupported input {p}: expected one of {', '.join(SUPPORTED_SUFFIXES)}")
            files.append(InputFile(p, source, p.name))
    return files


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


class RejectLog:
    """Collects rejected inputs (file, line, reason, raw text) and appends them to a JSONL file."""

    def __init__(self, path: Path | None = None):
        self.path = path
        self.count = 0
        self.by_reason: dict[str, int] = {}
        self.examples: list[dict] = []
        self._fh = None

    def add(self, file: Path | str, line: int, reason: str, raw: bytes | str | None = None) -> None:
        kind = reason.split(":")[0]
        self.count += 1
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "backslashreplace")
        entry = {"file": str(file), "line": line, "reason": reason, "raw": raw}
        if len(self.examples) < 20:
            self.examples.append({k: v for k, v in entry.items() if k != "raw"})
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "w", encoding="utf-8")
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def summary(self) -> dict:
        return {
            "rejected": self.count,
            "by_reason": dict(sorted(self.by_reason.items())),
            "examples": self.examples,
        }


def _open_binary(path: Path):
    if path.name.endswith(".zst"):
        import zstandard

        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(open(path, "rb"), closefd=True))
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def iter_records(
    f: InputFile,
    text_key: str | None = "text",
    rejects: RejectLog | None = None,
    line_range: tuple[int, int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line, record)` for every good record of `f` (line is 1-based; row number for Parquet/Arrow/JSON).

    Bad records go to `rejects` with their line. `text_key=None` accepts records without a text field.
    `line_range=(lo, hi)` reads only lines lo <= line < hi of a JSONL file (the others are skipped undecoded).
    """
    rejects = rejects if rejects is not None else RejectLog()
    n = 0
    if f.path.name.endswith(JSONL_SUFFIXES):
        gen = _iter_jsonl(f.path, rejects, line_range)
    elif line_range is not None:
        raise ValueError("line_range is only supported for JSONL inputs")
    else:
        gen = _iter_hf(f.path)
    for line, rec in gen:
        if text_key is not None:
            text = rec.get(text_key, _MISSING)
            if text is _MISSING:
                rejects.add(f.path, line, f"missing text field '{text_key}'", json.dumps(rec, default=str))
                continue
            if not isinstance(text, str):
                rejects.add(
                    f.path, line, f"text field '{text_key}' is not a string", json.dumps(rec, default=str)
                )
                continue
        n += 1
        yield line, rec
    if n == 0 and f.path.stat().st_size == 0:
        rejects.add(f.path, 0, "empty file", "")


_MISSING = object()


def _iter_jsonl(
    path: Path, rejects: RejectLog, line_range: tuple[int, int] | None = None
) -> Iterator[tuple[int, dict]]:
    lo, hi = line_range or (1, None)
    with _open_binary(path) as fh:
        for i, raw in enumerate(fh, 1):
            if i < lo:
                continue
            if hi is not None and i >= hi:
                break
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                rejects.add(path, i, f"non-UTF-8 bytes: {e.reason} at byte {e.start}", raw.rstrip(b"\n"))
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as e:
                rejects.add(path, i, f"malformed JSON: {e.msg} at column {e.colno}", line.rstrip("\n"))
                continue
            if not isinstance(rec, dict):
                rejects.add(path, i, "record is not a JSON object", line.rstrip("\n"))
                continue
            yield i, rec


def _iter_hf(path: Path) -> Iterator[tuple[int, dict]]:
    """Stream a JSON / Parquet / Arrow file with Hugging Face `datasets` (no full load into memory)."""
    if path.stat().st_size == 0:
        return
    import datasets

    datasets.disable_progress_bars()
    builder = {".json": "json", ".parquet": "parquet", ".arrow": "arrow"}[path.suffix]
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True)
        yield from enumerate(ds, 1)
    except Exception as e:  # a corrupt file: one clear error naming it
        raise DataError(
            f"cannot read {path}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
        ) from e


def count_lines(path: Path) -> int:
    """Number of lines of a JSONL file (decompressed), counted in 16 MiB blocks."""
    n = 0
    last = b"\n"
    with _open_binary(path) as fh:
        while block := fh.read(16 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def check_text_field(files: list[InputFile], text_key: str, probe: int = 200) -> None:
    """Fail fast with one clear error if no record of the whole dataset has `text_key` (checks the first records)."""
    seen_fields: set[str] = set()
    any_record = False
    for f in files:
        for _, rec in _probe(f, probe):
            any_record = True
            if text_key in rec:
                return
            seen_fields.update(rec.keys())
    if any_record:
        fields = ", ".join(sorted(seen_fields)[:20])
        raise MissingTextColumnError(
            f"no record has the text field '{text_key}' (fields found: {fields}); choose one with --text-key"
        )


def _probe(f: InputFile, n: int) -> Iterator[tuple[int, dict]]:
    gen = _iter_jsonl(f.path, RejectLog()) if f.path.name.endswith(JSONL_SUFFIXES) else _iter_hf(f.path)
    for k, item in enumerate(gen):
        if k >= n:
            break
        yield item


class JsonlWriter:
    """Writes records as JSONL (zstd-compressed when the name ends in .zst) to a temp file, renamed on close."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count = 0
        raw = open(self.tmp, "wb")
        if self.path.name.endswith(".zst"):
            import zstandard

            self._fh = zstandard.ZstdCompressor(level=3).stream_writer(raw, closefd=True)
        else:
            self._fh = raw

    def write(self, record: dict) -> None:
        self._fh.write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        self.count += 1

    def close(self) -> None:
        self._fh.close()
        os.replace(self.tmp, self.path)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self._fh.close()
            self.tmp.unlink(missing_ok=True)
