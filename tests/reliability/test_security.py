"""Item 8: who may write, and where exchange secrets never appear.

The endpoints are enumerated from Django's URL resolver, so an endpoint added later is tested
without anyone remembering to: every URL and every write method, anonymously and as a logged-in
user without staff rights, must be refused, and the database must be unchanged afterwards (row
contents hashed, not just counted). A path parameter the table below does not know fails the test
until it is added. `manage.py check --deploy` with production settings is proven silent by
tests/botai/test_settings.py::test_check_deploy_is_silent_with_production_values."""

import hashlib
import json
import logging
import re
from collections import Counter

import pytest
from django.contrib.auth import get_user_model
from django.db import connection
from django.test import Client
from django.urls import URLResolver, get_resolver
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from signals_app.models import CycleRun
from tests.trading_app import factories as f
from tests.trading_app.bybit import bybit, recorded  # noqa: F401 (fixtures)
from trading_app.exchanges import _ccxt_adapters, adapter_for
from trading_app.models import BacktestRun, ExchangeAccount, Order
from trading_app.services.engine import signals_process
from trading_app.services.sync import positions_sync

pytestmark = pytest.mark.django_db(transaction=True, reset_sequences=True)
WRITES = ("POST", "PUT", "PATCH", "DELETE")
# Path parameters -> a value naming a row that exists (every table's first row has pk 1 here).
PARAMETERS = {
    "pk": "1", "id": "1", "object_id": "1", "content_type_id": "1", "symbol": "BTCUSDT",
    "task_id": "0f0e0d0c", "app_label": "trading_app", "path": "nowhere", "url": "nowhere/",
}  # fmt: skip
# How you log in and out: not writes of data (Django's own views).
AUTHENTICATION = {"admin/login/", "admin/logout/"}
REFUSED = {401, 403, 404, 405}
API_KEY, SECRET, PASSPHRASE = "AK-7f3c9e1d2b44", "SK-5e8a0c4f9d7b6a31e2", "PP-c0ffee4271"


def _routes(patterns, prefix: str = ""):
    for pattern in patterns:
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, prefix + str(pattern.pattern))
        else:
            yield prefix + str(pattern.pattern)


def _concrete(route: str) -> str:
    def value(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        assert name in PARAMETERS, f"{route}: add a value for the path parameter {name!r}"
        return PARAMETERS[name]

    path = re.sub(r"<(?:\w+:)?(\w+)>|\(\?P<(\w+)>[^)]*\)", value, route)
    return "/" + path.replace("^", "").replace("$", "")


def every_url() -> list[str]:
    urls = sorted({_concrete(route) for route in _routes(get_resolver().url_patterns)})
    return [url for url in urls if url.removeprefix("/") not in AUTHENTICATION]


def _fingerprint() -> dict[str, str]:
    """A hash of every table's rows, in any database (sessions left out: logging in writes one)."""
    tables = [t for t in connection.introspection.table_names() if t != "django_session"]
    fingerprint = {}
    with connection.cursor() as cursor:
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            rows = sorted(repr(row) for row in cursor.fetchall())
            fingerprint[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
    return fingerprint


@pytest.fixture
def world():
    """One row (pk 1) in each table an endpoint can address, credentials stored on the account,
    a staff user (pk 1) and a plain user (pk 2)."""
    market = f.market("BTCUSDT")
    f.store_candles(market, f.calm_candles(n=60, price=50_000.0))
    account = f.paper_account()
    account.set_credentials(api_key=API_KEY, secret=SECRET, password=PASSPHRASE)
    account.save()
    trader = f.trader(account, [market])
    signal = f.signal(market)
    signals_process(signal_ids=[signal.pk])
    positions_sync()
    CycleRun.objects.create(started_at=signal.created_at)
    BacktestRun.objects.create(
        trader=trader, trader_name=trader.name, start=signal.candle_time, end=signal.candle_time,
        data_source="database",
    )  # fmt: skip
    users = get_user_model().objects
    staff = users.create_user("ops", password="x", is_staff=True, is_superuser=True)
    plain = users.create_user("viewer", password="x")
    return {"staff": staff, "plain": plain, "account": account, "trader": trader}


def _clients(world) -> dict[str, Client]:
    anonymous = APIClient()
    plain_session = APIClient()
    plain_session.force_login(world["plain"])
    plain_token = APIClient()
    plain_token.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world['plain'])}")
    return {"anonymous": anonymous, "user (session)": plain_session, "user (token)": plain_token}


def test_every_write_needs_a_staff_user(world, figures):
    urls = every_url()
    assert "/api/v1/traders/1" in urls
    assert "/admin/trading_app/trader/1/change/" in urls
    clients = _clients(world)
    before = _fingerprint()
    outcomes: Counter = Counter()
    for url in urls:
        for method in WRITES:
            for who, client in clients.items():
                response = client.generic(method, url, data="{}", content_type="application/json")
                code = response.status_code
                login = code == 302 and "/admin/login/" in response.get("Location", "")
                assert code in REFUSED or login, f"{who} {method} {url}: {code}"
                outcomes[code] += 1
                if url.startswith("/api/") and code in (401, 403):
                    assert response.json()["detail"], f"{method} {url}: no message"
    assert _fingerprint() == before  # nothing written by anyone without staff rights

    # The same writes are open to staff (the enumeration reaches real, writable endpoints).
    staff = APIClient()
    staff.force_authenticate(world["staff"])
    change = staff.patch("/api/v1/traders/1", {"max_positions": 7}, format="json")
    assert change.status_code == 200, change.json()
    figures.append(
        {"fault": "writes without staff rights (every URL x POST/PUT/PATCH/DELETE x anonymous, "
                  "user by session, user by token)",
         "urls": len(urls), "requests": sum(outcomes.values()),
         "refused": dict(sorted(outcomes.items())), "accepted": 0, "rows_changed": 0}
    )  # fmt: skip


