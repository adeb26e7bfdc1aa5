"""Where Django settings become mlcore arguments, and where each worker process keeps its model.

The Predictor is loaded lazily, on the first batch a process handles (after the prefork/solo
worker has started, never in a parent that forks), and reloaded only when the checkpoint file or
the device settings change. torch is imported here and only inside functions, so importing this
module costs nothing in the web process or a default-queue worker.
"""

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.utils import timezone

from mlcore.errors import CheckpointMissing
from signals_app.models import MLConfig, ModelVersion

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PredictorSettings:
    path: Path
    device: str
    use_compile: bool
    threads: int  # 0 = leave torch's default


def checkpoint_path(config: MLConfig) -> Path:
    """MLConfig.model_path when set (relative to the project), else the MODEL_PATH setting."""
    if not config.model_path:
        return Path(settings.MODEL_PATH)
    path = Path(config.model_path)
    return path if path.is_absolute() else Path(settings.BASE_DIR) / path


def predictor_settings(config: MLConfig) -> PredictorSettings:
    # ML_DEVICE in the environment pins a host's device (e.g. a cpu-only worker host); "auto"
    # defers to the admin-edited MLConfig.device.
    device = settings.ML_DEVICE if settings.ML_DEVICE != "auto" else config.device
    return PredictorSettings(
        path=checkpoint_path(config),
        device=device,
        use_compile=config.use_compile,
        threads=settings.ML_TORCH_THREADS,
    )


@dataclass
class _Loaded:
    key: tuple
    predictor: object  # mlcore.predictor.Predictor
    model_version_id: int | None = None


_loaded: _Loaded | None = None


def _key(config: PredictorSettings) -> tuple:
    try:
        stat = config.path.stat()
    except FileNotFoundError:
        raise CheckpointMissing(f"no checkpoint at {config.path}") from None
    # A file put in place (copied over, or renamed in with its mtime kept) changes one of these:
    # the inode on a rename, the change time on any write or rename (it cannot be set back).
    file_version = (stat.st_ino, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_size)
    return (str(config.path), file_version, config.device, config.use_compile)


def loaded_predictor(config: MLConfig):
    """This process's Predictor for the configured checkpoint; ModelError when it cannot serve."""
    global _loaded
    wanted = predictor_settings(config)
    key = _key(wanted)
    if _loaded is not None and _loaded.key == key:
        return _loaded.predictor
    import torch

    from mlcore.predictor import Predictor

    if wanted.threads:
        torch.set_num_threads(wanted.threads)
    predictor = Predictor.load(wanted.path, device=wanted.device, use_compile=wanted.use_compile)
    logger.info(
        "pid %s loaded model %s (%s) on %s, %s torch threads",
        os.getpid(), predictor.version, predictor.fingerprint[:12], predictor.device,
        torch.get_num_threads(),
    )  # fmt: skip
    _loaded = _Loaded(key=key, predictor=predictor)
    return predictor


def serving_model_version(predictor) -> ModelVersion:
    """The ModelVersion row of the loaded checkpoint, registered and made active on first use:
    the model a gpu worker serves is the active one."""
    if _loaded is not None and _loaded.predictor is predictor and _loaded.model_version_id:
        version = ModelVersion.objects.filter(pk=_loaded.model_version_id, active=True).first()
        if version is not None:
            return version
    version = model_version_register(
        name=predictor.version,
        checkpoint_path=str(_loaded.key[0]) if _loaded else "",
        fingerprint=predictor.fingerprint,
        feature_set=predictor.feature_set,
        metrics=predictor.checkpoint.metrics,
        activate=True,
    )
    if _loaded is not None and _loaded.predictor is predictor:
        _loaded.model_version_id = version.pk
    return version


def model_version_register(
    *,
    name: str,
    checkpoint_path: str,
    fingerprint: str,
    feature_set: str,
    metrics: dict,
    activate: bool,
) -> ModelVersion:
    """Get or create the version by fingerprint; with activate, make it the only active one."""
    with transaction.atomic():
        version, _ = ModelVersion.objects.get_or_create(
            fingerprint=fingerprint,
            defaults={
                "name": name,
                "checkpoint_path": checkpoint_path,
                "feature_set": feature_set,
                "metrics": _json_safe(metrics),
            },
        )
        if activate and not version.active:
            ModelVersion.objects.filter(active=True).update(active=False)
            version.active = True
            version.activated_at = timezone.now()
            version.checkpoint_path = checkpoint_path or version.checkpoint_path
            version.save(update_fields=["active", "activated_at", "checkpoint_path"])
    return version


def _json_safe(value):
    """Checkpoint metrics may hold numpy scalars or tuples; the JSON column wants plain types."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    if hasattr(value, "item"):
        return value.item()
    return value


def loaded_status() -> dict:
    """What this process serves right now (the model_status task's answer)."""
    if _loaded is None:
        return {"loaded": False, "pid": os.getpid()}
    import torch

    predictor = _loaded.predictor
    return {
        "loaded": True,
        "pid": os.getpid(),
        "version": predictor.version,
        "fingerprint": predictor.fingerprint,
        "path": _loaded.key[0],
        "device": str(predictor.device),
        "feature_set": predictor.feature_set,
        "timeframe": predictor.timeframe,
        "context_length": predictor.context_length,
        "min_history": predictor.min_history,
        "torch_threads": torch.get_num_threads(),
    }
