"""The replay's database session: one long transaction, rolled back whole, that runs the same
few dozen statements tens of thousands of times. Two settings of its connection fit that, for
the length of the replay only; the statements and their results stay those of live trading.

No savepoints. The services' atomic blocks make none inside the replay's transaction: none would
ever be rolled back to, and on PostgreSQL a row updated under thousands of subtransactions (the
paper balance, the trader, open positions) gets slower to read with each version: one row read
0.07 ms after 6,000 plain updates, 2.4 ms after 6,000 in savepoints. An error inside still ends
the run: Django marks the whole transaction for rollback instead. On SQLite, Django's backend makes
savepoints in nested atomic blocks regardless: an inner block's error is rolled back alone, as in
live trading, and SQLite keeps no row versions for them to slow reads down.

Prepared statements (PostgreSQL). Planning was most of the server's CPU (a year: ~10 s of ~25);
parameters bound server-side, psycopg prepares a statement on its 5th run and PostgreSQL then
keeps a generic plan. A generic plan is made while the run's tables are small, and they grow all
run long: replan() drops the plans as the run doubles in length, so each is remade for tables
at most twice the size it was made for.
"""

from contextlib import contextmanager

from django.db import connection
from django.db.backends.postgresql.base import ServerBindingCursor

PREPARE_THRESHOLD = 5  # psycopg's default
FIRST_REPLAN = 1000  # steps; then at 2,000, 4,000, ...


@contextmanager
def replay_session():
    features = connection.features
    features.uses_savepoints = False  # this connection only, over the class's True
    postgresql = connection.vendor == "postgresql"
    if postgresql:
        connection.ensure_connection()
        conn = connection.connection
        factory, threshold = conn.cursor_factory, conn.prepare_threshold
        conn.cursor_factory, conn.prepare_threshold = ServerBindingCursor, PREPARE_THRESHOLD
    try:
        yield
    finally:
        del features.uses_savepoints
        if postgresql:  # the transaction's rollback deallocates what was prepared
            conn.cursor_factory, conn.prepare_threshold = factory, threshold


def replan(step: int) -> None:
    """At steps FIRST_REPLAN, 2 x FIRST_REPLAN, 4 x ...: drop the prepared statements (psycopg
    sees the command and prepares afresh)."""
    times, rest = divmod(step, FIRST_REPLAN)
    if connection.vendor == "postgresql" and times and not rest and times & (times - 1) == 0:
        with connection.cursor() as cursor:
            cursor.execute("DEALLOCATE ALL")
