"""The ML API against real PostgreSQL and Redis: status, predictions, signals, generate-signal."""

import json
import time
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from celery import current_app
from django.contrib.auth import get_user_model
from django.core.cache import cache
from rest_framework.renderers import JSONRenderer
from rest_framework.test import APIClient

from signals_app import views
from signals_app.ml_status import MODEL_PROBE_KEY
from signals_app.models import CycleRun, Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.probes import forget_probes
from signals_app.serializers import PredictionSerializer, prediction_page, prediction_rows
from signals_app.views import page_cache_key

pytestmark = pytest.mark.django_db

T0 = datetime(2025, 1, 1, tzinfo=UTC)
QUARTER = timedelta(minutes=15)


@pytest.fixture(autouse=True)
def _nothing_cached(monkeypatch):
    """No test sees a status answer, probe or predictions page cached by an earlier one."""
    keys = [MODEL_PROBE_KEY, views.STATUS_CACHE_KEY]
    forget_probes()
    cache.delete_many(keys)
    monkeypatch.setattr(views, "PAGE_FRESH_FOR", 0)  # test_a_predictions_page_is_cached sets it
    yield
    forget_probes()
    cache.delete_many(keys)


@pytest.fixture
def staff_client() -> APIClient:
    user = get_user_model().objects.create_user("ops", password="pw", is_staff=True)
    client = APIClient()
    client.force_authenticate(user)
    yield client
    cache.delete(f"throttle_generate_signal_{user.pk}")


@pytest.fixture
def user_client() -> APIClient:
    user = get_user_model().objects.create_user("viewer", password="pw")
    client = APIClient()
    client.force_authenticate(user)
    return client


def make_market(symbol: str = "BTCUSDT", exchange: str = "bybit") -> Market:
    return Market.objects.create(
        exchange=exchange, symbol=symbol, ccxt_symbol=f"{symbol[:-4]}/{symbol[-4:]}"
    )


def make_version(name: str = "v1", *, active: bool = True) -> ModelVersion:
    return ModelVersion.objects.create(
        name=name, checkpoint_path=f"{name}.pt", fingerprint=name * 8, active=active,
        metrics={"val_accuracy": 0.55},
    )  # fmt: skip


def make_prediction(market: Market, version: ModelVersion, candle_time: datetime) -> Prediction:
    return Prediction.objects.create(
        market=market, candle_time=candle_time, model_version=version, close=100.0,
        returns={"1": 0.001}, probabilities={"1": [0.2, 0.3, 0.5]}, risk={"drawdown_1h": 0.01},
        direction="LONG", confidence=0.5, strength=0.3, latency_ms=12.5,
    )  # fmt: skip


def make_signal(prediction: Prediction, *, type_: str = "LONG", **fields) -> Signal:
    return Signal.objects.create(
        market=prediction.market, prediction=prediction, candle_time=prediction.candle_time,
        model_version=prediction.model_version, type=type_, confidence=0.6, strength=0.4,
        entry_price=Decimal("100"), expires_at=prediction.candle_time + 2 * QUARTER,
        status=fields.pop("status", Signal.Status.ACCEPTED), **fields,
    )  # fmt: skip


# ---------------------------------------------------------------- status


def test_status_without_workers_or_cycles_says_so():
    config = MLConfig.load()
    config.min_confidence = 0.5
    config.save()
    body = APIClient().get("/api/v1/ml/status").json()
    assert body["ml_enabled"] is True
    assert {q["name"]: q["workers"] for q in body["queues"]} == {
        "default": [], "gpu": [], "trading": []
    }  # fmt: skip
    assert body["model"]["loaded"] is False
    assert body["model"]["detail"] == "no worker consumes the gpu queue"
    assert body["last_cycle"] is None
    assert body["cache_hit_rate"] is None
    assert body["thresholds"]["min_confidence"] == 0.5
    assert body["thresholds"]["risk_tolerance"] == "MEDIUM"


def test_status_reports_the_last_cycle_and_the_cache_hit_rate():
    version = make_version()
    now = datetime.now(UTC)
    CycleRun.objects.create(started_at=now - timedelta(minutes=2), predictions=6, cache_hits=0)
    last = CycleRun.objects.create(
        started_at=now - timedelta(minutes=1), finished_at=now - timedelta(seconds=57),
        status=CycleRun.Status.OK, markets=9, predictions=3, cache_hits=6, signals_long=2,
        stage_seconds={"sync": 0.5, "predict": 2.1}, errors=[{"market": "x", "error": "e"}],
    )  # fmt: skip
    CycleRun.objects.create(started_at=now - timedelta(hours=2), predictions=100)  # outside 1 h
    body = APIClient().get("/api/v1/ml/status").json()
    cycle = body["last_cycle"]
    assert cycle["id"] == last.pk
    assert cycle["duration_seconds"] == pytest.approx(3.0)
    assert cycle["counts"]["markets"] == 9
    assert cycle["counts"]["signals_long"] == 2
    assert cycle["stage_seconds"] == {"sync": 0.5, "predict": 2.1}
    assert cycle["errors"] == 1
    assert body["cache_hit_rate"] == pytest.approx(6 / 15)
    assert body["model"]["version"] == version.name
    assert body["model"]["metrics"] == {"val_accuracy": 0.55}


