"""Celery tasks of the trading queue (routes in botai/celery.py). Thin: the services do the work."""

from celery import shared_task
from django.db import IntegrityError, InterfaceError, OperationalError

# Backoff for a batch an exchange could not take yet: 5 s, 10 s, 20 s, ... capped at 5 min.
RETRY_BASE_SECONDS, RETRY_MAX_SECONDS, MAX_RETRIES = 5, 300, 8


class BatchIncomplete(Exception):
    """Some orders of the batch met a temporary exchange error and wait for a retry."""


@shared_task(
    bind=True,
    acks_late=True,  # safe: decisions and orders are unique per (trader, signal, purpose)
    # A dropped database connection surfaces as either error, depending on when it is used.
    autoretry_for=(BatchIncomplete, IntegrityError, OperationalError, InterfaceError),
    retry_backoff=RETRY_BASE_SECONDS,
    retry_backoff_max=RETRY_MAX_SECONDS,
    max_retries=MAX_RETRIES,
)
def process_signals(self, signal_ids: list[int]) -> dict:
    from trading_app.services.engine import signals_process

    result = signals_process(signal_ids=signal_ids)
    if result.retry:
        raise BatchIncomplete(f"{result.as_dict()}")
    return result.as_dict()


@shared_task(acks_late=True)
def sync_positions() -> dict:
    from trading_app.services.sync import positions_sync

    return positions_sync().as_dict()
