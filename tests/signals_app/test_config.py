"""load_config: the seed's system.yaml `ml:` block, errors with key and line; the fixture."""

from pathlib import Path

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from signals_app.models import Market, MLConfig

pytestmark = pytest.mark.django_db
SAMPLE = Path(settings.BASE_DIR) / "fixtures" / "system.yaml"
SEED_SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
                "DOTUSDT", "LINKUSDT"]  # fmt: skip


def _yaml(tmp_path, text: str) -> str:
    path = tmp_path / "system.yaml"
    path.write_text(text)
    return str(path)


def test_the_sample_system_yaml_loads_every_key(capsys):
    Market.objects.create(exchange="bybit", symbol="PEPEUSDT", ccxt_symbol="PEPE/USDT")
    call_command("load_config", str(SAMPLE))
    config = MLConfig.load()
    assert (config.enabled, config.interval_seconds, config.batch_size) == (True, 60, 10)
    assert (config.parallel_workers, config.device, config.use_compile) == (4, "cuda", False)
    assert (config.min_confidence, config.min_signal_strength) == (0.45, 0.2)
    assert (config.risk_tolerance, config.model_path) == ("MEDIUM", "")
    enabled = Market.objects.filter(enabled=True)
    assert sorted(enabled.values_list("symbol", flat=True)) == sorted(SEED_SYMBOLS)
    assert set(enabled.values_list("exchange", "timeframe")) == {("bybit", "15m")}
    assert Market.objects.get(symbol="DOGEUSDT").ccxt_symbol == "DOGE/USDT"
    assert not Market.objects.get(symbol="PEPEUSDT").enabled
    assert "markets disabled: bybit:PEPEUSDT" in capsys.readouterr().out


def test_model_path_is_read_relative_to_the_project(tmp_path, settings):
    from signals_app.predictor import checkpoint_path

    call_command("load_config", _yaml(tmp_path, "ml:\n  model:\n    path: models/seed.pt\n"))
    assert checkpoint_path(MLConfig.load()) == settings.BASE_DIR / "models" / "seed.pt"


def test_other_sections_are_reported_not_loaded(tmp_path, capsys):
    path = _yaml(tmp_path, "logging:\n  level: INFO\nml:\n  batch_size: 3\n")
    call_command("load_config", path)
    assert MLConfig.load().batch_size == 3
    assert "not handled by load_config: logging" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("ml:\n  enabled: true\n  batch_sise: 5\n", r"line 3: unknown key ml\.batch_sise"),
        (
            "ml:\n  model:\n    device: gpu\n",
            r"line 3: ml\.model\.device is 'gpu', expected one of",
        ),
        ("ml:\n  min_confidence: 1.5\n", r"line 2: ml\.min_confidence is 1\.5, must be <= 1"),
        ("ml:\n  batch_size: ten\n", r"line 2: ml\.batch_size must be a whole number"),
        ("ml:\n  enabled: 1\n", r"line 2: ml\.enabled must be true/false"),
        (
            "ml:\n  signal_generation:\n    every: 60\n",
            r"line 3: unknown key ml\.signal_generation\.every",
        ),
        ("ml:\n  risk_tolerance: EXTREME\n", r"line 2: ml\.risk_tolerance is 'EXTREME'"),
        (
            "ml:\n  symbols: [BTCUSDT, FOO]\n",
            r"ml\.symbols: cannot tell the quote currency of 'FOO'",
        ),
        ("trading:\n  x: 1\n", r"no `ml:` section"),
        ("ml: [1, 2\n", r"not valid YAML"),
    ],
)
def test_errors_name_the_key_and_line_and_change_nothing(tmp_path, text, message):
    before = MLConfig.load()
    with pytest.raises(CommandError, match=message):
        call_command("load_config", _yaml(tmp_path, text))
    after = MLConfig.load()
    assert (after.enabled, after.batch_size, after.device) == (
        before.enabled, before.batch_size, before.device,
    )  # fmt: skip
    assert Market.objects.count() == 0


def test_a_wrong_value_after_good_ones_leaves_the_config_untouched(tmp_path):
    with pytest.raises(CommandError, match="line 4"):
        call_command(
            "load_config",
            _yaml(tmp_path, "ml:\n  batch_size: 7\n  symbols: [BTCUSDT]\n  device: cpu\n"),
        )
    assert MLConfig.load().batch_size == 10
    assert not Market.objects.exists()


def test_the_signals_fixture_holds_the_seed_markets_and_default_config():
    call_command("loaddata", str(Path(settings.BASE_DIR) / "fixtures" / "signals.json"))
    markets = Market.objects.all()
    assert sorted(m.symbol for m in markets) == sorted(SEED_SYMBOLS)
    assert {(m.exchange, m.timeframe, m.enabled) for m in markets} == {("bybit", "15m", True)}
    btc = Market.objects.get(symbol="BTCUSDT")
    assert (str(btc.amount_step), str(btc.min_notional)) == ("0.000001000000", "5.000000000000")
    config = MLConfig.load()
    assert (config.min_confidence, config.min_signal_strength, config.batch_size) == (0.45, 0.2, 10)
    assert config.model_path == ""  # the MODEL_PATH setting decides


def test_interval_seconds_reschedules_the_cycle_beat_entry(tmp_path):
    from django_celery_beat.models import PeriodicTask

    call_command(
        "load_config", _yaml(tmp_path, "ml:\n  signal_generation:\n    interval_seconds: 30\n")
    )
    entry = PeriodicTask.objects.get(task="signals_app.tasks.run_cycle")
    assert (entry.interval.every, entry.interval.period, entry.expire_seconds) == (
        30,
        "seconds",
        25,
    )
    assert PeriodicTask.objects.get(task="trading_app.tasks.sync_positions").interval.every == 60
