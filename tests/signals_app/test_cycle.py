"""The per-minute cycle end to end: real candles from ../shared imported and replayed, a real tiny
checkpoint, run_cycle dispatching to a real `gpu` Celery worker through Redis, PostgreSQL rows."""

import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest
from django.core.management import call_command

from signals_app.models import Candle, CycleRun, Market, MLConfig, ModelVersion, Prediction, Signal
from signals_app.selectors import ml_status_checks, signal_metrics
from signals_app.tasks import generate_signal, model_status, predict_batch, run_cycle
from tests.conftest import queued_tasks

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
T0 = datetime(2025, 6, 1, tzinfo=UTC)  # candles are imported up to here, replayed after
PROCESS_SIGNALS = "trading_app.tasks.process_signals"


@pytest.fixture
def cycle(shared_data, tiny_checkpoint, settings, start_worker):
    """BTC and ETH imported up to T0 and enabled, replay from ../shared, one gpu worker."""
    ohlcv = shared_data / "ohlcv"
    call_command("import_candles", str(ohlcv), "--until", T0.isoformat())
    Market.objects.update(enabled=True)
    settings.MODEL_PATH = tiny_checkpoint
    settings.MARKET_DATA_SOURCE, settings.REPLAY_DIR = "replay", str(ohlcv)
    config = MLConfig.load()
    config.min_confidence = config.min_signal_strength = 0.0  # every LONG/SHORT goes to trading
    config.save()
    worker = start_worker(
        "gpu", MODEL_PATH=tiny_checkpoint, ML_TORCH_THREADS=1,
        MARKET_DATA_SOURCE="replay", REPLAY_DIR=ohlcv,
    )  # fmt: skip
    return worker


def _run(now: datetime, *, wait: bool = True) -> CycleRun:
    result = run_cycle.apply(kwargs={"now": now.isoformat()}).get()
    return _finished(result["cycle_run"]) if wait else CycleRun.objects.get(pk=result["cycle_run"])


def _finished(run_id: int, timeout: float = 90) -> CycleRun:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = CycleRun.objects.get(pk=run_id)
        if run.finished_at is not None:
            return run
        time.sleep(0.2)
    raise TimeoutError(f"cycle {run_id} did not finish: {CycleRun.objects.get(pk=run_id).__dict__}")


def _recorded_close(shared_data, symbol: str, at: datetime) -> float:
    frame = pd.read_csv(shared_data / "ohlcv" / f"{symbol}-15m.csv")
    return float(frame.loc[frame["timestamp"] == int(at.timestamp() * 1000), "close"].iloc[0])


def test_a_cycle_predicts_real_candles_on_a_real_gpu_worker(cycle, shared_data, tiny_checkpoint):
    run = _run(T0 + timedelta(minutes=16))  # the 00:00 candle has closed, 00:15 is open
    assert (run.status, run.reason, run.errors) == ("OK", "", [])
    assert (run.markets, run.markets_new, run.batches, run.predictions) == (2, 2, 1, 2)
    assert run.candles_stored == 2
    assert run.device == "cpu"
    assert run.signals_long + run.signals_short + run.signals_neutral == 2
    assert {
        "sync",
        "select",
        "dispatch",
        "model",
        "candles",
        "inference",
        "persist",
        "signals",
    } <= set(run.stage_seconds)

    from mlcore.checkpoint import file_fingerprint

    version = ModelVersion.objects.get(active=True)
    assert version.fingerprint == file_fingerprint(tiny_checkpoint)
    for prediction in Prediction.objects.select_related("market"):
        assert prediction.candle_time == T0
        assert prediction.model_version == version
        symbol = prediction.market.ccxt_symbol.replace("/", "_")
        assert prediction.close == _recorded_close(shared_data, symbol, T0)
        assert sum(prediction.probabilities["4"]) == pytest.approx(1.0, abs=1e-5)
        assert float(prediction.signal.entry_price) == pytest.approx(prediction.close)

    accepted = list(Signal.objects.filter(status="ACCEPTED").values_list("pk", flat=True))
    assert accepted == list(Signal.objects.exclude(type="NEUTRAL").values_list("pk", flat=True))
    assert queued_tasks("trading") == ([(PROCESS_SIGNALS, [sorted(accepted)])] if accepted else [])
    assert run.signals_accepted == len(accepted)
    assert not Signal.objects.filter(status="ACCEPTED", handed_at__isnull=True).exists()

    # The same candle a few minutes later: a cache hit, no batch, no inference.
    hit = _run(T0 + timedelta(minutes=20))
    assert (hit.status, hit.batches, hit.cache_hits, hit.predictions) == ("OK", 0, 2, 0)
    assert hit.reason.startswith("cache hit")
    assert Prediction.objects.count() == 2

    # The next candle: new predictions; the previous open signals are superseded.
    nxt = _run(T0 + timedelta(minutes=31))
    assert (nxt.status, nxt.predictions) == ("OK", 2)
    assert set(Prediction.objects.values_list("candle_time", flat=True)) == {
        T0,
        T0 + timedelta(minutes=15),
    }
    assert not Signal.objects.filter(candle_time=T0, status__in=["NEW", "ACCEPTED"]).exists()

    checks = {c["name"]: c for c in ml_status_checks()}
    assert checks["model"]["ok"]
    assert version.name in checks["model"]["detail"]
    assert "last batch ran on cpu" in checks["model"]["detail"]
    metrics = signal_metrics()
    assert metrics["signals_generated"] == 4
    assert sum(d["count"] for d in metrics["distribution"].values()) == 4
    assert metrics["avg_generation_ms"] > 0


