"""Load the seed's traders.yaml into Trader rows: every key checked, errors naming the key and its
line, all traders written in one transaction or none.

The file format (fixtures/traders.yaml is an example):

    traders:
      - id: multi_crypto_10
        enabled: true
        type: multi_crypto
        symbols: [BTCUSDT, ETHUSDT]
        exchange: bybit
        strategy: ml_signal
        strategy_config:
          signal_interval: 60
          indicators:
            rsi: {period: 14, oversold: 30, overbought: 70}
            ema: {short: 9, long: 21}
        capital: {initial: 10000, per_trade_percentage: 2, max_positions: 5}
        risk_management:
          stop_loss_percentage: 2
          take_profit_percentage: 5
          max_drawdown_percentage: 10
"""

import logging
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

import yaml
from django.core.exceptions import ValidationError
from django.core.validators import validate_slug
from django.db import transaction

from signals_app.models import Market
from trading_app.models import (
    TRADER_SETTING_FIELDS,
    ExchangeAccount,
    Position,
    Trader,
    trader_settings_errors,
)
from trading_app.selectors import trader_equity

logger = logging.getLogger(__name__)


class TradersFileError(ValueError):
    """Every problem found in the file, one per line of the message."""

    def __init__(self, source: str, problems: list[str]):
        self.problems = problems
        super().__init__(f"{source}: {len(problems)} problem(s)\n" + "\n".join(problems))


NUMBER = (int, float)
# yaml path below a trader -> (model field, accepted types). Keys absent from the file keep the
# model default (or the current value when the trader exists).
FIELDS: dict[str, tuple[str, tuple]] = {
    "enabled": ("enabled", (bool,)),
    "type": ("type", (str,)),
    "strategy": ("strategy", (str,)),
    "strategy_config.signal_interval": ("signal_interval_seconds", (int,)),
    "strategy_config.indicators.rsi.period": ("rsi_period", (int,)),
    "strategy_config.indicators.rsi.oversold": ("rsi_oversold", NUMBER),
    "strategy_config.indicators.rsi.overbought": ("rsi_overbought", NUMBER),
    "strategy_config.indicators.ema.short": ("ema_short", (int,)),
    "strategy_config.indicators.ema.long": ("ema_long", (int,)),
    "capital.initial": ("initial_capital", NUMBER),
    "capital.per_trade_percentage": ("per_trade_percentage", NUMBER),
    "capital.max_positions": ("max_positions", (int,)),
    "risk_management.stop_loss_percentage": ("stop_loss_percentage", NUMBER),
    "risk_management.take_profit_percentage": ("take_profit_percentage", NUMBER),
    "risk_management.max_drawdown_percentage": ("max_drawdown_percentage", NUMBER),
}
OTHER_KEYS = {"id", "symbols", "exchange"}
SECTIONS = {path.rsplit(".", 1)[0] for path in FIELDS if "." in path} | {
    "strategy_config",
    "strategy_config.indicators",
}
FIELD_TO_KEY = {field: path for path, (field, _) in FIELDS.items()}


@dataclass
class _Value:
    value: object
    line: int  # 1-based


def _flatten(node: yaml.Node, prefix: str, out: dict[str, _Value], problems: list[str]) -> None:
    """Leaves of a trader mapping as {"capital.initial": _Value}, keys checked against FIELDS."""
    for key_node, value_node in node.value:
        key = f"{prefix}.{key_node.value}" if prefix else str(key_node.value)
        line = key_node.start_mark.line + 1
        if key in out:
            problems.append(f"line {line}: key '{key}' appears twice")
        elif key in SECTIONS:
            if not isinstance(value_node, yaml.MappingNode):
                problems.append(f"line {line}: key '{key}' must be a mapping")
            else:
                _flatten(value_node, key, out, problems)
        elif key in FIELDS or key in OTHER_KEYS:
            out[key] = _Value(yaml.safe_load(yaml.serialize(value_node)), line)
        else:
            problems.append(f"line {line}: unknown key '{key}'")


def _type_name(types: tuple) -> str:
    return "number" if types == NUMBER else " or ".join(t.__name__ for t in types)


def _is_slug(value: str) -> bool:
    try:
        validate_slug(value)
    except ValidationError:
        return False
    return True


