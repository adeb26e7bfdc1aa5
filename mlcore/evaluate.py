"""Honest out-of-sample evaluation of a checkpoint against simple baselines on the same windows.

    python -m mlcore.evaluate --checkpoint models/botai-default.pt \
        --csv ../shared/data/ohlcv/BTC_USDT-15m.csv --csv ../shared/data/ohlcv/ETH_USDT-15m.csv \
        --from 2025-09-01

Every sample is a candle t in [from, to) whose model window and 48-candle targets are valid; all
predictors (model and baselines) are scored on exactly these samples. Candles before `from` serve as
indicator warm-up and as the logistic regression's training data (the checkpoint's training split).

Trading simulation (per symbol, horizon 4 = 1h at 15m): every 4th sample is a decision point; the
position is +1 / 0 / -1 for an up / flat / down call and is held for 4 candles, earning
position * (close[t+4] / close[t] - 1). Changing the position costs 0.05% of notional per unit
changed (0.1% for a round trip; a long-to-short flip pays both sides). The portfolio is the
equal-weight average of the symbols' period returns. "model_gated" trades the model's call only
when it passes the signal thresholds the live system applies (confidence >= min_confidence and
strength >= min_strength, the Predictor's formulas; defaults 0.45 / 0.2 as in the seed's config).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state
from sklearn.calibration import calibration_curve
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
)
from ta.momentum import RSIIndicator
from ta.trend import EMAIndicator
from tqdm import tqdm

from mlcore.checkpoint import load_checkpoint
from mlcore.dataset import (
    Scaler,
    SplitBounds,
    SymbolSeries,
    make_windows,
    prepare_series,
    split_masks,
    thin,
    time_range_mask,
)
from mlcore.labels import CLASSES, DOWN, FLAT, HORIZONS, UP, decode_outputs
from mlcore.predictor import signal_strength
from mlcore.train import forward_windows, load_frames

FEE_PER_SIDE = 0.0005  # 0.1% round trip
TRADE_HORIZON = 4
CALIBRATION_BINS = 10
PERIODS_PER_YEAR = 365 * 24  # one decision per hour


@dataclass
class Evaluation:
    report: dict
    json_path: Path
    png_path: Path


def evaluate(
    *,
    checkpoint: Path,
    frames: dict[str, pd.DataFrame],
    start: pd.Timestamp,
    end: pd.Timestamp | None = None,
    out_dir: Path,
    seed: int = 0,
    min_confidence: float = 0.45,
    min_strength: float = 0.2,
    progress: bool = True,
) -> Evaluation:
    """Score the checkpoint and the baselines on [start, end); write <stem>-eval.json and .png."""
    ckpt = load_checkpoint(checkpoint)
    context_length = int(ckpt.model_config["context_length"])
    scaler = Scaler.from_dict(ckpt.scaler)
    bands = np.asarray(ckpt.label_bands)
    series = [
        prepare_series(
            df,
            symbol=sym,
            timeframe=ckpt.timeframe,
            context_length=context_length,
            channels=ckpt.channels,
        )
        for sym, df in tqdm(frames.items(), desc="features", disable=not progress)
    ]
    eval_masks = [time_range_mask(s, start=start, end=end) for s in series]
    data = make_windows(
        series, eval_masks, scaler=scaler, bands=bands, context_length=context_length
    )
    if len(data) == 0:
        raise ValueError(f"no valid sample in [{start}, {end}): is the range after the data?")

    decoded = decode_outputs(
        forward_windows(ckpt.model(), data),
        return_scale=np.asarray(ckpt.target_scales["returns"]),
        risk_scale=np.asarray(ckpt.target_scales["risk"]),
    )
    probs = {"model": decoded.probabilities}
    rng = np.random.default_rng(seed)
    priors = np.asarray(ckpt.class_priors)
    probs["stratified_random"] = np.broadcast_to(priors, decoded.probabilities.shape)
    probs["logistic_regression"] = _logistic_regression(
        series, ckpt, scaler=scaler, bands=bands, data=data
    )
    preds = {name: p.argmax(axis=2) for name, p in probs.items()}
    preds["stratified_random"] = np.stack(
        [rng.choice(len(CLASSES), size=len(data), p=priors[j]) for j in range(len(HORIZONS))],
        axis=1,
    )
    preds["always_flat"] = np.full(data.classes.shape, FLAT)
    preds["buy_and_hold"] = np.full(data.classes.shape, UP)
    ema_rsi = _ema_rsi_signal(series, data.symbols, data.positions)
    preds["ema_rsi"] = np.repeat(ema_rsi[:, None], len(HORIZONS), axis=1)

    horizons = {}
    for j, h in enumerate(HORIZONS):
        true = data.classes[:, j]
        horizons[f"h{h}"] = {
            "class_share": (np.bincount(true, minlength=3) / len(true)).round(4).tolist(),
            **{
                name: _classification(
                    true, pred[:, j], probs[name][:, j] if name in probs else None
                )
                for name, pred in preds.items()
            },
        }

    j4 = HORIZONS.index(TRADE_HORIZON)
    pnl, curves = {}, {}
    for name, pred in preds.items():
        if name == "buy_and_hold":
            position = np.ones(len(data))  # held throughout: one entry, one exit fee
        else:
            position = np.select([pred[:, j4] == UP, pred[:, j4] == DOWN], [1.0, -1.0], 0.0)
        pnl[name], curves[name] = _trade(data, position, j4)
    p4 = decoded.probabilities[:, j4]
    passes = (p4.max(axis=1) >= min_confidence) & (
        signal_strength(decoded.returns[:, j4], bands[j4]) >= min_strength
    )
    gated = np.select([p4.argmax(axis=1) == UP, p4.argmax(axis=1) == DOWN], [1.0, -1.0], 0.0)
    pnl["model_gated"], curves["model_gated"] = _trade(data, np.where(passes, gated, 0.0), j4)
    pnl["model_gated"]["thresholds"] = {
        "min_confidence": min_confidence,
        "min_strength": min_strength,
    }

    report = {
        "checkpoint": str(checkpoint),
        "version": ckpt.version,
        "range": {
            "from": data.times.min().isoformat(),
            "to": data.times.max().isoformat(),
            "requested_from": start.isoformat(),
            "requested_to": None if end is None else end.isoformat(),
        },
        "training_data_end": ckpt.split["data_end"],
        "after_training_data": bool(data.times.min() > pd.Timestamp(ckpt.split["data_end"])),
        "samples": {
            name: int((data.symbols == k).sum()) for k, name in enumerate(data.symbol_names)
        },
        "label_bands": dict(zip([f"h{h}" for h in HORIZONS], ckpt.label_bands, strict=True)),
        "fee_round_trip": 2 * FEE_PER_SIDE,
        "horizons": horizons,
        "pnl_h4": pnl,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{Path(checkpoint).stem}-eval-{start:%Y%m%d}"
    json_path = out_dir / f"{stem}.json"
    json_path.write_text(json.dumps(report, indent=2))
    png_path = out_dir / f"{stem}.png"
    _plot(report, curves, png_path)
    return Evaluation(report=report, json_path=json_path, png_path=png_path)


def _classification(true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None) -> dict:
    labels = [DOWN, FLAT, UP]
    out = {
        "accuracy": float(accuracy_score(true, pred)),
        "macro_f1": float(f1_score(true, pred, average="macro", labels=labels, zero_division=0)),
        "confusion": confusion_matrix(true, pred, labels=labels).tolist(),
    }
    if proba is not None:
        proba = np.asarray(proba, dtype=np.float64)
        out["calibration"] = calibration(true, proba)
    return out


def calibration(true: np.ndarray, proba: np.ndarray) -> dict:
    """Multiclass Brier score, log loss, and reliability of the top-class confidence (ECE)."""
    confidence = proba.max(axis=1)
    correct = (proba.argmax(axis=1) == true).astype(int)
    edges = np.linspace(0.0, 1.0, CALIBRATION_BINS + 1)
    bin_of = np.clip(np.digitize(confidence, edges[1:-1]), 0, CALIBRATION_BINS - 1)
    counts = np.bincount(bin_of, minlength=CALIBRATION_BINS)
    hit_rate = np.bincount(bin_of, weights=correct, minlength=CALIBRATION_BINS)
    mean_conf = np.bincount(bin_of, weights=confidence, minlength=CALIBRATION_BINS)
    nonempty = counts > 0
    ece = float(np.sum(np.abs(hit_rate[nonempty] - mean_conf[nonempty])) / max(1, counts.sum()))
    if correct.min() != correct.max():
        frac_correct, mean_pred = calibration_curve(correct, confidence, n_bins=CALIBRATION_BINS)
    else:  # every sample right or every sample wrong: one point says it all
        frac_correct, mean_pred = np.array([correct.mean()]), np.array([confidence.mean()])
    return {
        "brier": float(brier_score_loss(true, proba, labels=[DOWN, FLAT, UP])),
        "log_loss": float(log_loss(true, proba, labels=[DOWN, FLAT, UP])),
        "ece": ece,
        "reliability": {
            "mean_confidence": mean_pred.round(4).tolist(),
            "fraction_correct": frac_correct.round(4).tolist(),
            "count": counts[nonempty].tolist(),
        },
    }


def _logistic_regression(series, ckpt, *, scaler, bands, data) -> np.ndarray:
    """Per-horizon multinomial logistic regression on the feature row at t (the model's channels),
    fitted on the checkpoint's training split, class-balanced like the model's loss."""
    bounds = SplitBounds(
        val_start=pd.Timestamp(ckpt.split["val_start"]),
        test_start=None,
    )
    context_length = int(ckpt.model_config["context_length"])
    masks = [
        thin(
            split_masks(s, bounds=bounds, context_length=context_length, timeframe=ckpt.timeframe)[
                "train"
            ],
            stride=2,
        )
        for s in series
    ]
    train = make_windows(series, masks, scaler=scaler, bands=bands, context_length=context_length)
    if len(train) == 0:
        raise ValueError("no training-period candles given: the logistic baseline needs them")
    # float64: float32 inputs give float32 probabilities that sum to 1 only within 1e-7.
    x_train, x_eval = train.last_rows().astype(np.float64), data.last_rows().astype(np.float64)
    out = np.zeros((len(data), len(HORIZONS), len(CLASSES)))
    for j in range(len(HORIZONS)):
        lr = LogisticRegression(C=0.1, class_weight="balanced", max_iter=2000)
        lr.fit(x_train, train.classes[:, j])
        out[:, j, lr.classes_] = lr.predict_proba(x_eval)
    return out


def _ema_rsi_signal(
    series: Sequence[SymbolSeries], symbols: np.ndarray, positions: np.ndarray
) -> np.ndarray:
    """EMA(9) vs EMA(21) trend, vetoed by RSI(14): no long when overbought (> 70), no short when
    oversold (< 30). Computed from candles up to t only."""
    out = np.full(len(symbols), FLAT)
    for k, s in enumerate(series):
        close = s.candles["close"]
        fast = EMAIndicator(close, window=9).ema_indicator().to_numpy()
        slow = EMAIndicator(close, window=21).ema_indicator().to_numpy()
        rsi = RSIIndicator(close, window=14).rsi().to_numpy()
        sel = symbols == k
        pos = positions[sel]
        long_ = (fast[pos] > slow[pos]) & (rsi[pos] < 70)
        short = (fast[pos] < slow[pos]) & (rsi[pos] > 30)
        out[sel] = np.select([long_, short], [UP, DOWN], FLAT)
    return out


def _trade(data, position: np.ndarray, j: int) -> tuple[dict, pd.Series]:
    """Non-overlapping TRADE_HORIZON-candle holds per symbol; portfolio = mean over symbols."""
    per_symbol, stats = {}, {}
    for k, name in enumerate(data.symbol_names):
        idx = np.flatnonzero(data.symbols == k)
        if len(idx) == 0:
            continue
        pos_rows = data.positions[idx]
        # Decision points every TRADE_HORIZON candles; a break in the row sequence (gap) closes.
        keep = np.zeros(len(idx), dtype=bool)
        next_allowed = pos_rows[0]
        for i, p in enumerate(pos_rows):
            if p >= next_allowed:
                keep[i] = True
                next_allowed = p + TRADE_HORIZON
        idx, pos_rows = idx[keep], pos_rows[keep]
        p = position[idx]
        contiguous = np.diff(pos_rows, prepend=pos_rows[0] - TRADE_HORIZON) == TRADE_HORIZON
        prev = np.where(contiguous, np.concatenate([[0.0], p[:-1]]), 0.0)
        closing = np.where(np.concatenate([contiguous[1:], [False]]), 0.0, np.abs(p))
        net = p * data.returns[idx, j] - FEE_PER_SIDE * (np.abs(p - prev) + closing)
        per_symbol[name] = pd.Series(net, index=data.times[idx])
        changes = np.abs(p - prev) > 0
        active = p != 0
        wins = (p * data.returns[idx, j] > 0) & active
        stats[name] = {
            "total_return": float(np.prod(1 + net) - 1),
            "position_changes": int(changes.sum()),
            "time_in_market": float(active.mean()),
            "hit_rate": float(wins.sum() / max(1, active.sum())),
        }
    period = pd.DataFrame(per_symbol).fillna(0.0).mean(axis=1)
    equity = (1 + period).cumprod()
    drawdown = 1 - equity / equity.cummax()
    std = period.std()
    return (
        {
            "portfolio_total_return": float(equity.iloc[-1] - 1),
            "portfolio_sharpe": float(period.mean() / std * np.sqrt(PERIODS_PER_YEAR))
            if std > 0
            else 0.0,
            "portfolio_max_drawdown": float(drawdown.max()),
            "symbols": stats,
        },
        equity,
    )


def _plot(report: dict, curves: dict[str, pd.Series], path: Path) -> None:
    fig = Figure(figsize=(16, 11))
    grid = fig.add_gridspec(3, len(HORIZONS), height_ratios=[1.3, 1, 1])
    ax = fig.add_subplot(grid[0, :])
    for name, equity in curves.items():
        ax.plot(equity.index, equity.to_numpy(), label=name, lw=2.2 if name == "model" else 1.1)
    ax.axhline(1.0, color="grey", lw=0.6)
    ax.set_title(
        f"{report['version']}: equity trading the 1h signal, 0.1% round-trip fees "
        f"({report['range']['from'][:10]} .. {report['range']['to'][:10]})"
    )
    ax.legend(ncol=3, fontsize=9)
    for row, name in ((1, "model"), (2, "logistic_regression")):
        for j, h in enumerate(HORIZONS):
            m = report["horizons"][f"h{h}"][name]
            cax = fig.add_subplot(grid[row, j])
            cm = np.asarray(m["confusion"], dtype=float)
            cax.imshow(cm / cm.sum(axis=1, keepdims=True).clip(min=1), cmap="Blues", vmin=0, vmax=1)
            for (r, c), v in np.ndenumerate(cm):
                cax.text(c, r, int(v), ha="center", va="center", fontsize=8)
            cax.set_xticks(range(3), CLASSES)
            cax.set_yticks(range(3), CLASSES)
            cax.set_title(
                f"{name} h{h}: acc {m['accuracy']:.3f} F1 {m['macro_f1']:.3f}", fontsize=9
            )
            if j == 0:
                cax.set_ylabel("true")
            if row == 2:
                cax.set_xlabel("predicted")
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--checkpoint", type=Path, required=True)
    parser.add_argument(
        "--csv", type=Path, action="append", required=True, help="repeat per symbol"
    )
    parser.add_argument(
        "--from", dest="start", required=True, help="first UTC date, e.g. 2025-09-01"
    )
    parser.add_argument("--to", dest="end", help="exclusive end date (default: end of data)")
    parser.add_argument("--out-dir", type=Path, default=Path("data/reports"))
    args = parser.parse_args(argv)

    ckpt = load_checkpoint(args.checkpoint)
    frames = load_frames(args.csv, timeframe=ckpt.timeframe)
    start = pd.Timestamp(args.start, tz="UTC")
    end = pd.Timestamp(args.end, tz="UTC") if args.end else None
    data_end = pd.Timestamp(ckpt.split["data_end"])
    if start <= data_end:
        print(f"warning: --from {start} is not after the training data (which ends {data_end})")
    result = evaluate(
        checkpoint=args.checkpoint, frames=frames, start=start, end=end, out_dir=args.out_dir
    )
    print(summary(result.report))
    print(f"wrote {result.json_path} and {result.png_path}")
    return 0


def summary(report: dict) -> str:
    """Plain-text table: accuracy / macro-F1 per horizon and the 1h trading result per predictor."""
    lines = [f"{report['version']}  {report['range']['from']} .. {report['range']['to']}"]
    lines.append(
        f"{'':20}"
        + "".join(f"{f'h{h} acc/F1':>14}" for h in HORIZONS)
        + f"{'PnL h4':>10}{'Sharpe':>8}{'maxDD':>8}{'in mkt':>8}"
    )
    for name, pnl in report["pnl_h4"].items():
        cells = "".join(
            f"{report['horizons'][f'h{h}'][name]['accuracy']:>8.3f}/"
            f"{report['horizons'][f'h{h}'][name]['macro_f1']:<5.3f}"
            if name in report["horizons"][f"h{h}"]
            else f"{'':14}"
            for h in HORIZONS
        )
        in_market = np.mean([s["time_in_market"] for s in pnl["symbols"].values()])
        lines.append(
            f"{name:20}{cells}{pnl['portfolio_total_return']:>+10.2%}"
            f"{pnl['portfolio_sharpe']:>8.2f}{pnl['portfolio_max_drawdown']:>8.1%}{in_market:>8.0%}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
