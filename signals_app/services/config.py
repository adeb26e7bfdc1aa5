"""`manage.py load_config system.yaml`: the seed's system.yaml `ml:` block into MLConfig and the
enabled markets.

The block is checked against the seed's keys before anything is written; an unknown key, a
wrong type or an out-of-range value fails with the key's dotted path and its line in the file.
Sections other than `ml:` belong to other loaders and are reported as not handled here.
"""

from dataclasses import dataclass, field
from pathlib import Path

import yaml
from django.db import transaction
from django_celery_beat.models import IntervalSchedule, PeriodicTask, PeriodicTasks

from signals_app.models import Market, MLConfig

CYCLE_TASK = "signals_app.tasks.run_cycle"
QUOTES = ("USDT", "USDC", "FDUSD", "BUSD", "USD", "EUR", "BTC", "ETH")


class ConfigError(ValueError):
    """A system.yaml problem; the message names the file, line and key."""


@dataclass(frozen=True)
class Key:
    column: str  # MLConfig field, or "" for symbols
    kind: type | tuple
    choices: tuple[str, ...] = ()
    minimum: float | None = None
    maximum: float | None = None


# The seed's ml: block, key path -> where it goes (ARCHITECTURE.md "The seed's configuration").
ML_KEYS: dict[str, Key] = {
    "enabled": Key("enabled", bool),
    "signal_generation.interval_seconds": Key("interval_seconds", int, minimum=1),
    "batch_size": Key("batch_size", int, minimum=1),
    "parallel_workers": Key("parallel_workers", int, minimum=1),
    "symbols": Key("", list),
    "model.path": Key("model_path", str),
    "model.device": Key("device", str, choices=("auto", "cuda", "cpu")),
    "model.use_compile": Key("use_compile", bool),
    "min_confidence": Key("min_confidence", (int, float), minimum=0, maximum=1),
    "min_signal_strength": Key("min_signal_strength", (int, float), minimum=0, maximum=1),
    "risk_tolerance": Key("risk_tolerance", str, choices=("LOW", "MEDIUM", "HIGH")),
}
SECTIONS = {key.split(".")[0] for key in ML_KEYS if "." in key}


@dataclass
class ConfigReport:
    changed: dict[str, object] = field(default_factory=dict)
    markets_enabled: list[str] = field(default_factory=list)
    markets_created: list[str] = field(default_factory=list)
    markets_disabled: list[str] = field(default_factory=list)
    ignored_sections: list[str] = field(default_factory=list)


def ccxt_symbol(symbol: str) -> str:
    """BTCUSDT -> BTC/USDT (the quote is the longest known suffix)."""
    for quote in sorted(QUOTES, key=len, reverse=True):
        if symbol.endswith(quote) and len(symbol) > len(quote):
            return f"{symbol[: -len(quote)]}/{quote}"
    raise ValueError(f"cannot tell the quote currency of {symbol!r} (known: {', '.join(QUOTES)})")


def _flatten(node: yaml.MappingNode, prefix: str, where) -> dict[str, yaml.Node]:
    out: dict[str, yaml.Node] = {}
    for key_node, value_node in node.value:
        path = f"{prefix}{key_node.value}"
        if path in out:
            raise ConfigError(f"{where(key_node)}: {path} appears twice")
        if key_node.value in SECTIONS and not prefix:
            if not isinstance(value_node, yaml.MappingNode):
                raise ConfigError(f"{where(value_node)}: {path} must be a mapping")
            out.update(_flatten(value_node, f"{path}.", where))
        else:
            out[path] = value_node
    return out


