"""Fixtures for every test module in tests/trading_app: the offline Bybit stand-in."""

from tests.trading_app.bybit import bybit, recorded, setup  # noqa: F401 (fixtures)
