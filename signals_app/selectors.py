"""Read-side queries of signals_app."""

from django.conf import settings


def ml_status_checks() -> list[dict]:
    """The model's part of the system status: is there a checkpoint to serve."""
    path = settings.MODEL_PATH
    if not path.exists():
        return [
            {
                "name": "model",
                "ok": False,
                "detail": f"no checkpoint at {path}: run manage.py train_model (make up does it)",
            }
        ]
    return [{"name": "model", "ok": True, "detail": str(path)}]
