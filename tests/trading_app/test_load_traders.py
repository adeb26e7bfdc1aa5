"""`manage.py load_traders`: the seed's format in, errors naming key and line, all or nothing;
and the shipped fixture equals what the sample traders.yaml loads."""

from io import StringIO
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from signals_app.models import Market
from tests.trading_app import factories as f
from trading_app.models import TRADER_SETTING_FIELDS, ExchangeAccount, Trader

pytestmark = pytest.mark.django_db

ROOT = Path(__file__).resolve().parents[2]
SAMPLE = ROOT / "fixtures" / "traders.yaml"
SYMBOLS = ["BTCUSDT", "ETHUSDT", "BNBUSDT", "SOLUSDT", "XRPUSDT", "ADAUSDT", "DOGEUSDT",
           "DOTUSDT", "LINKUSDT"]  # fmt: skip


@pytest.fixture
def markets():
    return [f.market(symbol) for symbol in SYMBOLS]


def _load(path: Path, *extra) -> str:
    out = StringIO()
    call_command("load_traders", str(path), *extra, stdout=out)
    return out.getvalue()


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "traders.yaml"
    path.write_text(text)
    return path


def test_sample_file_loads_every_key(markets):
    output = _load(SAMPLE)
    trader = Trader.objects.get()
    assert "1 trader(s) loaded" in output
    assert (trader.name, trader.enabled, trader.type, trader.strategy) == (
        "multi_crypto_10", True, "multi_crypto", "ml_signal",
    )  # fmt: skip
    assert sorted(trader.markets.values_list("symbol", flat=True)) == sorted(SYMBOLS)
    assert trader.signal_interval_seconds == 60
    assert (trader.rsi_period, trader.rsi_oversold, trader.rsi_overbought) == (14, 30, 70)
    assert (trader.ema_short, trader.ema_long) == (9, 21)
    assert (trader.initial_capital, trader.per_trade_percentage, trader.max_positions) == (
        10_000, 2, 5,
    )  # fmt: skip
    assert (
        trader.stop_loss_percentage, trader.take_profit_percentage,
        trader.max_drawdown_percentage,
    ) == (2, 5, 10)  # fmt: skip
    assert trader.account.name == "paper-bybit"
    assert trader.account.mode == ExchangeAccount.Mode.PAPER


def test_loading_again_updates_in_place(markets, tmp_path):
    _load(SAMPLE)
    changed = SAMPLE.read_text().replace("per_trade_percentage: 2", "per_trade_percentage: 3")
    _load(_write(tmp_path, changed))
    assert Trader.objects.get().per_trade_percentage == 3
    assert ExchangeAccount.objects.count() == 1


def test_shipped_fixture_is_the_sample_file(markets, django_db_blocker):
    """fixtures/trading.json (loaded by bootstrap) holds what fixtures/traders.yaml says."""
    _load(SAMPLE)
    loaded = Trader.objects.get()
    expected = {field: getattr(loaded, field) for field in TRADER_SETTING_FIELDS}
    Trader.objects.all().delete()
    ExchangeAccount.objects.all().delete()
    Market.objects.all().delete()
    call_command("loaddata", str(ROOT / "fixtures" / "signals.json"), verbosity=0)
    call_command("loaddata", str(ROOT / "fixtures" / "trading.json"), verbosity=0)
    shipped = Trader.objects.get()
    assert {field: getattr(shipped, field) for field in TRADER_SETTING_FIELDS} == expected
    assert sorted(shipped.markets.values_list("symbol", flat=True)) == sorted(SYMBOLS)
    assert shipped.account.mode == ExchangeAccount.Mode.PAPER
    assert shipped.name == "multi_crypto_10"


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    type: multi_crypto\n", "    type: multi_crypto\n    colour: blue\n",
         "line 8: unknown key 'colour' (traders[0])"),
        ("per_trade_percentage: 2", "per_trade_percentage: two",
         "line 23: key 'capital.per_trade_percentage' must be number, got 'two'"),
        ("period: 14", "period: 14.5",
         "line 15: key 'strategy_config.indicators.rsi.period' must be int"),
        ("take_profit_percentage: 5", "take_profit_percentage: 1",
         "line 27: key 'risk_management.take_profit_percentage': take profit must be above the "
         "stop loss (2%) (got 1) (trader multi_crypto_10)"),
        ("oversold: 30", "oversold: 80",
         "line 17: key 'strategy_config.indicators.rsi.overbought'"),
        ("LINKUSDT]", "LINKUSDT, NOPEUSDT]", "line 8: key 'symbols': no bybit market for NOPEUSDT"),
        ("enabled: true", "enabled: 3", "line 6: key 'enabled' must be bool, got 3"),
        ("max_positions: 5", "max_positions: true",
         "line 24: key 'capital.max_positions' must be int, got True"),
        ("strategy: ml_signal", "strategy: grid",
         "line 10: key 'strategy': unknown strategy 'grid'"),
        ("  - id: multi_crypto_10", "  - id: multi crypto", "line 5: key 'id' must be letters"),
        ("signal_interval: 60", "signal_interval: [60", "invalid YAML"),
    ],
)  # fmt: skip
def test_errors_name_key_and_line(markets, tmp_path, old, new, message):
    text = SAMPLE.read_text()
    assert old in text
    with pytest.raises(CommandError) as caught:
        _load(_write(tmp_path, text.replace(old, new, 1)))
    assert message in str(caught.value)
    assert "nothing loaded" in str(caught.value)
    assert not Trader.objects.exists()


def test_nothing_half_loaded(markets, tmp_path):
    good = SAMPLE.read_text().split("traders:\n", 1)[1]
    bad = good.replace("multi_crypto_10", "second").replace("max_positions: 5", "max_positions: 0")
    with pytest.raises(CommandError, match="max positions must be at least 1"):
        _load(_write(tmp_path, "traders:\n" + good + bad))
    assert not Trader.objects.exists()
    assert not ExchangeAccount.objects.exists()


def test_duplicate_ids_and_unknown_account(markets, tmp_path):
    body = SAMPLE.read_text().split("traders:\n", 1)[1]
    with pytest.raises(CommandError, match="trader id 'multi_crypto_10' is used twice"):
        _load(_write(tmp_path, "traders:\n" + body + body))
    with pytest.raises(CommandError, match="no exchange account named 'nope'"):
        _load(SAMPLE, "--account", "nope")


def test_named_account_must_trade_on_the_same_exchange(markets):
    ExchangeAccount.objects.create(name="binance-paper", exchange="binance")
    with pytest.raises(CommandError, match="account 'binance-paper' trades on 'binance'"):
        _load(SAMPLE, "--account", "binance-paper")