def test_session_writes_need_the_csrf_token(world):
    client = Client(enforce_csrf_checks=True)
    client.force_login(world["staff"])
    body = json.dumps({"max_positions": 8})
    refused = client.patch("/api/v1/traders/1", body, content_type="application/json")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    admin_form = client.post("/admin/trading_app/trader/1/change/", {"name": "renamed"})
    assert admin_form.status_code == 403
    client.get("/admin/")  # the admin sets the CSRF cookie
    token = client.cookies["csrftoken"].value
    accepted = client.patch(
        "/api/v1/traders/1", body, content_type="application/json", HTTP_X_CSRFTOKEN=token
    )
    assert accepted.status_code == 200, accepted.json()
    world["trader"].refresh_from_db()
    assert world["trader"].max_positions == 8
    # A token-authenticated client (scripts) carries no cookie to forge: no CSRF token needed.
    scripted = APIClient(enforce_csrf_checks=True)
    scripted.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.create(user=world['staff'])}")
    assert (
        scripted.patch("/api/v1/traders/1", {"max_positions": 9}, format="json").status_code == 200
    )


def _admin_pages() -> list[str]:
    return [u for u in every_url() if u.startswith("/admin/") and "logout" not in u]


def _text_tables_holding(value: str) -> list[str]:
    """The tables with a row whose text holds `value`, in any database."""
    tables = connection.introspection.table_names()
    with connection.cursor() as cursor:
        found = []
        for table in tables:
            cursor.execute(f"SELECT * FROM {connection.ops.quote_name(table)}")
            if any(value in str(cell) for row in cursor.fetchall() for cell in row):
                found.append(table)
        return found


def test_exchange_secrets_are_never_shown_stored_or_logged(
    world,
    bybit,  # noqa: F811
    recorded,  # noqa: F811
    caplog,
    figures,
):
    staff = Client()
    staff.force_login(world["staff"])
    secrets = (API_KEY, SECRET, PASSPHRASE)
    # Entered through the admin form, including a submission the form refuses (re-rendered).
    form = {
        "name": "bybit-testnet", "exchange": "bybit", "mode": "TESTNET", "options": "{",
        "client_id_prefix": "bt1", "quote_currency": "USDT", "paper_initial_balance": "0",
        "paper_slippage_percentage": "0", "paper_fee_percentage": "0",
        "api_key": API_KEY, "secret": SECRET, "password": PASSPHRASE,
    }  # fmt: skip
    refused = staff.post("/admin/trading_app/exchangeaccount/add/", form)
    assert refused.status_code == 200
    assert b"errornote" in refused.content
    shown = [s for s in secrets if s.encode() in refused.content]
    form["options"] = json.dumps({"enableUnifiedAccount": True, "enableUnifiedMargin": False})
    created = staff.post("/admin/trading_app/exchangeaccount/add/", form)
    assert created.status_code == 302, re.findall(rb"errorlist[^>]*>(.*?)</ul", created.content)
    testnet = ExchangeAccount.objects.get(name="bybit-testnet")
    assert testnet.credentials() == {"api_key": API_KEY, "secret": SECRET, "password": PASSPHRASE}

    # Used: an order through the ccxt adapter at Bybit's HTTP layer, one refused for bad keys.
    with caplog.at_level(logging.DEBUG):
        _ccxt_adapters.clear()
        adapter_for(testnet).use_markets(recorded["markets"])
        market = f.market("BTCPERP", ccxt_symbol="BTC/USDT:USDT", min_notional=None)
        f.store_candles(market, f.calm_candles(n=120, price=50_000.0))
        f.trader(testnet, [market], name="testnet-trader", per_trade_percentage=10)
        bybit.fail_next_create = [
            {"retCode": 10003, "retMsg": "API key is invalid.", "result": {}, "retExtInfo": {},
             "time": 1}
        ]  # fmt: skip
        signals_process(signal_ids=[f.signal(market).pk])
        rejected = Order.objects.get(market=market)
        assert rejected.status == "REJECTED"
        assert "API key is invalid" in rejected.status_reason
        assert repr(adapter_for(testnet)) == "<CcxtExchange bybit sandbox=True>"
    _ccxt_adapters.clear()
    logged = [s for s in secrets if s in caplog.text]

    pages = {}
    for url in _admin_pages():
        response = staff.get(url)
        if response.status_code == 200:
            pages[url] = response.content
    api = APIClient()
    api.force_authenticate(world["staff"])
    for route in every_url():
        if route.startswith("/api/"):
            response = api.get(route)
            pages[route] = response.content
    in_pages = {url: s for url, body in pages.items() for s in secrets if s.encode() in body}
    in_database = {s: _text_tables_holding(s) for s in secrets}
    assert (shown, logged, in_pages) == ([], [], {})
    assert in_database == {s: [] for s in secrets}
    assert _text_tables_holding("bybit-testnet")  # the scan does find what is stored
    figures.append(
        {"fault": "exchange secrets looked for in the admin, API answers, logs and every table",
         "pages_checked": len(pages), "tables_checked": len(connection.introspection.table_names()),
         "log_lines_checked": len(caplog.records), "found": 0}
    )  # fmt: skip
