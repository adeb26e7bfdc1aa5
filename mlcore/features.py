"""Causal, scale-free features from OHLCV candles: the model's input channels.

compute_features(candles) returns one row per candle and one column per name in FEATURE_NAMES.
Row t depends only on candles[:t+1]: every indicator is a rolling window over past rows, a shift
into the past, or a recursive average started at the first row. Ichimoku's cloud is the one that
needs care: the spans plotted at t were computed at t-26, so they enter as shift(+26); the
lagging span (the close plotted 26 candles back) would be future data and enters only as the
return over 26 candles it stands for.

Scale-free: prices enter as log ratios, distances in ATR or as fractions of price, volumes as
ratios and z-scores, oscillators in their fixed ranges, so one model serves BTC, ETH and any
price level.

Groups: returns; volatility (ATR, realised, Parkinson, Garman-Klass, Rogers-Satchell, semi-vol,
higher moments); volume (relative volume, z-scores, OBV flow, MFI, VWAP distance, CMF, force,
volume/return correlation); momentum (RSI, Stochastic, Stoch RSI, Williams %R, MACD, TSI, Ultimate,
CCI, Awesome, efficiency ratio); trend (EMA/SMA distances and slopes, crosses, ADX, Aroon, Ichimoku,
linear regression, Vortex, TRIX, mass index); bands (Bollinger, Keltner, Donchian, squeeze);
candle shape; calendar; return statistics.

Warm-up: each feature declares the first row at which it is valid, derived from its windows: a
rolling window of n over a series valid from row L is valid from L + n - 1; a recursive average
with smoothing alpha adds indicators.ema_settle(alpha) rows (its start value's weight has decayed
below e^-7 by then, so a series started earlier agrees to within that); chained averages add up.
WARMUP is the largest of these, and rows before it are NaN.

Undefined values: where a denominator is zero (a flat candle, a flat or zero-volume stretch) the
value is undefined; from WARMUP on it takes the feature's neutral value (0 for signed measures,
50 for 0-100 oscillators, 0.5 for positions inside a band) so the output is finite everywhere a
model may read it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import ta

from mlcore import indicators as ind
from mlcore.indicators import ema_settle, span_alpha

FEATURE_SET = "botai-ta-v1"

RETURN_WINDOWS = (1, 2, 3, 4, 5, 6, 8, 10, 12, 16, 20, 24, 32, 48, 64, 96)
VOLNORM_RETURN_WINDOWS = (1, 4, 12, 24, 48, 96)
ATR_WINDOWS = (5, 7, 14, 21, 28)
RANGE_WINDOWS = (48, 96, 192)  # long-horizon ATR as a plain mean of the true range (no long EMA)
RV_WINDOWS = (5, 10, 20, 48, 96, 192)
RANGE_VOL_WINDOWS = (10, 20, 48, 96)  # Parkinson, Garman-Klass, Rogers-Satchell
SEMIVOL_WINDOWS = (20, 96)
MOMENT_WINDOWS = (24, 96)
VOLUME_WINDOWS = (5, 10, 20, 48, 96)
MFI_WINDOWS = (7, 14, 28)
VWAP_WINDOWS = (12, 24, 48, 96)
CMF_WINDOWS = (10, 20, 48)
RSI_WINDOWS = (6, 9, 14, 21, 28)
STOCH_WINDOWS = (14, 28, 56)
WILLIAMS_WINDOWS = (10, 21, 42, 96)
MACD_SETTINGS = ((12, 26, 9), (5, 35, 5), (24, 52, 18))
CCI_WINDOWS = (14, 20, 40)
ER_WINDOWS = (10, 20, 48)
EMA_SPANS = (5, 9, 12, 21, 26, 50, 100)
EMA_SLOPE_LAG = 3
SMA_WINDOWS = (10, 20, 50, 100, 200)
SMA_SLOPE_LAG = 5
EMA_CROSSES = ((9, 21), (21, 50), (50, 100))
SMA_CROSSES = ((10, 20), (20, 50), (50, 200))
ADX_WINDOWS = (14, 20)
AROON_WINDOWS = (14, 25, 50)
ICHIMOKU = (9, 26, 52)
LINREG_WINDOWS = (20, 48, 96)
BOLLINGER_WINDOWS = (20, 48, 96)
KELTNER_SETTINGS = ((20, 10), (48, 20))  # (EMA span, ATR window), bands at 2 ATR
DONCHIAN_WINDOWS = (20, 48, 96, 192)
CANDLE_MEAN_WINDOWS = (5, 20)
BULL_WINDOWS = (10, 20, 48)
AUTOCORR_WINDOWS = (48, 96)
DRAWDOWN_WINDOWS = (24, 96)
STREAK_CAP = 12  # runs longer than this are all "long"; keeps the value start-independent

NORM_ATR = 14  # the ATR that distances are measured in


def _wilder_lb(n: int) -> int:
    return ema_settle(1.0 / n)


def _ema_lb(span: int) -> int:
    return ema_settle(span_alpha(span))


ATR_LB = _wilder_lb(NORM_ATR)


@dataclass
class _Columns:
    """Features in the order they are added, each with its first valid row and neutral value."""

    values: dict[str, np.ndarray] = field(default_factory=dict)
    lookback: dict[str, int] = field(default_factory=dict)
    neutral: dict[str, float] = field(default_factory=dict)

    def add(self, name: str, values: np.ndarray, *, lookback: int, neutral: float = 0.0) -> None:
        if name in self.values:
            raise ValueError(f"feature {name!r} defined twice")
        self.values[name] = values
        self.lookback[name] = lookback
        self.neutral[name] = neutral


@dataclass
class _Market:
    """The candles as float64 arrays plus the series many groups share."""

    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    minutes: np.ndarray  # candle open time in minutes since the epoch
    log_close: np.ndarray = field(init=False)
    ret: np.ndarray = field(init=False)  # one-candle log return, NaN on the first row
    atr: np.ndarray = field(init=False)  # ATR(NORM_ATR)
    series: dict[str, pd.Series] = field(init=False)  # high, low, close as Series, for ta

    def __post_init__(self) -> None:
        self.log_close = np.log(self.close)
        self.ret = self.log_close - ind.shift(self.log_close)
        self.atr = ind.atr(self.high, self.low, self.close, NORM_ATR)
        self.series = {name: pd.Series(getattr(self, name)) for name in ("high", "low", "close")}


def _returns(m: _Market, out: _Columns) -> None:
    log_returns = {n: m.log_close - ind.shift(m.log_close, n) for n in RETURN_WINDOWS}
    for n in RETURN_WINDOWS:
        out.add(f"logret_{n}", log_returns[n], lookback=n)
    for n in RETURN_WINDOWS:  # ROC: the simple return in %
        out.add(f"roc_{n}", 100.0 * np.expm1(log_returns[n]), lookback=n)
    _, rv96 = ind.rolling_mean_std(m.ret, 96)
    for n in VOLNORM_RETURN_WINDOWS:  # the return in units of its typical size over n candles
        out.add(f"logret_{n}_volnorm", log_returns[n] / (rv96 * math.sqrt(n)), lookback=96)


def _volatility(m: _Market, out: _Columns) -> None:
    h, l, c, o = m.high, m.low, m.close, m.open  # noqa: E741
    atrs = {n: ind.atr(h, l, c, n) for n in ATR_WINDOWS}
    for n in ATR_WINDOWS:
        out.add(f"atr_{n}", atrs[n] / c, lookback=_wilder_lb(n))
    tr = ind.true_range(h, l, c)
    ranges = {n: ind.rolling_mean(tr, n) for n in RANGE_WINDOWS}
    for n in RANGE_WINDOWS:
        out.add(f"tr_mean_{n}", ranges[n] / c, lookback=n - 1)
    out.add("atr_ratio_5_21", np.log(atrs[5] / atrs[21]), lookback=_wilder_lb(21))
    out.add("atr_ratio_7_28", np.log(atrs[7] / atrs[28]), lookback=_wilder_lb(28))
    out.add("tr_mean_ratio_48_192", np.log(ranges[48] / ranges[192]), lookback=191)

    rv = {n: ind.rolling_mean_std(m.ret, n)[1] for n in RV_WINDOWS}
    for n in RV_WINDOWS:
        out.add(f"rv_{n}", rv[n], lookback=n)
    for fast, slow in ((5, 48), (10, 96), (20, 192)):
        out.add(f"rv_ratio_{fast}_{slow}", np.log(rv[fast] / rv[slow]), lookback=slow)

    log_hl = np.log(h / l)
    log_co = np.log(c / o)
    parkinson = log_hl**2 / (4.0 * math.log(2.0))
    garman_klass = 0.5 * log_hl**2 - (2.0 * math.log(2.0) - 1.0) * log_co**2
    rogers_satchell = np.log(h / c) * np.log(h / o) + np.log(l / c) * np.log(l / o)
    for name, term in (("parkinson", parkinson), ("gk", garman_klass), ("rs", rogers_satchell)):
        for n in RANGE_VOL_WINDOWS:
            # Garman-Klass terms can be negative on single candles; the window mean rarely is.
            out.add(
                f"{name}_vol_{n}",
                np.sqrt(np.maximum(ind.rolling_mean(term, n), 0.0)),
                lookback=n - 1,
            )

    for n in SEMIVOL_WINDOWS:
        out.add(
            f"downvol_{n}", np.sqrt(ind.rolling_mean(np.minimum(m.ret, 0.0) ** 2, n)), lookback=n
        )
        out.add(f"upvol_{n}", np.sqrt(ind.rolling_mean(np.maximum(m.ret, 0.0) ** 2, n)), lookback=n)
    for n in MOMENT_WINDOWS:
        skew, kurt = _moments(m.ret, n)
        out.add(f"ret_skew_{n}", skew, lookback=n)
        out.add(f"ret_kurt_{n}", kurt, lookback=n)
    vv_mean, vv_std = ind.rolling_mean_std(rv[20], 96)
    out.add("volvol_20_96", vv_std / vv_mean, lookback=20 + 96 - 1)


def _moments(x: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Rolling population skewness and excess kurtosis."""
    skew = np.full(x.shape, np.nan)
    kurt = np.full(x.shape, np.nan)
    if n <= len(x):
        windows = np.lib.stride_tricks.sliding_window_view(x, n)
        dev = windows - windows.mean(axis=1)[:, None]
        dev2 = dev * dev  # products, not **: integer powers via pow() are several times slower
        var = dev2.mean(axis=1)
        skew[n - 1 :] = (dev2 * dev).mean(axis=1) / (var * np.sqrt(var))
        kurt[n - 1 :] = (dev2 * dev2).mean(axis=1) / (var * var) - 3.0
    return skew, kurt


