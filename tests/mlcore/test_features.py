"""Features: names, warm-up, causality on real candles, finiteness, scale-freedom, and our own
indicator implementations against the `ta` library on real data."""

import math

import numpy as np
import pandas as pd
import pytest
import ta

from mlcore import indicators as ind
from mlcore.candles import load_csv
from mlcore.features import (
    FEATURE_LOOKBACK,
    FEATURE_NAMES,
    FEATURE_SET,
    WARMUP,
    _compute_columns,
    compute_features,
)
from mlcore.synthetic import generate_candles

CONTEXT_LENGTH = 96  # the model's default look-back (mlcore_api.md)
LIVE_HISTORY = 500  # candles the per-minute cycle hands to compute_features


@pytest.fixture(scope="module")
def btc(shared_data) -> pd.DataFrame:
    return load_csv(shared_data / "ohlcv" / "BTC_USDT-15m.csv")


@pytest.fixture(scope="module")
def btc_slice(btc) -> pd.DataFrame:
    """3,000 real candles from the middle of the file (a few thousand keeps the tests fast)."""
    return btc.iloc[12_000:15_000]


@pytest.fixture(scope="module")
def btc_raw(btc_slice) -> dict[str, np.ndarray]:
    """Float64 feature columns before the warm-up mask and neutral fill."""
    return _compute_columns(btc_slice).values


# --- names and warm-up ---------------------------------------------------------------------------


def test_names_are_many_unique_and_versioned():
    assert isinstance(FEATURE_NAMES, tuple)
    assert len(FEATURE_NAMES) >= 240
    assert len(set(FEATURE_NAMES)) == len(FEATURE_NAMES)
    assert FEATURE_SET.startswith("botai-")
    assert FEATURE_SET.rsplit("-", 1)[1].startswith("v")


@pytest.mark.parametrize(
    "prefix",
    [
        "logret_", "roc_", "atr_", "rv_", "parkinson_vol_", "gk_vol_", "obv_flow_", "mfi_",
        "vwap_dist_", "vol_z_", "rsi_", "stoch_k_", "williams_r_", "macd_", "ema_dist_",
        "ema_slope_", "sma_dist_", "sma_slope_", "adx_", "aroon_up_", "ichi_", "bb_pos_",
        "bb_width_", "kc_pos_", "dc_pos_", "dc_width_", "candle_", "time_",
    ],
)  # fmt: skip
def test_every_requested_family_is_present(prefix):
    assert any(name.startswith(prefix) for name in FEATURE_NAMES)


def test_warmup_is_the_longest_declared_lookback_and_fits_the_live_window():
    assert set(FEATURE_LOOKBACK) == set(FEATURE_NAMES)
    assert max(FEATURE_LOOKBACK.values()) == WARMUP
    # The longest trend average (EMA 100) needs ceil(7 / -ln(1 - 2/101)) = 350 rows to settle.
    assert FEATURE_LOOKBACK["ema_dist_100"] == math.ceil(7 / -math.log1p(-2 / 101)) == 350
    # 500 live candles must cover warm-up plus one full model context.
    assert WARMUP + CONTEXT_LENGTH <= LIVE_HISTORY


# --- output shape, masking, finiteness -----------------------------------------------------------


def test_output_frame_shape_and_masking(btc_slice):
    features = compute_features(btc_slice)
    assert features.index.equals(btc_slice.index)
    assert tuple(features.columns) == FEATURE_NAMES
    assert (features.dtypes == np.float32).all()
    values = features.to_numpy()
    assert np.isnan(values[:WARMUP]).all()
    assert np.isfinite(values[WARMUP:]).all()


@pytest.mark.parametrize("name", ["BTC_USDT-15m.csv", "ETH_USDT-15m.csv", "ETH_USDT-5m.csv"])
def test_each_feature_is_finite_from_its_own_lookback_on_real_data(shared_data, name):
    # Before the neutral fill: on real candles no value should need it.
    raw = _compute_columns(load_csv(shared_data / "ohlcv" / name)).values
    for feature in FEATURE_NAMES:
        values = raw[feature][FEATURE_LOOKBACK[feature] :]
        assert np.isfinite(values).all(), feature


