"""Candle hygiene: loading, validation rules, gap-free segments (on real exchange files)."""

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlcore.candles import (
    COLUMNS,
    CandleError,
    load_csv,
    segment_ids,
    timeframe_delta,
    validate_candles,
)

HEADER = "timestamp,open,high,low,close,volume\n"


def _frame(n: int = 6, *, timeframe: str = "15m") -> pd.DataFrame:
    index = pd.date_range(
        "2025-03-01", periods=n, freq=timeframe_delta(timeframe), tz="UTC", name="time"
    )
    close = 100.0 + np.arange(n, dtype=float)
    return pd.DataFrame(
        {
            "open": close - 0.5,
            "high": close + 1.0,
            "low": close - 1.0,
            "close": close,
            "volume": 10.0,
        },
        index=index,
    )


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "candles.csv"
    path.write_text(HEADER + "".join(line + "\n" for line in lines))
    return path


@pytest.mark.parametrize(
    ("timeframe", "expected"),
    [("5m", "5min"), ("15m", "15min"), ("1h", "1h"), ("4h", "4h"), ("1d", "1D")],
)
def test_timeframe_delta(timeframe, expected):
    assert timeframe_delta(timeframe) == pd.Timedelta(expected)


@pytest.mark.parametrize("bad", ["15", "m15", "0m", "1w", "15min", ""])
def test_timeframe_delta_rejects_unknown(bad):
    with pytest.raises(ValueError, match="unknown timeframe"):
        timeframe_delta(bad)


def test_load_csv_reads_the_shared_format(shared_data):
    path = shared_data / "ohlcv" / "BTC_USDT-15m.csv"
    df = load_csv(path)
    assert df.shape == (29_184, 5)
    assert tuple(df.columns) == COLUMNS
    assert all(df[name].dtype == np.float64 for name in COLUMNS)
    assert df.index.name == "time"
    assert str(df.index.tz) == "UTC"
    assert df.index.is_monotonic_increasing
    # First data line: 1735689600000,93576.0,93702.15,93489.03,93656.18,175.85673
    assert df.index[0] == pd.Timestamp("2025-01-01T00:00:00Z")
    assert df.iloc[0].tolist() == [93576.0, 93702.15, 93489.03, 93656.18, 175.85673]
    validate_candles(df, timeframe="15m", allow_gaps=False)


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (
            ["1735689600000,1,2,0.5,1.5,3", "1735690500000,1,2,0.5,abc,3"],
            r"line 3: close is not a number: 'abc'",
        ),
        (
            ["1735689600000,1,2,0.5,1.5,3", "1735690500000,1,2,0.5,,3"],
            r"line 3: close is not a number: ''",
        ),
        (["1735689600000.5,1,2,0.5,1.5,3"], r"line 2: timestamp is not whole milliseconds"),
        (
            ["1735689600000,1,2,0.5,1.5,3", "1735690500000,1,0.4,0.5,0.45,3"],
            r"line 3 \(.*\): high < low",
        ),
        (
            ["1735689600000,1,2,0.5,1.5,3", "1735689600000,1,2,0.5,1.5,3"],
            r"line 3 \(.*\): duplicate timestamp",
        ),
        (
            ["1735690500000,1,2,0.5,1.5,3", "1735689600000,1,2,0.5,1.5,3"],
            r"line 3 \(.*\): time goes backwards",
        ),
        (["1735689600000,1,2,0.5,1.5,-3"], r"line 2 \(.*\): negative volume"),
        (["1735689600000,1,2,0.5,1.5,inf"], r"line 2 \(.*\): NaN or infinite value"),
        (
            ["1735689600000,1,2,0.5,1.5,3", "1735690500000,1,2,0.5,1.5,3,9"],
            r"Expected 6 fields in line 3",
        ),
        (["1735689600000,1,2,0.5,1.5"], r"line 2: volume is not a number: ''"),
    ],
)
def test_load_csv_names_file_and_line_of_a_bad_row(tmp_path, lines, message):
    path = _write(tmp_path, lines)
    with pytest.raises(CandleError, match=message) as info:
        load_csv(path)
    assert str(path) in str(info.value)