def parse_traders(text: str, *, source: str = "traders.yaml") -> list[dict[str, _Value]]:
    """The traders of the file as flat key -> value maps; TradersFileError lists every problem."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}: " if mark else ""
        raise TradersFileError(source, [f"{where}invalid YAML: {exc}"]) from None
    problems: list[str] = []
    if isinstance(root, yaml.MappingNode):
        entries = [v for k, v in root.value if k.value == "traders"]
        unknown = [k for k, _ in root.value if k.value != "traders"]
        for key in unknown:
            problems.append(f"line {key.start_mark.line + 1}: unknown top-level key '{key.value}'")
        root = entries[0] if entries else None
    if not isinstance(root, yaml.SequenceNode):
        raise TradersFileError(source, problems + ["expected a list under 'traders:'"])
    traders: list[dict[str, _Value]] = []
    for index, node in enumerate(root.value):
        where = f"traders[{index}]"
        if not isinstance(node, yaml.MappingNode):
            problems.append(f"line {node.start_mark.line + 1}: {where} must be a mapping")
            continue
        flat: dict[str, _Value] = {}
        entry_problems: list[str] = []
        _flatten(node, "", flat, entry_problems)
        line = node.start_mark.line + 1
        if "id" not in flat:
            entry_problems.append(f"line {line}: {where} has no 'id'")
        elif not isinstance(flat["id"].value, str) or not _is_slug(flat["id"].value):
            entry_problems.append(
                f"line {flat['id'].line}: key 'id' must be letters, digits, '_' or '-', "
                f"got {flat['id'].value!r}"
            )
        symbols = flat.get("symbols")
        if symbols is None:
            entry_problems.append(f"line {line}: {where} has no 'symbols'")
        elif (
            not isinstance(symbols.value, list)
            or not symbols.value
            or not all(isinstance(s, str) for s in symbols.value)
        ):
            entry_problems.append(
                f"line {symbols.line}: key 'symbols' must be a non-empty list of strings"
            )
        if "exchange" in flat and not isinstance(flat["exchange"].value, str):
            entry_problems.append(f"line {flat['exchange'].line}: key 'exchange' must be a string")
        for path, (_, types) in FIELDS.items():
            item = flat.get(path)
            # bool is an int in Python: a `true` where a number belongs is still a type error.
            if item is not None and (
                not isinstance(item.value, types)
                or (isinstance(item.value, bool) and bool not in types)
            ):
                entry_problems.append(
                    f"line {item.line}: key '{path}' must be {_type_name(types)}, "
                    f"got {item.value!r}"
                )
        problems += [f"{p} ({where})" for p in entry_problems]
        traders.append(flat)
    ids = [t["id"] for t in traders if "id" in t]
    seen: set = set()
    for item in ids:
        if item.value in seen:
            problems.append(f"line {item.line}: trader id '{item.value}' is used twice")
        seen.add(item.value)
    if problems:
        raise TradersFileError(source, problems)
    return traders


def traders_load(
    *, text: str, source: str = "traders.yaml", account_name: str | None = None
) -> list[Trader]:
    """Create or update every trader of the file, or none of them (TradersFileError)."""
    entries = parse_traders(text, source=source)
    problems: list[str] = []
    planned = []
    accounts: dict[str, ExchangeAccount] = {}  # one default paper account per exchange
    for flat in entries:
        name = flat["id"].value
        existing = Trader.objects.filter(name=name).select_related("account").first()
        trader = existing or Trader(name=name)
        for path, (field, _) in FIELDS.items():
            if path in flat:
                value = flat[path].value
                setattr(trader, field, Decimal(str(value)) if field == "initial_capital" else value)
        exchange = flat["exchange"].value if "exchange" in flat else "bybit"
        account = accounts.get(exchange) if not account_name and not existing else None
        account = account or _account(name=account_name, exchange=exchange, current=existing)
        if account is not None and account.pk is None:
            accounts[exchange] = account
        if account is None:
            problems.append(f"{source}: no exchange account named '{account_name}'")
            break
        if account.exchange != exchange:
            line = flat["exchange"].line if "exchange" in flat else flat["id"].line
            problems.append(
                f"line {line}: key 'exchange' is '{exchange}' but account '{account.name}' "
                f"trades on '{account.exchange}' (trader {name})"
            )
        settings = {field: getattr(trader, field) for field in TRADER_SETTING_FIELDS}
        for field, message in trader_settings_errors(settings).items():
            key = FIELD_TO_KEY[field]
            line = flat[key].line if key in flat else flat["id"].line
            problems.append(f"line {line}: key '{key}': {message} (trader {name})")
        if trader.strategy not in Trader.Strategy.values:
            problems.append(
                f"line {flat['strategy'].line}: key 'strategy': unknown strategy "
                f"'{trader.strategy}' (known: {', '.join(Trader.Strategy.values)}) (trader {name})"
            )
        markets = {
            m.symbol: m
            for m in Market.objects.filter(exchange=exchange, symbol__in=flat["symbols"].value)
        }
        missing = [s for s in flat["symbols"].value if s not in markets]
        if missing:
            problems.append(
                f"line {flat['symbols'].line}: key 'symbols': no {exchange} market for "
                f"{', '.join(missing)} (trader {name}; add the markets first)"
            )
        subscribed = [markets[s] for s in flat["symbols"].value if s in markets]
        planned.append((trader, account, subscribed))
    if problems:
        raise TradersFileError(source, problems)
    with transaction.atomic():
        for trader, account, markets in planned:
            if account.pk is None:
                account.save()
            trader.account = account
            trader.full_clean()
            trader.save()
            trader.markets.set(markets)
    return [trader for trader, _, _ in planned]


def _account(*, name: str | None, exchange: str, current: Trader | None) -> ExchangeAccount | None:
    if name:
        return ExchangeAccount.objects.filter(name=name).first()
    if current is not None and current.account.exchange == exchange:
        return current.account
    # The default: the paper exchange over that exchange's markets (saved with the traders).
    return ExchangeAccount.objects.filter(name=f"paper-{exchange}").first() or ExchangeAccount(
        name=f"paper-{exchange}", exchange=exchange
    )


def trader_resume(*, trader: Trader, at: datetime) -> None:
    """A person lifts a drawdown halt. The peak restarts at the current equity, or the next sync
    would find the same drawdown and halt the trader again."""
    positions = Position.objects.filter(trader=trader, status=Position.Status.OPEN)
    equity = trader_equity(trader=trader, positions=positions)
    Trader.objects.filter(pk=trader.pk).update(
        is_halted=False, halted_reason="", halted_at=None, peak_equity=equity, updated_at=at
    )
    logger.info("trader %s resumed at equity %s", trader.name, equity)