def _volume(m: _Market, out: _Columns) -> None:
    h, l, c, v = m.high, m.low, m.close, m.volume  # noqa: E741
    for n in VOLUME_WINDOWS:
        mean, std = ind.rolling_mean_std(v, n)
        # log1p keeps a zero-volume candle finite; an average candle scores log(2).
        out.add(f"vol_ratio_{n}", np.log1p(v / mean), lookback=n - 1, neutral=math.log(2.0))
        out.add(f"vol_z_{n}", (v - mean) / std, lookback=n - 1)
    for n in VOLUME_WINDOWS:
        out.add(f"obv_flow_{n}", ind.volume_flow(c, v, n), lookback=n)
    for n in MFI_WINDOWS:
        out.add(f"mfi_{n}", ind.money_flow_index(h, l, c, v, n), lookback=n, neutral=50.0)
    for n in VWAP_WINDOWS:
        out.add(f"vwap_dist_{n}", np.log(c / ind.vwap(h, l, c, v, n)), lookback=n - 1)
    rng = h - l
    location = np.where(rng > 0, ((c - l) - (h - c)) / np.where(rng > 0, rng, 1.0), 0.0)
    for n in CMF_WINDOWS:
        cmf = ind.rolling_sum(location * v, n) / ind.rolling_sum(v, n)
        out.add(f"cmf_{n}", cmf, lookback=n - 1)
    for span in (2, 13):  # Elder's force index per unit of volume: a volume-weighted return
        force = ind.ema(m.ret * v, span) / ind.ema(np.where(np.isnan(m.ret), np.nan, v), span)
        out.add(f"force_{span}", force, lookback=1 + _ema_lb(span))
    abs_ret = np.abs(m.ret)
    for n in AUTOCORR_WINDOWS:
        out.add(f"vol_absret_corr_{n}", ind.rolling_corr(abs_ret, v, n), lookback=n)
    out.add("vol_ret_corr_48", ind.rolling_corr(m.ret, v, 48), lookback=48)
    # Plain means, not EMAs: an EMA seeded on one volume spike remembers it for hundreds of rows.
    for fast, slow in ((5, 20), (20, 96)):
        ratio = np.log(ind.rolling_mean(v, fast) / ind.rolling_mean(v, slow))
        out.add(f"vol_mean_ratio_{fast}_{slow}", ratio, lookback=slow - 1)


