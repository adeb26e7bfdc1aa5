"""Admin for trading_app: traders and accounts are edited here; decisions, orders, positions and
equity are read. Exchange secrets are write-only: the form takes new values, nothing shows them."""

from django import forms
from django.contrib import admin, messages
from django.utils import timezone

from signals_app.admin import admin_link
from trading_app.models import (
    BacktestRun,
    Balance,
    EquitySnapshot,
    ExchangeAccount,
    Order,
    Position,
    TradeDecision,
    Trader,
)


class ExchangeAccountForm(forms.ModelForm):
    api_key = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="stored encrypted; leave blank to keep the stored one",
    )
    secret = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="stored encrypted; leave blank to keep the stored one",
    )
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(render_value=False),
        help_text="passphrase, for exchanges that need one",
    )

    class Meta:
        model = ExchangeAccount
        fields = [
            "name", "exchange", "mode", "api_key_env", "secret_env", "password_env", "options",
            "client_id_prefix", "quote_currency", "paper_initial_balance",
            "paper_slippage_percentage", "paper_fee_percentage",
        ]  # fmt: skip

    def clean(self):
        data = super().clean()
        # On the instance before the model's own validation runs (next), which requires a live
        # or testnet account to have credentials: else keys typed here could never be saved.
        if data.get("api_key") or data.get("secret"):
            self.instance.set_credentials(
                api_key=data.get("api_key", ""),
                secret=data.get("secret", ""),
                password=data.get("password", ""),
            )
        return data


@admin.register(ExchangeAccount)
class ExchangeAccountAdmin(admin.ModelAdmin):
    form = ExchangeAccountForm
    list_display = ["name", "exchange", "mode", "credentials_source", "quote_currency"]
    list_filter = ["mode", "exchange"]

    @admin.display(description="credentials")
    def credentials_source(self, account: ExchangeAccount) -> str:
        if account.api_key_env:
            return f"env {account.api_key_env}"
        return "stored encrypted" if account.has_stored_credentials else "none"


@admin.register(Trader)
class TraderAdmin(admin.ModelAdmin):
    list_display = [
        "name", "enabled", "is_halted", "account", "per_trade_percentage", "max_positions",
        "stop_loss_percentage", "take_profit_percentage", "max_drawdown_percentage",
        "realized_pnl",
    ]  # fmt: skip
    list_filter = ["enabled", "is_halted", "account"]
    search_fields = ["name"]
    filter_horizontal = ["markets"]
    readonly_fields = ["realized_pnl", "peak_equity", "halted_at", "created_at", "updated_at"]
    fieldsets = [
        (None, {"fields": ["name", "enabled", "type", "account", "markets"]}),
        (
            "Strategy and indicators",
            {
                "fields": [
                    "strategy",
                    "signal_interval_seconds",
                    "rsi_period",
                    "rsi_oversold",
                    "rsi_overbought",
                    "ema_short",
                    "ema_long",
                ]
            },
        ),  # fmt: skip
        ("Capital", {"fields": ["initial_capital", "per_trade_percentage", "max_positions"]}),
        (
            "Risk management",
            {
                "fields": [
                    "stop_loss_percentage",
                    "take_profit_percentage",
                    "max_drawdown_percentage",
                ]
            },
        ),  # fmt: skip
        (
            "State",
            {
                "fields": [
                    "is_halted",
                    "halted_reason",
                    "halted_at",
                    "realized_pnl",
                    "peak_equity",
                    "created_at",
                    "updated_at",
                ]
            },
        ),  # fmt: skip
    ]
    actions = ["enable", "disable", "resume", "close_positions"]

    @admin.action(description="Enable: trade the next signals")
    def enable(self, request, queryset):
        count = queryset.update(enabled=True, updated_at=timezone.now())
        self.message_user(request, f"{count} trader(s) enabled", messages.SUCCESS)

    @admin.action(description="Disable: no new entries (open positions keep their SL/TP)")
    def disable(self, request, queryset):
        count = queryset.update(enabled=False, updated_at=timezone.now())
        self.message_user(request, f"{count} trader(s) disabled", messages.SUCCESS)

    @admin.action(description="Resume after a drawdown halt (the peak restarts at current equity)")
    def resume(self, request, queryset):
        from trading_app.services.traders import trader_resume

        for trader in queryset.filter(is_halted=True):
            trader_resume(trader=trader, at=timezone.now())
        self.message_user(request, "traders resumed", messages.SUCCESS)

    @admin.action(
        description="Close all positions at market (the trader stays enabled)",
        permissions=["change"],
    )
    def close_positions(self, request, queryset):
        from trading_app.services.positions import positions_close

        for trader in queryset.select_related("account"):
            result = positions_close(trader=trader, reason=f"closed in the admin by {request.user}")
            level = messages.WARNING if result.problems else messages.SUCCESS
            self.message_user(request, f"{trader.name}: {result}", level)


