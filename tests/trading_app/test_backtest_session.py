"""The replay's database session: no savepoints, prepared statements on PostgreSQL that are
dropped as the run doubles, and the connection as it was afterwards."""

import pytest
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext

from signals_app.models import Market
from trading_app.backtest.session import FIRST_REPLAN, replan, replay_session

pytestmark = pytest.mark.django_db


def _prepared() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements")
        return cursor.fetchone()[0]


@pytest.mark.skipif(
    connection.vendor != "postgresql",
    reason="Django's SQLite backend makes savepoints in nested atomic blocks whatever the features "
    "say; they cost nothing there (the cost avoided is PostgreSQL's subtransactions)",
)
def test_atomic_blocks_inside_make_no_savepoint():
    with replay_session(), CaptureQueriesContext(connection) as queries:
        with transaction.atomic():
            Market.objects.count()
    assert not [q for q in queries if "SAVEPOINT" in q["sql"]]
    assert connection.features.uses_savepoints


@pytest.mark.skipif(connection.vendor != "postgresql", reason="PostgreSQL prepares statements")
def test_statements_are_prepared_and_dropped_as_the_run_doubles():
    factory = connection.connection.cursor_factory
    with replay_session():
        for _ in range(10):
            Market.objects.filter(symbol="BTCUSDT").count()
        assert _prepared() >= 1
        replan(FIRST_REPLAN + 1)  # not a doubling: kept
        assert _prepared() >= 1
        replan(2 * FIRST_REPLAN)
        assert _prepared() == 0
        assert Market.objects.filter(symbol="BTCUSDT").count() == 0  # prepares afresh
    assert connection.connection.cursor_factory is factory
    assert connection.connection.prepare_threshold is None