def _momentum(m: _Market, out: _Columns) -> None:
    s = m.series
    h, l, c = m.high, m.low, m.close  # noqa: E741
    for n in RSI_WINDOWS:
        out.add(f"rsi_{n}", ind.rsi(c, n), lookback=1 + _wilder_lb(n), neutral=50.0)
    for n in STOCH_WINDOWS:
        k, d = ind.stochastic(h, l, c, n, 3)
        out.add(f"stoch_k_{n}", k, lookback=n - 1, neutral=50.0)
        out.add(f"stoch_d_{n}", d, lookback=n + 1, neutral=50.0)
    k, d = ind.stoch_rsi(c, 14, 3, 3)
    rsi_lb = 1 + _wilder_lb(14) + 13
    out.add("stochrsi_k_14", k, lookback=rsi_lb + 2, neutral=0.5)
    out.add("stochrsi_d_14", d, lookback=rsi_lb + 4, neutral=0.5)
    for n in WILLIAMS_WINDOWS:
        out.add(f"williams_r_{n}", ind.williams_r(h, l, c, n), lookback=n - 1, neutral=-50.0)
    for fast, slow, sign in MACD_SETTINGS:
        macd = ta.trend.MACD(s["close"], window_slow=slow, window_fast=fast, window_sign=sign)
        lb = _ema_lb(slow)
        tag = f"{fast}_{slow}_{sign}"
        out.add(f"macd_{tag}", macd.macd().to_numpy() / c, lookback=lb)
        out.add(
            f"macd_signal_{tag}", macd.macd_signal().to_numpy() / c, lookback=lb + _ema_lb(sign)
        )
        out.add(f"macd_hist_{tag}", macd.macd_diff().to_numpy() / c, lookback=lb + _ema_lb(sign))
    tsi = ta.momentum.TSIIndicator(s["close"], window_slow=25, window_fast=13).tsi().to_numpy()
    out.add("tsi_25_13", tsi, lookback=1 + _ema_lb(25) + _ema_lb(13))
    uo = ind.ultimate_oscillator(h, l, c, (7, 14, 28))
    out.add("ultimate_osc", uo, lookback=28, neutral=50.0)
    for n in CCI_WINDOWS:
        out.add(f"cci_{n}", ind.cci(h, l, c, n), lookback=n - 1)
    median = (h + l) / 2.0
    out.add(
        "awesome_osc", (ind.rolling_mean(median, 5) - ind.rolling_mean(median, 34)) / c, lookback=33
    )
    abs_step = np.abs(c - ind.shift(c))
    for n in ER_WINDOWS:  # Kaufman's efficiency ratio: net move / path length
        er = np.abs(c - ind.shift(c, n)) / ind.rolling_sum(abs_step, n)
        out.add(f"efficiency_{n}", er, lookback=n)


