"""Item 7 (API half): schemathesis generates valid and invalid requests for every operation of
our OpenAPI schema, fetched from /api/schema/ of the app served by a real gunicorn on 127.0.0.1
against PostgreSQL and Redis, as a staff user: no 5xx, every 4xx says what was wrong. (The
in-process variant with more examples per operation is tests/botai/test_api_fuzz.py.)

Item 3 (web half): PostgreSQL drops gunicorn's pooled connections (CONN_MAX_AGE) while they are
idle: the next requests are answered normally (CONN_HEALTH_CHECKS reconnects)."""

import os
import socket
import subprocess
import sys
from collections import Counter
from decimal import Decimal

import pytest
import requests
import schemathesis
from django.contrib.auth import get_user_model
from django.db import connection
from hypothesis import HealthCheck, reject, settings
from rest_framework.authtoken.models import Token
from schemathesis.checks import not_a_server_error

from signals_app.models import MLConfig
from tests.conftest import ROOT, _database_url
from tests.reliability.conftest import needs_postgresql, other_sessions, terminate, wait_for
from tests.trading_app import factories as f

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXAMPLES = 12  # per operation and generation method (positive, negative)

api = schemathesis.from_pytest_fixture(
    "live_schema",
    data_generation_methods=[schemathesis.DataGenerationMethod.positive,
                             schemathesis.DataGenerationMethod.negative],
    generation_config=schemathesis.GenerationConfig(with_security_parameters=False),
)  # fmt: skip


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def live_app(transactional_db):
    """gunicorn serving botai on 127.0.0.1 with rows to find: markets, candles, a signal, an
    account and a trader with an order. Yields (base url, staff token)."""
    MLConfig.load()
    market = f.market("BTCUSDT")
    f.store_candles(market, f.calm_candles(n=60, price=50_000.0))
    account = f.paper_account(paper_initial_balance=Decimal(100_000))
    account.set_credentials(api_key="k", secret="s")
    account.save()
    trader = f.trader(account, [market])
    from trading_app.services.engine import signals_process

    signals_process(signal_ids=[f.signal(market).pk, f.signal(f.market("ETHUSDT")).pk])
    assert trader.orders.exists()
    staff = get_user_model().objects.create_user("ops", is_staff=True)
    token = Token.objects.create(user=staff).key
    port = _free_port()
    env = {**os.environ, "DATABASE_URL": _database_url(connection.settings_dict)}
    log = (ROOT / "data" / "logs" / "test-gunicorn.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "botai.wsgi", "--bind", f"127.0.0.1:{port}",
         "--workers", "2", "--threads", "2", "--timeout", "30"],
        cwd=ROOT, env=env, stdout=log, stderr=log,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        try:
            return requests.get(f"{base}/api/schema/", timeout=10).status_code == 200
        except requests.RequestException:  # not listening yet, or still importing
            assert server.poll() is None, "gunicorn exited"
            return False

    wait_for(up, timeout=60, what="gunicorn serving", every=0.3)
    yield base, token
    server.terminate()
    server.wait(timeout=20)
    log.close()


@pytest.fixture
def live_schema(live_app):
    base, _ = live_app
    return schemathesis.from_uri(f"{base}/api/schema/?format=json", base_url=base)


@pytest.fixture(scope="module")
def tally(figures):
    """Cases sent, operations covered and status classes seen, for RELIABILITY.md."""
    seen = {"operations": set(), "statuses": Counter()}
    yield seen
    if seen["operations"]:
        figures.append(
            {"fault": "schemathesis on every API operation (gunicorn, staff token)",
             "operations": len(seen["operations"]), "cases": sum(seen["statuses"].values()),
             **dict(sorted(seen["statuses"].items())), "server_errors": 0,
             "4xx_without_message": 0}
        )  # fmt: skip


def _four_xx_says_why(response, case) -> None:
    if 400 <= response.status_code < 500:
        body = response.json()
        assert body, f"{case.method} {case.formatted_path}: {response.status_code} without message"
        messages = body.values() if isinstance(body, dict) else body
        assert all(messages), f"{case.formatted_path}: an empty message in {body}"


@api.parametrize()
@settings(
    max_examples=EXAMPLES, deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)  # fmt: skip
def test_every_operation_answers_every_input(case, live_app, tally):
    if case.media_type and "json" not in case.media_type and not isinstance(case.body, dict):
        reject()  # a form body that is not a mapping cannot be encoded
    _, token = live_app
    response = case.call(headers={"Authorization": f"Token {token}"}, timeout=30)
    tally["operations"].add(f"{case.method} {case.path}")
    tally["statuses"][f"{response.status_code // 100}xx"] += 1
    case.validate_response(response, checks=(not_a_server_error,))
    _four_xx_says_why(response, case)


@needs_postgresql
def test_web_survives_its_database_connections_dropped(live_app, figures):
    base, token = live_app
    headers = {"Authorization": f"Token {token}"}
    paths = ["/api/v1/traders", "/api/v1/orders", "/api/v1/signals", "/api/v1/ml/metrics"]
    for path in paths * 2:  # both gunicorn workers open and keep a connection
        assert requests.get(base + path, headers=headers, timeout=10).status_code == 200
    dropped = terminate(other_sessions())
    assert dropped >= 1
    codes = [requests.get(base + p, headers=headers, timeout=10).status_code for p in paths * 3]
    assert codes == [200] * len(codes)
    figures.append(
        {"fault": "PostgreSQL drops the web process's idle pooled connections",
         "connections_dropped": dropped, "requests_after": len(codes), "server_errors": 0}
    )  # fmt: skip