def test_zero_volume_and_flat_stretches_stay_finite(shared_data):
    # The 2021 file has real zero-volume candles; add a synthetic hour of frozen market too.
    df = load_csv(shared_data / "ohlcv" / "binance_2021" / "BTC_USDT-1h.csv").iloc[:1200].copy()
    assert (df["volume"] == 0).any()
    frozen = df.index[600:700]
    price = df.loc[frozen[0], "open"]
    df.loc[frozen, ["open", "high", "low", "close"]] = price
    df.loc[frozen, "volume"] = 0.0
    values = compute_features(df).to_numpy()
    assert np.isfinite(values[WARMUP:]).all()
    # Inside the frozen stretch the undefined measures sit at their neutral values.
    row = compute_features(df).loc[frozen[-1]]
    assert row["stoch_k_14"] == 50.0
    assert row["bb_pos_20"] == 0.5
    assert row["vol_z_20"] == 0.0
    assert row["candle_close_loc"] == 0.5


@pytest.mark.parametrize("n", [0, 1, 5, WARMUP, WARMUP + 1])
def test_short_inputs_give_nan_until_warmup(n):
    features = compute_features(generate_candles(n, seed=7))
    assert features.shape == (n, len(FEATURE_NAMES))
    assert np.isnan(features.to_numpy()[:WARMUP]).all()
    assert np.isfinite(features.to_numpy()[WARMUP:]).all()


def test_missing_columns_are_rejected(btc_slice):
    with pytest.raises(ValueError, match="lack columns"):
        compute_features(btc_slice.drop(columns=["volume"]))


# --- causality -----------------------------------------------------------------------------------


def test_causal_on_real_btc(btc_slice):
    """Row t computed from candles[:t+1] equals row t computed from the whole series.

    Both runs start at the same candle, so recursive averages share their start condition; any
    difference could only come from a value after t leaking in.
    """
    full = compute_features(btc_slice).to_numpy()
    for t in (WARMUP, WARMUP + 1, 400, 777, 1500, 2222, len(btc_slice) - 2):
        prefix = compute_features(btc_slice.iloc[: t + 1]).to_numpy()
        np.testing.assert_array_equal(prefix[-1], full[t], err_msg=f"row {t}")
        np.testing.assert_array_equal(prefix[:t], full[:t], err_msg=f"rows before {t}")


def test_future_candles_do_not_change_the_past(btc_slice):
    """Scrambling everything after t (prices x3, volume x0.1) leaves rows <= t untouched."""
    t = 1000
    changed = btc_slice.copy()
    changed.iloc[t + 1 :, :4] *= 3.0
    changed.iloc[t + 1 :, 4] *= 0.1
    a = compute_features(btc_slice).to_numpy()[: t + 1]
    b = compute_features(changed).to_numpy()[: t + 1]
    np.testing.assert_array_equal(a, b)


def test_warmup_makes_the_start_point_irrelevant(btc_slice):
    """From WARMUP rows after its start, a series started later agrees with one started earlier.

    This is what lets the live cycle compute on its last 500 candles while training computed on
    30,000: recursive averages have forgotten where they started, to within 1 % of each feature's
    spread (the bound is e^-7 of the start value's deviation). Checked from five start points; a
    feature with a longer memory than its declared lookback (an EMA 400) fails this.
    """
    full_run = compute_features(btc_slice).to_numpy()
    for start in (300, 700, 1100, 1500, 1900):
        full = full_run[start + WARMUP :]
        late = compute_features(btc_slice.iloc[start:]).to_numpy()[WARMUP:]
        spread = full.std(axis=0)
        worst = np.abs(full - late).max(axis=0) / np.where(spread > 0, spread, 1.0)
        assert worst.max() < 0.01, (start, FEATURE_NAMES[int(worst.argmax())], worst.max())


@pytest.mark.parametrize("last", [CONTEXT_LENGTH, LIVE_HISTORY - WARMUP + 10, 10_000])
def test_last_rows_are_the_tail_of_the_full_computation(last):
    """compute_features(last=k), what the Predictor asks for, is the full result's last k rows,
    the warm-up NaNs of a k reaching into the warm-up included."""
    candles = generate_candles(LIVE_HISTORY, seed=3)
    full = compute_features(candles)
    tail = compute_features(candles, last=last)
    pd.testing.assert_frame_equal(tail, full.iloc[-last:])


# --- scale-freedom and calendar ------------------------------------------------------------------


def test_features_do_not_depend_on_price_or_volume_units(btc_slice):
    rescaled = btc_slice.copy()
    rescaled[["open", "high", "low", "close"]] *= 1 / 3000.0  # BTC priced like a small altcoin
    rescaled["volume"] *= 45_000.0
    a = compute_features(btc_slice).to_numpy()[WARMUP:]
    b = compute_features(rescaled).to_numpy()[WARMUP:]
    np.testing.assert_allclose(b, a, rtol=1e-3, atol=1e-4)


