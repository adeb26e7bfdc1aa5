"""Item 6: the model file the gpu worker serves goes bad and comes back, with no restart: a
truncated file, a checkpoint trained on another feature set, no file at all, then the good file
again. Each cycle (real candles replayed, a real gpu worker) records why it could not predict,
the status API and generate-signal (503 with the reason) say so, the worker stays up, and the
good file is served again as soon as it is back."""

import shutil
from datetime import UTC, datetime, timedelta

import pytest
import torch
from django.contrib.auth import get_user_model
from django.core.cache import cache
from django.core.management import call_command
from rest_framework.test import APIClient

from mlcore.checkpoint import file_fingerprint
from signals_app.ml_status import MODEL_PROBE_KEY
from signals_app.models import CycleRun, Market, MLConfig, Prediction
from signals_app.probes import QUEUE_WORKERS_KEY
from signals_app.tasks import run_cycle
from signals_app.views import STATUS_CACHE_KEY
from tests.reliability.conftest import wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
T0 = datetime(2025, 6, 1, tzinfo=UTC)  # candles imported up to here, replayed after


@pytest.fixture
def served(shared_data, tiny_checkpoint, settings, tmp_path, start_worker):
    """The good checkpoint copied to the path the gpu worker serves; BTC in the cycle, ETH for
    generate-signal (so its on-demand sync does not move the cycle's market)."""
    ohlcv = shared_data / "ohlcv"
    call_command("import_candles", str(ohlcv), "--until", T0.isoformat())
    Market.objects.filter(symbol="BTCUSDT").update(enabled=True)
    path = tmp_path / "served.pt"
    shutil.copy(tiny_checkpoint, path)
    settings.MODEL_PATH = path
    settings.MARKET_DATA_SOURCE, settings.REPLAY_DIR = "replay", str(ohlcv)
    MLConfig.load()
    worker = start_worker(
        "gpu", MODEL_PATH=path, ML_TORCH_THREADS=1, MARKET_DATA_SOURCE="replay", REPLAY_DIR=ohlcv
    )
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    client = APIClient()
    client.force_authenticate(staff)
    return path, worker, client


def _cycle(minute: int) -> CycleRun:
    result = run_cycle.apply(kwargs={"now": (T0 + timedelta(minutes=minute)).isoformat()}).get()
    return wait_for(
        lambda: CycleRun.objects.filter(pk=result["cycle_run"], finished_at__isnull=False).first(),
        timeout=90, what="the cycle finished",
    )  # fmt: skip


def _status(client) -> dict:
    cache.delete_many([STATUS_CACHE_KEY, MODEL_PROBE_KEY, QUEUE_WORKERS_KEY])
    response = client.get("/api/v1/ml/status")
    assert response.status_code == 200
    return response.json()["model"]


def _generate(client):
    return client.post(
        "/api/v1/ml/generate-signal", {"symbol": "ETHUSDT", "exchange": "bybit"}, format="json"
    )


def _other_feature_set(good, path) -> None:
    payload = torch.load(good, map_location="cpu", weights_only=True)
    payload["feature_set"] = "botai-ta-v0"
    tmp = path.with_suffix(".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


def test_bad_model_files_are_reported_and_a_good_one_is_picked_up(served, tiny_checkpoint, figures):
    path, worker, client = served
    good = _cycle(16)
    assert (good.status, good.predictions) == ("OK", 1)
    assert _status(client)["loaded"] is True
    pid = worker.process.pid

    truncated = path.read_bytes()[: path.stat().st_size // 2]
    cases = [
        ("truncated", lambda: path.write_bytes(truncated), "FAILED", "CheckpointCorrupt"),
        ("another feature set", lambda: _other_feature_set(tiny_checkpoint, path), "FAILED",
         "FeatureSetMismatch: checkpoint uses feature set 'botai-ta-v0'"),
        ("missing", path.unlink, "SKIPPED", f"no checkpoint at {path}"),
    ]  # fmt: skip
    minute = 16
    for name, damage, status, reason in cases:
        damage()
        minute += 15
        run = _cycle(minute)
        assert (run.status, run.predictions) == (status, 0), name
        assert reason in run.reason, (name, run.reason)
        assert worker.process.poll() is None, f"the gpu worker died on a {name} model"
        model = _status(client)
        assert model["loaded"] is False, name
        assert reason.split(":")[0] in model["detail"], (name, model)
        response = _generate(client)
        assert response.status_code == 503, (name, response.json())
        assert reason.split(":")[0] in response.json()["detail"], (name, response.json())

    shutil.copy(tiny_checkpoint, path)  # the good file is back
    minute += 15
    back = _cycle(minute)
    assert (back.status, back.predictions, back.reason) == ("OK", 1, "")
    assert worker.process.pid == pid  # never restarted
    assert worker.process.poll() is None
    model = _status(client)
    assert (model["loaded"], model["fingerprint"]) == (True, file_fingerprint(tiny_checkpoint))
    response = _generate(client)
    assert response.status_code == 200, response.json()
    assert response.json()["prediction"]["symbol"] == "ETHUSDT"
    assert Prediction.objects.filter(market__symbol="BTCUSDT").count() == 2
    figures.append(
        {"fault": "model file truncated / other feature set / missing, then restored",
         "cases": len(cases) + 1, "worker_restarts": 0, "api_503s": len(cases),
         "picked_up_without_restart": True}
    )  # fmt: skip
