"""API shapes of trading_app: traders (validated like the admin), orders, positions."""

from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from signals_app.models import Market
from trading_app.models import ExchangeAccount, Order, Position, Trader


class AccountField(serializers.SlugRelatedField):
    """An exchange account by name. A NUL byte is refused before PostgreSQL sees it."""

    def to_internal_value(self, data):
        if isinstance(data, str) and "\x00" in data:
            self.fail("does_not_exist", slug_name=self.slug_field, value=data)
        return super().to_internal_value(data)


class SymbolsField(serializers.ListField):
    """The trader's markets as exchange symbols (traders.yaml `symbols`)."""

    def get_attribute(self, instance: Trader) -> list[str]:
        return sorted(market.symbol for market in instance.markets.all())


class TraderSerializer(serializers.ModelSerializer):
    """A trader and its risk settings. `symbols` are markets of the account's exchange.

    Writes run the model's full_clean(), the validation the admin form runs: field validators,
    Trader.clean() (the rules shared with load_traders) and the database check constraints."""

    symbols = SymbolsField(
        child=serializers.CharField(max_length=32), allow_empty=False,
        help_text="markets of the account's exchange, e.g. BTCUSDT",
    )  # fmt: skip
    account = AccountField(
        slug_field="name", queryset=ExchangeAccount.objects.all(),
        help_text="exchange account name (the paper account by default: paper-bybit)",
    )  # fmt: skip

    class Meta:
        model = Trader
        fields = [
            "id", "name", "enabled", "type", "account", "symbols", "strategy",
            "signal_interval_seconds", "rsi_period", "rsi_oversold", "rsi_overbought",
            "ema_short", "ema_long", "initial_capital", "per_trade_percentage", "max_positions",
            "stop_loss_percentage", "take_profit_percentage", "max_drawdown_percentage",
            "realized_pnl", "peak_equity", "is_halted", "halted_reason", "halted_at",
            "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = [
            "realized_pnl", "peak_equity", "is_halted", "halted_reason", "halted_at",
            "created_at", "updated_at",
        ]  # fmt: skip

    def validate(self, attrs: dict) -> dict:
        symbols = attrs.pop("symbols", None)
        trader = Trader()  # model defaults for what a create leaves out
        if self.instance is not None:
            for field in Trader._meta.concrete_fields:
                setattr(trader, field.attname, getattr(self.instance, field.attname))
        for name, value in attrs.items():
            setattr(trader, name, value)
        try:
            # name uniqueness is the serializer's own UniqueValidator; the rest is the admin's.
            trader.full_clean(validate_unique=False)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(_drf_errors(exc)) from None
        if symbols is not None:
            attrs["markets"] = _markets(symbols, exchange=trader.account.exchange)
        elif self.instance is not None and "account" in attrs:
            # Moving to another exchange's account: the subscribed symbols must exist there too.
            current = [market.symbol for market in self.instance.markets.all()]
            attrs["markets"] = _markets(current, exchange=trader.account.exchange)
        return attrs


def _drf_errors(exc: DjangoValidationError) -> dict | list:
    if not hasattr(exc, "error_dict"):
        return {"non_field_errors": exc.messages}
    return {
        ("non_field_errors" if field == "__all__" else field): messages
        for field, messages in exc.message_dict.items()
    }


def _markets(symbols: list[str], *, exchange: str) -> list[Market]:
    markets = {m.symbol: m for m in Market.objects.filter(exchange=exchange, symbol__in=symbols)}
    missing = [symbol for symbol in symbols if symbol not in markets]
    if missing:
        raise serializers.ValidationError(
            {"symbols": [f"no {exchange} market for {', '.join(missing)} (add the markets first)"]}
        )
    return list(markets.values())


class PositionSerializer(serializers.ModelSerializer):
    trader_name = serializers.CharField(source="trader.name", read_only=True)
    symbol = serializers.CharField(source="market.symbol", read_only=True)

    class Meta:
        model = Position
        fields = [
            "id", "trader", "trader_name", "symbol", "signal", "side", "status", "amount",
            "entry_price", "stop_loss", "take_profit", "exit_price", "fees", "realized_pnl",
            "unrealized_pnl", "close_reason", "opened_at", "closed_at", "updated_at",
        ]  # fmt: skip


class OrderSerializer(serializers.ModelSerializer):
    trader_name = serializers.CharField(source="trader.name", read_only=True)
    symbol = serializers.CharField(source="market.symbol", read_only=True)

    class Meta:
        model = Order
        fields = [
            "id", "client_order_id", "trader", "trader_name", "symbol", "signal", "position",
            "purpose", "side", "type", "amount", "price", "stop_loss", "take_profit", "status",
            "status_reason", "exchange_order_id", "filled_amount", "average_price", "fee",
            "fee_currency", "attempts", "created_at", "submitted_at", "filled_at",
        ]  # fmt: skip
