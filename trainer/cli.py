"""``python -m trainer {run,train,backtest,predict,explain,fold}``: the same entry point on a laptop and in a pod.

Errors a user can fix (a bad spec, a bad data file, unusable storage) print one readable message and exit with a
documented code (``trainer.api.exitcodes``), never a traceback: the operator maps those codes to condition reasons.
Which error ends with which code is one table, ``exit_code_table()``; an error outside it is a bug and ends with
a traceback and exit 1. In a terminal the last line is ``error: ...``; otherwise (or with ``--json``) it is one
JSON object ``{"event": "error", "code": 2, "message": "..."}`` (``"stopped"`` for SIGTERM, 143), so that every
line a pod logs is JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path
from typing import Any, NoReturn

from trainer.api import exitcodes
from trainer.api.errors import (
    ConfigError,
    InputError,
    NaNLoss,
    PeerLost,
    Preempted,
    StorageUnavailable,
    UsageError,
)
from trainer.api.exitcodes import ExitCode
from trainer.api.manifest import SpecError, load_manifest, parse_manifest, parse_spec
from trainer.api.spec import TrainingRunSpec
from trainer.cli_folds import add_fold_parser, cmd_fold


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are UsageError (exit 2 through the one table, JSON when not in a terminal)."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}", self.format_usage())


def _add_train_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--epochs", type=int, help="override spec.training.epochs")
    p.add_argument("--output", help="local directory or s3://bucket/prefix for checkpoints and results")
    p.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], help="override spec.training.device (default auto)"
    )
    p.add_argument("--seed", type=int, help="override spec.training.seed")
    p.add_argument(
        "--s3-endpoint",
        help="S3-compatible endpoint URL (MinIO, SeaweedFS, Ceph); default: AWS or $AWS_ENDPOINT_URL",
    )
    p.add_argument(
        "--resume",
        default=None,
        help="auto (default): latest good checkpoint; never; or a checkpoint path/URI",
    )
    p.add_argument(
        "--json", action="store_true", help="JSON lines for progress and summary even in a terminal"
    )
    p.add_argument(
        "--mlflow-uri",
        metavar="URL",
        help="track the run in this MLflow server (spec.tracking.mlflow.uri); credentials from $MLFLOW_TRACKING_*",
    )
    p.add_argument(
        "--mlflow-experiment",
        metavar="NAME",
        help="MLflow experiment (spec.tracking.mlflow.experiment); default $MLFLOW_EXPERIMENT_NAME or "
        "crypto-price-predictor",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="PATH=VALUE",
        help="override any spec field, e.g. --set training.batchSize=128 (repeatable)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m trainer", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="train the spec of a TrainingRun manifest")
    run.add_argument("manifest", nargs="?", help="TrainingRun YAML (e.g. manifests/samples/sol-run.yaml)")
    run.add_argument(
        "--manifest-env",
        metavar="VAR",
        help="read the manifest (JSON or YAML) from this env var (how the operator's Job passes it)",
    )
    _add_train_flags(run)

    train = sub.add_parser("train", help="train one symbol with the default spec")
    train.add_argument("--symbol", default="SOL")
    train.add_argument("--symbols", help="comma-separated series trained together; the first is --symbol")
    train.add_argument(
        "--data", help="CSV/Parquet path or s3:// URI ('{symbol}' is replaced); default: bundled"
    )
    _add_train_flags(train)

    for name, text in (
        ("backtest", "evaluate a trained model (or walk-forward retrain a spec) on an OHLCV file"),
        ("predict", "forecast the next horizon after an OHLCV file's last day"),
        ("explain", "rank the variables and past days the model attends to"),
    ):
        p = sub.add_parser(name, help=text)
        p.add_argument(
            "--checkpoint",
            required=name != "backtest",
            help="output directory, s3:// prefix, checkpoint file, or a promotion's <prefix>/current",
        )
        p.add_argument("--data", help="CSV/Parquet path or s3:// URI; default: the bundled candles")
        p.add_argument(
            "--symbol",
            help="the data's symbol (default: the spec's); one the model never trained on is scored zero-shot",
        )
        p.add_argument("--s3-endpoint")
        p.add_argument("--json", action="store_true", help="print one JSON object")
        if name != "predict":
            p.add_argument("--start", help="first target date (YYYY-MM-DD)")
            p.add_argument("--end", help="last target date (default: the file's last date)")
        if name == "backtest":
            _add_backtest_flags(p)
    add_fold_parser(sub)
    return parser


def _add_backtest_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--recalibrate", action="store_true", help="adapt the band online from past errors only (ACI)"
    )
    wf = p.add_argument_group("walk-forward (retrain the spec before every fold)")
    wf.add_argument("--walk-forward", action="store_true", help="instead of --checkpoint: retrain per fold")
    wf.add_argument("--spec", help="TrainingRun manifest to retrain (e.g. manifests/samples/sol-run.yaml)")
    wf.add_argument("--refit-every", default="90d", help="fold length in days (default 90d)")
    wf.add_argument("--jobs", type=int, default=1, help="folds trained in parallel processes (default 1)")
    wf.add_argument("--epochs", type=int, help="override spec.training.epochs")
    wf.add_argument("--seed", type=int, help="override spec.training.seed")
    wf.add_argument("--set", action="append", default=[], metavar="PATH=VALUE", help="override a spec field")


def _set_path(doc: dict[str, Any], assignment: str) -> None:
    import yaml

    if "=" not in assignment:
        raise SpecError("--set", [f"'{assignment}': expected PATH=VALUE, e.g. training.epochs=2"])
    path, raw = assignment.split("=", 1)
    node = doc
    parts = path.split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise SpecError("--set", [f"{path}: {part} is not a section"])
    node[parts[-1]] = yaml.safe_load(raw)


def _resolve_spec(args: argparse.Namespace) -> tuple[str, TrainingRunSpec]:
    if args.command == "run":
        if args.manifest_env:
            raw = os.environ.get(args.manifest_env)
            if not raw:
                raise SpecError(f"${args.manifest_env}", ["environment variable is empty or unset"])
            name, spec = parse_manifest(raw, f"${args.manifest_env}")
        elif args.manifest:
            name, spec = load_manifest(args.manifest)
        else:
            raise SpecError("run", ["give a manifest path or --manifest-env VAR"])
        doc = spec.model_dump(by_alias=True, mode="json")
    else:
        if args.symbols:
            symbols: list[str] | None = args.symbols.split(",")
        elif args.data is None:  # the bundled data: the symbol first, then the others, as in sol-run.yaml
            from trainer.candles import bundled_symbols

            others = [b for b in bundled_symbols() if b != args.symbol]
            symbols = [args.symbol, *others] if args.symbol in bundled_symbols() else None
        else:
            symbols = None
        doc = {"symbol": args.symbol, "symbols": symbols, "data": {"uri": args.data}}
        name = (
            f"{args.symbol.lower()}-train"  # not run's sol-tft: the two must not resume each other's output
        )
    _apply_overrides(doc, args)
    return name, parse_spec(doc, "spec (after command-line overrides)")


def _apply_overrides(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """--epochs, --seed, --device and every --set PATH=VALUE onto a spec document (camelCase)."""
    doc.setdefault("training", {})
    if args.epochs is not None:
        doc["training"]["epochs"] = args.epochs
    if args.seed is not None:
        doc["training"]["seed"] = args.seed
    if getattr(args, "device", None) is not None:
        doc["training"]["device"] = args.device
    _apply_tracking(doc, args)
    for assignment in args.set:
        _set_path(doc, assignment)


def _apply_tracking(doc: dict[str, Any], args: argparse.Namespace) -> None:
    """--mlflow-uri / --mlflow-experiment onto spec.tracking.mlflow (the experiment alone needs a URI)."""
    uri, experiment = getattr(args, "mlflow_uri", None), getattr(args, "mlflow_experiment", None)
    if uri is None and experiment is None:
        return
    mlflow = (doc.get("tracking") or {}).get("mlflow") or {}
    if uri is not None:
        mlflow["uri"] = uri
    if experiment is not None:
        mlflow["experiment"] = experiment
    if "uri" not in mlflow:
        raise SpecError("--mlflow-experiment", ["needs --mlflow-uri URL (or spec.tracking.mlflow.uri)"])
    doc["tracking"] = {**(doc.get("tracking") or {}), "mlflow": mlflow}


def _cmd_train(args: argparse.Namespace) -> int:
    from trainer.run import RunOptions, print_summary, run_training

    name, spec = _resolve_spec(args)
    output = args.output or spec.checkpoint.uri or os.path.join("runs", name)
    interactive = False if args.json else sys.stderr.isatty()
    resume = args.resume or spec.checkpoint.resume
    summary = run_training(
        spec,
        RunOptions(
            name=name, output=output, s3_endpoint=args.s3_endpoint, resume=resume, interactive=interactive
        ),
    )
    if summary is not None:  # None: a rank other than 0 of a data-parallel run, which prints nothing
        print(print_summary(summary, interactive))
    return exitcodes.OK


def _cmd_walk_forward(args: argparse.Namespace) -> int:
    import pandas as pd

    from trainer.candles import load_candles
    from trainer.console import backtest_report
    from trainer.run import load_all
    from trainer.walkforward import parse_days, walk_forward

    if not args.spec or not args.start:
        raise SpecError("backtest --walk-forward", ["needs --spec MANIFEST and --start YYYY-MM-DD"])
    name, spec = load_manifest(args.spec)
    doc = spec.model_dump(by_alias=True, mode="json")
    _apply_overrides(doc, args)
    spec = parse_spec(doc, "spec (after command-line overrides)")
    symbol = args.symbol or spec.symbol
    target = load_candles(args.data or spec.data.uri, symbol, endpoint=args.s3_endpoint)
    candles = [target if c.symbol == symbol else c for c in load_all(spec, args.s3_endpoint)]

    def on_fold(row: dict[str, Any], total: int) -> None:
        print(
            json.dumps({"event": "fold", "of": total, **{k: v for k, v in row.items() if k != "baselines"}}),
            file=sys.stderr,
            flush=True,
        )

    result = walk_forward(
        spec,
        candles,
        target,
        start=pd.Timestamp(args.start),
        end=pd.Timestamp(args.end) if args.end else None,
        refit_every_days=parse_days(args.refit_every),
        jobs=args.jobs,
        recalibrate=args.recalibrate,
        on_fold=on_fold,
    )
    print(json.dumps(result) if args.json else backtest_report(result, f"Walk-forward of {name}"))
    return exitcodes.OK


def _cmd_eval(args: argparse.Namespace) -> int:
    from trainer.console import backtest_report, forecast_table
    from trainer.evaluate import backtest, load_model, predict

    if args.command == "backtest" and args.walk_forward:
        return _cmd_walk_forward(args)
    if args.command == "backtest" and not args.checkpoint:
        raise SpecError("backtest", ["give --checkpoint DIR|FILE, or --walk-forward --spec MANIFEST"])
    fc = load_model(args.checkpoint, endpoint=args.s3_endpoint)
    if args.command == "backtest":
        result = backtest(
            fc,
            args.data,
            symbol=args.symbol,
            start=args.start,
            end=args.end,
            endpoint=args.s3_endpoint,
            recalibrate=args.recalibrate,
        )
        print(json.dumps(result) if args.json else backtest_report(result, f"Backtest of {fc.source}"))
    elif args.command == "explain":
        from trainer.interpret import explain, format_ranking

        result = explain(
            fc, args.data, symbol=args.symbol, start=args.start, end=args.end, endpoint=args.s3_endpoint
        )
        print(json.dumps(result) if args.json else format_ranking(result))
    else:
        result = predict(fc, args.data, symbol=args.symbol, endpoint=args.s3_endpoint)
        print(json.dumps(result) if args.json else forecast_table(result))
    return exitcodes.OK


def exit_code_table() -> tuple[tuple[type[BaseException], ExitCode], ...]:
    """The one table from exception class to exit code (first match wins; a test checks that no class of the
    trainer matches two rows with different codes). Everything else is a bug: a traceback and exit 1."""
    from trainer.evaluate import EvaluationError

    return (
        # SpecError (and walk-forward's --refit-every), UsageError, DeviceUnavailable, MalformedURIError,
        # InvalidEndpointError, IncompatibleCheckpointError
        (ConfigError, ExitCode.INVALID_CONFIG),
        # DataError, CheckpointIntegrityError (NoValidCheckpointError), UnsafeCheckpointError
        (InputError, ExitCode.INVALID_CONFIG),
        # a range without windows, a checkpoint from an older trainer (a ValueError of trainer.evaluate)
        (EvaluationError, ExitCode.INVALID_CONFIG),
        # StorageError and every subclass: credentials, bucket, unreachable, upload deadline, flush timeout
        (StorageUnavailable, ExitCode.STORAGE_ERROR),
        (NaNLoss, ExitCode.NAN_LOSS),
        # a data-parallel run's collective or rendezvous failed: another worker is gone (trainer.distributed)
        (PeerLost, ExitCode.PEER_LOST),
        (Preempted, ExitCode.PREEMPTED),
    )


def exit_code_of(exc: BaseException) -> ExitCode | None:
    """The documented code of ``exc``, or None for a bug (not in the table)."""
    return next((code for cls, code in exit_code_table() if isinstance(exc, cls)), None)


def _print_final(code: int, message: str, as_json: bool, **extra: Any) -> None:
    event = "stopped" if code == ExitCode.PREEMPTED else "error"
    if as_json:
        line = json.dumps({"event": event, "code": code, "message": message, **extra}, ensure_ascii=False)
        print(line, file=sys.stderr, flush=True)
    else:
        print(f"{event}: {message}", file=sys.stderr, flush=True)


def _local_path(value: str) -> Path | None:
    """The path of a local path or ``file://`` URI; None for ``s3://`` and ``pvc://`` (checked by the storage)."""
    if value[:3].lower() == "s3:" or value[:4].lower() == "pvc:":
        return None
    return Path(value[len("file://") :] if value.startswith("file://") else value).expanduser()


