import numpy as np
import pandas as pd
import pytest

from mlcore.candles import load_csv, segment_ids, timeframe_delta
from mlcore.dataset import (
    DEFAULT_CHANNELS,
    Scaler,
    make_windows,
    prepare_series,
    split_bounds,
    split_masks,
    thin,
    time_range_mask,
    training_rows,
)
from mlcore.features import FEATURE_NAMES, WARMUP, compute_features
from mlcore.labels import MAX_HORIZON, fit_flat_bands
from mlcore.synthetic import generate_candles

L = 96
CHANNELS = DEFAULT_CHANNELS[:6]


@pytest.fixture(scope="module")
def gappy(shared_data):
    """Real Binance 1h candles with six exchange outages."""
    candles = load_csv(shared_data / "ohlcv" / "binance_2021" / "BTC_USDT-1h.csv")
    series = prepare_series(
        candles, symbol="BTCUSDT", timeframe="1h", context_length=L, channels=CHANNELS
    )
    return candles, series


def test_default_channels_are_known_features():
    assert 16 <= len(DEFAULT_CHANNELS) <= 32
    assert set(DEFAULT_CHANNELS) <= set(FEATURE_NAMES)
    assert len(set(DEFAULT_CHANNELS)) == len(DEFAULT_CHANNELS)


def test_no_window_spans_a_gap_on_real_gappy_data(gappy):
    candles, series = gappy
    segments = segment_ids(candles.index, timeframe="1h")
    assert segments.max() == 6  # the six outages listed in the data README
    ends = np.flatnonzero(series.window_ok)
    assert len(ends) > 2000
    run_start = np.searchsorted(segments, segments)  # first row of each row's run
    assert (segments[ends - L + 1] == segments[ends]).all()
    assert (ends - L + 1 >= run_start[ends] + WARMUP).all()  # warm-up restarts after every gap
    assert (segments[ends + MAX_HORIZON] == segments[ends]).all()  # targets stay in the run
    # And the mask is not merely conservative: every row that satisfies the rules is a sample.
    last_in_run = np.r_[np.flatnonzero(np.diff(segments)), len(segments) - 1][segments]
    expected = (np.arange(len(candles)) - L + 1 >= run_start + WARMUP) & (
        np.arange(len(candles)) + MAX_HORIZON <= last_in_run
    )
    np.testing.assert_array_equal(series.window_ok, expected)


def test_features_are_computed_per_run_never_across_a_gap(gappy):
    candles, series = gappy
    segments = segment_ids(candles.index, timeframe="1h")
    last = segments == segments.max()
    alone = compute_features(candles[last])[list(CHANNELS)].to_numpy()
    np.testing.assert_array_equal(series.features[last], alone)


def test_split_shares_no_candle_between_train_val_and_test(gappy):
    _, series = gappy
    bounds = split_bounds([series], val_fraction=0.2, test_fraction=0.2)
    masks = split_masks(series, bounds=bounds, context_length=L, timeframe="1h")
    step = timeframe_delta("1h")
    spans = {}
    for name, mask in masks.items():
        t = series.index[mask]
        assert len(t) > 100, name
        # Rows a sample touches: its input window and the candles its targets look at.
        spans[name] = (t.min() - (L - 1) * step, t.max() + MAX_HORIZON * step)
    assert spans["train"][1] < spans["val"][0]
    assert spans["val"][1] < spans["test"][0]
    # The embargo between the last training and the first validation sample exceeds the horizon.
    gap = (series.index[masks["val"]].min() - series.index[masks["train"]].max()) / step
    assert gap >= L + MAX_HORIZON
    assert not (masks["train"] & masks["val"]).any()


