"""The Predictor: one loaded checkpoint serving many symbols per batched forward pass.

    predictor = Predictor.load("models/botai-default.pt", device="auto")
    results = predictor.predict({"BTCUSDT": btc_candles, "ETHUSDT": eth_candles})

Each value of `results` is a PredictionResult, or a ModelError (InsufficientHistory, InvalidCandles)
for that symbol alone; the other symbols are still predicted.

Backtests ask for every step of a history at once:

    by_time = predictor.predict_series(btc_candles, symbol="BTCUSDT", since=start)

which is what predict() would have answered at each candle from `since` on, computed with features
cached over the whole history and many time steps per forward pass.

Derived signal (from the 1h horizon, HORIZON = 4 candles of 15m):
    direction  = LONG / NEUTRAL / SHORT for the most probable class up / flat / down
    confidence = max(p_down, p_flat, p_up)
    strength   = clip(|expected return| / flat band, 0, 1), where expected return is the return
                 head's output and the flat band is the training split's 1/3 quantile of |return|
                 (the move below which the label is "flat"): 1 means the predicted move clears the
                 band that defines a directional candle.
"""

from __future__ import annotations

import time
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from mlcore.candles import CandleError, segment_ids, validate_candles
from mlcore.checkpoint import Checkpoint, file_fingerprint, load_checkpoint
from mlcore.dataset import Scaler, channel_positions
from mlcore.errors import InsufficientHistory, InvalidCandles, ModelError
from mlcore.features import WARMUP, compute_features
from mlcore.labels import HORIZONS, RISK_NAMES, decode_outputs

SIGNAL_HORIZON = 4
# Windows per forward pass in predict_series: small batches keep the activations in cache, which
# on CPU is faster per window than large ones.
SERIES_BATCH = 64
LONG, SHORT, NEUTRAL = "LONG", "SHORT", "NEUTRAL"
_DIRECTION_BY_CLASS = (SHORT, NEUTRAL, LONG)  # class order is (down, flat, up)


def signal_strength(expected_return: np.ndarray | float, band: float) -> np.ndarray:
    """clip(|expected return| / flat band, 0, 1) - the module docstring's strength formula."""
    return np.clip(np.abs(expected_return) / band, 0.0, 1.0)


@dataclass(frozen=True)
class PredictionResult:
    symbol: str
    candle_time: pd.Timestamp  # open time of the last candle the prediction used
    returns: dict[int, float]  # horizon (candles) -> expected simple return
    probabilities: dict[int, tuple[float, float, float]]  # horizon -> (down, flat, up)
    risk: dict[str, float]  # RISK_NAMES -> expected magnitude (fraction of price)
    direction: str
    confidence: float
    strength: float
    cached: bool
    latency_ms: float  # wall time of the predict() call that produced (or served) this result