def _validate_args(args: argparse.Namespace) -> None:
    """Flags that name things: refuse what cannot work with one line naming the flag (exit 2), before any
    work. ``--checkpoint`` may name a directory that ends in .pt: it is read as that directory's best.pt."""
    from trainer.storage import MalformedURIError, check_endpoint, parse_uri

    if getattr(args, "s3_endpoint", None):
        check_endpoint(args.s3_endpoint, "--s3-endpoint")
    for flag in ("output", "checkpoint", "resume", "data"):
        value = getattr(args, flag, None)
        if value and not (flag == "resume" and value in ("auto", "never")) and "{symbol}" not in value:
            try:
                parse_uri(value)
            except MalformedURIError as exc:  # s3:/x, http://... and the like: name the flag
                raise MalformedURIError(f"--{flag}: {exc}") from None
    output = _local_path(args.output) if getattr(args, "output", None) else None
    if output is not None and output.exists() and not output.is_dir():
        raise ConfigError(
            f"--output {args.output}: a file, not a directory; give a directory or s3://bucket/prefix"
        )
    resume = getattr(args, "resume", None)
    path = _local_path(resume) if resume and resume not in ("auto", "never") else None
    if path is not None and not path.is_file():
        what = "a directory" if path.is_dir() else "no such file"
        raise ConfigError(
            f"--resume {resume}: {what}; give auto, never or a checkpoint file (.pt) or s3:// URI"
        )
    checkpoint: str | None = getattr(args, "checkpoint", None)
    path = _local_path(checkpoint) if checkpoint else None
    if checkpoint is None or path is None:
        return
    if path.name in ("current", "current.json") and (path.parent / "current.json").is_file():
        return  # a promotion's pointer: evaluate.load_model follows it to the promoted model
    if path.is_dir():
        if (path / "best.pt").is_file():
            if checkpoint.endswith(".pt"):  # evaluate.load_model goes by the suffix: name the file itself
                args.checkpoint = str(path / "best.pt")
            return
        raise ConfigError(
            f"--checkpoint {checkpoint}: a directory without best.pt; give a training output directory, an "
            "s3:// prefix or a checkpoint file (.pt)"
        )
    if not path.is_file():
        raise ConfigError(f"--checkpoint {checkpoint}: no such file or directory")
    if path.suffix != ".pt":
        raise ConfigError(
            f"--checkpoint {checkpoint}: a file that is not a checkpoint (.pt); give a training output "
            "directory, an s3:// prefix or a checkpoint file (.pt)"
        )


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    as_json = "--json" in argv or not sys.stderr.isatty()
    try:
        args = build_parser().parse_args(argv)
        as_json = bool(getattr(args, "json", False)) or not sys.stderr.isatty()
        _validate_args(args)
        if args.command == "fold":
            return cmd_fold(args)
        return _cmd_train(args) if args.command in ("run", "train") else _cmd_eval(args)
    except Exception as exc:
        code = exit_code_of(exc)
        if code is None:  # a bug: a traceback (in JSON where every line must be JSON) and exit 1, retried
            if not as_json:
                raise
            text = "".join(traceback.format_exception(exc))
            _print_final(ExitCode.CRASH, f"unexpected {type(exc).__name__}: {exc}", True, traceback=text)
            return ExitCode.CRASH
        if isinstance(exc, UsageError) and exc.usage and not as_json:
            print(exc.usage, end="", file=sys.stderr)
        prefix = getattr(exc, "prefix", "")
        _print_final(code, f"{prefix}: {exc}" if prefix else str(exc), as_json)
        return code


if __name__ == "__main__":
    sys.exit(main())
