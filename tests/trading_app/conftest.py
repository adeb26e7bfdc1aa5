"""signals_app's session-scoped tiny checkpoint, shared with the trading end-to-end tests."""

from tests.signals_app.test_cycle import tiny_checkpoint  # noqa: F401 (a fixture, used by name)