def test_calendar_features():
    index = pd.DatetimeIndex(
        ["2025-01-06 00:00", "2025-01-06 06:00", "2025-01-11 12:00"], tz="UTC", name="time"
    )  # Monday midnight, Monday 06:00, Saturday noon
    frame = pd.DataFrame(
        {"open": 1.0, "high": 1.0, "low": 1.0, "close": 1.0, "volume": 1.0}, index=index
    )
    calendar = {
        name: _compute_columns(frame).values[name]
        for name in FEATURE_NAMES
        if name.startswith("time_")
    }
    np.testing.assert_allclose(calendar["time_day_sin"], [0.0, 1.0, 0.0], atol=1e-12)
    np.testing.assert_allclose(calendar["time_day_cos"], [1.0, 0.0, -1.0], atol=1e-12)
    np.testing.assert_allclose(
        calendar["time_week_sin"], np.sin(2 * np.pi * np.array([0.0, 0.25, 5.5]) / 7), atol=1e-12
    )
    assert calendar["time_weekend"].tolist() == [0.0, 0.0, 1.0]


# --- our indicators against ta, on real candles --------------------------------------------------

SETTLED = 1000  # rows after which Wilder/EMA start differences between us and ta are < 1e-12


def _series(df: pd.DataFrame) -> dict[str, pd.Series]:
    return {name: df[name].reset_index(drop=True) for name in df.columns}


def _assert_matches(
    ours: np.ndarray, theirs: pd.Series | np.ndarray, *, start: int = SETTLED, rtol=1e-9
):
    theirs = np.asarray(theirs, dtype=np.float64)
    assert np.isfinite(ours[start:]).all()  # NaN == NaN would pass assert_allclose vacuously
    np.testing.assert_allclose(ours[start:], theirs[start:], rtol=rtol, atol=1e-9)


@pytest.mark.parametrize(
    "holes",
    [[], [0, 1, 2], [0, 1, 2, 40], list(range(50))],
    ids=["none", "leading", "inner", "all"],
)
def test_ewm_is_pandas_ewm(holes):
    """Our linear-filter ewm against pandas' adjust=False ewm: leading NaNs, a NaN after the
    first value (pandas' own definition applies) and an all-NaN input."""
    x = np.random.default_rng(0).normal(size=50)
    x[holes] = np.nan
    theirs = pd.Series(x).ewm(alpha=0.2, adjust=False).mean().to_numpy()
    np.testing.assert_allclose(ind.ewm(x, 0.2), theirs, rtol=1e-12, atol=1e-15)


def test_ema_sma_match_ta(btc_slice):
    s = _series(btc_slice)
    close = s["close"].to_numpy()
    for n in (9, 21, 50):
        _assert_matches(ind.ema(close, n), ta.trend.ema_indicator(s["close"], window=n), start=n)
        _assert_matches(
            ind.rolling_mean(close, n), ta.trend.sma_indicator(s["close"], window=n), start=n
        )


def test_atr_matches_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    theirs = ta.volatility.average_true_range(s["high"], s["low"], s["close"], window=14)
    _assert_matches(btc_raw["atr_14"] * s["close"].to_numpy(), theirs)


def test_adx_and_di_match_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    adx = ta.trend.ADXIndicator(s["high"], s["low"], s["close"], window=14)
    # ta leaves its last +DI/-DI at 0 (its loop stops one row short): the last row is skipped.
    end = len(btc_slice) - 1
    _assert_matches(btc_raw["plus_di_14"][:end], adx.adx_pos()[:end])
    _assert_matches(btc_raw["minus_di_14"][:end], adx.adx_neg()[:end])
    _assert_matches(btc_raw["adx_14"], adx.adx())


def test_aroon_matches_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    _assert_matches(
        btc_raw["aroon_up_25"], ta.trend.aroon_up(s["high"], s["low"], window=25), start=25
    )
    _assert_matches(
        btc_raw["aroon_down_25"], ta.trend.aroon_down(s["high"], s["low"], window=25), start=25
    )


def test_mfi_cci_cmf_vwap_match_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    h, l, c, v = s["high"], s["low"], s["close"], s["volume"]  # noqa: E741
    _assert_matches(btc_raw["mfi_14"], ta.volume.money_flow_index(h, l, c, v, window=14), start=15)
    _assert_matches(btc_raw["cci_20"], ta.trend.cci(h, l, c, window=20), start=20)
    _assert_matches(
        btc_raw["cmf_20"], ta.volume.chaikin_money_flow(h, l, c, v, window=20), start=20
    )
    theirs = ta.volume.volume_weighted_average_price(h, l, c, v, window=48)
    _assert_matches(btc_raw["vwap_dist_48"], np.log(c / theirs), start=48)


