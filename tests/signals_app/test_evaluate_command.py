"""`manage.py evaluate_model` on stored real candles after the tiny model's training data."""

import json
from datetime import UTC, datetime

import pytest
from django.core.management import CommandError, call_command

from signals_app.services.candles import candles_import

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_evaluate_model_scores_the_model_and_the_baselines(
    shared_data, tiny_checkpoint, tmp_path, capsys
):
    candles_import(
        paths=[shared_data / "ohlcv" / "BTC_USDT-15m.csv"],
        exchange="binance",
        until=datetime(2025, 6, 1, tzinfo=UTC),
    )
    call_command(
        "evaluate_model",
        checkpoint=tiny_checkpoint,
        start="2025-05-10",
        out_dir=tmp_path,
    )
    out = capsys.readouterr().out
    assert "logistic" in out
    report = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert set(report["pnl_h4"]) >= {"model", "always_flat", "buy_and_hold", "logistic_regression"}
    assert next(tmp_path.glob("*.png")).stat().st_size > 10_000


def test_evaluate_model_without_stored_candles_says_so(tiny_checkpoint, tmp_path):
    with pytest.raises(CommandError, match="no market has enough stored 15m candles"):
        call_command("evaluate_model", checkpoint=tiny_checkpoint, out_dir=tmp_path)


def test_evaluate_model_with_a_missing_checkpoint_names_it(tmp_path):
    with pytest.raises(CommandError, match="missing.pt"):
        call_command("evaluate_model", checkpoint=tmp_path / "missing.pt", out_dir=tmp_path)
