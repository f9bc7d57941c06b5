"""Reading daily OHLCV candles from whatever users have: the bundled CSVs, their own CSV/Parquet, local or S3.

Why a module of its own: data problems are the most common reason a run is wrong, and a wrong run looks like a
right one. So the loader is strict and says exactly what is wrong (file, row, problem) instead of guessing:
duplicate dates, non-positive prices and unknown columns are errors; missing days are forward-filled and counted
so the summary can show them. Accepted shapes:

* this project's ``date,open,high,low,close,volume`` (the bundled files);
* Yahoo Finance exports ``Date,Open,High,Low,Close,Adj Close,Volume`` in any column order, either date order;
* exchange klines with ``open_time`` in epoch milliseconds (Binance style; extra kline columns allowed).
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS = ["open", "high", "low", "close", "volume"]
# Known extra columns that are dropped silently (anything else is an error naming the column).
_IGNORED = {
    "adj close",
    "adj_close",
    "adjclose",
    "close_time",
    "quote_asset_volume",
    "quote_volume",
    "number_of_trades",
    "trades",
    "taker_buy_base_asset_volume",
    "taker_buy_quote_asset_volume",
    "taker_buy_base_volume",
    "taker_buy_quote_volume",
    "ignore",
    "symbol",
    "ticker",
    "dividends",
    "stock splits",
}
_DATE_NAMES = ("date", "timestamp", "time", "datetime")
_KLINE_NAMES = ("open_time", "opentime")


class DataError(ValueError):
    """A candles file that cannot be used as it is; the message names the file, the row and the problem."""


@dataclass(frozen=True)
class Candles:
    """Daily candles of one symbol, indexed by date (UTC midnight), ascending, no gaps."""

    symbol: str
    frame: pd.DataFrame  # columns: open high low close volume; DatetimeIndex named "date"
    source: str
    filled_days: int  # missing days that were forward-filled

    def __len__(self) -> int:
        return len(self.frame)


def bundled_path(symbol: str) -> str:
    return f"bundled:{symbol}-USD.csv"


def bundled_symbols() -> list[str]:
    files = resources.files("trainer").joinpath("datasets")
    return sorted(p.name.split("-")[0] for p in files.iterdir() if p.name.endswith("-USD.csv"))


def _read_raw(source: str, endpoint: str | None) -> tuple[bytes, str]:
    """Bytes of a bundled resource, a local path or an s3:// object."""
    if source.startswith("bundled:"):
        name = source.split(":", 1)[1]
        ref = resources.files("trainer").joinpath("datasets", name)
        if not ref.is_file():
            raise DataError(
                f"{source}: no bundled data for this symbol; bundled: {', '.join(bundled_symbols())}. "
                "Point spec.data.uri (or --data) at your own CSV/Parquet."
            )
        return ref.read_bytes(), source
    if source.startswith("s3://"):
        from trainer.storage import read_bytes  # boto3 only when needed

        return read_bytes(source, endpoint), source
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"{source}: file not found")
    return path.read_bytes(), str(path)


def _parse_table(raw: bytes, name: str) -> pd.DataFrame:
    if raw[:4] == b"PAR1" or name.lower().endswith((".parquet", ".pq")):
        try:
            return pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several types
            raise DataError(f"{name}: not a readable Parquet file ({exc})") from None
    try:
        return pd.read_csv(io.BytesIO(raw))
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise DataError(f"{name}: not a readable CSV file ({exc})") from None


