"""Correctness anchor: PatchTST/42 on ETTh1, multivariate, look-back 336, horizon 96.

Protocol of the paper and its official code (see ../shared/data/etth1/README.md): 12/4/4 months
split, StandardScaler fitted on the training rows only, all 7 channels, MSE/MAE on the scaled test
windows. Model and optimiser as in PatchTST_supervised/scripts/PatchTST/etth1.sh; learning rate
schedule 'type3' (constant for 3 epochs, then x0.9 per epoch); the weights of the epoch with the
lowest validation MSE are tested.

    .venv/bin/python -m bench.bench_etth1 [--data DIR] [--epochs 30] [--patience 10] [--threads 2]
"""

import argparse
import copy
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm import tqdm

from mlcore.allocator import tune_glibc_malloc
from mlcore.patchtst import PatchTST, PatchTSTConfig

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "etth1"

LOOKBACK, HORIZON = 336, 96
MONTH = 30 * 24  # rows of hourly data in the protocol's 30-day month
TRAIN_END, VAL_END, TEST_END = 12 * MONTH, 16 * MONTH, 20 * MONTH

PAPER_CONFIG = PatchTSTConfig(
    n_channels=7,
    context_length=LOOKBACK,
    patch_len=16,
    stride=8,
    d_model=16,
    n_heads=4,
    n_layers=3,
    d_ff=128,
    dropout=0.3,
    head_dropout=0.0,
    revin=True,
    revin_affine=False,
    task="forecast",
    horizon=HORIZON,
)
LEARNING_RATE, BATCH_SIZE, SEED = 1e-4, 128, 2021
PAPER_MSE, TARGET_MSE = (0.370, 0.375), (0.37, 0.40)


def load_splits(data_dir: Path) -> dict[str, torch.Tensor]:
    """Scaled series per split; val/test start LOOKBACK rows early so every target row is used."""
    frame = pd.read_csv(data_dir / "ETTh1.csv")
    values = frame.drop(columns="date").to_numpy(np.float64)
    train = values[:TRAIN_END]
    mean, std = train.mean(axis=0), train.std(axis=0)  # sklearn StandardScaler: population std
    scaled = torch.from_numpy((values - mean) / std).float()
    return {
        "train": scaled[:TRAIN_END],
        "val": scaled[TRAIN_END - LOOKBACK : VAL_END],
        "test": scaled[VAL_END - LOOKBACK : TEST_END],
    }


def windows(series: torch.Tensor) -> torch.Tensor:
    """All (look-back + horizon) windows of a split as a view: [N, LOOKBACK + HORIZON, C]."""
    return series.unfold(0, LOOKBACK + HORIZON, 1).transpose(1, 2)