def resolve_device(device: str) -> torch.device:
    """ "auto" -> cuda when available, else cpu; a requested but absent cuda falls back to cpu."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        warnings.warn(
            f"device {device!r} requested but CUDA is not available: using cpu",
            RuntimeWarning,
            stacklevel=3,
        )
        return torch.device("cpu")
    return torch.device(device)


class Predictor:
    def __init__(
        self,
        ckpt: Checkpoint,
        *,
        fingerprint: str,
        device: str = "auto",
        use_compile: bool = False,
        cache_size: int = 4096,
    ) -> None:
        self.checkpoint = ckpt
        self.version = ckpt.version
        self.fingerprint = fingerprint
        self.feature_set = ckpt.feature_set
        self.timeframe = ckpt.timeframe
        self.channels = tuple(ckpt.channels)
        self.context_length = int(ckpt.model_config["context_length"])
        # Features are computed on this tail only; WARMUP rows make the first window row valid.
        self.min_history = WARMUP + self.context_length
        self.device = resolve_device(device)
        self.model = ckpt.model().to(self.device)
        self._forward = torch.compile(self.model) if use_compile else self.model
        self._scaler = Scaler.from_dict(ckpt.scaler)
        self._columns = channel_positions(self.channels)
        self._bands = np.asarray(ckpt.label_bands, dtype=np.float64)
        self._return_scale = np.asarray(ckpt.target_scales["returns"])
        self._risk_scale = np.asarray(ckpt.target_scales["risk"])
        self._signal_j = HORIZONS.index(SIGNAL_HORIZON)
        self._cache: OrderedDict[tuple[str, str, pd.Timestamp], PredictionResult] = OrderedDict()
        self._cache_size = cache_size

    @classmethod
    def load(
        cls, path: str | Path, *, device: str = "auto", use_compile: bool = False
    ) -> Predictor:
        """CheckpointMissing / CheckpointCorrupt / FeatureSetMismatch when the file cannot serve."""
        ckpt = load_checkpoint(Path(path))
        return cls(ckpt, fingerprint=file_fingerprint(path), device=device, use_compile=use_compile)

    def predict(
        self, candles_by_symbol: dict[str, pd.DataFrame]
    ) -> dict[str, PredictionResult | ModelError]:
        """Predict every symbol from its candles (closed candles only) in one forward pass."""
        started = time.perf_counter()
        results: dict[str, PredictionResult | ModelError] = {}
        hits: dict[str, PredictionResult] = {}
        todo: list[tuple[str, pd.Timestamp, np.ndarray]] = []
        for symbol, candles in candles_by_symbol.items():
            if len(candles) == 0:
                results[symbol] = InsufficientHistory(f"{symbol}: no candles")
                continue
            last = candles.index[-1]
            hit = self._cache.get((symbol, self.fingerprint, last))
            if hit is not None:
                self._cache.move_to_end((symbol, self.fingerprint, last))
                hits[symbol] = hit
                continue
            try:
                todo.append((symbol, last, self._window(symbol, candles)))
            except ModelError as exc:
                results[symbol] = exc

        if todo:
            x = torch.from_numpy(np.stack([w for _, _, w in todo])).to(self.device)
            with torch.inference_mode():
                out = self._forward(x).float().cpu().numpy()
            decoded = decode_outputs(
                out, return_scale=self._return_scale, risk_scale=self._risk_scale
            )
            latency = (time.perf_counter() - started) * 1000
            for k, (symbol, last, _) in enumerate(todo):
                result = self._result(symbol, last, decoded, k, latency)
                results[symbol] = result
                self._remember((symbol, self.fingerprint, last), result)

        latency = (time.perf_counter() - started) * 1000
        for symbol, hit in hits.items():
            results[symbol] = replace(hit, cached=True, latency_ms=latency)
        return {symbol: results[symbol] for symbol in candles_by_symbol}

    def predict_series(
        self,
        candles: pd.DataFrame,
        *,
        symbol: str,
        since: pd.Timestamp | None = None,
        batch_size: int = SERIES_BATCH,
    ) -> dict[pd.Timestamp, PredictionResult | ModelError]:
        """For every candle time t >= since: what predict({symbol: candles up to t}) returns.

        Features are computed once per gap-free run of `candles` (they are causal: row t only
        reads rows <= t), not once per step on the last min_history candles, and the windows go
        through the model batch_size time steps at a time. Two float32-level differences remain
        against predict(): the recursive averages inside the features start earlier than
        predict()'s tail (they agree to their settle tolerance, see mlcore.features), and a
        matmul's rounding depends on the batch it is in. tests/mlcore/test_predict_series.py
        bounds both. Results are not cached; InvalidCandles when the history fails validation.
        """
        results: dict[pd.Timestamp, PredictionResult | ModelError] = {}
        for part in self.iter_series(candles, symbol=symbol, since=since, batch_size=batch_size):
            results.update(part)
        return results

    def iter_series(
        self,
        candles: pd.DataFrame,
        *,
        symbol: str,
        since: pd.Timestamp | None = None,
        batch_size: int = SERIES_BATCH,
    ) -> Iterator[dict[pd.Timestamp, PredictionResult | ModelError]]:
        """predict_series in time order, one forward pass at a time: each part holds the steps
        up to the last one of its batch, so a consumer can start on the early steps while the
        later ones are computed."""
        times = candles.index
        if len(times) == 0:
            return
        try:
            validate_candles(candles, timeframe=self.timeframe)
        except CandleError as exc:
            raise InvalidCandles(f"{symbol}: {exc}") from exc
        runs = segment_ids(times, timeframe=self.timeframe)
        first = 0 if since is None else int(times.searchsorted(since))
        todo: list[int | ModelError] = []  # per step from `first`: a position, or its error
        scaled = np.full((len(times), len(self._columns)), np.nan, dtype=np.float32)
        for run in np.unique(runs[first:]):
            where = np.flatnonzero(runs == run)
            start, stop = int(where[0]), int(where[-1]) + 1
            features = compute_features(candles.iloc[start:stop]).to_numpy(dtype=np.float32)
            scaled[start:stop] = self._scaler.transform(features[:, self._columns])
            finite = np.isfinite(features[:, self._columns]).all(axis=1)
            for t in range(max(start, first), stop):
                known = t - start + 1  # consecutive candles up to t
                if known < self.min_history:
                    todo.append(
                        InsufficientHistory(
                            f"{symbol}: {t + 1} candles, the model needs {self.min_history}"
                            if t + 1 < self.min_history
                            else f"{symbol}: {known} candles since the last gap, the model needs "
                            f"{self.min_history} consecutive candles"
                        )
                    )
                elif not finite[t - start - self.context_length + 1 : t - start + 1].all():
                    todo.append(
                        InvalidCandles(f"{symbol}: features are not finite over the input window")
                    )
                else:
                    todo.append(t)

        offsets = np.arange(-self.context_length + 1, 1)
        part: dict[pd.Timestamp, PredictionResult | ModelError] = {}
        batch: list[int] = []
        for k, item in enumerate(todo):
            if isinstance(item, ModelError):
                part[times[first + k]] = item
            else:
                batch.append(item)
            if len(batch) == batch_size or (k == len(todo) - 1 and batch):
                started = time.perf_counter()
                x = torch.from_numpy(scaled[np.asarray(batch)[:, None] + offsets]).to(self.device)
                with torch.inference_mode():
                    out = self._forward(x).float().cpu().numpy()
                decoded = decode_outputs(
                    out, return_scale=self._return_scale, risk_scale=self._risk_scale
                )
                latency = (time.perf_counter() - started) * 1000 / len(batch)  # per step
                for j, t in enumerate(batch):
                    part[times[t]] = self._result(symbol, times[t], decoded, j, latency)
                batch = []
            if not batch and part:
                yield dict(sorted(part.items()))
                part = {}

    def _window(self, symbol: str, candles: pd.DataFrame) -> np.ndarray:
        """Scaled input [context_length, C] from the last min_history candles of one run."""
        if len(candles) < self.min_history:
            raise InsufficientHistory(
                f"{symbol}: {len(candles)} candles, the model needs {self.min_history}"
            )
        tail = candles.iloc[-self.min_history :]
        try:
            validate_candles(tail, timeframe=self.timeframe)
        except CandleError as exc:
            raise InvalidCandles(f"{symbol}: {exc}") from exc
        runs = segment_ids(tail.index, timeframe=self.timeframe)
        if runs[0] != runs[-1]:
            since_gap = int((runs == runs[-1]).sum())
            raise InsufficientHistory(
                f"{symbol}: {since_gap} candles since the last gap, the model needs "
                f"{self.min_history} consecutive candles"
            )
        features = compute_features(tail, last=self.context_length).to_numpy(dtype=np.float32)
        window = features[:, self._columns]
        if not np.isfinite(window).all():
            raise InvalidCandles(f"{symbol}: features are not finite over the input window")
        return self._scaler.transform(window)

    def _result(self, symbol, last, decoded, k: int, latency: float) -> PredictionResult:
        j = self._signal_j
        p = decoded.probabilities[k, j]
        expected = float(decoded.returns[k, j])
        return PredictionResult(
            symbol=symbol,
            candle_time=last,
            returns={h: float(decoded.returns[k, i]) for i, h in enumerate(HORIZONS)},
            probabilities={
                h: tuple(float(v) for v in decoded.probabilities[k, i])
                for i, h in enumerate(HORIZONS)
            },
            risk={name: float(decoded.risk[k, i]) for i, name in enumerate(RISK_NAMES)},
            direction=_DIRECTION_BY_CLASS[int(p.argmax())],
            confidence=float(p.max()),
            strength=float(signal_strength(expected, self._bands[j])),
            cached=False,
            latency_ms=latency,
        )

    def _remember(self, key: tuple[str, str, pd.Timestamp], result: PredictionResult) -> None:
        self._cache[key] = result
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
