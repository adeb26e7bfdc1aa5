"""Model windows from candles: features, targets, gap-free windows, walk-forward split, scaler.

A sample is the window of `context_length` feature rows ending at candle t, with the targets of t.
It is kept only when
  * every row of the window lies in the same gap-free run as t (candles.segment_ids),
  * every row of the window is at least WARMUP candles after the start of that run (features are
    computed per run, so no indicator ever looks across a gap), and
  * t + MAX_HORIZON lies in the same run (the targets are defined).

The split is by time and shares no candle between splits: a training sample's targets end before the
validation period starts, and a validation sample's window starts inside it (likewise for test).
So the gap between the last training t and the first validation t is context_length + MAX_HORIZON
candles - an embargo longer than the longest horizon.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace

import numpy as np
import pandas as pd

from mlcore.candles import segment_ids, timeframe_delta
from mlcore.features import FEATURE_NAMES, WARMUP, compute_features
from mlcore.labels import MAX_HORIZON, Targets, compute_targets, direction_classes

# Inputs of the default (CPU) model. PatchTST runs every channel through the encoder separately, so
# cost grows linearly with the channel count. FEATURE_NAMES holds many windows of the same measure
# (RSI 6..28, 16 return windows); the patches over 96 candles already see the short windows of a
# series, so one member per information family carries most of it:
DEFAULT_CHANNELS: tuple[str, ...] = (
    # the price path itself (patches recover any return window) and its vol-normalised form
    "logret_1",
    "logret_1_volnorm",
    # volatility level and regime (close-to-close, range-based, ATR, short vs long)
    "rv_20",
    "parkinson_vol_20",
    "atr_14",
    "rv_ratio_5_48",
    # volume: activity, signed flow, money flow, price vs volume-weighted price
    "vol_z_20",
    "vol_ratio_96",
    "obv_flow_20",
    "mfi_14",
    "cmf_20",
    "vwap_dist_24",
    # momentum oscillators (RSI 14 is also the baseline's filter)
    "rsi_14",
    "stoch_k_14",
    "cci_20",
    "macd_hist_12_26_9",
    "efficiency_20",
    # trend: EMA 9/21 cross (the baseline's signal), distances to EMAs and SMA 200, strength, age
    "ema_cross_9_21",
    "ema_dist_atr_21",
    "ema_dist_atr_50",
    "sma_dist_200",
    "adx_14",
    "di_diff_14",
    "aroon_osc_25",
    "ichi_cloud_pos_atr",
    # position and width of the price inside its bands / recent range
    "bb_pos_20",
    "bb_width_20",
    "dc_pos_96",
    # candle shape
    "candle_close_loc",
    "candle_body_atr",
    # time of day (intraday volume and volatility cycle)
    "time_day_sin",
    "time_day_cos",
)
# Long EMAs (span 100) are left out on purpose: computed from the Predictor's WARMUP-long tail they
# differ from the full-history values used in training by up to 0.05 std; these channels by < 0.001.


@dataclass(frozen=True)
class SymbolSeries:
    """One symbol's candles as unscaled input rows and targets (positions = candle rows)."""

    symbol: str
    index: pd.DatetimeIndex
    candles: pd.DataFrame
    features: np.ndarray  # float32 [N, C] selected channels, NaN where not computable
    targets: Targets
    window_ok: np.ndarray  # bool [N]: a valid sample ends at this row


def prepare_series(
    candles: pd.DataFrame,
    *,
    symbol: str,
    timeframe: str,
    context_length: int,
    channels: Sequence[str],
) -> SymbolSeries:
    """Features per gap-free run (never across a gap), targets, and which rows can end a sample."""
    segments = segment_ids(candles.index, timeframe=timeframe)
    columns = channel_positions(channels)
    features = np.full((len(candles), len(columns)), np.nan, dtype=np.float32)
    usable = np.zeros(len(candles), dtype=bool)
    min_run = WARMUP + context_length
    for start, stop in _runs(segments):
        if stop - start < min_run:
            continue  # too short to hold one window after warm-up: leave it NaN and unusable
        computed = compute_features(candles.iloc[start:stop]).to_numpy(dtype=np.float32)
        features[start:stop] = computed[:, columns]
        usable[start + WARMUP : stop] = True
    usable &= np.isfinite(features).all(axis=1)

    targets = compute_targets(candles, segments=segments)
    # A window ending at t is valid when all its context_length rows are usable (and so, by the run
    # loop above, in t's run): count usable rows in the trailing window with a cumulative sum.
    csum = np.concatenate([[0], np.cumsum(usable)])
    ends = np.arange(len(candles))
    starts = ends - context_length + 1
    full = np.zeros(len(candles), dtype=bool)
    ok_start = starts >= 0
    full[ok_start] = (csum[ends[ok_start] + 1] - csum[starts[ok_start]]) == context_length
    same_run = np.zeros(len(candles), dtype=bool)
    same_run[ok_start] = segments[starts[ok_start]] == segments[ends[ok_start]]
    window_ok = full & same_run & targets.valid
    return SymbolSeries(
        symbol=symbol,
        index=candles.index.as_unit("ns"),  # asi8 below is then always nanoseconds
        candles=candles,
        features=features,
        targets=targets,
        window_ok=window_ok,
    )