def train_epoch(
    *, model: PatchTST, optimizer: torch.optim.Optimizer, data: torch.Tensor, epoch: int
) -> float:
    model.train()
    order = torch.randperm(len(data))
    n_batches = len(data) // BATCH_SIZE  # official loader: drop_last=True
    losses = []
    for i in tqdm(range(n_batches), desc=f"epoch {epoch}", leave=False, unit="batch"):
        batch = data[order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]]
        x, y = batch[:, :LOOKBACK], batch[:, LOOKBACK:]
        optimizer.zero_grad(set_to_none=True)
        loss = F.mse_loss(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return float(np.mean(losses))


@torch.inference_mode()
def evaluate(
    *, model: PatchTST, data: torch.Tensor, batch_size: int, limit: int | None = None
) -> tuple[float, float]:
    """MSE and MAE over the first `limit` (default all) windows."""
    model.eval()
    data = data[:limit]
    squared = absolute = 0.0
    for start in range(0, len(data), batch_size):
        batch = data[start : start + batch_size]
        error = model(batch[:, :LOOKBACK]) - batch[:, LOOKBACK:]
        squared += error.double().square().sum().item()
        absolute += error.double().abs().sum().item()
    count = data[:, LOOKBACK:].numel()
    return squared / count, absolute / count


def learning_rate(epoch: int) -> float:
    """Official lradj='type3', applied after `epoch` (1-based) epochs have run."""
    return LEARNING_RATE if epoch < 3 else LEARNING_RATE * 0.9 ** (epoch - 3)


def run(
    *, data_dir: Path, max_epochs: int, patience: int, threads: int, eval_batch: int
) -> dict[str, float]:
    torch.set_num_threads(threads)
    tune_glibc_malloc()  # ~25% off a training step on this box: no page-fault churn
    torch.manual_seed(SEED)
    np.random.seed(SEED)
    started = time.perf_counter()
    splits = {name: windows(series) for name, series in load_splits(data_dir).items()}
    model = PatchTST(PAPER_CONFIG)
    optimizer = torch.optim.Adam(model.parameters(), lr=LEARNING_RATE)
    best_val, best_epoch, best_state = float("inf"), 0, None
    epochs = tqdm(range(1, max_epochs + 1), desc="ETTh1 PatchTST/42", unit="epoch")
    for epoch in epochs:
        train_loss = train_epoch(
            model=model, optimizer=optimizer, data=splits["train"], epoch=epoch
        )
        val_mse, _ = evaluate(model=model, data=splits["val"], batch_size=eval_batch)
        if val_mse < best_val:
            best_val, best_epoch = val_mse, epoch
            best_state = copy.deepcopy(model.state_dict())
        epochs.set_postfix(train=f"{train_loss:.4f}", val=f"{val_mse:.4f}", best=best_epoch)
        tqdm.write(
            f"epoch {epoch:3d}  lr {optimizer.param_groups[0]['lr']:.2e}  train {train_loss:.4f}"
            f"  val {val_mse:.4f}  {time.perf_counter() - started:6.0f} s"
        )
        if epoch - best_epoch >= patience:
            break
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(epoch)
    epochs.close()
    model.load_state_dict(best_state)
    test = splits["test"]
    mse, mae = evaluate(model=model, data=test, batch_size=eval_batch)
    # The official test loader has batch 128 and drop_last=True: its figure skips the tail windows.
    official_n = len(test) // BATCH_SIZE * BATCH_SIZE
    official_mse, official_mae = evaluate(
        model=model, data=test, batch_size=eval_batch, limit=official_n
    )
    return {
        "mse": mse,
        "mae": mae,
        "test_windows": len(test),
        "official_mse": official_mse,
        "official_mae": official_mae,
        "official_windows": official_n,
        "best_epoch": best_epoch,
        "epochs_run": epoch,
        "best_val_mse": best_val,
        "wall_seconds": time.perf_counter() - started,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="directory with ETTh1.csv")
    # The paper trains up to 100 epochs; under 'type3' the learning rate after 30 is 6% of the
    # start and the validation MSE moves in the fourth decimal (measured: 0.6804 at epoch 30,
    # best 0.6796 at 51), so 30 keeps the run within a CPU budget at no visible cost.
    parser.add_argument("--epochs", type=int, default=30, help="maximum epochs (paper: 100)")
    parser.add_argument("--patience", type=int, default=10, help="early-stopping patience")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--eval-batch", type=int, default=512, help="batch size for val/test")
    args = parser.parse_args()
    result = run(
        data_dir=args.data,
        max_epochs=args.epochs,
        patience=args.patience,
        threads=args.threads,
        eval_batch=args.eval_batch,
    )
    lo, hi = TARGET_MSE
    verdict = "PASS" if lo <= result["mse"] <= hi else "FAIL"
    print(
        f"ETTh1 multivariate, look-back {LOOKBACK}, horizon {HORIZON}\n"
        f"  test MSE {result['mse']:.4f}  MAE {result['mae']:.4f}"
        f"  ({result['test_windows']} windows)  target {lo}-{hi}: {verdict}"
        f"  (paper {PAPER_MSE[0]}-{PAPER_MSE[1]})\n"
        f"  official drop_last test protocol: MSE {result['official_mse']:.4f}"
        f"  MAE {result['official_mae']:.4f}  ({result['official_windows']} windows)\n"
        f"  best epoch {result['best_epoch']} of {result['epochs_run']}"
        f"  (val MSE {result['best_val_mse']:.4f}), threads {args.threads}\n"
        f"  wall time {result['wall_seconds']:.0f} s"
    )


if __name__ == "__main__":
    main()
