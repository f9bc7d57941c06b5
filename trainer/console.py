"""What a person (or a log collector) sees while and after training.

In a terminal: one tqdm bar over the epochs whose postfix shows train/val loss, validation MASE and samples/s,
then a summary table. Elsewhere (a pod, CI, a pipe): one JSON object per line, so log tools can parse progress.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from typing import IO, Any

from tqdm import tqdm

# torch-free (not trainer.loop): the operator's CLI draws this bar too (trainop.client_display)
from trainer.api.status import EpochStats


def bar_width(stream: IO[str]) -> dict[str, Any]:
    """tqdm's width arguments for ``stream``: its own terminal's width where it has one; a pty without a size
    (``script``, some CI consoles, a test's pseudo-terminal) reports 0x0, which makes a dynamic tqdm print nothing
    -- even where ``$COLUMNS`` is set (pytest-xdist sets it) -- so it gets $COLUMNS or 100 columns instead."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):  # not a file descriptor, or not a terminal
        columns = 0
    if columns > 0:
        return {"dynamic_ncols": True}
    return {"ncols": shutil.get_terminal_size((100, 40)).columns or 100, "nrows": 40}


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
            self.bar = tqdm(
                total=total_epochs,
                initial=start_epoch,
                unit="epoch",
                file=self.stream,
                **bar_width(self.stream),
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

    def stopped_early(self, epoch: int, best_epoch: int) -> None:
        """Early stopping ended the run before its last epoch: the bar ends full (no ETA left) and one line
        says where it stopped."""
        if self.bar is not None:
            self.bar.total = self.bar.n
            self.bar.refresh()
        self.log(
            "stopped_early",
            message=f"stopped early at epoch {epoch} (best {best_epoch})",
            epoch=epoch,
            best_epoch=best_epoch,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:,.4f}" if abs(v) < 1000 else f"{v:,.1f}"
    if isinstance(v, dict):
        return ", ".join(f"{k} {_fmt(x)}" for k, x in v.items()) or "none"
    return str(v)


def table(rows: list[tuple[str, Any]], title: str = "") -> str:
    width = max(len(k) for k, _ in rows)
    lines = [title] if title else []
    lines += [f"  {k:<{width}}  {_fmt(v)}" for k, v in rows]
    return "\n".join(lines)


_COMPARED = (
    ("MAE (price)", "mae", "{:,.4f}"),
    ("MASE", "mase", "{:.4f}"),
    ("pinball (price)", "pinball", "{:,.4f}"),
    ("80% coverage", "coverage_80", "{:.3f}"),
    ("10-90% width", "width", "{:.2%}"),
)


def comparison_table(m: dict[str, Any]) -> str:
    """The model and the three baselines side by side on the same windows, plus the model's skill."""
    base = m.get("baselines") or {}
    cols = ["model", *base]
    lines = ["  " + " " * 16 + "".join(f"{c:>13}" for c in cols)]
    for label, key, fmt in _COMPARED:
        cells = [fmt.format(m[key]), *(fmt.format(b[key]) for b in base.values())]
        lines.append(f"  {label:<16}" + "".join(f"{c:>13}" for c in cells))
    skills = ["", *(f"{b['skill']:+.1%}" for b in base.values())]
    lines.append(f"  {'model skill':<16}" + "".join(f"{c:>13}" for c in skills))
    return "\n".join(lines)


def verdict(
    m: dict[str, Any], median: dict[str, Any] | None, band: dict[str, Any] | None = None
) -> list[str]:
    """Plain lines on what the model does and does not beat (losses said as plainly as wins)."""
    lines = []
    if median and median.get("shipped") == "persistence":
        lines.append(
            f"median: persistence (the learned median's validation MASE {median['learned_mase']:.4f} did not "
            f"beat persistence significantly, DM p={median['p_value']:.2f})"
        )
    elif median:
        lines.append(
            f"median: learned (validation MASE {median['learned_mase']:.4f}, better than persistence at "
            f"DM p={median['p_value']:.3f})"
        )
    if band and band.get("shipped") == "prior":
        lines.append(
            f"band: the prior (normal quantiles x sigma_t); the network's learned band did not beat it on "
            f"validation (pinball {band['learned_pinball']:.4g} vs {band['prior_pinball']:.4g}, DM p={band['p_value']:.2f})"
        )
    elif band:
        lines.append(f"band: learned (beat the prior band on validation, DM p={band['p_value']:.3f})")
    for name, b in (m.get("baselines") or {}).items():
        word = "below" if b["skill"] > 0 else "ABOVE"
        lines.append(f"band: pinball {abs(b['skill']):.1%} {word} the {name} band's")
    return lines


def _top_inputs(interp: dict[str, Any] | None, n: int = 3) -> str:
    if not interp:
        return "n/a"
    top = list(interp["encoder_variables"].items())[:n]
    return ", ".join(f"{k} {v:.0%}" for k, v in top) + " (python -m trainer explain)"


def _headline(m: dict[str, Any], median: dict[str, Any] | None) -> str:
    """One line: how the median did against persistence and how the band did against GARCH."""
    if median and median.get("shipped") == "persistence":
        head = f"the median is persistence (MASE {m['mase']:.4f})"
    else:
        gap = (1 - m["mase"]) * 100
        head = f"validation MAE {abs(gap):.2f}% {'below' if gap > 0 else 'above'} persistence's (MASE {m['mase']:.4f})"
    garch = (m.get("baselines") or {}).get("garch")
    if garch:
        head += f"; band pinball {garch['skill']:+.1%} vs GARCH"
    return head


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
        (
            "direction h1 / h7",
            f"{m['da_h1']:.3f} / {m['da_h7']:.3f}" if m.get("da_h7") is not None else f"{m['da_h1']:.3f}",
        ),
        ("top inputs", _top_inputs(summary.get("interpretation"))),
        ("wall time", f"{summary['wall_seconds']:.1f} s"),
        ("parameters", f"{summary['parameters']:,}"),
        ("missing days filled", summary["filled_days"]),
        ("output", summary["output"]),
    ]
    if summary.get("forecast"):
        rows.append(("next forecast", forecast_line(summary["forecast"])))
    if summary.get("promotion"):
        rows.append(("promotion", summary["promotion"]["message"]))
    title = f"Result: {_headline(m, summary.get('median'))}"
    parts = [table(rows, title=title), "", comparison_table(m), ""]
    parts += [f"  {line}" for line in verdict(m, summary.get("median"), summary.get("band"))]
    parts.append(
        "  (validation metrics are in-sample for the band's recalibration; walk-forward backtests are not)"
    )
    return "\n".join(parts) + "\n"


def forecast_line(forecast: dict[str, Any]) -> str:
    """``status.forecast`` as one line: the horizon's last day, its band and median, the file it is in."""
    last = forecast["days"][-1]
    names = " / ".join(f"q{q:g}" for q in forecast["quantiles"])
    values = " / ".join(f"{v:,.6g}" for v in last["values"])
    return (
        f"{last['date']} (day {len(forecast['days'])}): {values} ({names}) from close "
        f"{forecast['originClose']:,.6g} on {forecast['origin']}; {forecast['uri']}"
    )


def backtest_report(result: dict[str, Any], title: str) -> str:
    """A backtest or walk-forward result as readable text: period, the side-by-side table, the verdict, folds."""
    extra = result["extra"]
    head = f"{title} on {extra['symbol']}" + (
        " (zero-shot: a symbol the model never trained on)" if extra["zero_shot"] else ""
    )
    if "first_origin" in extra:
        head += f", origins {extra['first_origin']} .. {extra['last_origin']} ({result['n']} windows)"
    else:
        head += f", {extra['start']} .. {extra['end']} ({result['n']} windows, {len(result['folds'])} folds)"
    lines = [head, comparison_table(result), ""]
    if "median" in extra:
        lines.append(f"  median: {extra['median']}, band: {extra['band']}")
    if "median_learned_folds" in extra:
        n = len(result["folds"])
        lines.append(
            f"  median: learned in {extra['median_learned_folds']} of {n} folds (persistence in the rest); "
            f"band: learned in {extra['band_learned_folds']} of {n} (the prior in the rest)"
        )
    lines += [f"  {line}" for line in verdict(result, None)]
    if result.get("folds"):
        lines += [
            "",
            "  fold  first target .. last      n    MASE  pinball  cover80  GARCH pinball  median / band",
        ]
        for f in result["folds"]:
            g = f["baselines"]["garch"]["pinball"]
            lines.append(
                f"  {f['index']:>4}  {f['start']} .. {f['end']}  {f['n']:>4}  {f['mase']:.4f}  {f['pinball']:>7.3f}"
                f"  {f['coverage_80']:>7.3f}  {g:>13.3f}  {f['median']} / {f['band']}"
            )
    return "\n".join(lines)


def forecast_table(result: dict[str, Any]) -> str:
    """``predict``'s result: the next horizon's dates with its quantile prices."""
    zs = " (zero-shot)" if result.get("zero_shot") else ""
    lines = [
        f"{result['symbol']}{zs}: last close {result['last_close']:,.4f} on {result['last_date']}; median {result['median']}"
    ]
    keys = [k for k in result["forecast"][0] if k != "date"]
    lines.append("  date        " + "  ".join(f"{k:>12}" for k in keys))
    for row in result["forecast"]:
        lines.append(f"  {row['date']}  " + "  ".join(f"{row[k]:>12,.4f}" for k in keys))
    return "\n".join(lines)
