"""Train the multitask PatchTST from candle frames and write one checkpoint.

    python -m mlcore.train --csv ../shared/data/ohlcv/BTC_USDT-15m.csv \
        --csv ../shared/data/ohlcv/ETH_USDT-15m.csv --until 2025-09-01 --out models/botai-default.pt
    python -m mlcore.train --preset tiny --out models/botai-tiny.pt     # synthetic candles, < 60 s

Loss = w_ret * Huber(returns / std) + w_dir * mean_h CE(direction_h, inverse-frequency weights)
     + w_risk * MSE(risk / std); AdamW with cosine decay; early stopping on the validation loss
(the best epoch's weights are kept).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.metrics import accuracy_score, f1_score
from tqdm import tqdm

from mlcore.allocator import tune_glibc_malloc
from mlcore.candles import load_csv, validate_candles
from mlcore.checkpoint import Checkpoint, candles_fingerprint, save_checkpoint
from mlcore.dataset import (
    DEFAULT_CHANNELS,
    Scaler,
    WindowSet,
    make_windows,
    prepare_series,
    split_bounds,
    split_masks,
    thin,
    training_rows,
)
from mlcore.features import FEATURE_NAMES, FEATURE_SET
from mlcore.labels import (
    CLASSES,
    DIRECTION_SLICE,
    HORIZONS,
    RETURN_SLICE,
    RISK_SLICE,
    class_weights,
    fit_flat_bands,
)
from mlcore.patchtst import PatchTST, PatchTSTConfig
from mlcore.predictor import resolve_device


@dataclass(frozen=True)
class TrainConfig:
    preset: str = "default"
    timeframe: str = "15m"
    channels: tuple[str, ...] = DEFAULT_CHANNELS
    # model
    context_length: int = 96
    patch_len: int = 16
    stride: int = 8
    d_model: int = 64
    n_heads: int = 4
    n_layers: int = 2
    d_ff: int = 128
    dropout: float = 0.3
    head_dropout: float = 0.1
    # Inputs are already standardised with training statistics; per-window RevIN would erase the
    # levels that carry the signal (RSI at 75 vs 25 look alike after instance normalisation).
    # Measured on BTC+ETH 15m (Jan-Aug 2025, 3 epochs): validation loss 1.620 with RevIN, 1.503
    # without. The last patch (the newest 16 candles) feeds the head: 1.493 vs 1.500 mean-pooled.
    revin: bool = False
    head_pooling: str = "last"
    # data
    # Each epoch trains on a fresh random 1/sample_stride of the training windows: neighbouring
    # windows share 95 of 96 rows, so a quarter per epoch costs a quarter and loses little.
    sample_stride: int = 4
    eval_stride: int = 4  # validation / test windows
    val_fraction: float = 0.15
    test_fraction: float = 0.15
    flat_fraction: float = 1.0 / 3.0
    # optimisation: the validation loss flattens after 2-3 epochs (lr 1e-3 peaked at epoch 1 and
    # then overfit; 3e-4 with dropout 0.3 kept improving to epoch 3 and ended lower)
    epochs: int = 8
    batch_size: int = 256
    lr: float = 3e-4
    weight_decay: float = 0.05
    patience: int = 2
    loss_weights: tuple[float, float, float] = (1.0, 1.0, 0.5)  # returns, directions, risk
    huber_delta: float = 1.0
    seed: int = 0
    num_threads: int | None = None  # torch.set_num_threads; None leaves torch's default
    device: str = "auto"  # cuda when available, else cpu
    # No epoch starts that would end after this many seconds: keeps the default model under 10
    # minutes on a slow or shared 2-core machine (the best epoch so far is kept).
    time_budget_s: float | None = 480.0

    def model_config(self) -> PatchTSTConfig:
        return PatchTSTConfig(
            n_channels=len(self.channels),
            context_length=self.context_length,
            patch_len=self.patch_len,
            stride=self.stride,
            d_model=self.d_model,
            n_heads=self.n_heads,
            n_layers=self.n_layers,
            d_ff=self.d_ff,
            dropout=self.dropout,
            head_dropout=self.head_dropout,
            revin=self.revin,
            head_pooling=self.head_pooling,
            task="multitask",
        )


PRESETS: dict[str, TrainConfig] = {
    "default": TrainConfig(),
    # Tests and `make up` on a fresh machine: a few thousand synthetic candles, two small epochs.
    "tiny": TrainConfig(
        preset="tiny",
        channels=DEFAULT_CHANNELS[:8],
        context_length=32,
        patch_len=8,
        stride=4,
        d_model=16,
        n_heads=2,
        n_layers=1,
        d_ff=32,
        sample_stride=2,
        eval_stride=8,
        epochs=3,
        patience=1,
        lr=1e-3,
    ),
    # Every feature, the paper's model size, every candle: for a GPU host.
    "gpu": TrainConfig(
        preset="gpu",
        channels=FEATURE_NAMES,
        d_model=128,
        n_heads=16,
        n_layers=3,
        d_ff=256,
        sample_stride=1,
        eval_stride=1,
        epochs=40,
        patience=6,
        time_budget_s=None,
        batch_size=512,
    ),
}


@dataclass
class TrainResult:
    path: Path
    version: str
    metrics: dict
    elapsed_seconds: float
    epochs_run: int
    best_epoch: int
    samples: dict[str, int] = field(default_factory=dict)
    data_fingerprint: str = ""


def train(
    *, frames: dict[str, pd.DataFrame], config: TrainConfig, out: Path, progress: bool = True
) -> TrainResult:
    """Fit on `frames` (symbol -> candle frame), write the checkpoint to `out`."""
    started = time.perf_counter()
    # Every step allocates and frees the same large activations: measured on the 2-core box, one
    # default epoch 41 -> 36 s (sys time 10.4 -> 4.8 s) once freed blocks stay in the heap.
    tune_glibc_malloc()
    if config.num_threads:
        torch.set_num_threads(config.num_threads)
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    if not frames:
        raise ValueError("no candles to train on")

    series = [
        prepare_series(
            df,
            symbol=sym,
            timeframe=config.timeframe,
            context_length=config.context_length,
            channels=config.channels,
        )
        for sym, df in tqdm(frames.items(), desc="features", disable=not progress)
    ]
    bounds = split_bounds(
        series, val_fraction=config.val_fraction, test_fraction=config.test_fraction
    )
    masks = [
        split_masks(
            s, bounds=bounds, context_length=config.context_length, timeframe=config.timeframe
        )
        for s in series
    ]
    train_masks = [m["train"] for m in masks]
    # Bands and scaler see training rows only; they are fitted before any thinning.
    bands = fit_flat_bands(
        np.concatenate([s.targets.returns[m] for s, m in zip(series, train_masks, strict=True)]),
        flat_fraction=config.flat_fraction,
    )
    scaler = Scaler.fit(training_rows(series, train_masks, config.context_length))

    def windows(split: str, stride: int) -> WindowSet:
        return make_windows(
            series,
            [thin(m[split], stride=stride) for m in masks],
            scaler=scaler,
            bands=bands,
            context_length=config.context_length,
        )

    sets = {
        "train": windows("train", 1),
        "val": windows("val", config.eval_stride),
        "test": windows("test", config.eval_stride),
    }
    if len(sets["train"]) == 0 or len(sets["val"]) == 0:
        raise ValueError(
            f"empty split { ({k: len(v) for k, v in sets.items()}) }: give more candles"
        )
    train_set = sets["train"]
    return_scale = train_set.returns.std(axis=0).astype(np.float64)
    risk_scale = train_set.risk.std(axis=0).astype(np.float64)
    loss_fn = _MultitaskLoss(
        return_scale=return_scale,
        risk_scale=risk_scale,
        class_weights=class_weights(train_set.classes),
        loss_weights=config.loss_weights,
        huber_delta=config.huber_delta,
    )

    device = resolve_device(config.device)
    model = PatchTST(config.model_config()).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, weight_decay=config.weight_decay
    )
    per_epoch = max(1, len(train_set) // config.sample_stride)
    steps_per_epoch = -(-per_epoch // config.batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(
        optimizer, T_max=config.epochs * steps_per_epoch
    )

    best_loss, best_epoch, best_state, history = float("inf"), 0, None, []
    epoch, stopped = 0, "epochs"
    for epoch in range(1, config.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        order = rng.permutation(len(train_set))[:per_epoch]
        bar = tqdm(
            range(0, len(order), config.batch_size),
            desc=f"epoch {epoch}/{config.epochs}",
            disable=not progress,
            leave=False,
        )
        running = 0.0
        for i, start in enumerate(bar, 1):
            idx = np.sort(order[start : start + config.batch_size])
            x = torch.from_numpy(train_set.windows(idx)).to(device)
            loss, _ = loss_fn(model(x), train_set, idx)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            schedule.step()
            running += loss.item()
            bar.set_postfix(loss=f"{running / i:.4f}")
        val = evaluate_split(model, sets["val"], loss_fn, batch_size=config.batch_size)
        history.append({"epoch": epoch, "train_loss": running / max(1, i), **val})
        if progress:
            tqdm.write(
                f"epoch {epoch}: train {running / max(1, i):.4f}  val {val['loss']:.4f}  "
                f"val acc h4 {val['directions']['h4']['accuracy']:.3f}"
            )
        if val["loss"] < best_loss - 1e-5:
            best_loss, best_epoch = val["loss"], epoch
            best_state = copy.deepcopy(model.state_dict())
        elif epoch - best_epoch >= config.patience:
            stopped = "early_stopping"
            break
        # Stop before an epoch that would end past the budget (slow or shared machines).
        now = time.perf_counter()
        if config.time_budget_s and now - started + (now - epoch_started) > config.time_budget_s:
            stopped = "time_budget" if epoch < config.epochs else stopped
            break
    model.load_state_dict(best_state)

    metrics = {
        "best_epoch": best_epoch,
        "stopped": stopped,
        "history": history,
        # Training metrics on a strided subset: a full forward pass over it would cost an epoch.
        "train": evaluate_split(
            model,
            train_set.subset(np.arange(0, len(train_set), config.eval_stride)),
            loss_fn,
            batch_size=config.batch_size,
        ),
        **{
            split: evaluate_split(model, sets[split], loss_fn, batch_size=config.batch_size)
            for split in ("val", "test")
            if len(sets[split])
        },
    }
    created = datetime.now(UTC)
    fingerprint = candles_fingerprint(frames)
    version = f"{config.preset}-{created:%Y%m%dT%H%MZ}-{fingerprint[:8]}"
    ckpt = Checkpoint(
        version=version,
        created=created.isoformat(),
        model_config=config.model_config().to_dict(),
        state_dict=model.state_dict(),
        feature_set=FEATURE_SET,
        feature_names=list(FEATURE_NAMES),
        channels=list(config.channels),
        timeframe=config.timeframe,
        scaler=scaler.to_dict(),
        label_bands=[float(b) for b in bands],
        target_scales={"returns": return_scale.tolist(), "risk": risk_scale.tolist()},
        class_priors=_class_priors(train_set.classes),
        split={
            **bounds.to_dict(),
            "data_start": min(s.index[0] for s in series).isoformat(),
            "data_end": max(s.index[-1] for s in series).isoformat(),
            "train_end": train_set.times.max().isoformat(),
            "symbols": sorted(frames),
        },
        train_config=_jsonable(asdict(config)),
        metrics=metrics,
        data_fingerprint=fingerprint,
    )
    path = save_checkpoint(ckpt, out)
    return TrainResult(
        path=path,
        version=version,
        metrics=metrics,
        elapsed_seconds=time.perf_counter() - started,
        epochs_run=epoch,
        best_epoch=best_epoch,
        samples={k: len(v) for k, v in sets.items()},
        data_fingerprint=fingerprint,
    )


class _MultitaskLoss:
    def __init__(
        self,
        *,
        return_scale: np.ndarray,
        risk_scale: np.ndarray,
        class_weights: np.ndarray,
        loss_weights: tuple[float, float, float],
        huber_delta: float,
    ) -> None:
        self.return_scale = torch.tensor(return_scale, dtype=torch.float32)
        self.risk_scale = torch.tensor(risk_scale, dtype=torch.float32)
        self.class_weights = torch.tensor(class_weights, dtype=torch.float32)
        self.loss_weights = loss_weights
        self.huber_delta = huber_delta

    def __call__(
        self, out: torch.Tensor, data: WindowSet, idx: np.ndarray
    ) -> tuple[torch.Tensor, dict[str, float]]:
        device = out.device
        returns = torch.from_numpy(data.returns[idx]).to(device) / self.return_scale.to(device)
        risk = torch.from_numpy(data.risk[idx]).to(device) / self.risk_scale.to(device)
        classes = torch.from_numpy(data.classes[idx]).to(device)
        class_weights = self.class_weights.to(device)
        ret_loss = F.huber_loss(out[:, RETURN_SLICE], returns, delta=self.huber_delta)
        logits = out[:, DIRECTION_SLICE].reshape(len(out), len(HORIZONS), len(CLASSES))
        dir_loss = torch.stack(
            [
                F.cross_entropy(logits[:, j], classes[:, j], weight=class_weights[j])
                for j in range(len(HORIZONS))
            ]
        ).mean()
        risk_loss = F.mse_loss(out[:, RISK_SLICE], risk)
        w_ret, w_dir, w_risk = self.loss_weights
        total = w_ret * ret_loss + w_dir * dir_loss + w_risk * risk_loss
        parts = {
            "returns": ret_loss.item(),
            "directions": dir_loss.item(),
            "risk": risk_loss.item(),
        }
        return total, parts


def forward_windows(model: PatchTST, data: WindowSet, *, batch_size: int = 512) -> np.ndarray:
    """Raw head outputs [S, 20] for every sample of `data`, in eval mode."""
    model.eval()
    device = next(model.parameters()).device
    outs = []
    with torch.inference_mode():
        for start in range(0, len(data), batch_size):
            idx = np.arange(start, min(start + batch_size, len(data)))
            x = torch.from_numpy(data.windows(idx)).to(device)
            outs.append(model(x).float().cpu().numpy())
    return np.concatenate(outs) if outs else np.zeros((0, RISK_SLICE.stop), dtype=np.float32)


def evaluate_split(
    model: PatchTST, data: WindowSet, loss_fn: _MultitaskLoss, *, batch_size: int
) -> dict:
    """Loss parts and per-horizon directional accuracy / macro-F1 of one split."""
    outputs = forward_windows(model, data, batch_size=batch_size)
    idx = np.arange(len(data))
    with torch.inference_mode():
        total, parts = loss_fn(torch.from_numpy(outputs), data, idx)
    logits = outputs[:, DIRECTION_SLICE].reshape(len(outputs), len(HORIZONS), len(CLASSES))
    directions = {}
    for j, h in enumerate(HORIZONS):
        pred = logits[:, j].argmax(axis=1)
        true = data.classes[:, j]
        directions[f"h{h}"] = {
            "accuracy": float(accuracy_score(true, pred)),
            "macro_f1": float(f1_score(true, pred, average="macro", labels=[0, 1, 2])),
        }
    return {"loss": float(total), "parts": parts, "n": len(data), "directions": directions}


def _class_priors(classes: np.ndarray) -> list[list[float]]:
    priors = []
    for j in range(classes.shape[1]):
        counts = np.bincount(classes[:, j][classes[:, j] >= 0], minlength=len(CLASSES))
        priors.append((counts / max(1, counts.sum())).tolist())
    return priors


def _jsonable(d: dict) -> dict:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


# --------------------------------------------------------------------------- command line


def symbol_from_path(path: Path) -> str:
    """BTC_USDT-15m.csv -> BTCUSDT (the exchange symbol the rest of botai uses)."""
    return Path(path).name.split("-")[0].replace("_", "")


def load_frames(
    paths: Sequence[Path], *, timeframe: str, until: pd.Timestamp | None = None
) -> dict[str, pd.DataFrame]:
    frames = {}
    for path in paths:
        df = load_csv(path)
        validate_candles(df, timeframe=timeframe)
        if until is not None:
            df = df[df.index < until]
        frames[symbol_from_path(path)] = df
    return frames


def synthetic_frames(*, n: int, timeframe: str, symbols: int = 2) -> dict[str, pd.DataFrame]:
    from mlcore.synthetic import generate_candles

    return {
        f"SYN{k}USDT": generate_candles(n, seed=k, timeframe=timeframe)
        for k in range(1, symbols + 1)
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m mlcore.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--csv", type=Path, action="append", default=[], help="candle CSV (repeat)")
    parser.add_argument("--out", type=Path, default=Path("models/botai-default.pt"))
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--until", help="use candles before this UTC date only, e.g. 2025-09-01")
    parser.add_argument("--epochs", type=int, help="override the preset's epoch count")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads")
    parser.add_argument("--device", help="auto (default), cpu or cuda")
    parser.add_argument("--synthetic-candles", type=int, default=6000, help="per symbol, no --csv")
    parser.add_argument("--seed", type=int)
    args = parser.parse_args(argv)

    config = PRESETS[args.preset]
    overrides = {
        "epochs": args.epochs,
        "num_threads": args.threads,
        "seed": args.seed,
        "device": args.device,
    }
    config = replace(config, **{k: v for k, v in overrides.items() if v is not None})
    until = pd.Timestamp(args.until, tz="UTC") if args.until else None
    if args.csv:
        frames = load_frames(args.csv, timeframe=config.timeframe, until=until)
    else:
        print(f"no --csv given: training on {args.synthetic_candles} synthetic candles per symbol")
        frames = synthetic_frames(n=args.synthetic_candles, timeframe=config.timeframe)
    result = train(frames=frames, config=config, out=args.out)
    test = result.metrics.get("test", result.metrics["val"])
    print(
        f"wrote {result.path} ({result.version}) in {result.elapsed_seconds:.0f} s, "
        f"{result.epochs_run} epochs (best {result.best_epoch}), samples {result.samples}"
    )
    for h, m in test["directions"].items():
        print(f"  held-out {h}: accuracy {m['accuracy']:.3f}  macro-F1 {m['macro_f1']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