def test_volume_flow_matches_ta_obv(btc_slice, btc_raw):
    s = _series(btc_slice)
    obv = ta.volume.on_balance_volume(s["close"], s["volume"]).to_numpy()
    n = 20
    theirs = (obv - ind.shift(obv, n)) / ind.rolling_sum(s["volume"].to_numpy(), n)
    # ta counts an unchanged close as buying volume, Granville (and we) as none: compare the
    # windows without an unchanged close.
    unchanged = (s["close"].diff() == 0).to_numpy().astype(float)
    clean = ind.rolling_sum(unchanged, n) == 0
    assert clean[n:].mean() > 0.5
    clean[:n] = False
    assert np.isfinite(btc_raw[f"obv_flow_{n}"][clean]).all()
    np.testing.assert_allclose(
        btc_raw[f"obv_flow_{n}"][clean], theirs[clean], rtol=1e-9, atol=1e-12
    )


def test_bands_match_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    h, l, c = s["high"], s["low"], s["close"]  # noqa: E741
    bb = ta.volatility.BollingerBands(c, window=20, window_dev=2)
    _assert_matches(btc_raw["bb_pos_20"], bb.bollinger_pband(), start=20)
    _assert_matches(btc_raw["bb_width_20"], bb.bollinger_wband() / 100.0, start=20)
    kc = ta.volatility.KeltnerChannel(h, l, c, window=20, window_atr=10, original_version=False)
    _assert_matches(btc_raw["kc_pos_20"], kc.keltner_channel_pband())
    _assert_matches(btc_raw["kc_width_20"], kc.keltner_channel_wband() / 100.0)
    dc = ta.volatility.DonchianChannel(h, l, c, window=20)
    _assert_matches(btc_raw["dc_pos_20"], dc.donchian_channel_pband(), start=20)


def test_vortex_trix_mass_index_match_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    h, l, c = s["high"], s["low"], s["close"]  # noqa: E741
    _assert_matches(
        btc_raw["vortex_pos_14"], ta.trend.vortex_indicator_pos(h, l, c, window=14), start=15
    )
    _assert_matches(
        btc_raw["vortex_neg_14"], ta.trend.vortex_indicator_neg(h, l, c, window=14), start=15
    )
    _assert_matches(btc_raw["trix_15"], ta.trend.trix(c, window=15))
    _assert_matches(
        btc_raw["mass_index_9_25"], ta.trend.mass_index(h, l, window_fast=9, window_slow=25)
    )


def test_ichimoku_cloud_is_the_one_drawn_at_t(btc_slice, btc_raw):
    """Our displaced spans equal ta's visual ones wherever ta's look-ahead fill is not involved."""
    s = _series(btc_slice)
    c = s["close"].to_numpy()
    span_a = ta.trend.ichimoku_a(s["high"], s["low"], window1=9, window2=26, visual=True)
    span_b = ta.trend.ichimoku_b(s["high"], s["low"], window2=26, window3=52, visual=True)
    start = 52 + 26
    _assert_matches(btc_raw["ichi_span_a_dist"], np.log(c / span_a), start=start)
    _assert_matches(btc_raw["ichi_span_b_dist"], np.log(c / span_b), start=start)


def test_oscillators_match_ta(btc_slice, btc_raw):
    s = _series(btc_slice)
    h, l, c = s["high"], s["low"], s["close"]  # noqa: E741
    for n in (6, 14, 28):
        _assert_matches(btc_raw[f"rsi_{n}"], ta.momentum.rsi(c, window=n))
    stoch = ta.momentum.StochasticOscillator(h, l, c, window=14, smooth_window=3)
    _assert_matches(btc_raw["stoch_k_14"], stoch.stoch(), start=14)
    _assert_matches(btc_raw["stoch_d_14"], stoch.stoch_signal(), start=16)
    _assert_matches(btc_raw["williams_r_21"], ta.momentum.williams_r(h, l, c, lbp=21), start=21)
    stoch_rsi = ta.momentum.StochRSIIndicator(c, window=14, smooth1=3, smooth2=3)
    _assert_matches(btc_raw["stochrsi_k_14"], stoch_rsi.stochrsi_k())
    _assert_matches(btc_raw["stochrsi_d_14"], stoch_rsi.stochrsi_d())
    uo = ta.momentum.ultimate_oscillator(h, l, c, window1=7, window2=14, window3=28)
    _assert_matches(btc_raw["ultimate_osc"], uo, start=29)
