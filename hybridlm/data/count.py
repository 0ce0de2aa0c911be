"""Token counting (`hybridlm data count`): documents, tokens and UTF-8 bytes per file and in total.

Reading and tokenising overlap: a reader thread parses records into batches (a bounded queue, so memory
stays bounded whatever the dataset size) while batches go to the tokenizer's own batch encoder, which runs
on all cores (Rust threads, GIL released), two batches in flight so no core idles at a batch's tail.
With `save`, token ids are also written per input file as Parquet (`input_ids` column), loadable with
`datasets.load_dataset("parquet", ...)`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from pathlib import Path

from hybridlm.data.io import InputFile, RejectLog, check_text_field, expand_inputs, iter_records, strip_suffix
from hybridlm.data.outputs import data_stage, prune, write_json
from hybridlm.data.tokenizer import load_tokenizer

_END = object()


def batched_texts(
    f: InputFile, text_key: str, rejects: RejectLog, batch_size: int = 1024, prefetch: int = 4
) -> Iterator[list[str]]:
    """Batches of texts of one file, parsed ahead in a thread (at most `prefetch` batches waiting)."""
    q: queue.Queue = queue.Queue(maxsize=prefetch)
    err: list[BaseException] = []
    stop = threading.Event()

    def reader():
        try:
            batch = []
            for _, rec in iter_records(f, text_key, rejects):
                batch.append(rec[text_key])
                if len(batch) >= batch_size:
                    q.put(batch)
                    batch = []
                    if stop.is_set():
                        return
            if batch:
                q.put(batch)
        except BaseException as e:  # re-raised in the consumer
            err.append(e)
        finally:
            q.put(_END)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    try:
        while (item := q.get()) is not _END:
            yield item
    finally:
        stop.set()
        while t.is_alive():  # drain so the reader can finish
            try:
                q.get(timeout=0.1)
            except queue.Empty:
                pass
        t.join()
    if err:
        raise err[0]


def encode_stream(tok, batches, in_flight: int = 2):
    """Yield `(batch, encodings)` in order, keeping `in_flight` batches in the tokenizer at once: the tokenizer
    releases the GIL, so while one batch finishes on some cores the next already starts on the others (a single
    synchronous call leaves cores idle at each batch's tail)."""
    from collections import deque
    from concurrent.futures import ThreadPoolExecutor

    encode = tok.encode_batch_fast if hasattr(tok, "encode_batch_fast") else tok.encode_batch
    with ThreadPoolExecutor(in_flight) as ex:
        pending: deque = deque()
        for batch in batches:
            pending.append((batch, ex.submit(encode, batch, add_special_tokens=False)))
            if len(pending) >= in_flight:
                b, fut = pending.popleft()
                yield b, fut.result()
        while pending:
            b, fut = pending.popleft()
            yield b, fut.result()


def parquet_names(files: list[InputFile]) -> dict[str, str]:
    """`--save` output of each file (by key): `SOURCE/STEM.parquet`, or `SOURCE/RELPATH.parquet` for files whose stems
    collide (`a.jsonl` and `a.jsonl.gz`), so no two inputs write one file."""
    short = {f.key: f"{f.source}/{strip_suffix(f.relpath)}.parquet" for f in files}
    clash = {n for n in short.values() if list(short.values()).count(n) > 1}
    return {
        k: (f"{f.source}/{f.relpath}.parquet" if short[k] in clash else short[k])
        for k, f in zip(short, files, strict=True)
    }


@data_stage("count", owned=("report.json", "rejects.jsonl", "tokenized"))
def count_tokens(
    inputs: list[str | Path],
    tokenizer: str | Path,
    text_key: str = "text",
    output_dir: str | Path | None = None,
    save: bool = False,
    batch_size: int = 1024,
    progress=None,
) -> dict:
    """Count documents, tokens and bytes; returns (and with `output_dir` writes) the report.
    `progress(n)` is called with the text bytes of each batch."""
    tok = load_tokenizer(tokenizer)
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    out = Path(output_dir) if output_dir is not None else None
    if save and out is None:
        from hybridlm.data.errors import DataError

        raise DataError("--save needs -o/--output-dir")
    rejects = RejectLog(out / "rejects.jsonl" if out else None)
    parquet = parquet_names(files)
    per_file = []
    try:
        for f in files:
            docs = tokens = nbytes = 0
            writer = _ParquetIds(out / "tokenized" / parquet[f.key]) if save else None
            try:
                for batch, enc in encode_stream(tok, batched_texts(f, text_key, rejects, batch_size)):
                    if writer is None:
                        tokens += sum(len(e) for e in enc)
                    else:
                        ids = [e.ids for e in enc]
                        tokens += sum(map(len, ids))
                        writer.write(ids)
                    docs += len(batch)
                    b = sum(len(t.encode("utf-8")) for t in batch)
                    nbytes += b
                    if progress is not None:
                        progress(b)
            except BaseException:
                if writer is not None:
                    writer.abort()
                raise
            if writer is not None:
                writer.close()
            per_file.append({"file": str(f.path), "documents": docs, "tokens": tokens, "bytes": nbytes})
    finally:
        rejects.close()
    report = {
        "documents": sum(r["documents"] for r in per_file),
        "tokens": sum(r["tokens"] for r in per_file),
        "bytes": sum(r["bytes"] for r in per_file),
        "files": per_file,
        "rejects": rejects.summary(),
        "tokenizer": str(tokenizer),
    }
    assert report["documents"] + rejects.count == rejects.lines  # conservation
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        prune(out / "tokenized", parquet.values() if save else [])
        write_json(out / "report.json", report)
    return report


class _ParquetIds:
    """Streams token id lists into a Parquet file, one row group per batch."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tmp = path.with_name(path.name + ".tmp")
        self.schema = pa.schema([("input_ids", pa.list_(pa.int32()))])
        self.w = pq.ParquetWriter(self.tmp, self.schema)

    def write(self, ids: list[list[int]]) -> None:
        self.w.write_table(
            self.pa.table({"input_ids": self.pa.array(ids, type=self.pa.list_(self.pa.int32()))})
        )

    def close(self) -> None:
        self.w.close()
        self.tmp.replace(self.path)

    def abort(self) -> None:
        try:
            self.w.close()
        finally:
            self.tmp.unlink(missing_ok=True)