def test_load_csv_rejects_a_wrong_header(tmp_path):
    path = tmp_path / "x.csv"
    path.write_text("time,open,high,low,close,volume\n1735689600000,1,2,0.5,1.5,3\n")
    with pytest.raises(CandleError, match=r"x\.csv: line 1: header is time,open"):
        load_csv(path)


def _break(df: pd.DataFrame, row: int, column: str, value: float) -> pd.DataFrame:
    df = df.copy()
    df.iloc[row, df.columns.get_loc(column)] = value
    return df


def _reindex(df: pd.DataFrame, positions: list[int]) -> pd.DataFrame:
    step = timeframe_delta("15m")
    index = pd.DatetimeIndex([df.index[0] + p * step for p in positions], name="time")
    return df.set_axis(index)


@pytest.mark.parametrize(
    ("make", "row", "rule"),
    [
        (lambda df: _reindex(df, [0, 1, 2, 2, 3, 4]), 3, "duplicate timestamp"),
        (lambda df: _reindex(df, [0, 1, 3, 2, 4, 5]), 3, "time goes backwards"),
        (lambda df: _break(df, 2, "close", np.nan), 2, "NaN or infinite value"),
        (lambda df: _break(df, 4, "volume", np.inf), 4, "NaN or infinite value"),
        (lambda df: _break(_break(df, 1, "low", 0.0), 1, "open", 0.0), 1, "non-positive price"),
        (lambda df: _break(df, 3, "low", 200.0), 3, "high < low"),
        (lambda df: _break(df, 2, "close", 150.0), 2, r"high < max\(open, close\)"),
        (lambda df: _break(df, 5, "open", 50.0), 5, r"low > min\(open, close\)"),
        (lambda df: _break(df, 1, "volume", -1.0), 1, "negative volume"),
        (
            lambda df: df.set_axis(df.index + pd.Timedelta(minutes=1)),
            0,
            "timestamp not aligned to the 15m grid",
        ),
    ],
)
def test_validate_candles_names_first_bad_row_and_rule(make, row, rule):
    df = make(_frame())
    with pytest.raises(
        CandleError, match=rf"^row {row} \({re.escape(str(df.index[row]))}\): {rule}"
    ):
        validate_candles(df, timeframe="15m")


def test_validate_candles_reports_the_earliest_of_several_bad_rows():
    df = _break(_break(_frame(), 4, "volume", -1.0), 2, "low", 500.0)
    with pytest.raises(CandleError, match=r"^row 2 .*high < low"):
        validate_candles(df, timeframe="15m")


def test_gaps_raise_only_when_not_allowed():
    df = _reindex(_frame(), [0, 1, 2, 5, 6, 7])
    validate_candles(df, timeframe="15m")
    with pytest.raises(CandleError, match=r"^row 3 .*gap: .*\(2 candles missing after"):
        validate_candles(df, timeframe="15m", allow_gaps=False)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda df: df[["open", "high", "low", "close"]], "columns are"),
        (lambda df: df[["close", "open", "high", "low", "volume"]], "columns are"),
        (lambda df: df.astype({"volume": np.int64}), "not float64"),
        (lambda df: df.tz_convert("Europe/Berlin"), "UTC"),
        (lambda df: df.tz_localize(None), "UTC"),
        (lambda df: df.reset_index(drop=True), "UTC"),
    ],
)
def test_validate_candles_checks_the_frame_shape(make, message):
    with pytest.raises(CandleError, match=message):
        validate_candles(make(_frame()), timeframe="15m")


def test_validate_candles_accepts_an_empty_frame():
    validate_candles(_frame().iloc[:0], timeframe="15m", allow_gaps=False)