def test_status_is_read_only(staff_client):
    anonymous = APIClient().post("/api/v1/ml/status", {})
    assert anonymous.status_code == 403
    assert anonymous.json()["detail"] == "Authentication credentials were not provided."
    response = staff_client.post("/api/v1/ml/status", {})
    assert response.status_code == 405
    assert response.json()["detail"] == 'Method "POST" not allowed.'


# ---------------------------------------------------------------- predictions


def _three_predictions():
    market = make_market()
    old, new = make_version("old", active=False), make_version("new")
    rows = [make_prediction(market, old, T0), make_prediction(market, old, T0 + QUARTER)]
    rows.append(make_prediction(market, new, T0 + 2 * QUARTER))
    make_prediction(make_market("ETHUSDT"), new, T0 + 3 * QUARTER)  # another symbol
    return rows, old, new


def test_predictions_newest_first_across_cursor_pages():
    rows, _, _ = _three_predictions()
    client = APIClient()
    first = client.get("/api/v1/ml/predictions/BTCUSDT", {"page_size": 2}).json()
    assert [p["id"] for p in first["results"]] == [rows[2].pk, rows[1].pk]
    assert first["results"][0]["symbol"] == "BTCUSDT"
    assert first["results"][0]["model_version"]["name"] == "new"
    assert first["results"][0]["probabilities"] == {"1": [0.2, 0.3, 0.5]}
    second = client.get(first["next"]).json()
    assert [p["id"] for p in second["results"]] == [rows[0].pk]
    assert second["next"] is None


def test_a_predictions_page_is_cached_for_two_seconds(monkeypatch):
    monkeypatch.setattr(views, "PAGE_FRESH_FOR", 2)
    market, version = make_market(), make_version()
    make_prediction(market, version, T0)
    client = APIClient()
    assert len(client.get("/api/v1/ml/predictions/BTCUSDT").json()["results"]) == 1
    make_prediction(market, version, T0 + QUARTER)
    assert len(client.get("/api/v1/ml/predictions/BTCUSDT").json()["results"]) == 1
    assert len(client.get("/api/v1/ml/predictions/BTCUSDT?page_size=9").json()["results"]) == 2
    time.sleep(views.PAGE_FRESH_FOR + 0.1)
    assert len(client.get("/api/v1/ml/predictions/BTCUSDT").json()["results"]) == 2
    for url in ("BTCUSDT", "BTCUSDT?page_size=9"):
        cache.delete(page_cache_key(f"http://testserver/api/v1/ml/predictions/{url}"))


def test_predictions_filter_by_time_range_and_model_version():
    rows, old, new = _three_predictions()
    url = "/api/v1/ml/predictions/BTCUSDT"
    client = APIClient()
    since = client.get(url, {"since": (T0 + QUARTER).isoformat()}).json()["results"]
    assert [p["id"] for p in since] == [rows[2].pk, rows[1].pk]
    until = client.get(url, {"until": (T0 + QUARTER).isoformat()}).json()["results"]
    assert [p["id"] for p in until] == [rows[1].pk, rows[0].pk]
    by_version = client.get(url, {"model_version": old.pk}).json()["results"]
    assert [p["id"] for p in by_version] == [rows[1].pk, rows[0].pk]


def test_predictions_unknown_symbol_is_404_with_its_name():
    make_market()
    response = APIClient().get("/api/v1/ml/predictions/NOPEUSDT")
    assert response.status_code == 404
    assert response.json() == {"detail": "unknown symbol 'NOPEUSDT'"}
    response = APIClient().get("/api/v1/ml/predictions/BTC%00USDT")  # found by the API fuzz test
    assert response.status_code == 404
    assert response.json()["detail"].startswith("unknown symbol 'BTC\\x00USDT'")


def test_predictions_bad_filters_are_400_with_messages():
    _three_predictions()
    client = APIClient()
    response = client.get("/api/v1/ml/predictions/BTCUSDT", {"model_version": 999999})
    assert response.status_code == 400
    assert "model_version" in response.json()
    response = client.get("/api/v1/ml/predictions/BTCUSDT", {"since": "yesterday"})
    assert response.status_code == 400
    assert "since" in response.json()


# ---------------------------------------------------------------- signals


