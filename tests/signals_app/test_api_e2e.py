"""The ML API through a real gpu worker: status sees the worker and its loaded model, and
generate-signal returns a real prediction's signal (directly, or through the task URL)."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.test import APIClient

from signals_app import views
from signals_app.ml_status import MODEL_PROBE_KEY
from signals_app.models import Candle, Prediction, Signal
from signals_app.probes import forget_probes
from tests.signals_app.test_cycle import cycle  # noqa: F401 - a fixture

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture
def staff_client():
    user = get_user_model().objects.create_user("ops", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    keys = [MODEL_PROBE_KEY, views.STATUS_CACHE_KEY, f"throttle_generate_signal_{user.pk}"]
    forget_probes()
    cache.delete_many(keys)
    yield client
    forget_probes()
    cache.delete_many(keys)


def test_status_and_generate_signal_through_a_gpu_worker(cycle, staff_client):  # noqa: F811
    status = staff_client.get("/api/v1/ml/status").json()
    assert {q["name"]: q["workers"] for q in status["queues"]}["gpu"] == [cycle.name]
    assert status["model"]["loaded"] is True, status["model"]
    assert status["model"]["device"] == "cpu"
    assert status["model"]["checkpoint_exists"] is True

    response = staff_client.post(
        "/api/v1/ml/generate-signal", {"symbol": "BTCUSDT", "exchange": "bybit"}, format="json"
    )
    if response.status_code == 202:  # the replay sync to the wall clock can take a while
        url, deadline = response.json()["url"], time.monotonic() + 120
        while response.status_code == 202 and time.monotonic() < deadline:
            time.sleep(1)
            response = staff_client.get(url)
    assert response.status_code == 200, response.json()
    body = response.json()
    prediction = Prediction.objects.get(pk=body["prediction"]["id"])
    newest = Candle.objects.filter(market__symbol="BTCUSDT").order_by("-open_time").first()
    assert prediction.candle_time == newest.open_time
    assert body["prediction"]["symbol"] == "BTCUSDT"
    assert body["signal"]["id"] == Signal.objects.get(prediction=prediction).pk
    assert body["signal"]["type"] in {"LONG", "SHORT", "NEUTRAL"}
    # The same candle again: the stored prediction is reused, answered within the wait.
    again = staff_client.post(
        "/api/v1/ml/generate-signal", {"symbol": "BTCUSDT", "exchange": "bybit"}, format="json"
    )
    assert again.status_code == 200, again.json()
    assert again.json()["prediction"]["id"] == prediction.pk
    assert again.json()["cached"] is True
