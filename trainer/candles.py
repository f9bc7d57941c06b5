"""Reading daily OHLCV candles from whatever users have: the bundled CSVs, their own CSV/Parquet, local or S3.

Why a module of its own: data problems are the most common reason a run is wrong, and a wrong run looks like a
right one. So the loader is strict and says exactly what is wrong (file, row, problem) instead of guessing:
duplicate dates, non-positive prices and unknown columns are errors; missing days are forward-filled and counted
so the summary can show them. Accepted shapes:

* this project's ``date,open,high,low,close,volume`` (the bundled files);
* Yahoo Finance exports ``Date,Open,High,Low,Close,Adj Close,Volume`` in any column order, either date order;
* exchange klines with ``open_time`` in epoch milliseconds (Binance style; extra kline columns allowed);
* Parquet with the same columns, read with fastparquet's own API rather than pyarrow: pandas imports pyarrow
  eagerly whenever it is installed (about 35 MB of resident memory in every run, Parquet or not), fastparquet
  only when a Parquet file is read.

Refused, naming the file and row, because each trains to a plausible-looking but wrong model:

* values that are not finite (``inf``, ``1e400``) or absurd: prices outside ``[PRICE_MIN, PRICE_MAX]``
  (1e-12..1e12 in the quote currency covers every real quote, SHIB at ~1e-5 USD to BTC at ~1e9 VND, with
  orders of magnitude to spare, and keeps squared errors and float32 copies far from overflow: prices near 1e300
  wrote ``Infinity`` into metrics.json), volume above ``VOLUME_MAX`` (1e18; the busiest days of the cheapest
  tokens trade ~1e14 units), and a price that moves by more than ``MAX_STEP_FACTOR`` (10,000x) within a row or
  from one row to the next: no market does that in a day (LUNA's collapse was ~2,000x in its worst day), a
  decimal-point or unit error does;
* dates that only a guess can read: ``03/04/2024`` is 3 April or March 4. Numeric day/month dates are read
  only when some date in the file decides the order (a first field above 12: day first; a second: month first)
  and every date has the same shape; otherwise write ISO dates (YYYY-MM-DD).
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from trainer.api.errors import InputError

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
_PRICES = ["open", "high", "low", "close"]
PRICE_MIN, PRICE_MAX = 1e-12, 1e12
VOLUME_MAX = 1e18
MAX_STEP_FACTOR = 1e4
# d/m/y or m/d/y with / . or - between, an optional time after: the shapes whose order only the data can decide.
_NUMERIC_DATE = re.compile(r"^\s*(\d{1,2})[/.\-](\d{1,2})[/.\-](\d{2,4})((?:[ T].*)?)$")


class DataError(InputError, ValueError):
    """A candles file that cannot be used as it is; the message names the file, the row and the problem."""

    prefix = "data"


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
    if source[:3].lower() == "s3:":
        from trainer.storage import read_bytes  # boto3 only when needed (s3:/x: MalformedURIError, exit 2)

        return read_bytes(source, endpoint), source
    path = Path(source).expanduser()
    if not path.is_file():
        raise DataError(f"{source}: file not found")
    return path.read_bytes(), str(path)


def _parse_table(raw: bytes, name: str) -> pd.DataFrame:
    if raw[:4] == b"PAR1" or name.lower().endswith((".parquet", ".pq")):
        try:
            import fastparquet

            frame: pd.DataFrame = fastparquet.ParquetFile(io.BytesIO(raw)).to_pandas()
            return frame
        except Exception as exc:  # fastparquet raises several types
            raise DataError(f"{name}: not a readable Parquet file ({exc})") from None
    if b"\x00" in raw[:65536]:
        raise DataError(f"{name}: a binary file, not CSV (nor Parquet, which starts with PAR1)")
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
            dates = _parse_dates(raw_dates, date_col, name)
    except (ValueError, TypeError, OverflowError) as exc:
        if isinstance(exc, DataError):
            raise
        raise DataError(f"{name}: column {date_col!r} holds values that are not dates ({exc})") from None
    out = pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in COLUMNS})
    out.insert(0, "date", dates.dt.tz_convert(None).dt.normalize())
    out["_row"] = np.arange(len(df)) + 2  # 1-based file line, header is line 1
    return out


def _parse_dates(raw: pd.Series, col: str, name: str) -> pd.Series:
    """Text dates as UTC timestamps; numeric day/month dates only where the file decides their order."""
    text = raw.astype(str).str.strip()
    parts = text.str.extract(_NUMERIC_DATE)
    numeric = parts[0].notna().to_numpy()
    if not numeric.any():  # ISO, year first, or month names: one reading only
        return pd.to_datetime(text, utc=True, format="mixed")
    rows = np.arange(len(text)) + 2
    if not numeric.all():
        i, j = int(np.argmax(numeric)), int(np.argmin(numeric))
        raise DataError(
            f"{name}: row {rows[j]}: date {text.iloc[j]!r} is written differently from row {rows[i]} "
            f"({text.iloc[i]!r}); use one date format in column {col!r}, preferably YYYY-MM-DD"
        )
    short = parts[2].str.len().to_numpy() != 4
    if short.any():
        i = int(np.argmax(short))
        raise DataError(
            f"{name}: row {rows[i]}: date {text.iloc[i]!r} has a two-digit year, which can be read several "
            "ways; write dates as YYYY-MM-DD"
        )
    first, second = parts[0].astype(int).to_numpy(), parts[1].astype(int).to_numpy()
    day_first, month_first = first > 12, second > 12
    if day_first.any() and month_first.any():
        i, j = int(np.argmax(day_first)), int(np.argmax(month_first))
        raise DataError(
            f"{name}: dates disagree on their order: row {rows[i]} ({text.iloc[i]!r}) is day/month, row "
            f"{rows[j]} ({text.iloc[j]!r}) is month/day; write dates as YYYY-MM-DD"
        )
    if not day_first.any() and not month_first.any():
        raise DataError(
            f"{name}: dates such as {text.iloc[0]!r} (row 2) can be read day/month or month/day and no date in "
            "the file decides which; write dates as YYYY-MM-DD"
        )
    day, month = (first, second) if day_first.any() else (second, first)
    iso = [f"{y}-{m:02d}-{d:02d}{rest}" for y, m, d, rest in zip(parts[2], month, day, parts[3], strict=True)]
    return pd.to_datetime(pd.Series(iso, index=raw.index), utc=True, format="ISO8601")


def _first_bad(df: pd.DataFrame, mask: pd.DataFrame, name: str, problem: str) -> None:
    """DataError for the first row where ``mask`` (columns of df) is true: ``problem`` formatted with the
    column and value."""
    hit = mask.any(axis=1).to_numpy()
    if hit.any():
        i = int(np.argmax(hit))
        col = str(mask.columns[int(np.argmax(mask.iloc[i].to_numpy()))])
        value = df[col].iloc[i]
        raise DataError(f"{name}: row {int(df['_row'].iloc[i])}: " + problem.format(col=col, value=value))


def _check_rows(df: pd.DataFrame, name: str) -> None:
    bad = df[df[COLUMNS].isna().any(axis=1)]
    if len(bad):
        row = bad.iloc[0]
        col = next(c for c in COLUMNS if pd.isna(row[c]))
        raise DataError(f"{name}: row {int(row['_row'])}: {col} is empty or not a number")
    _first_bad(df, ~df[COLUMNS].apply(np.isfinite), name, "{col} is {value}, not a finite number")
    prices = df[_PRICES]
    bad = df[(prices <= 0).any(axis=1)]
    if len(bad):
        row = bad.iloc[0]
        col = next(c for c in _PRICES if row[c] <= 0)
        raise DataError(f"{name}: row {int(row['_row'])}: {col} must be positive (got {row[col]})")
    _first_bad(
        df,
        (prices < PRICE_MIN) | (prices > PRICE_MAX),
        name,
        f"{{col}} {{value:g}} is outside the plausible range {PRICE_MIN:g}..{PRICE_MAX:g} for a price; is the "
        "column in the right unit?",
    )
    bad = df[df["volume"] < 0]
    if len(bad):
        raise DataError(f"{name}: row {int(bad.iloc[0]['_row'])}: volume must not be negative")
    _first_bad(
        df,
        df[["volume"]] > VOLUME_MAX,
        name,
        f"volume {{value:g}} is above the plausible maximum {VOLUME_MAX:g}; is the column in the right unit?",
    )
    dup = df[df["date"].duplicated(keep=False)]
    if len(dup):
        first = dup.iloc[0]
        rows = ", ".join(str(int(r)) for r in dup[dup["date"] == first["date"]]["_row"])
        raise DataError(f"{name}: duplicate date {first['date'].date()} (rows {rows})")


def _check_steps(df: pd.DataFrame, name: str) -> None:
    """No price moves by more than MAX_STEP_FACTOR within a row or from one row (by date) to the next."""
    prices = df[_PRICES].to_numpy()
    rows = df["_row"].to_numpy()
    span = prices.max(axis=1) / prices.min(axis=1)
    if (span > MAX_STEP_FACTOR).any():
        i = int(np.argmax(span > MAX_STEP_FACTOR))
        raise DataError(
            f"{name}: row {rows[i]}: prices range from {prices[i].min():g} to {prices[i].max():g} within one "
            f"row, a factor of {span[i]:.3g} (at most {MAX_STEP_FACTOR:g}); a spike or a unit error?"
        )
    close = prices[:, 3]
    step = close[1:] / close[:-1]
    jump = (step > MAX_STEP_FACTOR) | (step < 1 / MAX_STEP_FACTOR)
    if jump.any():
        i = int(np.argmax(jump)) + 1
        raise DataError(
            f"{name}: row {rows[i]}: close jumps from {close[i - 1]:g} (row {rows[i - 1]}) to {close[i]:g}, a "
            f"factor of {max(step[i - 1], 1 / step[i - 1]):.3g} in one step (at most {MAX_STEP_FACTOR:g}); a "
            "spike or a unit error?"
        )


def parse_candles(raw: bytes, name: str, symbol: str) -> Candles:
    df = _normalise_columns(_parse_table(raw, name), name)
    if df.empty:
        raise DataError(f"{name}: no data rows (only a header); need date,{','.join(COLUMNS)} rows")
    _check_rows(df, name)
    df = df.sort_values("date")
    _check_steps(df, name)
    df = df.set_index("date")[COLUMNS]
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
