"""``python -m trainer fold``: one fold of ``spec.walkForward``, the command of each pod of a walk-forward run's
Indexed Job (``trainop.builders_folds``).

Apart from ``trainer.cli`` because it is a pod's protocol more than a user's command: its fold comes from
``$JOB_COMPLETION_INDEX``, its statistics go to the pod's termination message (for the operator to pool) and to
``<checkpoint>/folds/NNN.json``; errors and exit codes are ``trainer.cli``'s (``main`` dispatches here)."""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any

from trainer.api import exitcodes
from trainer.api.errors import ConfigError
from trainer.api.manifest import SpecError, load_manifest, parse_manifest
from trainer.api.spec import TrainingRunSpec


def add_fold_parser(sub: Any) -> None:
    p = sub.add_parser(
        "fold", help="train and forecast one fold of spec.walkForward (one pod of its Indexed Job)"
    )
    p.add_argument("manifest", nargs="?", help="TrainingRun YAML with a spec.walkForward")
    p.add_argument("--manifest-env", metavar="VAR", help="read the manifest (JSON or YAML) from this env var")
    p.add_argument("--index", type=int, help="the fold, from 0 (default: $JOB_COMPLETION_INDEX)")
    p.add_argument(
        "--data", help="CSV/Parquet path or s3:// URI of spec.symbol's candles; default: spec.data"
    )
    p.add_argument(
        "--output", help="directory or s3://bucket/prefix for folds/NNN.json; default: spec.checkpoint.uri"
    )
    p.add_argument(
        "--s3-endpoint", help="S3-compatible endpoint URL; default: the spec's, AWS or $AWS_ENDPOINT_URL"
    )
    p.add_argument("--json", action="store_true", help="print the fold as one JSON line even in a terminal")


#: Where ``fold`` writes its statistics for the kubelet (the pod's terminationMessagePath), when set.
TERMINATION_MESSAGE_ENV = "TRAINER_TERMINATION_MESSAGE_PATH"
#: The index of a pod in an Indexed Job, set by Kubernetes: ``fold``'s default ``--index``.
COMPLETION_INDEX_ENV = "JOB_COMPLETION_INDEX"


def _fold_manifest(args: argparse.Namespace) -> tuple[str, TrainingRunSpec]:
    if args.manifest_env:
        raw = os.environ.get(args.manifest_env)
        if not raw:
            raise SpecError(f"${args.manifest_env}", ["environment variable is empty or unset"])
        return parse_manifest(raw, f"${args.manifest_env}")
    if args.manifest:
        return load_manifest(args.manifest)
    raise SpecError("fold", ["give a manifest path or --manifest-env VAR"])


def _fold_index(args: argparse.Namespace, folds: int) -> int:
    """--index, else $JOB_COMPLETION_INDEX; one line naming the one used and the folds there are otherwise."""
    flag, raw = (
        ("--index", str(args.index))
        if args.index is not None
        else (f"${COMPLETION_INDEX_ENV}", os.environ.get(COMPLETION_INDEX_ENV, ""))
    )
    valid = f"spec.walkForward has {folds} fold{'s' if folds != 1 else ''} (0..{folds - 1})"
    if not raw.strip():
        raise ConfigError(f"fold: give --index K or set ${COMPLETION_INDEX_ENV}; {valid}")
    if not raw.strip().isdigit() or int(raw) >= folds:
        raise ConfigError(f"{flag} {raw}: no such fold; {valid}")
    return int(raw)


def _write_termination_message(text: str) -> str | None:
    path = os.environ.get(TERMINATION_MESSAGE_ENV)
    if not path:
        return None
    try:
        Path(path).write_text(text)
    except OSError as exc:
        raise ConfigError(f"${TERMINATION_MESSAGE_ENV} {path}: cannot write: {exc.strerror}") from None
    return path


def _fold_line(row: dict[str, Any], total: int) -> str:
    return (
        f"Fold {row['index']} ({row['index'] + 1} of {total}, {row['start']}..{row['end']}, trained on candles "
        f"to {row['train_end']}): {row['n']} windows, MAE {row['mae']:.4g}, MASE {row['mase']:.3f}, pinball "
        f"{row['pinball']:.4g}, 80% coverage {row['coverage_80']:.0%}; median {row['median']}, band "
        f"{row['band']}, {row['epochs']} epochs in {row['train_seconds']:.1f}s"
    )


def cmd_fold(args: argparse.Namespace) -> int:
    """One fold of spec.walkForward, as ``backtest --walk-forward`` trains it; its FoldStats go to the
    termination message and to <checkpoint>/folds/NNN.json, for the operator to pool."""
    from trainer.api.endpoint import resolve_s3_endpoint
    from trainer.candles import load_candles
    from trainer.checkpoint import CheckpointStore
    from trainer.run import load_all
    from trainer.walkforward import fold_row, walk_forward_fold

    _, spec = _fold_manifest(args)
    if spec.walk_forward is None:
        raise SpecError("fold", ["spec.walkForward: not set; give start, end and refitEvery"])
    total = len(spec.walk_forward.folds(spec.data.horizon))
    index = _fold_index(args, total)
    resolved = resolve_s3_endpoint(flag=args.s3_endpoint, spec=spec.checkpoint.s3_endpoint)
    endpoint = resolved.url if resolved else None
    uri = args.output or spec.checkpoint.uri
    c = spec.checkpoint
    store = CheckpointStore(uri, endpoint, upload_deadline_s=c.upload_deadline_seconds) if uri else None
    if store is not None:
        store.check()  # credentials, bucket, a writable directory: before the training, not after it
    candles = load_all(spec, endpoint)  # spec.symbol first
    if args.data:
        d = spec.data
        candles[0] = load_candles(args.data, spec.symbol, endpoint=endpoint, start=d.start, end=d.end)
    stats, _ = walk_forward_fold(spec, candles, candles[0], index)
    message = stats.message()
    written = None
    if store is not None:
        with store:
            written = store.write_bytes(f"folds/{index:03d}.json", message.encode())
            store.flush(timeout=c.upload_deadline_seconds)
    where = _write_termination_message(message)
    row = {k: v for k, v in fold_row(stats).items() if k != "baselines"}
    if args.json or not sys.stderr.isatty():
        print(
            json.dumps({"event": "fold", "of": total, **row, "stats": written, "termination_message": where})
        )
    else:
        print(_fold_line(row, total) + (f"\nstatistics: {written}" if written else ""))
    return exitcodes.OK