def _normalise_columns(df: pd.DataFrame, name: str) -> pd.DataFrame:
    """Lower-case names, find the date column, check the price columns; returns date + COLUMNS."""
    df = df.rename(columns={c: str(c).strip().lower() for c in df.columns})
    if df.index.name and str(df.index.name).lower() in _DATE_NAMES + _KLINE_NAMES:
        df = df.reset_index().rename(columns={df.index.name: str(df.index.name).lower()})
    date_col = next((c for c in _DATE_NAMES + _KLINE_NAMES if c in df.columns), None)
    if date_col is None:
        raise DataError(
            f"{name}: no date column; expected one of {', '.join(_DATE_NAMES + _KLINE_NAMES)} "
            f"(columns found: {', '.join(map(str, df.columns))})"
        )
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise DataError(f"{name}: missing column(s) {', '.join(missing)}; need date,{','.join(COLUMNS)}")
    unknown = [
        c
        for c in df.columns
        if c not in (*COLUMNS, date_col) and c not in _IGNORED and not c.startswith("unnamed")
    ]
    other_dates = [c for c in unknown if c in _DATE_NAMES + _KLINE_NAMES]
    unknown = [c for c in unknown if c not in other_dates]
    if unknown:
        raise DataError(
            f"{name}: unknown column(s) {', '.join(unknown)}; expected date,{','.join(COLUMNS)} "
            "(Yahoo's 'Adj Close' and exchange kline columns are accepted)"
        )
    raw_dates = df[date_col]
    try:
        if date_col in _KLINE_NAMES or pd.api.types.is_integer_dtype(raw_dates):
            dates = pd.to_datetime(raw_dates.astype("int64"), unit="ms", utc=True)
        else:
            dates = pd.to_datetime(raw_dates, utc=True, format="mixed")
    except (ValueError, TypeError, OverflowError) as exc:
        raise DataError(f"{name}: column {date_col!r} holds values that are not dates ({exc})") from None
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in COLUMNS})
    out.insert(0, "date", dates.dt.tz_convert(None).dt.normalize())
    out["_row"] = np.arange(len(df)) + 2  # 1-based file line, header is line 1
    return out


def _check_rows(df: pd.DataFrame, name: str) -> None:
    bad = df[df[COLUMNS].isna().any(axis=1)]
    if len(bad):
        row = bad.iloc[0]
        col = next(c for c in COLUMNS if pd.isna(row[c]))
        raise DataError(f"{name}: row {int(row['_row'])}: {col} is empty or not a number")
    prices = df[["open", "high", "low", "close"]]
    bad = df[(prices <= 0).any(axis=1)]
    if len(bad):
        row = bad.iloc[0]
        col = next(c for c in ("open", "high", "low", "close") if row[c] <= 0)
        raise DataError(f"{name}: row {int(row['_row'])}: {col} must be positive (got {row[col]})")
    bad = df[df["volume"] < 0]
    if len(bad):
        raise DataError(f"{name}: row {int(bad.iloc[0]['_row'])}: volume must not be negative")
    dup = df[df["date"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = ", ".join(str(int(r)) for r in dup[dup["date"] == first["date"]]["_row"])
        raise DataError(f"{name}: duplicate date {first['date'].date()} (rows {rows})")


def parse_candles(raw: bytes, name: str, symbol: str) -> Candles:
    df = _normalise_columns(_parse_table(raw, name), name)
    _check_rows(df, name)
    df = df.sort_values("date").set_index("date")[COLUMNS]
    # High/low that contradict open/close happen in real feeds; make them consistent rather than fail.
    df["high"] = df[["open", "high", "low", "close"]].max(axis=1)
    df["low"] = df[["open", "high", "low", "close"]].min(axis=1)
    full = pd.date_range(df.index[0], df.index[-1], freq="D", name="date")
    filled = len(full) - len(df)
    if filled:
        df = df.reindex(full).ffill()
        df.loc[df["volume"].isna(), "volume"] = 0.0
    df.index.name = "date"
    return Candles(symbol=symbol, frame=df.astype("float64"), source=name, filled_days=filled)


def resolve_source(uri: str | None, symbol: str) -> str:
    if not uri:
        return bundled_path(symbol)
    return uri.replace("{symbol}", symbol)


def load_candles(
    uri: str | None,
    symbol: str,
    *,
    endpoint: str | None = None,
    start: str | None = None,
    end: str | None = None,
    min_rows: int = 0,
) -> Candles:
    """Load one symbol's candles, optionally cut to ``[start, end]``; ``uri`` None means the bundled file."""
    raw, name = _read_raw(resolve_source(uri, symbol), endpoint)
    candles = parse_candles(raw, name, symbol)
    frame = candles.frame
    if start:
        frame = frame[frame.index >= pd.Timestamp(start)]
    if end:
        frame = frame[frame.index <= pd.Timestamp(end)]
    if len(frame) < min_rows:
        raise DataError(
            f"{name}: {len(frame)} rows between {start or 'the start'} and {end or 'the end'}, "
            f"need at least {min_rows} (inputWindow + horizon and enough windows to train and validate)"
        )
    return Candles(symbol=symbol, frame=frame, source=name, filled_days=candles.filled_days)