def _value(path: str, node: yaml.Node, where):
    key = ML_KEYS.get(path)
    if key is None:
        known = ", ".join(f"ml.{k}" for k in ML_KEYS)
        raise ConfigError(f"{where(node)}: unknown key ml.{path} (known: {known})")
    value = yaml.safe_load(yaml.serialize(node))
    if key.kind is list:
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise ConfigError(f"{where(node)}: ml.{path} must be a list of symbols")
        return [v.upper() for v in value]
    # bool is an int in Python; a number where a flag is expected (or the reverse) is a mistake.
    if isinstance(value, bool) != (key.kind is bool) or not isinstance(value, key.kind):
        expected = {bool: "true/false", int: "a whole number", str: "text"}.get(
            key.kind, "a number"
        )
        raise ConfigError(f"{where(node)}: ml.{path} must be {expected}, got {value!r}")
    if key.choices:
        normal = value.upper() if key.choices[0].isupper() else value.lower()
        if normal not in key.choices:
            raise ConfigError(
                f"{where(node)}: ml.{path} is {value!r}, expected one of {', '.join(key.choices)}"
            )
        value = normal
    if key.minimum is not None and value < key.minimum:
        raise ConfigError(f"{where(node)}: ml.{path} is {value}, must be >= {key.minimum}")
    if key.maximum is not None and value > key.maximum:
        raise ConfigError(f"{where(node)}: ml.{path} is {value}, must be <= {key.maximum}")
    return value


def config_parse(path: Path) -> tuple[dict[str, object], list[str]]:
    """({key path: checked value} of the ml: block, the other top-level sections)."""
    path = Path(path)

    def where(node: yaml.Node) -> str:
        return f"{path} line {node.start_mark.line + 1}"

    try:
        root = yaml.compose(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: {exc.strerror}") from exc
    if not isinstance(root, yaml.MappingNode):
        raise ConfigError(f"{path}: expected a mapping with an `ml:` section")
    sections = {key.value: (key, value) for key, value in root.value}
    if "ml" not in sections:
        raise ConfigError(f"{path}: no `ml:` section")
    ml_key, ml_node = sections["ml"]
    if not isinstance(ml_node, yaml.MappingNode):
        raise ConfigError(f"{where(ml_node)}: ml must be a mapping")
    values = {key: _value(key, node, where) for key, node in _flatten(ml_node, "", where).items()}
    return values, sorted(name for name in sections if name != "ml")


def config_load(*, path: Path, exchange: str = "bybit") -> ConfigReport:
    """Apply the ml: block: MLConfig's columns, and `symbols` as the set of enabled markets
    (created on `exchange` when missing, every other market disabled). All or nothing."""
    values, other_sections = config_parse(path)
    report = ConfigReport(ignored_sections=other_sections)
    symbols = values.pop("symbols", None)
    if symbols is not None:
        for symbol in symbols:
            try:
                ccxt_symbol(symbol)
            except ValueError as exc:
                raise ConfigError(f"{path}: ml.symbols: {exc}") from exc
    with transaction.atomic():
        config = MLConfig.load()
        for key, value in values.items():
            column = ML_KEYS[key].column
            if getattr(config, column) != value:
                report.changed[column] = value
            setattr(config, column, value)
        mlconfig_save(config=config)
        if symbols is not None:
            _enable_markets(symbols, exchange=exchange, report=report)
    return report


def mlconfig_save(*, config: MLConfig) -> None:
    """Save the configuration and give the beat entry of the cycle its interval_seconds (each
    run still expires before the next one is due)."""
    config.save()
    interval, _ = IntervalSchedule.objects.get_or_create(
        every=config.interval_seconds, period=IntervalSchedule.SECONDS
    )
    changed = (
        PeriodicTask.objects.filter(task=CYCLE_TASK)
        .exclude(interval=interval)
        .update(interval=interval, expire_seconds=max(1, config.interval_seconds - 5))
    )
    if changed:
        PeriodicTasks.update_changed()  # a bulk update sends no signal: tell beat to reload


def _enable_markets(symbols: list[str], *, exchange: str, report: ConfigReport) -> None:
    for symbol in symbols:
        market, created = Market.objects.get_or_create(
            exchange=exchange,
            symbol=symbol,
            defaults={"ccxt_symbol": ccxt_symbol(symbol), "enabled": True},
        )
        if created:
            report.markets_created.append(str(market))
        elif not market.enabled:
            market.enabled = True
            market.save(update_fields=["enabled", "updated_at"])
            report.markets_enabled.append(str(market))
    others = Market.objects.filter(enabled=True).exclude(exchange=exchange, symbol__in=symbols)
    report.markets_disabled = [str(m) for m in others]
    others.update(enabled=False)
