"""Where ``python -m trainop submit --follow`` prints: the trainer's own tqdm bar in a terminal, plain lines
elsewhere.

Why the trainer's ``trainer.console.Progress`` and not a bar of our own: a run followed from a laptop should look
exactly like the same run started with ``python -m trainer run`` (the same bar, postfix and summary table).
It needs tqdm, which the operator image leaves out; without it (or outside a terminal) the display prints
plain lines, one per event, that a pipe or CI log can keep.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping
from typing import IO, Any

from trainer.api.status import EpochStats

from .client_follow import Display, epoch_line


class PlainDisplay:
    """One line per event (not a terminal, or no tqdm)."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream

    def line(self, text: str) -> None:
        print(text, file=self.stream, flush=True)

    def epoch(self, stats: EpochStats) -> None:
        self.line(epoch_line(stats))

    def summary(self, summary: Mapping[str, Any], text: str) -> None:
        self.line(text)

    def stopped_early(self, epoch: int, best_epoch: int) -> None:
        self.line(f"stopped early at epoch {epoch} (best {best_epoch})")

    def close(self) -> None:
        self.stream.flush()


class BarDisplay:
    """The trainer's bar over the epochs, other lines written above it, the summary table at the end."""

    def __init__(self, stream: IO[str]) -> None:
        # tqdm only where a terminal wants the bar; ImportError without it (make_display falls back)
        self.console, self.stream = importlib.import_module("trainer.console"), stream
        self.progress: Any = (
            None  # trainer.console.Progress, made at the first epoch (when the total is known)
        )

    def line(self, text: str) -> None:
        if self.progress is not None:
            self.progress.log(text)  # no fields: the text itself, written above the bar
        else:
            print(text, file=self.stream, flush=True)

    def epoch(self, stats: EpochStats) -> None:
        if self.progress is None:
            self.progress = self.console.Progress(
                stats.total_epochs, stats.epoch - 1, interactive=True, stream=self.stream
            )
        bar = self.progress.bar
        if (
            bar is not None
        ):  # a resumed or re-attached run: the bar stands where the epoch before this one ended
            bar.total, bar.n = stats.total_epochs, stats.epoch - 1
        self.progress.epoch(stats)

    def summary(self, summary: Mapping[str, Any], text: str) -> None:
        self.close()
        try:
            table = self.console.summary_table(dict(summary))
        except (KeyError, TypeError, ValueError, IndexError):  # a summary of another trainer version
            table = text
        print(table, file=self.stream, end="" if table.endswith("\n") else "\n", flush=True)

    def stopped_early(self, epoch: int, best_epoch: int) -> None:
        if self.progress is None:
            self.line(f"stopped early at epoch {epoch} (best {best_epoch})")
        else:
            self.progress.stopped_early(epoch, best_epoch)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.close()
            self.progress = None


class QuietDisplay:
    """Nothing while following (``wait``): only the final line is printed, by the command."""

    def line(self, text: str) -> None:
        pass

    def epoch(self, stats: EpochStats) -> None:
        pass

    def summary(self, summary: Mapping[str, Any], text: str) -> None:
        pass

    def stopped_early(self, epoch: int, best_epoch: int) -> None:
        pass

    def close(self) -> None:
        pass


def make_display(stream: IO[str] | None = None, terminal: bool | None = None) -> Display:
    """The bar when ``stream`` is a terminal (``terminal`` overrides) and tqdm is there, else plain lines."""
    stream = stream or sys.stdout
    if terminal is None:
        terminal = hasattr(stream, "isatty") and stream.isatty()
    if terminal:
        try:
            return BarDisplay(stream)
        except ImportError:  # no tqdm (the operator's own dependencies): plain lines
            pass
    return PlainDisplay(stream)