def _trend(m: _Market, out: _Columns) -> None:
    h, l, c = m.high, m.low, m.close  # noqa: E741
    emas = {span: ind.ema(c, span) for span in EMA_SPANS}
    for span in EMA_SPANS:
        out.add(f"ema_dist_{span}", np.log(c / emas[span]), lookback=_ema_lb(span))
    for span in EMA_SPANS:
        dist = (c - emas[span]) / m.atr
        out.add(f"ema_dist_atr_{span}", dist, lookback=max(_ema_lb(span), ATR_LB))
    for span in EMA_SPANS:
        slope = np.log(emas[span] / ind.shift(emas[span], EMA_SLOPE_LAG))
        out.add(f"ema_slope_{span}", slope, lookback=_ema_lb(span) + EMA_SLOPE_LAG)
    smas = {n: ind.rolling_mean(c, n) for n in SMA_WINDOWS}
    for n in SMA_WINDOWS:
        out.add(f"sma_dist_{n}", np.log(c / smas[n]), lookback=n - 1)
    for n in SMA_WINDOWS:
        slope = np.log(smas[n] / ind.shift(smas[n], SMA_SLOPE_LAG))
        out.add(f"sma_slope_{n}", slope, lookback=n - 1 + SMA_SLOPE_LAG)
    for fast, slow in EMA_CROSSES:
        out.add(f"ema_cross_{fast}_{slow}", np.log(emas[fast] / emas[slow]), lookback=_ema_lb(slow))
    for fast, slow in SMA_CROSSES:
        out.add(f"sma_cross_{fast}_{slow}", np.log(smas[fast] / smas[slow]), lookback=slow - 1)

    for n in ADX_WINDOWS:
        adx, plus_di, minus_di = ind.adx(h, l, c, n)
        di_lb = 1 + _wilder_lb(n)
        out.add(f"adx_{n}", adx, lookback=di_lb + _wilder_lb(n))
        out.add(f"plus_di_{n}", plus_di, lookback=di_lb)
        out.add(f"minus_di_{n}", minus_di, lookback=di_lb)
        out.add(f"di_diff_{n}", plus_di - minus_di, lookback=di_lb)
    for n in AROON_WINDOWS:
        up, down = ind.aroon(h, l, n)
        out.add(f"aroon_up_{n}", up, lookback=n, neutral=50.0)
        out.add(f"aroon_down_{n}", down, lookback=n, neutral=50.0)
        out.add(f"aroon_osc_{n}", up - down, lookback=n)

    _ichimoku(m, out)

    for n in LINREG_WINDOWS:
        slope, r2 = _linreg(m.log_close, n)
        out.add(f"linreg_slope_{n}", slope, lookback=n - 1)
        out.add(f"linreg_r2_{n}", r2, lookback=n - 1)
    vi_plus, vi_minus = ind.vortex(h, l, c, 14)
    out.add("vortex_pos_14", vi_plus, lookback=14, neutral=1.0)
    out.add("vortex_neg_14", vi_minus, lookback=14, neutral=1.0)
    out.add("trix_15", ind.trix(c, 15), lookback=3 * _ema_lb(15) + 1)
    out.add(
        "mass_index_9_25", ind.mass_index(h, l, 9, 25), lookback=2 * _ema_lb(9) + 24, neutral=25.0
    )


