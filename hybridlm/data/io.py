"""Reading inputs record by record, writing JSONL outputs, and keeping rejects.

Inputs are local files or directories of them: JSONL (optionally .zst/.gz) is read line by line by hand so that a
malformed line, a record without the text field or non-UTF-8 bytes is rejected *with its file and line* while the run
goes on (Hugging Face's JSON loader aborts the whole file on the first bad line). JSON, Parquet and Arrow files are
streamed through Hugging Face `datasets` (bounded memory). Every rejected input line is written to a rejects file,
so nothing is silently lost.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hybridlm.data.errors import DataError, MissingTextColumnError

JSONL_SUFFIXES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".ndjson")
HF_SUFFIXES = (".json", ".parquet", ".arrow")
SUPPORTED_SUFFIXES = JSONL_SUFFIXES + HF_SUFFIXES

MAX_DOC_BYTES_ENV = "HYBRIDLM_MAX_DOC_BYTES"
DEFAULT_MAX_DOC_BYTES = 4 * 2**20  # 4 MiB: a long book; keeps tokenizing / shingling one record under ~1 GB


def default_max_doc_bytes() -> int:
    """The record size limit in bytes (0: none): `$HYBRIDLM_MAX_DOC_BYTES` (set by `--max-doc-bytes`, inherited by
    worker processes) or 4 MiB."""
    raw = os.environ.get(MAX_DOC_BYTES_ENV, "").strip()
    if not raw:
        return DEFAULT_MAX_DOC_BYTES
    try:
        value = int(raw)
    except ValueError:
        raise DataError(f"{MAX_DOC_BYTES_ENV}={raw!r} is not a whole number of bytes (0: no limit)") from None
    if value < 0:
        raise DataError(f"--max-doc-bytes must be >= 0 (0: no limit), got {value}")
    return value


def set_max_doc_bytes(value: int | None) -> None:
    """Set the record size limit for this process and the workers it starts (None: back to the default)."""
    if value is None:
        os.environ.pop(MAX_DOC_BYTES_ENV, None)
        return
    if value < 0:
        raise DataError(f"--max-doc-bytes must be >= 0 (0: no limit), got {value}")
    os.environ[MAX_DOC_BYTES_ENV] = str(value)


def reader_settings() -> dict:
    """The reader's settings that change what a stage outputs (recorded in completion markers)."""
    return {"max_doc_bytes": default_max_doc_bytes()}


@dataclass(frozen=True)
class InputFile:
    """One input file: `source` is the dataset it belongs to (the name of the argument it came from).

    `key` (per-shard state and rejects) and `out_relpath` (the JSONL written for it) are unique among the files of
    one `expand_inputs` call, whatever the input tree holds (see `_assign_names`)."""

    path: Path
    source: str
    relpath: str  # path relative to the source argument, used to mirror outputs
    key: str = ""
    out_relpath: str = ""

    def __post_init__(self):
        if not self.key:
            object.__setattr__(self, "key", _key(self.source, self.relpath))
        if not self.out_relpath:
            object.__setattr__(self, "out_relpath", f"{self.source}/{output_name(self.relpath)}")


def _key(source: str, relpath: str) -> str:
    return f"{source}__{relpath}".replace("/", "__")


def output_name(relpath: str) -> str:
    """The JSONL output mirroring an input: the input path itself when the input is JSONL (its compression kept),
    else the input path with `.jsonl` appended (`a.parquet` -> `a.parquet.jsonl`), so `a.jsonl` and `a.jsonl.gz`
    never write the same file."""
    return relpath if relpath.endswith(JSONL_SUFFIXES) else relpath + ".jsonl"