def test_signals_filter_by_type_status_and_symbol():
    market, eth = make_market(), make_market("ETHUSDT")
    version = make_version()
    long_ = make_signal(make_prediction(market, version, T0))
    short = make_signal(make_prediction(market, version, T0 + QUARTER), type_="SHORT")
    rejected = make_signal(
        make_prediction(eth, version, T0), status=Signal.Status.REJECTED,
        rejection_reason="confidence 0.41 < min_confidence 0.45",
    )  # fmt: skip
    client = APIClient()

    def ids(**params):
        return [s["id"] for s in client.get("/api/v1/signals", params).json()["results"]]

    assert ids() == [rejected.pk, short.pk, long_.pk]
    assert ids(type="SHORT") == [short.pk]
    assert ids(status="REJECTED") == [rejected.pk]
    assert ids(symbol="BTCUSDT") == [short.pk, long_.pk]
    detail = client.get(f"/api/v1/signals/{rejected.pk}").json()
    assert detail["rejection_reason"] == "confidence 0.41 < min_confidence 0.45"
    assert client.get("/api/v1/signals", {"type": "UP"}).status_code == 400
    missing = client.get("/api/v1/signals/999999")
    assert missing.status_code == 404
    assert missing.json()["detail"]


def test_signals_cannot_be_written(staff_client):
    response = staff_client.post("/api/v1/signals", {})
    assert response.status_code == 405
    assert response.json()["detail"] == 'Method "POST" not allowed.'


# ---------------------------------------------------------------- generate-signal


def test_generate_signal_needs_a_staff_user(user_client):
    anonymous = APIClient().post("/api/v1/ml/generate-signal", {"symbol": "BTCUSDT"})
    assert anonymous.status_code == 403
    assert "credentials" in anonymous.json()["detail"]
    response = user_client.post("/api/v1/ml/generate-signal", {"symbol": "BTCUSDT"})
    assert response.status_code == 403
    assert "staff" in response.json()["detail"]