def _ichimoku(m: _Market, out: _Columns) -> None:
    tenkan_n, kijun_n, span_b_n = ICHIMOKU
    s, c = m.series, m.close
    # visual=False: spans as computed at t. ta's visual=True shifts them forward but fills the
    # first rows with the mean of the WHOLE series (a look-ahead), so we shift ourselves.
    ichi = ta.trend.IchimokuIndicator(
        s["high"], s["low"], tenkan_n, kijun_n, span_b_n, visual=False
    )
    tenkan = ichi.ichimoku_conversion_line().to_numpy()
    kijun = ichi.ichimoku_base_line().to_numpy()
    span_a = ichi.ichimoku_a().to_numpy()
    span_b = ichi.ichimoku_b().to_numpy()
    # The cloud drawn under candle t was computed kijun_n candles earlier.
    cloud_a, cloud_b = ind.shift(span_a, kijun_n), ind.shift(span_b, kijun_n)
    a_lb = kijun_n - 1 + kijun_n
    b_lb = span_b_n - 1 + kijun_n
    out.add("ichi_tenkan_dist", np.log(c / tenkan), lookback=tenkan_n - 1)
    out.add("ichi_kijun_dist", np.log(c / kijun), lookback=kijun_n - 1)
    out.add("ichi_tk_spread", np.log(tenkan / kijun), lookback=kijun_n - 1)
    out.add("ichi_span_a_dist", np.log(c / cloud_a), lookback=a_lb)
    out.add("ichi_span_b_dist", np.log(c / cloud_b), lookback=b_lb)
    out.add("ichi_cloud_thickness", np.log(cloud_a / cloud_b), lookback=b_lb)
    out.add("ichi_cloud_ahead", np.log(span_a / span_b), lookback=span_b_n - 1)
    top, bottom = np.maximum(cloud_a, cloud_b), np.minimum(cloud_a, cloud_b)
    outside = np.where(c > top, c - top, np.where(c < bottom, c - bottom, 0.0))
    out.add("ichi_cloud_pos_atr", outside / m.atr, lookback=max(b_lb, ATR_LB))
    # Chikou (lagging span) = close plotted kijun_n candles back; read causally it is this return.
    out.add("ichi_chikou", m.log_close - ind.shift(m.log_close, kijun_n), lookback=kijun_n)