def _assign_names(files: list[InputFile]) -> list[InputFile]:
    """Make keys and output names unique within a run: `sub/a.jsonl` and `sub__a.jsonl` share the readable key
    `S__sub__a.jsonl`, `x.parquet` and `x.parquet.jsonl` the output `x.parquet.jsonl`. Colliding keys get a short
    hash of the file's own path; colliding outputs of converted (non-JSONL) inputs get a number."""
    by_key: dict[str, int] = {}
    for f in files:
        by_key[f.key] = by_key.get(f.key, 0) + 1
    taken = {f.out_relpath for f in files if f.relpath.endswith(JSONL_SUFFIXES)}
    out = []
    for f in files:
        key = f.key
        if by_key[key] > 1:
            key = f"{key}-{hashlib.sha1(f'{f.source}/{f.relpath}'.encode()).hexdigest()[:10]}"
        name = f.out_relpath
        if not f.relpath.endswith(JSONL_SUFFIXES):
            stem, n = name[: -len(".jsonl")], 1
            while name in taken:
                name, n = f"{stem}.{n}.jsonl", n + 1
            taken.add(name)
        out.append(InputFile(f.path, f.source, f.relpath, key, name))
    return out


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
    used: set[str] = set()
    arguments: list[tuple[Path, str | None]] = []
    for raw in paths:
        p = Path(raw)
        if not p.exists():
            raise DataError(f"input not found: {p}")
        stage = stage_sources(p)  # an earlier stage's output: its sources keep their names
        arguments += stage if stage is not None else [(p, None)]
    for p, name in arguments:
        base = name or strip_suffix(p.name.rstrip("/")) or "data"
        source, n = base, 0
        while source in used:  # two arguments with the same name stay distinct sources
            n += 1
            source = f"{base}_{n}"
        used.add(source)
        if p.is_dir():
            found = sorted(q for q in p.rglob("*") if _supported(q) and not _hidden(q.relative_to(p)))
            if not found:
                raise DataError(f"no {', '.join(SUPPORTED_SUFFIXES)} files under {p}")
            files.extend(InputFile(q, source, q.relative_to(p).as_posix()) for q in found)
        else:
            if not p.name.endswith(SUPPORTED_SUFFIXES):
                raise DataError(f"unsupported input {p}: expected one of {', '.join(SUPPORTED_SUFFIXES)}")
            files.append(InputFile(p, source, p.name))
    return _assign_names(files)


def stage_sources(p: Path) -> list[tuple[Path, str]] | None:
    """The sources an earlier stage wrote, when `p` is its output directory (holding `.stage.json`) or that
    directory's `kept/`: `(OUTPUT/kept/<source>, source)` for each, so a pipeline keeps the source names (`filter`
    then `dedup` writes `kept/web/web.jsonl`, not `kept/kept/web/web.jsonl` under a source named `kept`)."""
    if (p / ".stage.json").is_file():
        kept = p / "kept"
    elif p.name == "kept" and (p.parent / ".stage.json").is_file():
        kept = p
    else:
        return None
    if not kept.is_dir():
        return None  # a stage that writes its files flat (partition, pack): an ordinary directory
    subs = sorted(d for d in kept.iterdir() if not d.name.startswith((".", "_")))
    if not subs or not all(d.is_dir() for d in subs):
        return None  # not laid out by source: read it as an ordinary directory
    return [(d, d.name) for d in subs]


def _hidden(rel: Path) -> bool:
    return any(part.startswith((".", "_")) for part in rel.parts)


def check_output_location(inputs: list[str | Path], output_dir: str | Path) -> None:
    """Refuse an output directory inside an input directory (a rerun would read its own output back as input) or
    one that contains an input (the run would overwrite what it reads)."""
    out = Path(output_dir).resolve()
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            continue  # expand_inputs names it
        rp = p.resolve()
        if p.is_dir() and out.is_relative_to(rp):
            raise DataError(
                f"output directory {output_dir} is inside input directory {raw}: a rerun would read its own output "
                "back as input; choose an output directory outside the inputs"
            )
        if rp.is_relative_to(out):
            raise DataError(
                f"input {raw} is inside output directory {output_dir}: the run would overwrite what it reads; "
                "choose an output directory that holds no input"
            )