def test_segment_ids_split_at_every_irregular_step():
    index = _reindex(_frame(8), [0, 1, 2, 5, 6, 8, 9, 10]).index
    assert segment_ids(index, timeframe="15m").tolist() == [0, 0, 0, 1, 1, 2, 2, 2]
    assert segment_ids(index[:0], timeframe="15m").tolist() == []


# The six Binance maintenance windows listed in ohlcv/README.md (5m grid): last candle before,
# first candle after, missing 5m candles. The README totals 177 missing 5m and 11 missing 1h
# candles; its per-row 1h column says 4 for the last window, which would total 12 — the file (and
# the hour grid: 04:00 and 08:00 both hold trades) has 3 there, matching the total of 11.
README_GAPS_5M = [
    ("2020-12-21 14:05", "2020-12-21 18:00", 46),
    ("2020-12-25 01:55", "2020-12-25 03:00", 12),
    ("2021-02-11 03:40", "2021-02-11 05:00", 15),
    ("2021-03-06 01:55", "2021-03-06 03:30", 18),
    ("2021-04-20 01:55", "2021-04-20 04:30", 30),
    ("2021-04-25 04:00", "2021-04-25 08:45", 56),
]
README_MISSING_TOTAL = {"5m": 177, "1h": 11}
README_LONGEST_RUN = {"5m": 24_053, "1h": 2_005}


def _gaps(index: pd.DatetimeIndex, timeframe: str) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """(last candle before, first candle after, candles missing) at every segment break."""
    ids = segment_ids(index, timeframe=timeframe)
    starts = np.flatnonzero(np.diff(ids)) + 1
    step = timeframe_delta(timeframe)
    return [(index[i - 1], index[i], (index[i] - index[i - 1]) // step - 1) for i in starts]


def _expected_gaps(timeframe: str) -> list[tuple[pd.Timestamp, pd.Timestamp, int]]:
    """The README's windows on the file's grid: a 1h candle is the hour holding the 5m candle."""
    step = timeframe_delta(timeframe)
    expected = []
    for before, after, _ in README_GAPS_5M:
        last = pd.Timestamp(before, tz="UTC").floor(step)
        first = pd.Timestamp(after, tz="UTC").floor(step)
        expected.append((last, first, (first - last) // step - 1))
    return expected


@pytest.mark.parametrize(
    ("name", "timeframe"),
    [
        ("BTC_USDT-5m.csv", "5m"),
        ("BTC_USDT-1h.csv", "1h"),
        ("ETH_USDT-1h.csv", "1h"),
        ("SOL_USDT-1h.csv", "1h"),
    ],
)
def test_gaps_in_binance_2021_are_exactly_the_readme_ones(shared_data, name, timeframe):
    df = load_csv(shared_data / "ohlcv" / "binance_2021" / name)
    validate_candles(df, timeframe=timeframe)  # gaps allowed: every other rule holds

    found = _gaps(df.index, timeframe)
    assert found == _expected_gaps(timeframe)
    assert sum(missing for _, _, missing in found) == README_MISSING_TOTAL[timeframe]
    if timeframe == "5m":
        assert [missing for _, _, missing in found] == [m for _, _, m in README_GAPS_5M]

    ids = segment_ids(df.index, timeframe=timeframe)
    assert ids.max() == len(README_GAPS_5M)
    assert np.bincount(ids).max() == README_LONGEST_RUN[timeframe]
    # Inside every segment the step is exactly one timeframe: a window cut there spans no gap.
    steps = np.diff(df.index.as_unit("ns").asi8)
    assert (steps[ids[1:] == ids[:-1]] == timeframe_delta(timeframe).value).all()

    before, after, missing = found[0]
    message = rf"\({re.escape(str(after))}\): gap: .*\({missing} candles missing after "
    with pytest.raises(CandleError, match=message + re.escape(str(before))):
        validate_candles(df, timeframe=timeframe, allow_gaps=False)


def test_gap_free_file_is_one_segment(shared_data):
    df = load_csv(shared_data / "ohlcv" / "ETH_USDT-1h.csv")
    assert (segment_ids(df.index, timeframe="1h") == 0).all()