def _linreg(y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares slope (per candle) and R^2 of y over the last n rows."""
    slope = np.full(y.shape, np.nan)
    r2 = np.full(y.shape, np.nan)
    if n <= len(y):
        x = np.arange(n) - (n - 1) / 2.0
        sxx = float((x**2).sum())
        windows = np.lib.stride_tricks.sliding_window_view(y, n)
        dev = windows - windows.mean(axis=1)[:, None]
        sxy = (dev * x).sum(axis=1)  # an elementwise reduction, not BLAS: identical on any prefix
        slope[n - 1 :] = sxy / sxx
        r2[n - 1 :] = sxy**2 / (sxx * (dev**2).sum(axis=1))
    return slope, r2


def _bands(m: _Market, out: _Columns) -> None:
    h, l, c = m.high, m.low, m.close  # noqa: E741
    widths = {}
    for n in BOLLINGER_WINDOWS:
        mean, std = ind.rolling_mean_std(c, n, ddof=0)
        out.add(f"bb_pos_{n}", (c - mean + 2.0 * std) / (4.0 * std), lookback=n - 1, neutral=0.5)
        widths[f"bb_{n}"] = 4.0 * std / mean
        out.add(f"bb_width_{n}", widths[f"bb_{n}"], lookback=n - 1)
    for span, atr_n in KELTNER_SETTINGS:
        center = ind.ema(c, span)
        band = 2.0 * ind.atr(h, l, c, atr_n)
        lb = max(_ema_lb(span), _wilder_lb(atr_n))
        out.add(f"kc_pos_{span}", (c - center + band) / (2.0 * band), lookback=lb, neutral=0.5)
        widths[f"kc_{span}"] = 2.0 * band / center
        out.add(f"kc_width_{span}", widths[f"kc_{span}"], lookback=lb)
    for n in DONCHIAN_WINDOWS:
        top, bottom = ind.rolling_max(h, n), ind.rolling_min(l, n)
        out.add(f"dc_pos_{n}", (c - bottom) / (top - bottom), lookback=n - 1, neutral=0.5)
        out.add(f"dc_width_{n}", np.log(top / bottom), lookback=n - 1)
        out.add(f"dc_high_atr_{n}", (top - c) / m.atr, lookback=max(n - 1, ATR_LB))
        out.add(f"dc_low_atr_{n}", (c - bottom) / m.atr, lookback=max(n - 1, ATR_LB))
    # Bollinger inside Keltner = the "squeeze" before a breakout.
    squeeze = np.log(widths["bb_20"] / widths["kc_20"])
    out.add("bb_kc_squeeze_20", squeeze, lookback=max(19, _ema_lb(20), _wilder_lb(10)))


def _candle_shape(m: _Market, out: _Columns) -> None:
    o, h, l, c = m.open, m.high, m.low, m.close  # noqa: E741
    rng = h - l
    flat = rng <= 0
    safe_rng = np.where(flat, 1.0, rng)
    # A flat candle (high == low) has no shape: body and wicks 0, close in the middle.
    body = np.where(flat, 0.0, (c - o) / safe_rng)
    upper = np.where(flat, 0.0, (h - np.maximum(o, c)) / safe_rng)
    lower = np.where(flat, 0.0, (np.minimum(o, c) - l) / safe_rng)
    location = np.where(flat, 0.5, (c - l) / safe_rng)
    out.add("candle_body", body, lookback=0)
    out.add("candle_upper_wick", upper, lookback=0)
    out.add("candle_lower_wick", lower, lookback=0)
    out.add("candle_close_loc", location, lookback=0, neutral=0.5)
    out.add("candle_range_log", np.log(h / l), lookback=0)
    out.add("candle_body_log", np.log(c / o), lookback=0)
    out.add("candle_body_atr", (c - o) / m.atr, lookback=ATR_LB)
    out.add("candle_range_atr", rng / m.atr, lookback=ATR_LB, neutral=1.0)
    out.add("candle_gap_log", np.log(o / ind.shift(c)), lookback=1)
    for n in CANDLE_MEAN_WINDOWS:
        out.add(f"close_loc_mean_{n}", ind.rolling_mean(location, n), lookback=n - 1, neutral=0.5)
    out.add("upper_wick_mean_20", ind.rolling_mean(upper, 20), lookback=19)
    out.add("lower_wick_mean_20", ind.rolling_mean(lower, 20), lookback=19)
    bull = (c > o).astype(np.float64)
    for n in BULL_WINDOWS:
        out.add(f"bull_frac_{n}", ind.rolling_mean(bull, n), lookback=n - 1, neutral=0.5)
    prev_h, prev_l = ind.shift(h), ind.shift(l)
    out.add("inside_bar", ((h < prev_h) & (l > prev_l)).astype(np.float64), lookback=1)
    out.add("outside_bar", ((h > prev_h) & (l < prev_l)).astype(np.float64), lookback=1)
    # Heikin-Ashi: ha_open[t] = (ha_open[t-1] + ha_close[t-1]) / 2 is an EMA with alpha 1/2.
    ha_close = (o + h + l + c) / 4.0
    ha_open = ind.ewm(ind.shift(ha_close), 0.5)
    out.add("ha_body_atr", (ha_close - ha_open) / m.atr, lookback=max(1 + ema_settle(0.5), ATR_LB))


def _calendar(m: _Market, out: _Columns) -> None:
    minute_of_day = (m.minutes % 1440).astype(np.float64)
    day_of_week = ((m.minutes // 1440 + 3) % 7).astype(np.float64)  # 1970-01-01 was a Thursday (3)
    day_angle = 2.0 * math.pi * minute_of_day / 1440.0
    week_angle = 2.0 * math.pi * (day_of_week + minute_of_day / 1440.0) / 7.0
    out.add("time_day_sin", np.sin(day_angle), lookback=0)
    out.add("time_day_cos", np.cos(day_angle), lookback=0)
    out.add("time_week_sin", np.sin(week_angle), lookback=0)
    out.add("time_week_cos", np.cos(week_angle), lookback=0)
    out.add("time_weekend", (day_of_week >= 5).astype(np.float64), lookback=0)


def _return_stats(m: _Market, out: _Columns) -> None:
    c = m.close
    for n in AUTOCORR_WINDOWS:
        out.add(f"ret_autocorr_{n}", ind.rolling_corr(m.ret, ind.shift(m.ret), n), lookback=n + 1)
    for n in DRAWDOWN_WINDOWS:
        out.add(f"drawdown_{n}", np.log(c / ind.rolling_max(c, n)), lookback=n - 1)
        out.add(f"rally_{n}", np.log(c / ind.rolling_min(c, n)), lookback=n - 1)
    out.add("streak", _streak(m.ret), lookback=STREAK_CAP + 1)


def _streak(ret: np.ndarray) -> np.ndarray:
    """Signed length of the current run of up (+) or down (-) closes, capped at STREAK_CAP."""
    direction = np.sign(np.nan_to_num(ret))
    rows = np.arange(len(ret))
    starts = np.concatenate(([True], direction[1:] != direction[:-1]))
    run_start = np.maximum.accumulate(np.where(starts, rows, 0))
    length = np.minimum(rows - run_start + 1, STREAK_CAP)
    return direction * length


_GROUPS = (
    _returns,
    _volatility,
    _volume,
    _momentum,
    _trend,
    _bands,
    _candle_shape,
    _calendar,
    _return_stats,
)


def _market(candles: pd.DataFrame) -> _Market:
    missing = [name for name in ("open", "high", "low", "close", "volume") if name not in candles]
    if missing:
        raise ValueError(f"candles lack columns {missing}")
    if not isinstance(candles.index, pd.DatetimeIndex):
        raise ValueError("candles must be indexed by their open time (DatetimeIndex)")
    minutes = candles.index.as_unit("s").asi8 // 60
    return _Market(
        *(
            candles[name].to_numpy(dtype=np.float64)
            for name in ("open", "high", "low", "close", "volume")
        ),
        minutes=minutes,
    )


def _compute_columns(candles: pd.DataFrame) -> _Columns:
    """All features as float64 before the warm-up mask and the neutral fill."""
    market = _market(candles)
    out = _Columns()
    with np.errstate(divide="ignore", invalid="ignore"):
        for group in _GROUPS:
            group(market, out)
    return out


def _probe() -> _Columns:
    """Run the pipeline once on a tiny frame so names and warm-up come from the code itself."""
    index = pd.date_range("2025-01-01", periods=3, freq="15min", tz="UTC", name="time")
    price = np.array([100.0, 101.0, 100.5])
    frame = pd.DataFrame(
        {
            "open": price,
            "high": price + 1.0,
            "low": price - 1.0,
            "close": price,
            "volume": [5.0, 6.0, 7.0],
        },
        index=index,
    )
    return _compute_columns(frame)


_PROBE = _probe()
FEATURE_NAMES: tuple[str, ...] = tuple(_PROBE.values)
FEATURE_LOOKBACK: dict[str, int] = dict(_PROBE.lookback)
WARMUP: int = max(FEATURE_LOOKBACK.values())
_NEUTRAL = np.array([_PROBE.neutral[name] for name in FEATURE_NAMES])
del _PROBE


def compute_features(candles: pd.DataFrame, *, last: int | None = None) -> pd.DataFrame:
    """Features of every candle: same index as `candles`, columns FEATURE_NAMES, float32.

    Rows before WARMUP are NaN; from WARMUP on every value is finite. With `last`, only the last
    `last` rows (every candle still feeds the indicators): the Predictor reads only its input
    window, and skipping the other rows' assembly saves ~10 % of the time.
    """
    start = 0 if last is None else max(0, len(candles) - last)
    if len(candles) == 0:
        return pd.DataFrame(
            np.empty((0, len(FEATURE_NAMES)), dtype=np.float32),
            index=candles.index,
            columns=FEATURE_NAMES,
        )
    columns = _compute_columns(candles)
    if tuple(columns.values) != FEATURE_NAMES:
        raise RuntimeError("feature pipeline produced a different column list than FEATURE_NAMES")
    matrix = np.column_stack([values[start:] for values in columns.values.values()])
    warm = max(0, WARMUP - start)  # rows of matrix still inside the warm-up
    valid = matrix[warm:]
    undefined = ~np.isfinite(valid)
    if undefined.any():
        valid[undefined] = np.broadcast_to(_NEUTRAL, valid.shape)[undefined]
    matrix[:warm] = np.nan
    return pd.DataFrame(
        matrix.astype(np.float32), index=candles.index[start:], columns=FEATURE_NAMES
    )