def json_error_reason(err: json.JSONDecodeError) -> str:
    """`malformed JSON: Expecting value at column 3`; messages that end in "at" ("Unterminated string starting at")
    take the column directly."""
    joiner = " " if err.msg.endswith(" at") else " at "
    return f"malformed JSON: {err.msg}{joiner}column {err.colno}"


def input_signature(f: InputFile) -> dict:
    """What a result computed from `f` depends on: its path, size and modification time."""
    st = f.path.stat()
    return {"path": str(f.path), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class RejectLog:
    """Collects rejected inputs (file, line, reason, raw text) and writes them to a JSONL file.

    It is also the tally of a read: `lines` counts the non-blank input lines (rows of Parquet/Arrow/JSON) seen, so
    `documents yielded + count == lines` (nothing is dropped without a reject). Empty input files are listed in
    `empty_files` (they hold no line to reject). A stale rejects file from an earlier run is removed on creation."""

    def __init__(self, path: Path | None = None):
        self.path = Path(path) if path is not None else None
        self.count = 0
        self.lines = 0
        self.by_reason: dict[str, int] = {}
        self.examples: list[dict] = []
        self.empty_files: list[str] = []
        self._fh = None
        if self.path is not None:
            self.path.unlink(missing_ok=True)

    def add(self, file: Path | str, line: int, reason: str, raw: bytes | str | None = None) -> None:
        kind = reason.split(":")[0]
        self.count += 1
        self.by_reason[kind] = self.by_reason.get(kind, 0) + 1
        if isinstance(raw, bytes):
            raw = raw.decode("utf-8", "backslashreplace")
        elif isinstance(raw, str) and _SURROGATE.search(raw):
            raw = raw.encode("utf-8", "backslashreplace").decode("utf-8")
        entry = {"file": str(file), "line": line, "reason": reason, "raw": raw}
        if len(self.examples) < 20:
            self.examples.append({k: v for k, v in entry.items() if k != "raw"})
        if self.path is not None:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "w", encoding="utf-8")
            self._fh.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def empty(self, file: Path | str) -> None:
        self.empty_files.append(str(file))

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def summary(self) -> dict:
        return {
            "rejected": self.count,
            "input_lines": self.lines,
            "by_reason": dict(sorted(self.by_reason.items())),
            "examples": self.examples,
            "empty_files": self.empty_files,
        }


class _Truncated(Exception):
    """A compressed stream that ends inside a frame."""


class _ZstdRaw(io.RawIOBase):
    """A zstd file as a raw stream, frame by frame, that raises `_Truncated` when the file ends inside a frame
    (zstandard's `stream_reader` just stops there, silently losing the rest)."""

    def __init__(self, path: Path):
        import zstandard

        self._fh = open(path, "rb")
        self._dctx = zstandard.ZstdDecompressor()
        self._d = self._dctx.decompressobj()
        self._in_frame = False
        self._buf = memoryview(b"")
        self._done = False

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        while not len(self._buf) and not self._done:
            chunk = self._fh.read(1 << 16)
            if not chunk:
                self._done = True
                if self._in_frame:
                    raise _Truncated("zstd")
                break
            parts = []
            while chunk:
                parts.append(self._d.decompress(chunk))
                self._in_frame = True
                if self._d.eof:
                    chunk = self._d.unused_data
                    self._d = self._dctx.decompressobj()
                    self._in_frame = False
                else:
                    chunk = b""
            self._buf = memoryview(b"".join(parts))
        n = min(len(b), len(self._buf))
        b[:n] = self._buf[:n]
        self._buf = self._buf[n:]
        return n

    def close(self) -> None:
        self._fh.close()
        super().close()


