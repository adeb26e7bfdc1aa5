"""A deterministic synthetic market: candles for the offline demo and for tests.

The log return of candle t is drift(regime) + vol_mult(regime) * sigma_t * z_t, where
- the regime (bear, range, bull) is a Markov chain whose spells last about two days,
- sigma_t follows GARCH(1,1), sigma2_t = omega + alpha * e2_{t-1} + beta * sigma2_{t-1}, which
  gives volatility clustering, and z_t is Student-t (5 degrees of freedom, unit variance), which
  gives fat tails,
- volume is log-normal around a daily (UTC) cycle and grows with |return| / sigma, so large moves
  come with heavy volume as on real exchanges.
The open is the previous close (a 24/7 market); wicks extend beyond the body by a random fraction
of sigma_t. Everything is drawn from one numpy Generator seeded by `seed`.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from mlcore.candles import COLUMNS, timeframe_delta

# Calibrated on 15-minute candles (BTC 2025: ~0.3 % per candle) and scaled to other timeframes
# by sqrt(time) for volatility and linearly for drift.
_SIGMA_15M = 0.003
_DRIFT_15M = np.array([-0.0002, 0.0, 0.0002])  # bear, range, bull
_VOL_MULT = np.array([1.3, 0.8, 1.0])
_VOLUME_MULT = np.array([1.3, 0.8, 1.1])
_SPELL = pd.Timedelta(days=2)  # mean regime duration
# alpha + beta < 1 (stationary) and beta^2 + 2ab + a^2 E[z^4] < 1 (finite kurtosis for t(5) shocks).
_GARCH_ALPHA, _GARCH_BETA = 0.06, 0.92
_T_DOF = 5.0
_WICK = 0.6  # wick length in units of sigma_t * |N(0, 1)|
_NOTIONAL_15M = 1.0e6  # traded value per 15-minute candle, in quote currency


def generate_candles(
    n: int,
    *,
    seed: int,
    timeframe: str = "15m",
    start: str | pd.Timestamp = "2025-01-01",
    start_price: float = 100.0,
) -> pd.DataFrame:
    """n candles starting at `start` (UTC, on the timeframe's grid); same seed, same candles."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if start_price <= 0:
        raise ValueError(f"start_price must be positive, got {start_price}")
    delta = timeframe_delta(timeframe)
    first = pd.Timestamp(start)
    first = first.tz_localize("UTC") if first.tzinfo is None else first.tz_convert("UTC")
    if first.value % delta.value != 0:
        raise ValueError(f"start {first} is not on the {timeframe} grid")
    index = pd.DatetimeIndex(first + np.arange(n) * delta, name="time")

    rng = np.random.default_rng(seed)
    scale = delta / pd.Timedelta(minutes=15)
    regime = _regimes(rng, n, spell=max(_SPELL / delta, 5.0))
    shocks = rng.standard_t(_T_DOF, size=n) * np.sqrt((_T_DOF - 2.0) / _T_DOF)
    sigma = _garch_sigma(shocks, unconditional=_SIGMA_15M * np.sqrt(scale)) * _VOL_MULT[regime]
    log_ret = _DRIFT_15M[regime] * scale + sigma * shocks

    close = start_price * np.exp(np.cumsum(log_ret))
    open_ = np.concatenate(([start_price], close[:-1]))
    high = np.maximum(open_, close) * np.exp(_WICK * sigma * np.abs(rng.standard_normal(n)))
    low = np.minimum(open_, close) * np.exp(-_WICK * sigma * np.abs(rng.standard_normal(n)))

    hour = index.hour.to_numpy() + index.minute.to_numpy() / 60.0
    daily_cycle = 1.0 + 0.3 * np.cos(2.0 * np.pi * (hour - 15.0) / 24.0)  # busiest at the US open
    surprise = np.abs(log_ret) / sigma
    base_units = _NOTIONAL_15M * scale / start_price
    volume = (
        base_units
        * daily_cycle
        * _VOLUME_MULT[regime]
        * (0.5 + surprise)
        * np.exp(0.4 * rng.standard_normal(n) - 0.08)
    )
    return pd.DataFrame(
        dict(zip(COLUMNS, (open_, high, low, close, volume), strict=True)), index=index
    )


def _regimes(rng: np.random.Generator, n: int, *, spell: float) -> np.ndarray:
    """Markov regime path: geometric spell lengths, each spell switching to one of the other two."""
    lengths: list[int] = []
    states: list[int] = [int(rng.integers(3))]
    total = 0
    while total < n:
        length = int(rng.geometric(1.0 / spell))
        lengths.append(length)
        total += length
        states.append((states[-1] + int(rng.integers(1, 3))) % 3)
    return np.repeat(np.array(states[: len(lengths)], dtype=np.int64), lengths)[:n]


def _garch_sigma(shocks: np.ndarray, *, unconditional: float) -> np.ndarray:
    """GARCH(1,1) sigma path driven by the unit-variance shocks of the returns themselves.

    The recursion is inherently sequential; this loop runs over plain floats (about 0.3 us/row).
    """
    n = len(shocks)
    omega = unconditional**2 * (1.0 - _GARCH_ALPHA - _GARCH_BETA)
    z2 = (shocks**2).tolist()
    var = [unconditional**2] * n
    for t in range(1, n):
        var[t] = omega + (_GARCH_ALPHA * z2[t - 1] + _GARCH_BETA) * var[t - 1]
    return np.sqrt(np.array(var))
