"""One checkpoint file = everything needed to rebuild the model and its inputs and to trust them.

Stored with torch.save as plain containers and tensors, and read back with weights_only=True, so
loading a checkpoint never executes pickled code.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import zipfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from mlcore.errors import CheckpointCorrupt, CheckpointMissing, FeatureSetMismatch
from mlcore.features import FEATURE_NAMES, FEATURE_SET
from mlcore.patchtst import PatchTST, PatchTSTConfig

FORMAT = "botai-patchtst"
FORMAT_VERSION = 1


@dataclass
class Checkpoint:
    version: str  # human-readable model version, shown in the API and stored with predictions
    created: str  # ISO UTC
    model_config: dict[str, Any]
    state_dict: dict[str, torch.Tensor]
    feature_set: str
    feature_names: list[str]  # the full ordered list the code computed at training time
    channels: list[str]  # the model's inputs, in input order
    timeframe: str
    scaler: dict[str, Any]  # Scaler.to_dict()
    label_bands: list[float]  # flat band per horizon (fraction, e.g. 0.0012)
    target_scales: dict[str, list[float]]  # "returns" / "risk": divisor the heads were trained on
    class_priors: list[list[float]]  # training class frequencies per horizon (down, flat, up)
    split: dict[str, Any]  # time boundaries of train / val / test and the data range
    train_config: dict[str, Any]
    metrics: dict[str, Any]
    data_fingerprint: str  # sha256 of the training candles
    extra: dict[str, Any] = field(default_factory=dict)

    def model(self) -> PatchTST:
        """The network with its trained weights, in eval mode on the CPU."""
        try:
            net = PatchTST(PatchTSTConfig.from_dict(self.model_config))
            net.load_state_dict(self.state_dict)
        except (ValueError, TypeError, RuntimeError, KeyError) as exc:
            raise CheckpointCorrupt(f"weights do not fit the stored model config: {exc}") from exc
        return net.eval()


def save_checkpoint(ckpt: Checkpoint, path: Path) -> Path:
    """Write atomically (temp file + rename) so a reader never sees half a checkpoint."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {"format": FORMAT, "format_version": FORMAT_VERSION, **asdict(ckpt)}
    payload["state_dict"] = {k: v.detach().cpu() for k, v in ckpt.state_dict.items()}
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    os.replace(tmp, path)
    return path


def load_checkpoint(path: Path, *, check_features: bool = True) -> Checkpoint:
    """Read a checkpoint; CheckpointMissing / CheckpointCorrupt / FeatureSetMismatch on failure."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointMissing(f"no checkpoint at {path}")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    # A truncated file fails inside torch's zip reader with OSError (EINVAL), others as below.
    except (
        pickle.UnpicklingError, RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError,
    ) as exc:  # fmt: skip
        raise CheckpointCorrupt(f"{path} is not a readable checkpoint: {exc}") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointCorrupt(f"{path} is not a {FORMAT} checkpoint")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointCorrupt(
            f"{path} has format version {payload.get('format_version')}, this code reads "
            f"{FORMAT_VERSION}"
        )
    names = {f.name for f in fields(Checkpoint)}
    missing = {f.name for f in fields(Checkpoint) if f.name != "extra"} - set(payload)
    if missing:
        raise CheckpointCorrupt(f"{path} lacks {sorted(missing)}")
    ckpt = Checkpoint(**{k: v for k, v in payload.items() if k in names})
    if check_features:
        check_feature_set(ckpt)
    return ckpt


def check_feature_set(ckpt: Checkpoint) -> None:
    """The code must compute exactly the features the checkpoint was trained on."""
    if ckpt.feature_set != FEATURE_SET:
        raise FeatureSetMismatch(
            f"checkpoint uses feature set {ckpt.feature_set!r}, this code computes {FEATURE_SET!r}"
        )
    if tuple(ckpt.feature_names) != FEATURE_NAMES:
        raise FeatureSetMismatch(
            f"feature set {FEATURE_SET!r} has the same name but different features than the "
            "checkpoint: the feature set was changed without a new version name"
        )


def candles_fingerprint(frames: dict[str, pd.DataFrame]) -> str:
    """sha256 over symbols (sorted), candle times and OHLCV values."""
    digest = hashlib.sha256()
    for symbol in sorted(frames):
        df = frames[symbol]
        digest.update(symbol.encode())
        digest.update(df.index.as_unit("ns").asi8.tobytes())
        digest.update(df[["open", "high", "low", "close", "volume"]].to_numpy("float64").tobytes())
    return digest.hexdigest()


def file_fingerprint(path: Path) -> str:
    """sha256 of the checkpoint file: identifies the exact weights (cache keys, predictions)."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