def test_double_fire_and_redelivery_add_nothing(cycle):
    now = T0 + timedelta(minutes=16)
    # Two beats for the same minute, sent before the worker handles either batch.
    first, second = _run(now, wait=False), _run(now, wait=False)
    first, second = _finished(first.pk), _finished(second.pk)
    assert Prediction.objects.count() == 2
    assert Signal.objects.count() == 2
    assert first.predictions + second.predictions == 2
    assert first.cache_hits + second.cache_hits == 2
    handed = queued_tasks("trading")
    assert len(handed) <= 1  # accepted signals go to trading once
    # A redelivered batch (the worker died after the work, before the ack).
    ids = list(Market.objects.values_list("pk", flat=True))
    report = predict_batch.delay(ids, T0.isoformat()).get(timeout=60)
    assert (report["predicted"], report["cache_hits"], report["accepted_ids"]) == (0, 2, [])
    assert (Prediction.objects.count(), Signal.objects.count()) == (2, 2)
    assert queued_tasks("trading") == handed


def test_a_failing_market_is_recorded_and_the_others_are_predicted(cycle):
    eth = Market.objects.get(symbol="ETHUSDT")
    keep = eth.candles.order_by("-open_time").values_list("pk", flat=True)[:50]
    eth.candles.exclude(pk__in=list(keep)).delete()  # too short a history for the model
    Market.objects.create(exchange="bybit", symbol="FOOUSDT", ccxt_symbol="FOO/USDT")
    run = _run(T0 + timedelta(minutes=16))
    assert run.status == "PARTIAL"
    errors = {(e["market"], e["stage"]): e["error"] for e in run.errors}
    assert "no replay file" in errors[("bybit:FOOUSDT", "sync")]
    assert "the model needs" in errors[("bybit:ETHUSDT", "predict")]
    assert list(Prediction.objects.values_list("market__symbol", flat=True)) == ["BTCUSDT"]
    assert run.predictions == 1


def test_no_model_or_a_corrupt_model_is_recorded_and_nothing_crashes(
    shared_data, settings, start_worker, tmp_path
):
    call_command("import_candles", str(shared_data / "ohlcv"), "--until", T0.isoformat())
    Market.objects.update(enabled=True)
    settings.MARKET_DATA_SOURCE = "replay"
    settings.REPLAY_DIR = str(shared_data / "ohlcv")
    settings.MODEL_PATH = tmp_path / "missing.pt"
    run = _run(T0 + timedelta(minutes=16))
    assert (run.status, run.batches) == ("SKIPPED", 0)
    assert run.reason.startswith(f"no checkpoint at {tmp_path / 'missing.pt'}")

    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint" * 100)
    settings.MODEL_PATH = corrupt
    worker = start_worker("gpu", MODEL_PATH=corrupt, ML_TORCH_THREADS=1)
    for minute in (31, 46):  # twice: the worker stays up and fails the same clean way
        run = _run(T0 + timedelta(minutes=minute))
        assert run.status == "FAILED"
        assert run.reason.startswith("CheckpointCorrupt")
        assert worker.process.poll() is None
    assert not Prediction.objects.exists()
    status = model_status.delay().get(timeout=30)
    assert status["loaded"] is False
    assert status["error"].startswith("CheckpointCorrupt")


def test_generate_signal_and_model_status_on_the_gpu_worker(cycle, tiny_checkpoint):
    status = model_status.delay().get(timeout=60)
    assert status["loaded"] is True
    assert (status["device"], status["path"]) == ("cpu", str(tiny_checkpoint))
    assert status["torch_threads"] == 1
    # The worker runs on the wall clock: the replay fills BTC up to the newest closed candle.
    answer = generate_signal.delay("BTCUSDT", "bybit").get(timeout=120)
    assert "error" not in answer, answer
    prediction = Prediction.objects.get(pk=answer["prediction"]["id"])
    newest = Candle.objects.filter(market__symbol="BTCUSDT").order_by("-open_time").first()
    assert prediction.candle_time == newest.open_time
    assert datetime.now(UTC) - newest.open_time < timedelta(minutes=30)
    assert answer["signal"]["prediction"] == prediction.pk
    again = generate_signal.delay("BTCUSDT", "bybit").get(timeout=60)
    assert again["prediction"]["id"] == prediction.pk
    assert generate_signal.delay("NOPEUSDT", "bybit").get(timeout=30) == {
        "error": "unknown market bybit:NOPEUSDT"
    }