class ReadOnlyAdmin(admin.ModelAdmin):
    """Rows the engine writes: browsable, never edited by hand."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(TradeDecision)
class TradeDecisionAdmin(ReadOnlyAdmin):
    list_display = ["created_at", "trader", "market", "action", "outcome", "final_score"]
    list_filter = ["outcome", "action", "trader"]
    list_select_related = ["trader", "market"]


@admin.register(Order)
class OrderAdmin(ReadOnlyAdmin):
    list_display = [
        "client_order_id", "trader", "market", "purpose", "side", "amount", "average_price",
        "status", "status_reason", "created_at", "signal_link", "position_link",
    ]  # fmt: skip
    list_filter = ["status", "purpose", "trader"]
    search_fields = ["client_order_id", "exchange_order_id", "trader__name", "market__symbol"]
    list_select_related = ["trader", "market"]
    readonly_fields = ["signal_link", "position_link"]

    @admin.display(description="signal")
    def signal_link(self, order: Order) -> str:
        if order.signal_id is None:
            return "-"
        return admin_link("admin:signals_app_signal_change", f"#{order.signal_id}", order.signal_id)

    @admin.display(description="position")
    def position_link(self, order: Order) -> str:
        if order.position_id is None:
            return "-"
        label = f"#{order.position_id}"
        return admin_link("admin:trading_app_position_change", label, order.position_id)


@admin.register(Position)
class PositionAdmin(ReadOnlyAdmin):
    list_display = [
        "trader", "market", "side", "status", "amount", "entry_price", "stop_loss",
        "take_profit", "exit_price", "realized_pnl", "unrealized_pnl", "close_reason",
        "opened_at", "closed_at",
    ]  # fmt: skip
    list_filter = ["status", "side", "close_reason", "trader"]
    search_fields = ["trader__name", "market__symbol"]
    list_select_related = ["trader", "market"]
    readonly_fields = ["signal_link", "orders_link"]

    @admin.display(description="signal")
    def signal_link(self, position: Position) -> str:
        if position.signal_id is None:
            return "-"
        label = f"#{position.signal_id}"
        return admin_link("admin:signals_app_signal_change", label, position.signal_id)

    @admin.display(description="orders")
    def orders_link(self, position: Position) -> str:
        query = f"?position__id__exact={position.pk}"
        return admin_link("admin:trading_app_order_changelist", "orders", query=query)


@admin.register(EquitySnapshot)
class EquitySnapshotAdmin(ReadOnlyAdmin):
    list_display = ["trader", "time", "equity", "peak_equity", "drawdown_percentage"]
    list_filter = ["trader"]


@admin.register(Balance)
class BalanceAdmin(ReadOnlyAdmin):
    list_display = ["account", "asset", "free", "used", "updated_at"]


@admin.register(BacktestRun)
class BacktestRunAdmin(ReadOnlyAdmin):
    """Backtests are started with `manage.py backtest`; their report is read here."""

    list_display = [
        "id", "trader_name", "start", "end", "status", "orders", "total_return", "buy_and_hold",
        "max_drawdown", "sharpe", "seconds", "created_at",
    ]  # fmt: skip
    list_filter = ["status", "trader_name"]
    search_fields = ["trader_name", "model_name"]

    @staticmethod
    def _figure(run: BacktestRun, who: str, name: str) -> str:
        value = run.metrics.get(who, {}).get(name)
        return "-" if value is None else f"{value:.2f}"

    @admin.display(description="return %")
    def total_return(self, run: BacktestRun) -> str:
        return self._figure(run, "strategy", "total_return_percentage")

    @admin.display(description="buy & hold %")
    def buy_and_hold(self, run: BacktestRun) -> str:
        return self._figure(run, "buy_and_hold", "total_return_percentage")

    @admin.display(description="max DD %")
    def max_drawdown(self, run: BacktestRun) -> str:
        return self._figure(run, "strategy", "max_drawdown_percentage")

    @admin.display(description="Sharpe")
    def sharpe(self, run: BacktestRun) -> str:
        return self._figure(run, "strategy", "sharpe")