def channel_positions(channels: Sequence[str]) -> list[int]:
    position = {name: i for i, name in enumerate(FEATURE_NAMES)}
    unknown = [c for c in channels if c not in position]
    if unknown:
        raise ValueError(f"unknown feature channels: {unknown}")
    return [position[c] for c in channels]


def _runs(segments: np.ndarray) -> Iterable[tuple[int, int]]:
    """(start, stop) positions of each contiguous run of equal segment ids."""
    if len(segments) == 0:
        return []
    cuts = np.flatnonzero(np.diff(segments)) + 1
    bounds = np.concatenate([[0], cuts, [len(segments)]])
    return list(zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True))


# --------------------------------------------------------------------------- walk-forward split


@dataclass(frozen=True)
class SplitBounds:
    """Validation starts at val_start, test at test_start (None: no test split)."""

    val_start: pd.Timestamp
    test_start: pd.Timestamp | None

    def to_dict(self) -> dict[str, str | None]:
        return {
            "val_start": self.val_start.isoformat(),
            "test_start": None if self.test_start is None else self.test_start.isoformat(),
        }


def split_bounds(
    series: Sequence[SymbolSeries], *, val_fraction: float, test_fraction: float
) -> SplitBounds:
    """Boundaries at the time quantiles of all candidate sample times (shared by every symbol)."""
    if val_fraction <= 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise ValueError("need 0 < val_fraction, 0 <= test_fraction, val + test < 1")
    times = np.sort(np.concatenate([s.index.asi8[s.window_ok] for s in series]))
    if len(times) == 0:
        raise ValueError("no valid sample in the given candles (too short or too gappy)")
    at = lambda q: pd.Timestamp(times[min(int(q * len(times)), len(times) - 1)], tz="UTC")  # noqa: E731
    val_start = at(1.0 - val_fraction - test_fraction)
    test_start = at(1.0 - test_fraction) if test_fraction > 0 else None
    return SplitBounds(val_start=val_start, test_start=test_start)


def split_masks(
    s: SymbolSeries, *, bounds: SplitBounds, context_length: int, timeframe: str
) -> dict[str, np.ndarray]:
    """Sample-end masks for "train", "val", "test": no candle is shared between two splits."""
    step = timeframe_delta(timeframe)
    t = s.index
    window_start = t - (context_length - 1) * step
    label_end = t + MAX_HORIZON * step
    test_start = bounds.test_start
    train = s.window_ok & (label_end < bounds.val_start)
    val = s.window_ok & (window_start >= bounds.val_start)
    if test_start is not None:
        val &= label_end < test_start
        test = s.window_ok & (window_start >= test_start)
    else:
        test = np.zeros(len(t), dtype=bool)
    return {"train": np.asarray(train), "val": np.asarray(val), "test": np.asarray(test)}


def time_range_mask(
    s: SymbolSeries, *, start: pd.Timestamp | None, end: pd.Timestamp | None
) -> np.ndarray:
    """Sample ends with start <= t < end (for evaluation on a later period)."""
    mask = s.window_ok.copy()
    if start is not None:
        mask &= s.index >= start
    if end is not None:
        mask &= s.index < end
    return mask


