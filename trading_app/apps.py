from django.apps import AppConfig


class TradingAppConfig(AppConfig):
    name = "trading_app"
    verbose_name = "Trading (traders, orders, positions)"
