"""Candle frames: loading the shared CSV format, hygiene checks and gap-free segments.

A candle frame is a DataFrame indexed by a tz-aware UTC DatetimeIndex named "time" (the candle's
OPEN time) with float64 columns exactly COLUMNS, sorted ascending. Every mlcore function takes
candles in this shape; validate_candles is the gate that proves a frame has it.
"""

from __future__ import annotations

import re
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

COLUMNS: tuple[str, ...] = ("open", "high", "low", "close", "volume")
CSV_HEADER: tuple[str, ...] = ("timestamp", *COLUMNS)

_TIMEFRAME = re.compile(r"^([1-9][0-9]*)([mhd])$")
_UNIT = {"m": "min", "h": "h", "d": "D"}


class CandleError(ValueError):
    """A candle frame or file breaks a hygiene rule; the message names the first bad row."""


def timeframe_delta(timeframe: str) -> pd.Timedelta:
    """Length of one candle: "5m" -> 5 minutes, "1h" -> 1 hour, "1d" -> 1 day."""
    match = _TIMEFRAME.match(timeframe)
    if match is None:
        raise ValueError(
            f"unknown timeframe {timeframe!r}: expected e.g. '5m', '15m', '1h', '4h', '1d'"
        )
    return pd.Timedelta(int(match.group(1)), unit=_UNIT[match.group(2)])


def load_csv(path: str | PathLike[str]) -> pd.DataFrame:
    """Read a shared-format CSV (timestamp ms,open,high,low,close,volume) into a candle frame.

    Every rule of validate_candles that does not need the timeframe is checked here, so a bad row
    fails with the file name and its line number (line 1 is the header).
    """
    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False, index_col=False)
    except pd.errors.ParserError as exc:  # e.g. a row with the wrong number of fields
        raise CandleError(f"{path}: {exc}") from exc
    except pd.errors.EmptyDataError as exc:
        raise CandleError(
            f"{path}: line 1: empty file, expected header {','.join(CSV_HEADER)}"
        ) from exc
    if tuple(raw.columns) != CSV_HEADER:
        raise CandleError(
            f"{path}: line 1: header is {','.join(raw.columns)}, expected {','.join(CSV_HEADER)}"
        )

    numbers = raw.apply(pd.to_numeric, errors="coerce")
    unparsed = numbers.isna().to_numpy()
    if unparsed.any():
        row, col = np.argwhere(unparsed)[0]
        raise CandleError(
            f"{path}: line {row + 2}: {CSV_HEADER[col]} is not a number: {raw.iat[row, col]!r}"
        )
    stamps = numbers["timestamp"].to_numpy()
    fractional = stamps != np.floor(stamps)
    if fractional.any():
        row = int(np.argmax(fractional))
        raise CandleError(
            f"{path}: line {row + 2}: timestamp is not whole milliseconds: {raw.iat[row, 0]!r}"
        )

    index = pd.DatetimeIndex(
        pd.to_datetime(stamps.astype(np.int64), unit="ms", utc=True), name="time"
    )
    frame = pd.DataFrame(
        {name: numbers[name].to_numpy(dtype=np.float64) for name in COLUMNS}, index=index
    )
    found = _first_violation(frame, timeframe=None, allow_gaps=True)
    if found is not None:
        row, rule = found
        raise CandleError(f"{path}: line {row + 2} ({frame.index[row]}): {rule}")
    return frame


def validate_candles(df: pd.DataFrame, *, timeframe: str, allow_gaps: bool = True) -> None:
    """Raise CandleError naming the first bad row (position, timestamp) and the rule it breaks.

    Rules: duplicate or non-increasing time, NaN/inf, non-positive prices, high < low,
    high < max(open, close), low > min(open, close), negative volume, timestamps not aligned to the
    timeframe, and (only when allow_gaps is False) missing candles.
    """
    timeframe_delta(timeframe)  # rejects an unknown timeframe before looking at the data
    _check_shape(df)
    found = _first_violation(df, timeframe=timeframe, allow_gaps=allow_gaps)
    if found is not None:
        row, rule = found
        raise CandleError(f"row {row} ({df.index[row]}): {rule}")


def segment_ids(index: pd.DatetimeIndex, *, timeframe: str) -> np.ndarray:
    """Id (0, 1, 2, ...) of the contiguous run each candle belongs to.

    A new run starts wherever the step to the previous candle is not exactly one timeframe, so a
    model window cut inside one run never spans a gap.
    """
    delta = timeframe_delta(timeframe)
    steps = np.diff(index.as_unit("ns").asi8)
    breaks = (steps != delta.value).astype(np.int64)
    return np.concatenate((np.zeros(min(len(index), 1), dtype=np.int64), np.cumsum(breaks)))


def _check_shape(df: pd.DataFrame) -> None:
    if not isinstance(df, pd.DataFrame):
        raise CandleError(f"candles must be a DataFrame, got {type(df).__name__}")
    if tuple(df.columns) != COLUMNS:
        raise CandleError(f"columns are {list(df.columns)}, expected {list(COLUMNS)}")
    wrong = [name for name in COLUMNS if df[name].dtype != np.float64]
    if wrong:
        raise CandleError(f"columns {wrong} are not float64")
    index = df.index
    if not isinstance(index, pd.DatetimeIndex) or index.tz is None or str(index.tz) != "UTC":
        raise CandleError("index must be a tz-aware UTC DatetimeIndex of candle open times")


def _first_violation(
    df: pd.DataFrame, *, timeframe: str | None, allow_gaps: bool
) -> tuple[int, str] | None:
    """(position, rule) of the earliest bad row, rules checked in the documented order."""
    n = len(df)
    if n == 0:
        return None
    stamps = df.index.as_unit("ns").asi8
    o, h, l, c, v = (df[name].to_numpy() for name in COLUMNS)  # noqa: E741
    step = np.concatenate(([0], np.diff(stamps)))  # the first row has no predecessor

    rules: list[tuple[str, np.ndarray]] = [
        ("duplicate timestamp", df.index.duplicated(keep="first")),
        ("time goes backwards (not sorted ascending)", step < 0),
        ("NaN or infinite value", ~np.isfinite(np.column_stack((o, h, l, c, v))).all(axis=1)),
        ("non-positive price", (o <= 0) | (h <= 0) | (l <= 0) | (c <= 0)),
        ("high < low", h < l),
        ("high < max(open, close)", h < np.maximum(o, c)),
        ("low > min(open, close)", l > np.minimum(o, c)),
        ("negative volume", v < 0),
    ]
    if timeframe is not None:
        delta = timeframe_delta(timeframe).value
        rules.append((f"timestamp not aligned to the {timeframe} grid", stamps % delta != 0))
        if not allow_gaps:
            rules.append((f"gap: more than {timeframe} since the previous candle", step > delta))

    first: tuple[int, str] | None = None
    for rule, bad in rules:
        if bad.any():
            row = int(np.argmax(bad))
            if first is None or row < first[0]:
                first = (row, rule)
    if first is not None and first[1].startswith("gap"):
        row = first[0]
        missing = (stamps[row] - stamps[row - 1]) // delta - 1
        first = (row, f"{first[1]} ({missing} candles missing after {df.index[row - 1]})")
    return first
