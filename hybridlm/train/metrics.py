"""Metrics: one JSON object per optimizer step in OUTPUT/metrics.jsonl (always), TensorBoard when
installed, and a rich progress bar with loss, LR, tokens/s and ETA."""

from __future__ import annotations

import json
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


def read_metrics(path: str | Path) -> list[dict]:
    path = Path(path)
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


class MetricsLogger:
    """Appends step records; on resume, records after the resumed step (logged after the checkpoint by the
    interrupted run) are dropped first, so the file always holds each step once."""

    def __init__(self, out_dir: Path, start_step: int, enabled: bool = True, tensorboard: bool = True):
        self.path = Path(out_dir) / "metrics.jsonl"
        self.enabled = enabled
        self._tb = None
        if not enabled:
            return
        kept = [r for r in read_metrics(self.path) if r.get("step", 0) <= start_step]
        self.path.write_text("".join(json.dumps(r) + "\n" for r in kept))
        self._fh = open(self.path, "a", encoding="utf-8")
        if tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self._tb = SummaryWriter(str(Path(out_dir) / "tensorboard"))
            except ImportError:
                self._tb = None

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()
        if self._tb is not None:
            for k, v in record.items():
                if k != "step" and isinstance(v, (int, float)) and not isinstance(v, bool):
                    self._tb.add_scalar(k, v, record["step"])

    def close(self) -> None:
        if not self.enabled:
            return
        self._fh.close()
        if self._tb is not None:
            self._tb.close()


class ProgressBar:
    def __init__(self, total: int, start: int, enabled: bool, description: str = "train"):
        self.enabled = enabled
        if not enabled:
            return
        self._p = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}  {task.fields[tps]} tok/s"),
            TimeRemainingColumn(),
            console=Console(stderr=True),
            transient=False,
        )
        self._p.start()
        self._task = self._p.add_task(description, total=total, completed=start, loss="-", lr="-", tps="-")

    def update(self, step: int, loss: float, lr: float, tokens_per_s: float | None) -> None:
        if self.enabled:
            self._p.update(
                self._task,
                completed=step,
                loss=f"{loss:.4f}",
                lr=f"{lr:.2e}",
                tps=f"{tokens_per_s:,.0f}" if tokens_per_s else "-",
            )

    def close(self) -> None:
        if self.enabled:
            self._p.stop()
