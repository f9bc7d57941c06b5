"""Bad input from issue 9 ("Bad input and faults that still get through"), one test per case: each is refused
with one line naming the flag, field, file or row and what is allowed, and exit 2 (never a traceback, never
exit 3 "retried", never exit 4 "lower the learning rate").

Most cases run ``trainer.cli.main`` in-process (the same code as ``python -m trainer``; stderr is not a
terminal, so the final line is JSON); a few run the real process to show what a pod would log.
"""

from __future__ import annotations

import io
import json
import os
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import torch

from tests.support.trainer_helpers import SAMPLE, run_trainer
from trainer import cli
from trainer.candles import DataError, load_candles

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "trainer" / "datasets" / "SOL-USD.csv"


def main(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *argv: str) -> tuple[int, str]:
    """``python -m trainer *argv`` in-process: (exit code, the one JSON message line's message)."""
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    lines = [json.loads(line) for line in err.splitlines() if line.strip()]  # every line is JSON
    assert lines and lines[-1]["event"] == "error" and lines[-1]["code"] == code, err
    assert "Traceback" not in err
    return code, str(lines[-1]["message"])


def bundled(rows: int = 400) -> pd.DataFrame:
    return pd.read_csv(BUNDLED).tail(rows).reset_index(drop=True)


def write(tmp_path: Path, name: str, df: pd.DataFrame) -> Path:
    path = tmp_path / name
    df.to_csv(path, index=False)
    return path


def train(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, data: Path, out: Path
) -> tuple[int, str]:
    return main(capsys, monkeypatch, "train", "--data", str(data), "--epochs", "1", "--output", str(out))


# --- Tracebacks (exit 1, so a Job retried them) --------------------------------------------------------------


