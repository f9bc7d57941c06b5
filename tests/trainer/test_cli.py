"""The trainer CLI end to end on the bundled data: run -> artifacts -> backtest -> predict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from tests.support.trainer_helpers import SAMPLE, TINY, events, run_trainer


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, object]]]:
    out = tmp_path_factory.mktemp("run") / "sol"
    proc = run_trainer("run", SAMPLE, "--epochs", "2", "--output", str(out), *TINY)
    assert proc.returncode == 0, proc.stderr
    return out, events(proc.stderr + proc.stdout)


def test_run_writes_artifacts_and_reports(trained: tuple[Path, list[dict[str, object]]]) -> None:
    out, evs = trained
    for name in ("best.pt", "last.pt", "metrics.json", "config.json", "forecast.png", "latest.json"):
        assert (out / name).is_file(), name
    assert (out / "forecast.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    epochs = [e for e in evs if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2]
    for e in epochs:
        assert {"train_loss", "val_loss", "val_mase", "samples_per_second"} <= e.keys()
        assert float(e["samples_per_second"]) > 0  # type: ignore[arg-type]
    [summary] = [e for e in evs if e["event"] == "summary"]
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["metrics"]["mase"] == pytest.approx(summary["metrics"]["mase"])  # type: ignore[index]
    assert {"mae", "mase", "coverage_80", "pinball", "width", "baselines"} <= metrics["metrics"].keys()
    for name in ("empirical", "ewma", "garch"):
        base = metrics["metrics"]["baselines"][name]
        assert {"mae", "mase", "pinball", "coverage_80", "width", "skill"} <= base.keys()
        assert base["mase"] == pytest.approx(1.0)  # every baseline's median is persistence
        assert base["skill"] == pytest.approx(1 - metrics["metrics"]["pinball"] / base["pinball"])
    assert metrics["median"]["shipped"] in ("learned", "persistence")
    assert (out / "importance.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    interp = metrics["interpretation"]
    assert sum(interp["encoder_variables"].values()) == pytest.approx(1.0, abs=1e-3)
    config = json.loads((out / "config.json").read_text())
    assert config["spec"]["symbol"] == "SOL" and config["spec"]["model"]["hiddenSize"] == 8


def test_backtest_json(trained: tuple[Path, list[dict[str, object]]]) -> None:
    out, _ = trained
    proc = run_trainer("backtest", "--checkpoint", str(out), "--start", "2025-01-01", "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert {"n", "mae", "rmse", "mape", "mase", "da_h1", "da_h7", "pinball", "coverage_80"} <= r.keys()
    # origins 2024-12-31 .. 2025-06-23: every whole 7-day horizon inside [2025-01-01, 2025-06-30]
    assert r["n"] == (pd.Timestamp("2025-06-23") - pd.Timestamp("2024-12-31")).days + 1
    assert r["extra"]["first_origin"] == "2024-12-31" and r["extra"]["last_origin"] == "2025-06-23"
    assert 0.5 < r["mase"] < 2.0 and 0 <= r["coverage_80"] <= 1 and r["rmse"] >= r["mae"]


def test_backtest_on_a_user_file_with_end(
    trained: tuple[Path, list[dict[str, object]]], tmp_path: Path
) -> None:
    out, _ = trained
    src = pd.read_csv(Path(SAMPLE).parent.parent.parent / "trainer/datasets/SOL-USD.csv")
    yahoo = src.rename(columns=str.title).iloc[::-1]  # Yahoo-style names, newest first
    path = tmp_path / "my-SOL.csv"
    yahoo.to_csv(path, index=False)
    proc = run_trainer(
        "backtest",
        "--checkpoint",
        str(out / "best.pt"),
        "--data",
        str(path),
        "--start",
        "2025-03-01",
        "--end",
        "2025-03-31",
        "--json",
    )
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["n"] == 31 - 7 + 1


def test_backtest_range_without_windows_is_a_clear_error(
    trained: tuple[Path, list[dict[str, object]]],
) -> None:
    out, _ = trained
    proc = run_trainer("backtest", "--checkpoint", str(out), "--start", "2025-06-28", "--json")
    assert proc.returncode == 2
    assert "no forecast origin has its whole 7-day horizon inside" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_predict(trained: tuple[Path, list[dict[str, object]]]) -> None:
    out, _ = trained
    proc = run_trainer("predict", "--checkpoint", str(out), "--json")
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["last_date"] == "2025-06-30"
    dates = [row["date"] for row in r["forecast"]]
    assert dates == [str(d.date()) for d in pd.date_range("2025-07-01", periods=7)]
    q = np.array([[row["q0.1"], row["q0.5"], row["q0.9"]] for row in r["forecast"]])
    assert (np.diff(q, axis=1) > 0).all()
    assert np.all(np.abs(q[:, 1] / r["last_close"] - 1) < 0.5)
    text = run_trainer("predict", "--checkpoint", str(out)).stdout
    assert "2025-07-07" in text and "q0.9" in text


def test_train_subcommand_and_bad_data(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("date,open,high,low,close,volume\n2024-01-01,1,1,1,1,1\n2024-01-01,1,1,1,1,1\n")
    proc = run_trainer(
        "train", "--symbol", "SOL", "--data", str(bad), "--epochs", "1", "--output", str(tmp_path / "o")
    )
    assert proc.returncode == 2
    assert f"{bad}: duplicate date 2024-01-01 (rows 2, 3)" in proc.stderr


def test_backtest_reports_the_three_baselines_side_by_side(
    trained: tuple[Path, list[dict[str, object]]],
) -> None:
    out, _ = trained
    r = json.loads(
        run_trainer("backtest", "--checkpoint", str(out), "--start", "2025-01-01", "--json").stdout
    )
    assert set(r["baselines"]) == {"empirical", "ewma", "garch"}
    for b in r["baselines"].values():
        assert b["mae"] == pytest.approx(r["naive_mae"])  # persistence medians, the same windows
        assert b["skill"] == pytest.approx(1 - r["pinball"] / b["pinball"])
    assert r["extra"]["zero_shot"] is False and r["extra"]["median"] in ("learned", "persistence")
    text = run_trainer("backtest", "--checkpoint", str(out), "--start", "2025-01-01").stdout
    for word in ("model", "empirical", "ewma", "garch", "model skill", "80% coverage"):
        assert word in text, text


def test_zero_shot_symbol_uses_its_own_scale(trained: tuple[Path, list[dict[str, object]]]) -> None:
    """A SOL-only model scores BTC with the "any symbol" embedding and BTC's own volatility: the band is in BTC's
    price range and covers a sensible share, and the summary says zero-shot."""
    out, _ = trained
    proc = run_trainer(
        "backtest", "--checkpoint", str(out), "--symbol", "BTC", "--start", "2025-01-01", "--json"
    )
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["extra"]["zero_shot"] is True and r["extra"]["symbol"] == "BTC"
    assert 0.5 < r["coverage_80"] <= 1.0 and r["width"] < 0.4  # BTC's band, not SOL's wider one
    assert r["baselines"]["garch"]["width"] / 2 < r["width"] < r["baselines"]["garch"]["width"] * 2
    text = run_trainer(
        "backtest", "--checkpoint", str(out), "--symbol", "BTC", "--start", "2025-01-01"
    ).stdout
    assert "zero-shot" in text
    pred = json.loads(run_trainer("predict", "--checkpoint", str(out), "--symbol", "ETH", "--json").stdout)
    assert pred["zero_shot"] is True and 1000 < pred["forecast"][0]["q0.5"] < 10000  # ETH's price, mid-2025


def test_recalibrate_adapts_from_past_errors_only(trained: tuple[Path, list[dict[str, object]]]) -> None:
    out, _ = trained
    args = ("backtest", "--checkpoint", str(out), "--symbol", "ETH", "--start", "2024-07-01", "--json")
    static = json.loads(run_trainer(*args).stdout)
    adaptive = json.loads(run_trainer(*args, "--recalibrate").stdout)
    assert adaptive["extra"]["recalibrated"] is True and adaptive["n"] == static["n"]
    assert adaptive["mae"] == pytest.approx(static["mae"])  # the median is left alone
    assert abs(adaptive["coverage_80"] - 0.8) <= abs(static["coverage_80"] - 0.8) + 0.02


def test_explain_ranks_variables(trained: tuple[Path, list[dict[str, object]]]) -> None:
    out, _ = trained
    r = json.loads(run_trainer("explain", "--checkpoint", str(out), "--json").stdout)
    enc = r["encoder_variables"]
    assert "vol_ratio" in enc and "ret_1d" in enc and sum(enc.values()) == pytest.approx(1, abs=1e-3)
    assert list(enc.values()) == sorted(enc.values(), reverse=True)
    assert sum(r["attention"]["weight"]) + r["attention"]["future_share"] == pytest.approx(1, abs=1e-3)
    text = run_trainer("explain", "--checkpoint", str(out)).stdout
    assert "Encoder variables" in text and "Attention" in text


def _prices(day: dict[str, object]) -> dict[str, object]:
    return {k: v for k, v in day.items() if k != "date"}


def test_run_publishes_the_forecast_predict_makes(trained: tuple[Path, list[dict[str, object]]]) -> None:
    from trainer.evaluate import load_model, predict

    out, evs = trained
    doc = json.loads((out / "forecast.json").read_text())
    expected = predict(load_model(str(out)), None)  # the bundled data, as the run's (no data.start/end)
    assert (doc["symbol"], doc["origin"], doc["originClose"]) == ("SOL", "2025-06-30", expected["last_close"])
    assert (doc["horizon"], doc["quantiles"], doc["run"]) == (7, [0.1, 0.5, 0.9], "sol-tft")
    assert doc["model"] == str(out / "best.pt") and doc["generatedAt"].endswith("Z")
    assert [d["date"] for d in doc["days"]] == [str(d.date()) for d in pd.date_range("2025-07-01", periods=7)]
    for day, row in zip(doc["days"], expected["forecast"], strict=True):
        assert _prices(day) == pytest.approx(_prices(row), rel=1e-6) and day["date"] == row["date"]
    [summary] = [e for e in evs if e["event"] == "summary"]
    published = summary["forecast"]
    assert isinstance(published, dict) and published["uri"] == str(out / "forecast.json")
    assert published["days"][-1]["values"] == [
        float(f"{doc['days'][-1][k]:.6g}") for k in ("q0.1", "q0.5", "q0.9")
    ]
    assert "promotion" not in summary  # the sample asks for none


def test_predict_follows_a_local_current_pointer(
    trained: tuple[Path, list[dict[str, object]]], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from trainer.checkpoint import CheckpointIntegrityError
    from trainer.cli import main
    from trainer.evaluate import load_model

    out, _ = trained
    sha = json.loads((out / "best.json").read_text())["sha256"]
    pointer = {"model": str(out / "best.pt"), "checkpoint": str(out), "sha256": sha}
    (tmp_path / "current.json").write_text(json.dumps(pointer))
    assert main(["predict", "--checkpoint", str(tmp_path / "current"), "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["forecast"]
    published = json.loads((out / "forecast.json").read_text())["days"]
    assert len(rows) == len(published) == 7
    for row, day in zip(rows, published, strict=True):  # the promoted model on the run's data: its forecast
        assert _prices(row) == pytest.approx(_prices(day), rel=1e-6) and row["date"] == day["date"]
    fc = load_model(str(tmp_path / "current.json"))
    assert fc.source == str(out / "best.pt")
    (tmp_path / "current.json").write_text(json.dumps({**pointer, "sha256": "0" * 64}))
    with pytest.raises(CheckpointIntegrityError, match=r"was rewritten after its promotion"):
        load_model(str(tmp_path / "current"))
