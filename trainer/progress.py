"""What a person (or a log collector) sees while and after training.

In a terminal: one tqdm bar over the epochs whose postfix shows train/val loss, validation MASE and samples/s,
then a summary table. Elsewhere (a pod, CI, a pipe): one JSON object per line, so log tools can parse progress.
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from typing import IO, Any

from tqdm import tqdm

from trainer.train import EpochStats


class Progress:
    def __init__(
        self,
        total_epochs: int,
        start_epoch: int,
        *,
        interactive: bool | None = None,
        stream: IO[str] | None = None,
    ):
        self.stream = stream or sys.stderr
        self.interactive = self.stream.isatty() if interactive is None else interactive
        self.bar: tqdm[Any] | None = None
        if self.interactive:
            sized = shutil.get_terminal_size((0, 0)).columns > 0
            self.bar = tqdm(
                total=total_epochs,
                initial=start_epoch,
                unit="epoch",
                file=self.stream,
                # A pty without a size (script, some CI consoles) reports 0x0, which makes tqdm print nothing.
                **({"dynamic_ncols": True} if sized else {"ncols": 100, "nrows": 40}),
                desc="training",
            )

    def log(self, event: str, **fields: Any) -> None:
        """A one-off message: plain text in a terminal, a JSON line elsewhere."""
        if self.interactive:
            text = fields.pop("message", "")
            (self.bar.write if self.bar else print)(f"{event}: {text}" if text else event, file=self.stream)
        else:
            self.stream.write(json.dumps({"event": event, "time": round(time.time(), 3), **fields}) + "\n")
            self.stream.flush()

    def epoch(self, s: EpochStats) -> None:
        if self.bar is not None:
            self.bar.set_postfix(
                train=f"{s.train_loss:.4f}",
                val=f"{s.val_loss:.4f}",
                mase=f"{s.val_mase:.3f}",
                best=f"{s.best_val_loss:.4f}@{s.best_epoch}",
                sps=f"{s.samples_per_second:,.0f}",
            )
            self.bar.update(1)
        else:
            self.log(
                "epoch",
                epoch=s.epoch,
                total_epochs=s.total_epochs,
                train_loss=round(s.train_loss, 6),
                val_loss=round(s.val_loss, 6),
                val_mase=round(s.val_mase, 4),
                best_val_loss=round(s.best_val_loss, 6),
                best_epoch=s.best_epoch,
                samples_per_second=round(s.samples_per_second, 1),
                seconds=round(s.seconds, 3),
                checkpoint=s.checkpoint,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    return str(v)


def table(rows: list[tuple[str, Any]], title: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in rows]
    return "\n".join(lines)


def summary_table(summary: dict[str, Any]) -> str:
    m = summary["metrics"]
    rows: list[tuple[str, Any]] = [
        ("symbol", summary["symbol"]),
        (
            "validation period",
            f"{summary['validation']['start']} .. {summary['validation']['end']} ({m['n']} windows)",
        ),
        (
            "best epoch",
            f"{summary['best_epoch']} of {summary['epochs_run']}"
            + (" (early stop)" if summary["early_stopped"] else ""),
        ),
        ("val MAE (price)", m["mae"]),
        ("persistence MAE", m["naive_mae"]),
        ("MASE vs persistence", m["mase"]),
        ("pinball (price)", m["pinball"]),
        ("empirical-band pinball", m.get("baseline_pinball", float("nan"))),
        ("80% coverage", m["coverage_80"]),
        (
            "direction h1 / h7",
            f"{m['da_h1']:.3f} / {m['da_h7']:.3f}" if m.get("da_h7") is not None else f"{m['da_h1']:.3f}",
        ),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("parameters", f"{summary['parameters']:,}"),
        ("missing days filled", summary["filled_days"]),
        ("output", summary["output"]),
    ]
    gap = (1 - m["mase"]) * 100
    word = "below" if gap > 0 else "above"
    title = f"Result: validation MAE {abs(gap):.2f}% {word} persistence's (MASE {m['mase']:.4f})"
    return table(rows, title=title) + "\n"
