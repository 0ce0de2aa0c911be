"""Host memory of a benchmarked region: the peak resident set size (RSS) while it runs, above a baseline.

Linux resets the peak (VmHWM) by writing 5 to /proc/self/clear_refs; elsewhere only a new lifetime peak
(ru_maxrss) shows. glibc keeps freed memory, so `settle` trims it before a baseline is read. Pages a
tensor allocated but never touched (torch.zeros of a large buffer) are not resident: RSS counts what is
used. glibc also keeps large freed blocks once its mmap threshold has grown past them, so a benchmark that
frees and reallocates buffers calls `return_large_frees` first. To the MiB; CUDA's allocator statistics
are exact."""

from __future__ import annotations

import ctypes
import gc
import resource
from collections.abc import Callable
from pathlib import Path


def settle() -> None:
    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc
        pass


def return_large_frees(threshold: int = 2**20) -> None:
    """glibc: serve allocations of `threshold` bytes and more by mmap, always (the threshold stops growing),
    so freeing a large tensor returns its memory and the RSS follows the live tensors."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(-3, threshold)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):  # not glibc
        pass


def rss_bytes() -> int:
    """The current RSS (0 where /proc is missing)."""
    try:
        return _proc_status_kb("VmRSS") * 1024
    except OSError:
        return 0


def peak_rss_above(before: int, fn: Callable[[], object]) -> int:
    """Bytes: the peak RSS while `fn` runs minus `before` (without a peak reset: the rise of the lifetime peak)."""
    if _reset_peak_rss():
        fn()
        return max(0, _proc_status_kb("VmHWM") * 1024 - before)
    lifetime = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    fn()
    return max(0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - lifetime) * 1024


def _reset_peak_rss() -> bool:
    """Linux: writing 5 to clear_refs resets VmHWM (the peak RSS) to the current RSS."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def _proc_status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise OSError(f"/proc/self/status has no {key}")
