"""Item 4: exchange faults at the HTTP layer of the real ccxt adapter (Bybit's answers built from
ccxt's recorded responses, E's stand-in in tests/trading_app/test_orders.py), the cases E's tests
do not already cover: HTTP 502/503/504, the lookup itself timing out after a lost reply, an
invalid order, and the retry with backoff done by a real Celery worker through the broker.

Covered by E, referenced in RELIABILITY.md: lost reply found by client order id, timeout before
the exchange, rate limit, insufficient funds -> REJECTED with the exchange's reason, giving up
after MAX_ATTEMPTS, reversal order; paper: balance and lot rules (tests/trading_app/test_risk.py).
"""

import json
import time

import pytest
import requests
import responses
from celery.contrib.testing.worker import start_worker as worker_thread
from celery.signals import task_retry

from botai.celery import app
from signals_app.models import Signal
from tests.reliability.conftest import PROCESS_SIGNALS, wait_for
from tests.trading_app import factories as f
from tests.trading_app.bybit import Bybit, recorded, setup  # noqa: F401 (fixtures)
from trading_app.models import Order, Position
from trading_app.tasks import RETRY_BASE_SECONDS

pytestmark = pytest.mark.django_db(transaction=True)
BUSY = "<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"


class FaultyBybit(Bybit):
    """Bybit's stand-in, also answering with HTTP error statuses and failing order lookups."""

    def __init__(self, answers, mock):
        super().__init__(answers, mock)
        self.fail_next_query: list = []
        self.create_times: list[float] = []

    def _create(self, request):
        self.create_times.append(time.monotonic())
        if self.fail_next_create and isinstance(self.fail_next_create[0], int):
            self.creates.append(json.loads(request.body))
            return self.fail_next_create.pop(0), {"Content-Type": "text/html"}, BUSY
        return super()._create(request)

    def _query(self, request):
        if self.fail_next_query:
            raise self.fail_next_query.pop(0)
        return super()._query(request)


@pytest.fixture
def bybit(recorded):  # noqa: F811 - replaces the stand-in `setup` builds on
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield FaultyBybit(recorded, mock)


def _orders_at_the_exchange(bybit) -> dict[str, int]:
    """How many creates reached the exchange per client order id, and how many it holds."""
    sent: dict[str, int] = {}
    for body in bybit.creates:
        sent[body["orderLinkId"]] = sent.get(body["orderLinkId"], 0) + 1
    return {"held": len(bybit.orders), "distinct_ids": len(sent)}


def test_http_errors_and_a_failed_lookup_are_retried_and_never_duplicate(setup, bybit, figures):  # noqa: F811
    from trading_app.services.engine import signals_process

    trader, market = setup
    signal = f.signal(market)
    # 502, then 504, then accepted with the reply lost AND the lookup after it timing out, then
    # the next attempt's lookup finds it.
    bybit.fail_next_create = [502, 504]
    runs = [signals_process(signal_ids=[signal.pk]) for _ in range(2)]
    assert all(run.retry for run in runs)
    bybit.lose_reply = True
    bybit.fail_next_query = [requests.exceptions.ReadTimeout("lookup lost too")]
    third = signals_process(signal_ids=[signal.pk])
    assert third.retry  # accepted, but nobody could tell yet: still SUBMITTED, to look up again
    order = Order.objects.get()
    assert (order.status, order.exchange_order_id) == ("SUBMITTED", "")
    last = signals_process(signal_ids=[signal.pk])
    assert not last.retry
    order.refresh_from_db()
    assert order.exchange_order_id == f"id-{order.client_order_id}"  # found by client order id
    assert order.attempts == 3
    assert len(bybit.creates) == 3  # 502, 504, accepted: never a create after the acceptance
    assert _orders_at_the_exchange(bybit) == {"held": 1, "distinct_ids": 1}
    figures.append(
        {"fault": "exchange HTTP 502, 504, lost reply + lost lookup (ccxt adapter)",
         "attempts": order.attempts, "orders_at_exchange": 1, "duplicates": 0, "lost": 0}
    )  # fmt: skip


def test_an_invalid_order_is_rejected_with_the_exchange_reason(setup, bybit):  # noqa: F811
    from trading_app.services.engine import signals_process

    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [
        {"retCode": 110003, "retMsg": "Order price is out of permissible range", "result": {},
         "retExtInfo": {}, "time": 1}
    ]  # fmt: skip
    assert not signals_process(signal_ids=[signal.pk]).retry
    order = Order.objects.get()
    assert order.status == "REJECTED"
    assert "InvalidOrder" in order.status_reason
    assert "Order price is out of permissible range" in order.status_reason
    assert Position.objects.get().status == "CANCELED"
    assert len(bybit.creates) == 1  # a refusal is not retried


@pytest.mark.e2e
def test_the_trading_task_retries_with_backoff_through_the_broker(setup, bybit, figures):  # noqa: F811
    """A real Celery worker (in a thread of this process, so the HTTP stand-in answers it) takes
    the batch from Redis: the exchange is busy (503), the task is retried by the broker after a
    backoff, the retry looks the order up first and then places it once."""
    trader, market = setup
    signal = f.signal(market)
    bybit.fail_next_create = [503]
    app.control.purge()
    retries = []

    def retried(request=None, reason=None, **kwargs):
        retries.append(str(reason))

    task_retry.connect(retried)
    try:
        with worker_thread(app, pool="solo", queues=["trading"], perform_ping_check=False):
            app.send_task(PROCESS_SIGNALS, args=[[signal.pk]])
            order = wait_for(
                lambda: Order.objects.filter(exchange_order_id__startswith="id-").first(),
                timeout=30, what="the order placed after the retry",
            )  # fmt: skip
    finally:
        task_retry.disconnect(retried)
    [reason] = retries  # one retry, sent back through the broker with a countdown
    assert reason.startswith("Retry in ")
    waited = bybit.create_times[1] - bybit.create_times[0]
    assert waited <= RETRY_BASE_SECONDS + 5  # the backoff (jittered 0..5 s) and the work
    assert (order.status, order.attempts) == ("SUBMITTED", 2)
    assert [b["orderLinkId"] for b in bybit.creates] == [order.client_order_id] * 2
    assert _orders_at_the_exchange(bybit)["held"] == 1
    signal.refresh_from_db()
    assert (signal.status, signal.orders_attempted, signal.orders_created) == (
        Signal.Status.EXECUTED, 1, 1,
    )  # fmt: skip
    figures.append(
        {"fault": "exchange HTTP 503 on a real worker: task retried with backoff via Redis",
         "retries": 1, "seconds_between_attempts": round(waited, 1), "orders_at_exchange": 1,
         "duplicates": 0, "lost": 0}
    )  # fmt: skip
