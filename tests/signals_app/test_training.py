"""train_model / ensure_model: real (tiny) training, registered as the active ModelVersion."""

import pytest
from django.core.management import CommandError, call_command

from signals_app.models import ModelVersion

pytestmark = [pytest.mark.django_db, pytest.mark.slow]


def test_ensure_model_trains_on_synthetic_candles_when_the_database_has_too_few(
    settings, tmp_path, capsys
):
    settings.MODEL_PATH = tmp_path / "default.pt"
    call_command("ensure_model")
    out = capsys.readouterr().out
    assert f"no model at {tmp_path / 'default.pt'}: training a small one (preset 'tiny')" in out
    assert "synthetic candles" in out
    assert (tmp_path / "default.pt").is_file()
    version = ModelVersion.objects.get(active=True)
    assert version.checkpoint_path == str(tmp_path / "default.pt")
    assert version.metrics["data"].startswith("synthetic candles")
    assert set(version.metrics["held_out"]["directions"]) == {"h1", "h4", "h16", "h48"}
    call_command("ensure_model")
    assert capsys.readouterr().out.strip() == f"model: {tmp_path / 'default.pt'}"
    assert ModelVersion.objects.count() == 1


def test_train_model_on_stored_real_candles(shared_data, settings, tmp_path, capsys):
    settings.MODEL_PATH = tmp_path / "default.pt"
    call_command(
        "import_candles", str(shared_data / "ohlcv" / "BTC_USDT-15m.csv"), "--until", "2025-03-01"
    )
    call_command("train_model", "--threads", "1")
    out = capsys.readouterr().out
    assert "training preset 'tiny' on 5664 stored 15m candles of BTCUSDT" in out
    assert "it is the active model" in out
    active = ModelVersion.objects.get(active=True)
    # Written elsewhere: registered, but the workers keep serving the configured checkpoint.
    call_command("train_model", "--data", "database", "--out", str(tmp_path / "other.pt"))
    assert "registered, not active" in capsys.readouterr().out
    assert ModelVersion.objects.get(active=True) == active
    assert ModelVersion.objects.count() == 2


def test_train_model_on_the_database_without_enough_candles_says_so(settings, tmp_path):
    settings.MODEL_PATH = tmp_path / "default.pt"
    with pytest.raises(CommandError, match="no market has enough stored 15m candles"):
        call_command("train_model", "--data", "database")