def thin(mask: np.ndarray, *, stride: int) -> np.ndarray:
    """Keep every `stride`-th selected row (adjacent windows overlap almost entirely)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    keep = np.zeros_like(mask)
    keep[np.flatnonzero(mask)[::stride]] = True
    return keep


# --------------------------------------------------------------------------- scaler


@dataclass(frozen=True)
class Scaler:
    """Per-channel standardisation fitted on training rows; clipped because ratio features have
    rare huge values (a volume spike of 50 sigma) that would otherwise dominate a batch."""

    mean: np.ndarray  # float32 [C]
    std: np.ndarray  # float32 [C]
    clip: float = 10.0

    @classmethod
    def fit(cls, rows: np.ndarray, *, clip: float = 10.0) -> Scaler:
        rows = np.asarray(rows, dtype=np.float64)
        if len(rows) == 0 or not np.isfinite(rows).all():
            raise ValueError("scaler needs a non-empty array of finite rows")
        std = rows.std(axis=0)
        # A constant channel carries no information; std 1 keeps it at 0 instead of dividing by 0.
        std = np.where(std > 1e-12, std, 1.0)
        return cls(mean=rows.mean(axis=0).astype(np.float32), std=std.astype(np.float32), clip=clip)

    def transform(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float32) - self.mean) / self.std
        return np.clip(z, -self.clip, self.clip, out=z)

    def to_dict(self) -> dict:
        return {"mean": self.mean.tolist(), "std": self.std.tolist(), "clip": self.clip}

    @classmethod
    def from_dict(cls, d: dict) -> Scaler:
        return cls(
            mean=np.asarray(d["mean"], dtype=np.float32),
            std=np.asarray(d["std"], dtype=np.float32),
            clip=float(d["clip"]),
        )


def training_rows(series: Sequence[SymbolSeries], masks: Sequence[np.ndarray], context_length: int):
    """Feature rows inside any training window - the only rows the scaler may see."""
    chunks = []
    for s, m in zip(series, masks, strict=True):
        ends = np.flatnonzero(m)
        if len(ends) == 0:
            continue
        covered = np.zeros(len(s.index), dtype=np.int64)
        np.add.at(covered, ends - context_length + 1, 1)
        np.add.at(covered, ends[ends + 1 < len(covered)] + 1, -1)
        chunks.append(s.features[np.cumsum(covered) > 0])
    if not chunks:
        raise ValueError("the training split is empty")
    return np.concatenate(chunks)


# --------------------------------------------------------------------------- windows


@dataclass
class WindowSet:
    """Samples of one split, stored once as rows; windows are gathered per batch."""

    rows: np.ndarray  # float32 [R, C] scaled features of all symbols, concatenated
    ends: np.ndarray  # int64 [S] row of each sample's last candle in `rows`
    context_length: int
    returns: np.ndarray  # float32 [S, 4]
    classes: np.ndarray  # int64 [S, 4]
    risk: np.ndarray  # float32 [S, 4]
    symbols: np.ndarray  # int64 [S] position in `symbol_names`
    positions: np.ndarray  # int64 [S] candle row of t in its symbol's frame
    times: pd.DatetimeIndex  # [S]
    symbol_names: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.ends)

    def windows(self, idx: np.ndarray | slice) -> np.ndarray:
        """float32 [B, context_length, C] for the samples idx."""
        offsets = np.arange(-self.context_length + 1, 1)
        return self.rows[self.ends[idx][:, None] + offsets]

    def last_rows(self) -> np.ndarray:
        """float32 [S, C] the feature row of each sample's candle t (for per-row baselines)."""
        return self.rows[self.ends]

    def subset(self, idx: np.ndarray) -> WindowSet:
        """The samples idx (sharing `rows`, no copy of the features)."""
        return replace(
            self,
            ends=self.ends[idx],
            returns=self.returns[idx],
            classes=self.classes[idx],
            risk=self.risk[idx],
            symbols=self.symbols[idx],
            positions=self.positions[idx],
            times=self.times[idx],
        )


def make_windows(
    series: Sequence[SymbolSeries],
    masks: Sequence[np.ndarray],
    *,
    scaler: Scaler,
    bands: np.ndarray,
    context_length: int,
) -> WindowSet:
    """Scale each symbol's rows and collect the samples selected by its mask."""
    rows, ends, rets, risks, syms, pos, times = [], [], [], [], [], [], []
    offset = 0
    for k, (s, m) in enumerate(zip(series, masks, strict=True)):
        sel = np.flatnonzero(m)
        # NaN rows (warm-up) are never inside a window; zero them so the scaled array stays finite.
        rows.append(np.nan_to_num(scaler.transform(s.features), nan=0.0))
        ends.append(sel + offset)
        rets.append(s.targets.returns[sel])
        risks.append(s.targets.risk[sel])
        syms.append(np.full(len(sel), k))
        pos.append(sel)
        times.append(s.index.asi8[sel])
        offset += len(s.index)
    returns = np.concatenate(rets) if rets else np.zeros((0, 4))
    return WindowSet(
        rows=np.concatenate(rows).astype(np.float32),
        ends=np.concatenate(ends).astype(np.int64),
        context_length=context_length,
        returns=returns.astype(np.float32),
        classes=direction_classes(returns, bands=bands),
        risk=np.concatenate(risks).astype(np.float32),
        symbols=np.concatenate(syms).astype(np.int64),
        positions=np.concatenate(pos).astype(np.int64),
        times=pd.DatetimeIndex(np.concatenate(times), tz="UTC"),
        symbol_names=tuple(s.symbol for s in series),
    )
