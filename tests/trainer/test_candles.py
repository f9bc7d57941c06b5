"""The loader reads the shapes users have and refuses bad files with the file, row and problem."""

from __future__ import annotations

from pathlib import Path

import fastparquet
import numpy as np
import pandas as pd
import pytest

from trainer.candles import DataError, bundled_symbols, load_candles, parse_candles

ROOT = Path(__file__).resolve().parents[2]


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
    fastparquet.write(str(path), klines, write_index=False)
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
        (lambda f: f.iloc[:0], r"no data rows \(only a header\)"),
        (lambda f: f.assign(close=["1", "2", "inf", "4", "5"]), r"row 4: close is inf, not a finite number"),
        (
            lambda f: f.assign(volume=[1, 2, 3, 4, float("-inf")]),
            r"row 6: volume is -inf, not a finite number",
        ),
        (
            lambda f: f.assign(high=[12, 13, 1e308, 15, 16]),
            r"row 4: high 1e\+308 is outside the plausible range",
        ),
        (
            lambda f: (
                f * 1 if False else f.assign(**{c: f[c] * 1e299 for c in ("open", "high", "low", "close")})
            ),
            r"row 2: open .* is outside the plausible range 1e-12\.\.1e\+12",
        ),
        (
            lambda f: f.assign(close=[10, 11, 1e-13, 13, 14]),
            r"row 4: close 1e-13 is outside the plausible range",
        ),
        (
            lambda f: f.assign(volume=[1, 2, 3e19, 4, 5]),
            r"row 4: volume 3e\+19 is above the plausible maximum",
        ),
        (
            lambda f: f.assign(
                open=[9.5, 10.5, 11, 11.5, 12], high=[11, 12, 1e6, 13, 14], low=[9, 10, 11, 12, 13]
            ),
            r"row 4: prices range from .* within one row",
        ),
        (
            lambda f: f.assign(**{c: [10, 11, 12e5, 12e5, 12e5] for c in ("open", "high", "low", "close")}),
            r"row 4: close jumps from 11 \(row 3\) to 1\.2e\+06",
        ),
        (
            lambda f: f.assign(date=["01/02/2024", "02/02/2024", "03/02/2024", "04/02/2024", "05/02/2024"]),
            r"can be read day/month or month/day",
        ),
        (
            lambda f: f.assign(date=["13/02/2024", "02/14/2024", "15/02/2024", "16/02/2024", "17/02/2024"]),
            r"dates disagree on their order: row 2 .* row 3",
        ),
        (
            lambda f: f.assign(date=["2024-02-13", "14/02/2024", "15/02/2024", "16/02/2024", "17/02/2024"]),
            r"row 2: date '2024-02-13' is written differently from row 3",
        ),
        (
            lambda f: f.assign(date=["13/02/24", "14/02/24", "15/02/24", "16/02/24", "17/02/24"]),
            r"row 2: date '13/02/24' has a two-digit year",
        ),
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
    with pytest.raises(DataError, match=r"^x\.csv: a binary file, not CSV"):
        parse_candles(b"\x89PNG\r\n\x1a\n\x00\x00", "x.csv", "SOL")
    with pytest.raises(DataError, match=r"^x\.csv: not a readable CSV file \('utf-8' codec"):
        parse_candles(b"date,open\n\xff\xfe,1\n", "x.csv", "SOL")


@pytest.mark.parametrize(
    ("dates", "first"),
    [
        (["13/02/2024", "14/02/2024", "01/03/2024"], "2024-02-13"),  # day first: 13 decides
        (["02/13/2024", "02/14/2024", "03/01/2024"], "2024-02-13"),  # month first: 13 decides
        (["13.02.2024", "14.02.2024", "01.03.2024"], "2024-02-13"),  # dots, German style
        (["2024/02/13", "2024/02/14", "2024/03/01"], "2024-02-13"),  # year first: one reading
        (["Feb 13, 2024", "Feb 14, 2024", "Mar 1, 2024"], "2024-02-13"),  # month names: one reading
    ],
)
def test_dates_read_only_one_way(tmp_path: Path, dates: list[str], first: str) -> None:
    f = frame(3).assign(date=dates)
    path = tmp_path / "d.csv"
    f.to_csv(path, index=False)
    c = load_candles(str(path), "SOL")
    assert c.frame.index[0] == pd.Timestamp(first) and c.frame.index[-1] == pd.Timestamp("2024-03-01")


def test_bundled_data_is_within_the_plausibility_bounds() -> None:
    from trainer.candles import MAX_STEP_FACTOR, PRICE_MAX, PRICE_MIN

    for symbol in bundled_symbols():
        frame_ = load_candles(None, symbol).frame
        assert frame_["low"].min() > PRICE_MIN and frame_["high"].max() < PRICE_MAX
        step = (frame_["close"] / frame_["close"].shift()).dropna()
        span = frame_["high"] / frame_["low"]
        assert max(step.max(), 1 / step.min(), span.max()) < MAX_STEP_FACTOR / 1000  # real data: far inside
