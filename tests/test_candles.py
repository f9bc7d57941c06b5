"""The loader reads the shapes users have and refuses bad files with the file, row and problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from trainer.candles import DataError, bundled_symbols, load_candles, parse_candles

ROOT = Path(__file__).resolve().parent.parent


def frame(n: int = 5, start: str = "2024-01-01") -> pd.DataFrame:
    dates = pd.date_range(start, periods=n, freq="D")
    close = np.linspace(10, 14, n)
    return pd.DataFrame(
        {
            "date": dates.strftime("%Y-%m-%d"),
            "open": close - 0.5,
            "high": close + 1,
            "low": close - 1,
            "close": close,
            "volume": np.arange(1, n + 1) * 100.0,
        }
    )


def test_bundled_data_matches_shared_copy() -> None:
    assert bundled_symbols() == ["BTC", "ETH", "SOL"]
    c = load_candles(None, "SOL")
    assert c.frame.index[0] == pd.Timestamp("2020-04-10")
    assert c.frame.index[-1] == pd.Timestamp("2025-06-30")
    assert list(c.frame.columns) == ["open", "high", "low", "close", "volume"]
    assert c.frame.index.is_monotonic_increasing and c.filled_days == 0


def test_yahoo_descending_any_column_order(tmp_path: Path) -> None:
    f = frame()
    yahoo = pd.DataFrame(
        {
            "Volume": f["volume"],
            "Adj Close": f["close"],
            "Close": f["close"],
            "Date": f["date"],
            "High": f["high"],
            "Low": f["low"],
            "Open": f["open"],
        }
    )
    path = tmp_path / "y.csv"
    yahoo.iloc[::-1].to_csv(path, index=False)
    c = load_candles(str(path), "SOL")
    assert c.frame.index.is_monotonic_increasing
    np.testing.assert_allclose(c.frame["close"].to_numpy(), f["close"].to_numpy())


def test_exchange_klines_in_ms_and_parquet(tmp_path: Path) -> None:
    f = frame()
    ms = (pd.to_datetime(f["date"]) - pd.Timestamp("1970-01-01")) // pd.Timedelta(milliseconds=1)
    klines = f.drop(columns="date").assign(open_time=ms, close_time=ms + 86_399_999, number_of_trades=7)
    path = tmp_path / "k.parquet"
    klines.to_parquet(path)
    c = load_candles(str(path), "BTC")
    assert c.frame.index[0] == pd.Timestamp("2024-01-01") and len(c) == 5


def test_missing_days_forward_filled_and_counted(tmp_path: Path) -> None:
    f = frame(6).drop(index=[2, 3])
    path = tmp_path / "gaps.csv"
    f.to_csv(path, index=False)
    c = load_candles(str(path), "SOL")
    assert len(c) == 6 and c.filled_days == 2
    assert c.frame.loc["2024-01-03", "close"] == c.frame.loc["2024-01-02", "close"]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda f: pd.concat([f, f.iloc[[2]]]), r"duplicate date 2024-01-03 \(rows 4, 7\)"),
        (lambda f: f.assign(close=[1, 2, 0, 4, 5]), r"row 4: close must be positive \(got 0"),
        (lambda f: f.assign(low=[1, 2, 3, -4, 5]), r"row 5: low must be positive"),
        (lambda f: f.assign(sentiment=1), r"unknown column\(s\) sentiment"),
        (lambda f: f.drop(columns="volume"), r"missing column\(s\) volume"),
        (lambda f: f.assign(close=["1", "x", "3", "4", "5"]), r"row 3: close is empty or not a number"),
        (lambda f: f.drop(columns="date"), r"no date column"),
    ],
)
def test_bad_files_name_the_problem(tmp_path: Path, mutate, message: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "bad.csv"
    mutate(frame()).to_csv(path, index=False)
    with pytest.raises(DataError, match=message) as info:
        load_candles(str(path), "SOL")
    assert str(path) in str(info.value)


def test_too_few_rows(tmp_path: Path) -> None:
    path = tmp_path / "short.csv"
    frame(20).to_csv(path, index=False)
    with pytest.raises(DataError, match=r"20 rows .* need at least 97"):
        load_candles(str(path), "SOL", min_rows=97)


def test_missing_file_and_bundled_symbol() -> None:
    with pytest.raises(DataError, match="file not found"):
        load_candles("/nonexistent/x.csv", "SOL")
    with pytest.raises(DataError, match="bundled: BTC, ETH, SOL"):
        load_candles(None, "DOGE")


def test_not_a_table() -> None:
    with pytest.raises(DataError, match="not a readable Parquet"):
        parse_candles(b"PAR1garbage", "x.parquet", "SOL")