def test_csv_with_only_a_header_row(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "header.csv"
    path.write_text("date,open,high,low,close,volume\n")
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert (
        code == 2
        and message
        == f"data: {path}: no data rows (only a header); need date,open,high,low,close,volume rows"
    )


def test_backtest_checkpoint_is_a_directory_named_pt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dir.pt").mkdir()
    code, message = main(capsys, monkeypatch, "backtest", "--checkpoint", str(tmp_path / "dir.pt"))
    assert code == 2 and message.startswith(
        f"--checkpoint {tmp_path / 'dir.pt'}: a directory without best.pt"
    )


def test_a_directory_named_pt_with_best_pt_is_read_as_that_directory(tmp_path: Path) -> None:
    """evaluate.load_model decides file vs directory by the suffix; the CLI hands it the file inside."""
    (tmp_path / "dir.pt").mkdir()
    (tmp_path / "dir.pt" / "best.pt").write_bytes(b"x")
    args = cli.build_parser().parse_args(["backtest", "--checkpoint", str(tmp_path / "dir.pt")])
    cli._validate_args(args)
    assert args.checkpoint == str(tmp_path / "dir.pt" / "best.pt")


def test_predict_checkpoint_is_a_csv_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    csv = write(tmp_path, "x.csv", bundled(5))
    code, message = main(capsys, monkeypatch, "predict", "--checkpoint", str(csv))
    assert code == 2 and message.startswith(f"--checkpoint {csv}: a file that is not a checkpoint (.pt)")


def test_checkpoint_that_does_not_exist(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(capsys, monkeypatch, "predict", "--checkpoint", str(tmp_path / "nope"))
    assert code == 2 and message == f"--checkpoint {tmp_path / 'nope'}: no such file or directory"


def test_a_csv_named_pt_is_not_a_torch_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = write(tmp_path, "model.pt", bundled(5))
    code, message = main(capsys, monkeypatch, "predict", "--checkpoint", str(fake))
    assert code == 2 and "is not a readable torch checkpoint" in message and str(fake) in message


def test_binary_manifest_names_the_file(tmp_path: Path) -> None:
    """A real process: the bare "'utf-8' codec can't decode" is now a line naming the file."""
    path = tmp_path / "run.yaml"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    proc = run_trainer("run", str(path), "--output", str(tmp_path / "out"))
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    obj = json.loads(line)
    assert obj["message"].startswith(f"{path}: invalid TrainingRun spec:")
    assert "not a text file" in obj["message"] and "YAML or JSON" in obj["message"]


def test_binary_data_file_names_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "candles.csv"
    path.write_bytes(bytes(range(256)) * 4)
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert (
        code == 2 and message == f"data: {path}: a binary file, not CSV (nor Parquet, which starts with PAR1)"
    )


# --- Accepted although wrong ----------------------------------------------------------------------------------


def test_close_of_inf_is_bad_data_not_nan_loss(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    df = bundled()
    df["close"] = df["close"].astype(object)
    df.loc[100, "close"] = "inf"
    path = write(tmp_path, "inf.csv", df)
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert code == 2 and message == f"data: {path}: row 102: close is inf, not a finite number"
    assert "learningRate" not in message


def test_ambiguous_day_month_dates_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """dd/mm/yyyy where every day is <= 12 cannot be read without a guess (format="mixed" guessed month first)."""
    df = pd.read_csv(BUNDLED)
    df = df[df["date"].between("2025-01-01", "2025-01-12")].copy()
    df["date"] = pd.to_datetime(df["date"]).dt.strftime("%d/%m/%Y")  # 01/01/2025 .. 12/01/2025
    path = write(tmp_path, "ddmm.csv", df)
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert code == 2 and "can be read day/month or month/day" in message and "YYYY-MM-DD" in message


def test_day_month_dates_are_read_day_first_when_the_file_decides(tmp_path: Path) -> None:
    df = bundled(60)
    iso = df["date"].copy()
    df["date"] = pd.to_datetime(df["date"]).dt.strftime("%d/%m/%Y")
    c = load_candles(str(write(tmp_path, "ddmm.csv", df)), "SOL")
    assert list(c.frame.index) == list(pd.to_datetime(iso)) and c.filled_days == 0


def test_dates_mixing_day_first_and_month_first_are_refused(tmp_path: Path) -> None:
    df = bundled(40)
    dates = pd.to_datetime(df["date"])
    df["date"] = [d.strftime("%d/%m/%Y" if i < 20 else "%m/%d/%Y") for i, d in enumerate(dates)]
    with pytest.raises(DataError, match="dates disagree on their order"):
        load_candles(str(write(tmp_path, "mixed.csv", df)), "SOL")


def test_a_single_1e308_spike_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    df = bundled()
    df.loc[200, "high"] = 1e308
    path = write(tmp_path, "spike.csv", df)
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert code == 2 and message.startswith(
        f"data: {path}: row 202: high 1e+308 is outside the plausible range"
    )


def test_a_spike_within_the_range_is_refused(tmp_path: Path) -> None:
    df = bundled()
    df.loc[200, ["open", "high", "low", "close"]] = df.loc[200, "close"] * 1e5
    with pytest.raises(DataError, match=r"row 202: close jumps from .* in one step \(at most 10000\)"):
        load_candles(str(write(tmp_path, "jump.csv", df)), "SOL")


def test_prices_near_1e300_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    df = bundled()
    for col in ("open", "high", "low", "close"):
        df[col] = df[col] * 1e298
    path = write(tmp_path, "huge.csv", df)
    code, message = train(capsys, monkeypatch, path, tmp_path / "out")
    assert code == 2 and "is outside the plausible range 1e-12..1e+12 for a price" in message


# --- Exit codes by accident (issue section 2) -----------------------------------------------------------------


class _Evil:
    def __reduce__(self) -> tuple[Any, ...]:
        return (os.getcwd, ())


def test_unsafe_checkpoint_is_exit_2_not_retried(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evil.pt"
    buf = io.BytesIO()
    torch.save({"x": _Evil()}, buf)
    path.write_bytes(buf.getvalue())
    code, message = main(capsys, monkeypatch, "predict", "--checkpoint", str(path))
    assert code == 2 and message.startswith(f"refusing to load {path}")


def test_malformed_s3_uri_is_exit_2_naming_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(capsys, monkeypatch, "train", "--output", "s3:/bucket/x")
    assert code == 2 and message == "--output: malformed URI 's3:/bucket/x': expected s3://bucket/prefix"
    code, message = main(capsys, monkeypatch, "predict", "--checkpoint", "s3://Bad_Bucket/run")
    assert code == 2 and message.startswith("--checkpoint: malformed URI")


def test_malformed_s3_uri_in_the_spec_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(
        capsys, monkeypatch, "run", SAMPLE, "--set", "data.uri=s3:/x/{symbol}.csv", "--output", str(tmp_path)
    )
    assert code == 2 and "malformed URI 's3:/x/SOL.csv'" in message


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu(tmp_path: Path) -> None:
    proc = run_trainer("train", "--device", "cuda", "--epochs", "1", "--output", str(tmp_path / "o"))
    assert proc.returncode == 2
    [line] = proc.stderr.splitlines()
    message = json.loads(line)["message"]
    assert message.startswith("--device/training.device is 'cuda' but this machine has no usable CUDA device")
    assert message.endswith("use auto or cpu")


def test_s3_endpoint_without_a_scheme_names_the_flag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(
        capsys, monkeypatch, "train", "--output", "s3://bucket/x", "--s3-endpoint", "127.0.0.1:57757"
    )
    assert code == 2
    assert message == (
        "--s3-endpoint '127.0.0.1:57757': expected a URL with a scheme such as http://127.0.0.1:9000 or "
        "https://s3.example.com"
    )


def test_s3_endpoint_from_the_environment_names_the_variable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", "minio:9000")
    code, message = main(capsys, monkeypatch, "train", "--output", "s3://bucket/x")
    assert code == 2 and message.startswith("$AWS_ENDPOINT_URL 'minio:9000': expected a URL with a scheme")


def test_s3_endpoint_with_credentials_is_refused_and_redacted(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(
        capsys,
        monkeypatch,
        "train",
        "--output",
        "s3://bucket/x",
        "--s3-endpoint",
        "http://key:hunter2@h:9000",
    )
    assert code == 2 and "hunter2" not in message and "'http://***@h:9000'" in message
    assert "credentials in the URL" in message


def test_resume_flag_that_names_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    code, message = main(
        capsys, monkeypatch, "train", "--resume", str(tmp_path / "nope.pt"), "--output", str(tmp_path)
    )
    assert code == 2 and message.startswith(f"--resume {tmp_path / 'nope.pt'}: no such file")


def test_output_that_is_a_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "out.csv"
    out.write_text("x")
    code, message = main(capsys, monkeypatch, "train", "--output", str(out))
    assert code == 2 and message.startswith(f"--output {out}: a file, not a directory")