def test_scaler_and_bands_ignore_everything_after_training():
    candles = generate_candles(4000, seed=5, timeframe="15m")
    base = prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
    bounds = split_bounds([base], val_fraction=0.2, test_fraction=0.2)
    # Wreck every candle from the validation period on: scaler and bands must not move.
    wrecked = candles.copy()
    later = wrecked.index >= bounds.val_start
    wrecked.loc[later, ["open", "high", "low", "close"]] *= 7.0
    wrecked.loc[later, "volume"] *= 1000.0
    fitted = []
    for df in (candles, wrecked):
        s = prepare_series(df, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
        train = split_masks(s, bounds=bounds, context_length=L, timeframe="15m")["train"]
        scaler = Scaler.fit(training_rows([s], [train], L))
        fitted.append((scaler, fit_flat_bands(s.targets.returns[train])))
    np.testing.assert_array_equal(fitted[0][0].mean, fitted[1][0].mean)
    np.testing.assert_array_equal(fitted[0][0].std, fitted[1][0].std)
    np.testing.assert_array_equal(fitted[0][1], fitted[1][1])


def test_training_rows_are_exactly_the_rows_inside_training_windows():
    candles = generate_candles(1500, seed=6, timeframe="15m")
    s = prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
    mask = np.zeros(len(candles), dtype=bool)
    mask[[WARMUP + L + 10, WARMUP + L + 500]] = True
    rows = training_rows([s], [mask], L)
    assert len(rows) == 2 * L
    np.testing.assert_array_equal(rows[:L], s.features[WARMUP + 11 : WARMUP + L + 11])


def test_windows_are_the_scaled_rows_ending_at_t():
    candles = generate_candles(1500, seed=7, timeframe="15m")
    s = prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
    mask = thin(s.window_ok, stride=5)
    scaler = Scaler.fit(s.features[s.window_ok])
    bands = fit_flat_bands(s.targets.returns[s.window_ok])
    data = make_windows([s, s], [mask, mask], scaler=scaler, bands=bands, context_length=L)
    assert len(data) == 2 * mask.sum()
    k = len(data) - 3  # a sample of the second copy: offsets must account for the first
    t = data.positions[k]
    expected = scaler.transform(s.features[t - L + 1 : t + 1])
    np.testing.assert_array_equal(data.windows(np.array([k]))[0], expected)
    np.testing.assert_array_equal(data.last_rows()[k], expected[-1])
    assert data.times[k] == candles.index[t]
    np.testing.assert_allclose(data.returns[k], s.targets.returns[t], rtol=1e-6)
    assert np.isfinite(data.rows).all()


def test_thin_and_time_range():
    mask = np.array([True, False, True, True, True, True])
    assert thin(mask, stride=2).tolist() == [True, False, False, True, False, True]
    candles = generate_candles(1500, seed=8, timeframe="15m")
    s = prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
    start = candles.index[1000]
    sel = time_range_mask(s, start=start, end=None)
    assert sel.any()
    assert (s.index[sel] >= start).all()
    assert (sel <= s.window_ok).all()


def test_scaler_round_trip_and_clip():
    rows = np.random.default_rng(0).normal(3.0, 2.0, size=(1000, 3))
    rows[:, 2] = 5.0  # constant channel
    scaler = Scaler.fit(rows)
    again = Scaler.from_dict(scaler.to_dict())
    z = again.transform(np.array([[3.0, 1000.0, 5.0]]))
    assert z[0, 0] == pytest.approx((3.0 - rows[:, 0].mean()) / rows[:, 0].std(), rel=1e-5)
    assert z[0, 1] == again.clip
    assert z[0, 2] == 0.0


def test_prepare_series_rejects_unknown_channels():
    candles = generate_candles(500, seed=9, timeframe="15m")
    with pytest.raises(ValueError, match="unknown feature channels"):
        prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=["nope"])


def test_short_runs_yield_no_samples():
    candles = generate_candles(WARMUP + L + MAX_HORIZON - 1, seed=10, timeframe="15m")
    s = prepare_series(candles, symbol="X", timeframe="15m", context_length=L, channels=CHANNELS)
    assert not s.window_ok.any()
    assert isinstance(s.index, pd.DatetimeIndex)
