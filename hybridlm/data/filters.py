"""The Zyda-1 heuristic document filters, with their semantics spelled out, and the `filter` stage.

For a document `text` (all thresholds are fields of `FilterConfig`):

1. Collapse runs: every run of at least `collapse_runs[c]` copies of character `c` becomes one `c` (10 for
   `- _ / \\ \\n \\r . , : ? NBSP`, 40 for space, 20 for tab). Call the result `collapsed`.
2. `min_length`: remove if `len(collapsed) < 100`.
3. `mean_word_length`: words are the pieces of `text` split at every single whitespace, `-`, `/`, `\\` or `.`
   (empty pieces count), remove unless `3 <= total word characters / number of pieces <= 12`.
4. `fraction_non_alphanumeric`: characters matching `[^\\w\\s]` over `len(text)`; remove if > 0.3.
5. `fraction_numerical`: characters matching `\\d` over `len(text)`; remove if > 0.2.
6. `repeated_characters`: runs of >= 7 identical word characters in `collapsed`; remove if there are > 50.
7. `count:<p>`: non-overlapping occurrences of a literal pattern in `text`; remove if above its maximum
   (`xml` 10, `<?xml version=` 1, `lorem ipsum` 2).
8. `fraction:<p>`: occurrences in `text` over `len(collapsed)`; remove if above its maximum
   (`https://` 0.002, `<` 0.03, `":` 0.002, `www.` 0.01).
9. Word lists (`wordlist_count:<name>`, `wordlist_fraction:<name>`): summed occurrences of each listed string,
   as a count and as a fraction of `len(collapsed)`. None are shipped; pass your own lists.

Checks run in this order and a removed document is attributed to the first one it fails, so the per-filter counts
add up to the removed total. Patterns are literal strings (Zyda's scripts passed them to `re.findall`, where `?` and
`.` are metacharacters; the literal reading is what the thresholds were written for).
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from hybridlm.data.engine import run_shards
from hybridlm.data.errors import DataError
from hybridlm.data.io import InputFile, JsonlWriter, RejectLog, check_text_field, expand_inputs, iter_records
from hybridlm.data.outputs import FILTER_OUTPUTS, data_stage, prune, write_json

DEFAULT_COLLAPSE = {
    "-": 10,
    " ": 40,
    "_": 10,
    "/": 10,
    "\\": 10,
    "\n": 10,
    "\t": 20,
    "\r": 10,
    ".": 10,
    ",": 10,
    ":": 10,
    "?": 10,
    "\xa0": 10,
}
_WORD_SEP = re.compile(r"[\s\-/\\.]")
_NON_ALNUM = re.compile(r"[^\w\s]")
_DIGIT = re.compile(r"\d")


@dataclass
class WordList:
    name: str
    words: list[str]
    max_count: int | None = None
    max_fraction: float | None = None


def _check_number(name: str, value, whole: bool = False, low: float = 0.0, high: float | None = None) -> None:
    """A threshold must be a (whole, for counts) finite number in [low, high]."""
    kind = "a whole number" if whole else "a number"
    ok_type = isinstance(value, int) if whole else isinstance(value, (int, float))
    if isinstance(value, bool) or not ok_type or (not whole and not math.isfinite(value)):
        raise DataError(f"{name} must be {kind}, got {value!r}")
    if value < low or (high is not None and value > high):
        where = f">= {low:g}" if high is None else f"in [{low:g}, {high:g}]"
        raise DataError(f"{name} must be {where}, got {value!r}")


@dataclass
class FilterConfig:
    min_length: int = 100
    min_mean_word_length: float = 3.0
    max_mean_word_length: float = 12.0
    max_fraction_non_alphanumeric: float = 0.3
    max_fraction_numerical: float = 0.2
    max_repeated_substrings: int = 50
    repeat_run_length: int = 7
    collapse_runs: dict[str, int] = field(default_factory=lambda: dict(DEFAULT_COLLAPSE))
    pattern_max_counts: dict[str, int] = field(
        default_factory=lambda: {"xml": 10, "<?xml version=": 1, "lorem ipsum": 2}
    )
    pattern_max_fractions: dict[str, float] = field(
        default_factory=lambda: {"https://": 0.002, "<": 0.03, '":': 0.002, "www.": 0.01}
    )
    word_lists: list[WordList] = field(default_factory=list)

    def __post_init__(self) -> None:
        """Every threshold is checked where it enters (CLI, --config file, Python): one line naming it."""
        for name in ("min_length", "max_repeated_substrings"):
            _check_number(name, getattr(self, name), whole=True)
        _check_number("repeat_run_length", self.repeat_run_length, whole=True, low=1)
        for name in ("min_mean_word_length", "max_mean_word_length"):
            _check_number(name, getattr(self, name))
        if self.min_mean_word_length > self.max_mean_word_length:
            raise DataError(f"min_mean_word_length {self.min_mean_word_length} is above max_mean_word_length "
                            f"{self.max_mean_word_length}")
        for name in ("max_fraction_non_alphanumeric", "max_fraction_numerical"):
            _check_number(name, getattr(self, name), high=1.0)
        for name, whole, high in (("collapse_runs", True, None), ("pattern_max_counts", True, None),
                                  ("pattern_max_fractions", False, 1.0)):
            table = getattr(self, name)
            if not isinstance(table, dict):
                raise DataError(f"{name} must be a mapping of pattern -> limit, got {type(table).__name__}")
            for pattern, limit in table.items():
                if not isinstance(pattern, str) or not pattern:
                    raise DataError(f"{name}: patterns must be non-empty strings, got {pattern!r}")
                _check_number(f"{name}[{pattern!r}]", limit, whole=whole, high=high)
        for wl in self.word_lists:
            if wl.max_count is not None:
                _check_number(f"word list {wl.name} max_count", wl.max_count, whole=True)
            if wl.max_fraction is not None:
                _check_number(f"word list {wl.name} max_fraction", wl.max_fraction)

    @classmethod
    def from_dict(cls, d: dict) -> FilterConfig:
        if not isinstance(d, dict):
            raise DataError(f"filter settings must be a mapping of field -> value, got {type(d).__name__}")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise DataError(f"unknown filter settings {sorted(unknown)}; allowed: {sorted(known)}")
        d = dict(d)
        lists = d.get("word_lists", [])
        if not isinstance(lists, list) or not all(isinstance(w, (WordList, dict)) for w in lists):
            raise DataError("word_lists must be a list of {name, words, max_count, max_fraction} mappings")
        try:
            d["word_lists"] = [w if isinstance(w, WordList) else WordList(**w) for w in lists]
        except TypeError as err:
            raise DataError(f"word_lists: {err}") from None
        return cls(**d)

    def filter_names(self) -> list[str]:
        names = [
            "min_length",
            "mean_word_length",
            "fraction_non_alphanumeric",
            "fraction_numerical",
            "repeated_characters",
        ]
        names += [f"count:{p}" for p in self.pattern_max_counts]
        names += [f"fraction:{p}" for p in self.pattern_max_fractions]
        for wl in self.word_lists:
            names += [f"wordlist_count:{wl.name}"] * (wl.max_count is not None)
            names += [f"wordlist_fraction:{wl.name}"] * (wl.max_fraction is not None)
        return names


class ZydaFilters:
    """Applies a `FilterConfig`; `check(text)` returns None to keep, or the name of the first failed filter."""

    def __init__(self, config: FilterConfig | None = None):
        self.config = config or FilterConfig()
        self._collapse = [
            (re.compile(re.escape(c) + f"{{{n},}}"), c) for c, n in self.config.collapse_runs.items() if n > 0
        ]
        self._repeat = re.compile(r"(\w)\1{" + str(self.config.repeat_run_length - 1) + ",}")

    def collapse(self, text: str) -> str:
        for rx, c in self._collapse:
            text = rx.sub(lambda _m, c=c: c, text) if c in text else text
        return text

    def features(self, text: str) -> dict:
        """All measured quantities (useful for inspecting why a document goes)."""
        collapsed = self.collapse(text)
        n, nc = len(text), len(collapsed)
        n_sep = len(_WORD_SEP.findall(text))
        return {
            "length": nc,
            "mean_word_length": (n - n_sep) / (n_sep + 1) if n else 0.0,
            "fraction_non_alphanumeric": len(_NON_ALNUM.findall(text)) / n if n else 0.0,
            "fraction_numerical": len(_DIGIT.findall(text)) / n if n else 0.0,
            "repeated_substrings": len(self._repeat.findall(collapsed)),
            "collapsed": collapsed,
        }

    def check(self, text: str) -> str | None:
        c = self.config
        collapsed = self.collapse(text)
        nc = len(collapsed)
        if nc < c.min_length:
            return "min_length"
        n = len(text)
        n_sep = len(_WORD_SEP.findall(text))
        mwl = (n - n_sep) / (n_sep + 1)
        if mwl < c.min_mean_word_length or mwl > c.max_mean_word_length:
            return "mean_word_length"
        if len(_NON_ALNUM.findall(text)) / n > c.max_fraction_non_alphanumeric:
            return "fraction_non_alphanumeric"
        if len(_DIGIT.findall(text)) / n > c.max_fraction_numerical:
            return "fraction_numerical"
        if len(self._repeat.findall(collapsed)) > c.max_repeated_substrings:
            return "repeated_characters"
        for p, mx in c.pattern_max_counts.items():
            if text.count(p) > mx:
                return f"count:{p}"
        for p, mx in c.pattern_max_fractions.items():
            if text.count(p) / nc > mx:
                return f"fraction:{p}"
        for wl in c.word_lists:
            total = sum(text.count(w) for w in wl.words)
            if wl.max_count is not None and total > wl.max_count:
                return f"wordlist_count:{wl.name}"
            if wl.max_fraction is not None and total / nc > wl.max_fraction:
                return f"wordlist_fraction:{wl.name}"
        return None


def filter_texts(texts, config: FilterConfig | None = None) -> Iterator[str | None]:
    f = ZydaFilters(config)
    return (f.check(t) for t in texts)


# --- the stage ----------------------------------------------------------------------------------------------------


def _filter_shard(payload: dict) -> dict:
    f: InputFile = payload["file"]
    out = Path(payload["output_dir"])
    text_key = payload["text_key"]
    filters = ZydaFilters(payload["config"])
    rejects = RejectLog(out / "rejects" / f"{f.key}.jsonl")
    by_filter: dict[str, int] = {}
    n_in = 0
    with contextlib.ExitStack() as stack:
        stack.callback(rejects.close)
        kept = stack.enter_context(JsonlWriter(out / "kept" / f.out_relpath))
        removed = (
            stack.enter_context(JsonlWriter(out / "removed" / f.out_relpath)) if payload["write_removed"] else None
        )
        for _line, rec in iter_records(f, text_key, rejects):
            n_in += 1
            reason = filters.check(rec[text_key])
            if reason is None:
                if payload["collapse_runs"]:
                    rec[text_key] = filters.collapse(rec[text_key])
                kept.write(rec)
            else:
                by_filter[reason] = by_filter.get(reason, 0) + 1
                if removed is not None:
                    rec["filter_reason"] = reason
                    removed.write(rec)
    return {
        "file": str(f.path),
        "source": f.source,
        "input": n_in,
        "kept": kept.count,
        "removed": n_in - kept.count,
        "by_filter": by_filter,
        "rejects": rejects.summary(),
    }


@data_stage("filter", owned=FILTER_OUTPUTS, mirror=("kept",), rejects="rejects")
def run_filter(
    inputs: list[str | Path],
    output_dir: str | Path,
    text_key: str = "text",
    config: FilterConfig | None = None,
    workers: int | None = None,
    write_removed: bool = True,
    collapse_runs: bool = False,
    quiet: bool = True,
) -> dict:
    """Filter every input file into `OUTPUT/kept/` and `OUTPUT/removed/`; writes and returns `OUTPUT/report.json`.

    Restartable: a file already filtered by an earlier run into the same output directory, from the same input (path,
    size, mtime) with the same settings, is not redone; outputs of files no longer among the inputs are removed.
    """
    config = config or FilterConfig()
    out = Path(output_dir)
    files = expand_inputs(inputs)
    check_text_field(files, text_key)
    shards = [
        (
            f.key,
            {
                "file": f,
                "output_dir": str(out),
                "text_key": text_key,
                "config": config,
                "write_removed": write_removed,
                "collapse_runs": collapse_runs,
            },
        )
        for f in files
    ]
    results = run_shards(_filter_shard, shards, out / ".state" / "filter", workers, "filter", quiet)
    prune(out / "removed", [f.out_relpath for f in files] if write_removed else [])
    report = summarize_filter(results.values(), config)
    write_json(out / "report.json", report)
    return report


def summarize_filter(results, config: FilterConfig) -> dict:
    results = list(results)
    by_filter = {name: 0 for name in config.filter_names()}
    rejected, reject_reasons, examples = 0, {}, []
    for r in results:
        for k, v in r["by_filter"].items():
            by_filter[k] = by_filter.get(k, 0) + v
        rejected += r["rejects"]["rejected"]
        for k, v in r["rejects"]["by_reason"].items():
            reject_reasons[k] = reject_reasons.get(k, 0) + v
        examples += r["rejects"]["examples"]
    n_in = sum(r["input"] for r in results)
    kept = sum(r["kept"] for r in results)
    lines = None
    if all("input_lines" in r["rejects"] for r in results):
        lines = sum(r["rejects"]["input_lines"] for r in results)
        assert n_in + rejected == lines, (n_in, rejected, lines)  # conservation: every input line is accounted for
    return {
        "input_lines": lines,
        "input_documents": n_in,
        "kept_documents": kept,
        "removed_documents": n_in - kept,
        "removed_by_filter": by_filter,
        "rejected_records": rejected,
        "empty_files": [e for r in results for e in r["rejects"].get("empty_files", [])],
        "rejected_by_reason": reject_reasons,
        "reject_examples": examples[:20],
        "files": results,
        "config": asdict(config),
    }