def _open_binary(path: Path):
    if path.name.endswith(".zst"):
        return io.BufferedReader(_ZstdRaw(path), buffer_size=1 << 20)
    if path.name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def _read_error(path: Path, err: BaseException, line: int) -> DataError:
    """One line for a compressed input that cannot be read to its end."""
    kind = "zstd" if path.name.endswith(".zst") else "gzip"
    where = f"after line {line}" if line else "before the first line"
    msg = str(err).splitlines()[0] if str(err) else type(err).__name__
    if isinstance(err, (_Truncated, EOFError)):
        what = f"truncated {kind} data: the file ends mid-stream {where}"
    elif isinstance(err, gzip.BadGzipFile) or "Unknown frame descriptor" in msg:
        what = f"not {kind} data although the name ends in .{'zst' if kind == 'zstd' else 'gz'} ({msg})"
    else:
        what = f"corrupt {kind} data {where} ({msg})"
    return DataError(f"cannot read {path}: {what}; nothing was written for it: re-create or re-download the file")


def iter_records(
    f: InputFile,
    text_key: str | None = "text",
    rejects: RejectLog | None = None,
    max_doc_bytes: int | None = None,
    line_range: tuple[int, int] | None = None,
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield `(line, record)` for every good record of `f` (line is 1-based; row number for Parquet/Arrow/JSON).

    Bad records go to `rejects` with their line: malformed JSON, non-UTF-8 bytes, invalid Unicode (lone surrogate
    escapes), records over `max_doc_bytes` (default `default_max_doc_bytes()`, 0: no limit; an over-long line is
    never held in memory whole), a missing or non-string text field. `text_key=None` accepts records without a text
    field. A truncated or mislabelled compressed file is a `DataError` naming it. `line_range=(lo, hi)` reads only
    lines lo <= line < hi of a JSONL file (the others are skipped undecoded).
    """
    rejects = rejects if rejects is not None else RejectLog()
    limit = default_max_doc_bytes() if max_doc_bytes is None else max_doc_bytes
    n = 0
    if f.path.name.endswith(JSONL_SUFFIXES):
        gen = _iter_jsonl(f.path, rejects, limit, line_range)
    elif line_range is not None:
        raise ValueError("line_range is only supported for JSONL inputs")
    else:
        gen = _iter_hf(f.path, rejects)
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
            if limit and not f.path.name.endswith(JSONL_SUFFIXES) and len(text) > limit:
                rejects.add(f.path, line, _too_large(len(text.encode("utf-8")), limit), text[:1000])
                continue
        n += 1
        yield line, rec
    if n == 0 and f.path.stat().st_size == 0:
        rejects.empty(f.path)


_MISSING = object()
_SURROGATE = re.compile("[\ud800-\udfff]")
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")


def _too_large(size: int, limit: int) -> str:
    return f"document too large: {size:,} bytes > the limit of {limit:,} (--max-doc-bytes; 0 for none)"


def _lone_surrogate(obj, where: str = "") -> str | None:
    """The first lone surrogate in a parsed record (JSON allows `\\ud800` escapes that are not valid Unicode and
    cannot be encoded as UTF-8 by any later stage), as a reason, else None."""
    if isinstance(obj, str):
        m = _SURROGATE.search(obj)
        return f"invalid Unicode: lone surrogate U+{ord(m.group()):04X} in {where or 'the record'}" if m else None
    if isinstance(obj, dict):
        for k, v in obj.items():
            r = _lone_surrogate(k, "a field name") or _lone_surrogate(v, f"field '{k}'" if not where else where)
            if r:
                return r
    elif isinstance(obj, list):
        for v in obj:
            r = _lone_surrogate(v, where)
            if r:
                return r
    return None


def _iter_jsonl(
    path: Path, rejects: RejectLog, limit: int = 0, line_range: tuple[int, int] | None = None
) -> Iterator[tuple[int, dict]]:
    i = 0
    lo, hi = line_range or (1, None)
    try:
        with _open_binary(path) as fh:
            while True:
                raw = fh.readline(limit + 1) if limit else fh.readline()
                if not raw:
                    break
                i += 1
                if hi is not None and i >= hi:
                    break
                if i < lo:  # before the range: skip undecoded (the rest of an over-long line too)
                    while limit and not raw.endswith(b"\n"):
                        raw = fh.readline(1 << 20)
                        if not raw:
                            break
                    continue
                if limit and len(raw) > limit and not (len(raw) == limit + 1 and raw.endswith(b"\n")):
                    size, head = len(raw), raw[:1000]
                    while not raw.endswith(b"\n"):  # skip the rest of the line without holding it
                        raw = fh.readline(1 << 20)
                        if not raw:
                            break
                        size += len(raw)
                    rejects.lines += 1
                    rejects.add(path, i, _too_large(size - raw.endswith(b"\n"), limit), head + b"...")
                    continue
                if not raw.strip():
                    continue
                rejects.lines += 1
                try:
                    line = raw.decode("utf-8")
                except UnicodeDecodeError as e:
                    rejects.add(path, i, f"non-UTF-8 bytes: {e.reason} at byte {e.start}", raw.rstrip(b"\n"))
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError as e:
                    rejects.add(path, i, json_error_reason(e), line.rstrip("\n"))
                    continue
                if not isinstance(rec, dict):
                    rejects.add(path, i, "record is not a JSON object", line.rstrip("\n"))
                    continue
                if _SURROGATE_ESCAPE.search(raw):
                    bad = _lone_surrogate(rec)
                    if bad:
                        rejects.add(path, i, bad, line.rstrip("\n"))
                        continue
                yield i, rec
    except Exception as e:  # a compressed stream that cannot be read to its end: one line naming the file
        compressed = path.name.endswith((".gz", ".zst"))
        if compressed and (isinstance(e, (_Truncated, EOFError, zlib.error, gzip.BadGzipFile))
                           or type(e).__name__ == "ZstdError"):
            raise _read_error(path, e, i) from None
        raise


def _iter_hf(path: Path, rejects: RejectLog | None = None) -> Iterator[tuple[int, dict]]:
    """Stream a JSON / Parquet / Arrow file with Hugging Face `datasets` (no full load into memory)."""
    if path.stat().st_size == 0:
        return
    import datasets

    datasets.disable_progress_bars()
    builder = {".json": "json", ".parquet": "parquet", ".arrow": "arrow"}[path.suffix]
    try:
        ds = datasets.load_dataset(builder, data_files=str(path), split="train", streaming=True)
        for row in enumerate(ds, 1):
            if rejects is not None:
                rejects.lines += 1
            yield row
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
    jsonl = f.path.name.endswith(JSONL_SUFFIXES)
    gen = _iter_jsonl(f.path, RejectLog(), default_max_doc_bytes()) if jsonl else _iter_hf(f.path)
    for k, item in enumerate(gen):
        if k >= n:
            break
        yield item


class JsonlWriter:
    """Writes records as JSONL to a temp file renamed into place on close (compressed with zstd or gzip when the name
    ends in .zst / .gz). Used as a context manager, an exception discards the temp file: no half-written output."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = self.path.with_name(self.path.name + ".tmp")
        self.count = 0
        self._raw = open(self.tmp, "wb")
        if self.path.name.endswith(".zst"):
            import zstandard

            self._fh = zstandard.ZstdCompressor(level=3).stream_writer(self._raw, closefd=False)
        elif self.path.name.endswith(".gz"):
            self._fh = gzip.GzipFile(fileobj=self._raw, mode="wb", compresslevel=6, mtime=0)
        else:
            self._fh = self._raw

    def write(self, record: dict) -> None:
        self._fh.write((json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8"))
        self.count += 1

    def write_raw(self, line: bytes) -> None:
        """Write one record that is already a JSON line (read from a JSONL input and validated) as it is."""
        self._fh.write(line if line.endswith(b"\n") else line + b"\n")
        self.count += 1

    def _close_handles(self) -> None:
        if self._fh is not self._raw:
            self._fh.close()
        self._raw.close()

    def close(self) -> None:
        self._close_handles()
        os.replace(self.tmp, self.path)

    def abort(self) -> None:
        """Discard what was written (the final path is left as it was)."""
        try:
            self._close_handles()
        finally:
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> JsonlWriter:
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()