def test_generate_signal_names_an_unknown_exchange_or_symbol(staff_client):
    make_market()
    response = staff_client.post(
        "/api/v1/ml/generate-signal", {"symbol": "BTCUSDT", "exchange": "kraken"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"exchange": ["unknown exchange 'kraken' (known: bybit)"]}
    response = staff_client.post(
        "/api/v1/ml/generate-signal", {"symbol": "FOOUSDT", "exchange": "bybit"}, format="json"
    )
    assert response.status_code == 400
    assert response.json() == {"symbol": ["unknown symbol 'FOOUSDT' on bybit (known: BTCUSDT)"]}
    response = staff_client.post("/api/v1/ml/generate-signal", {}, format="json")
    assert response.status_code == 400
    assert set(response.json()) == {"symbol", "exchange"}


def test_generate_signal_without_a_checkpoint_is_503(staff_client, tmp_path):
    make_market()
    config = MLConfig.load()
    config.model_path = str(tmp_path / "missing.pt")
    config.save()
    response = staff_client.post(
        "/api/v1/ml/generate-signal", {"symbol": "BTCUSDT", "exchange": "bybit"}, format="json"
    )
    assert response.status_code == 503
    assert "no checkpoint at" in response.json()["detail"]


def test_generate_signal_answers_202_with_a_task_url_when_slow(staff_client, tmp_path, monkeypatch):
    """No gpu worker runs here, so the task waits in its queue: the client gets a URL to poll."""
    make_market()
    checkpoint = tmp_path / "model.pt"
    checkpoint.write_bytes(b"present; never loaded in this test")
    config = MLConfig.load()
    config.model_path = str(checkpoint)
    config.save()
    monkeypatch.setattr(views, "GENERATE_SIGNAL_WAIT", 0.3)
    current_app.control.purge()
    try:
        response = staff_client.post(
            "/api/v1/ml/generate-signal", {"symbol": "BTCUSDT", "exchange": "bybit"}, format="json"
        )
        assert response.status_code == 202
        body = response.json()
        assert body["state"] == "PENDING"
        assert body["url"].endswith(f"/api/v1/ml/tasks/{body['task_id']}")
        poll = staff_client.get(body["url"])
        assert poll.status_code == 202
        assert poll.json()["task_id"] == body["task_id"]
    finally:
        current_app.control.purge()


def test_unknown_task_is_404_with_a_message():
    response = APIClient().get("/api/v1/ml/tasks/not-a-task")
    assert response.status_code == 404
    assert "not-a-task" in response.json()["detail"]


def test_generate_signal_is_throttled(staff_client):
    make_market()
    codes = [
        staff_client.post("/api/v1/ml/generate-signal", {"symbol": "X"}, format="json").status_code
        for _ in range(31)
    ]
    assert codes[:30] == [400] * 30  # the configured rate is 30/min
    assert codes[30] == 429
    response = staff_client.post("/api/v1/ml/generate-signal", {"symbol": "X"}, format="json")
    assert "throttled" in response.json()["detail"].lower()


# ---------------------------------------------------------------- metrics


def test_metrics_over_a_window():
    market, version = make_market(), make_version()
    now = datetime.now(UTC)
    recent = [make_prediction(market, version, T0 + i * QUARTER) for i in range(4)]
    make_signal(recent[0], orders_attempted=2, orders_created=1, status=Signal.Status.EXECUTED)
    make_signal(recent[1], type_="SHORT", orders_attempted=2, orders_created=2)
    make_signal(recent[2], type_="NEUTRAL", status=Signal.Status.REJECTED)
    old = make_signal(recent[3], orders_attempted=5)
    Signal.objects.filter(pk=old.pk).update(created_at=now - timedelta(hours=3))
    client = APIClient()
    body = client.get("/api/v1/ml/metrics", {"window": "2h"}).json()
    assert body["signals_generated"] == 3
    assert body["distribution"]["LONG"] == {"count": 1, "share": pytest.approx(1 / 3)}
    assert body["distribution"]["NEUTRAL"]["count"] == 1
    assert body["orders_attempted"] == 4
    assert body["order_success_rate"] == pytest.approx(3 / 4)
    assert body["avg_generation_ms"] == pytest.approx(12.5)
    wide = client.get("/api/v1/ml/metrics", {"window": "1d"}).json()
    assert wide["signals_generated"] == 4
    assert wide["order_success_rate"] == pytest.approx(3 / 9)
    default = client.get("/api/v1/ml/metrics").json()
    assert default == {**wide, "since": default["since"], "until": default["until"]}


@pytest.mark.parametrize(
    ("window", "message"),
    [
        ("yesterday", "window must look like 15m, 1h, 24h or 7d"),
        ("0h", "window must look like 15m, 1h, 24h or 7d"),
        ("91d", "window 91d is longer than 90d"),
        ("1000000000d", "window 1000000000d is longer than 90d"),  # no timedelta overflow
    ],
)
def test_metrics_rejects_a_bad_window(window, message):
    response = APIClient().get("/api/v1/ml/metrics", {"window": window})
    assert response.status_code == 400
    assert response.json() == {"window": [message]}


def test_a_predictions_page_is_the_serializers_representation():
    """The page is built from values() rows by hand (signals_app.serializers.prediction_page):
    each row, as served, equals what PredictionSerializer makes of the model instance."""
    rows, _, _ = _three_predictions()
    Prediction.objects.filter(pk=rows[0].pk).update(
        close=1.234e-05, returns={"1": -1e-07, "4": 3.5e16}, risk={"ünïcode": 0.1 + 0.2}
    )
    predictions = Prediction.objects.filter(market__symbol="BTCUSDT").order_by("-candle_time")
    expected = PredictionSerializer(predictions, many=True).data
    markets = {m.pk: {"symbol": m.symbol, "exchange": m.exchange} for m in Market.objects.all()}
    assert prediction_page(list(prediction_rows(predictions)), markets) == expected
    served = APIClient().get("/api/v1/ml/predictions/BTCUSDT").json()["results"]
    assert served == json.loads(JSONRenderer().render(expected))


def test_predictions_of_a_symbol_on_two_exchanges_and_the_exchange_filter():
    version = make_version()
    bybit = make_prediction(make_market(), version, T0)
    binance = make_prediction(make_market(exchange="binance"), version, T0 + QUARTER)
    client = APIClient()
    both = client.get("/api/v1/ml/predictions/BTCUSDT").json()["results"]
    assert [(p["id"], p["exchange"]) for p in both] == [
        (binance.pk, "binance"), (bybit.pk, "bybit"),
    ]  # fmt: skip
    one = client.get("/api/v1/ml/predictions/BTCUSDT", {"exchange": "bybit"}).json()["results"]
    assert [p["id"] for p in one] == [bybit.pk]


@pytest.mark.parametrize(
    ("since", "status"),
    [
        ("0086-09-26T13:38:01-16:25", 200),  # an offset PostgreSQL refuses: sent as UTC
        ("0001-01-01T00:00:00+05:00", 400),  # before datetime.min once in UTC
    ],
)
def test_time_filters_accept_any_offset_python_accepts(since, status):
    """Found by the API fuzz test: both used to fail the query (500)."""
    _three_predictions()
    response = APIClient().get("/api/v1/ml/predictions/BTCUSDT", {"since": since})
    assert response.status_code == status, response.json()
    if status == 400:
        assert response.json() == {"since": [f"{since} is out of range"]}
    assert APIClient().get("/api/v1/signals", {"until": since}).status_code == status
