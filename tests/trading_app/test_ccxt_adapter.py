"""The ccxt adapter offline, at the HTTP layer: ccxt's own recorded Bybit markets and responses
(../shared/data/ccxt/bybit) answer its requests through `responses`, and the tests check what
the adapter sends (URL, body, our client order id) and what it makes of the answers."""

import json
import re
from decimal import Decimal

import pytest
import requests
import responses

from trading_app.exchanges.base import (
    OrderRequest,
    OrderStatus,
    PermanentExchangeError,
    TemporaryExchangeError,
)
from trading_app.exchanges.ccxt_adapter import CcxtExchange

TESTNET = "https://api-testnet.bybit.com"
LIVE = "https://api.bybit.com"
# ccxt's static test harness sets these so private calls skip two account-status requests.
UNIFIED = {"enableUnifiedAccount": True, "enableUnifiedMargin": False}


@pytest.fixture(scope="module")
def recorded(shared_data):
    folder = shared_data / "ccxt" / "bybit"
    return {
        name: json.loads((folder / f"{name}.json").read_text())
        for name in ("markets", "currencies", "response", "request")
    }


def _body(recorded, method: str, index: int = 0) -> dict:
    return recorded["response"]["methods"][method][index]["httpResponse"]


@pytest.fixture
def bybit(recorded):
    def build(*, sandbox: bool = True) -> CcxtExchange:
        return CcxtExchange(
            "bybit", sandbox=sandbox, api_key="test-key", secret="test-secret", options=UNIFIED,
            markets=recorded["markets"], currencies=recorded["currencies"],
        )  # fmt: skip

    return build


@pytest.fixture
def http():
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield mock


def _sent(call) -> tuple[str, dict]:
    return call.request.url, json.loads(call.request.body) if call.request.body else {}


def test_market_order_carries_client_id_and_attached_sl_tp(bybit, recorded, http):
    http.add(responses.POST, f"{TESTNET}/v5/order/create", json=_body(recorded, "createOrder", 1))
    order = bybit().create_order(
        OrderRequest(
            client_order_id="btabc-1-s42-o", symbol="BTC/USDT:USDT", side="buy",
            amount=Decimal("0.0123"), stop_loss=Decimal("40000"), take_profit=Decimal("50000"),
        )
    )  # fmt: skip
    url, body = _sent(http.calls[0])
    assert url == f"{TESTNET}/v5/order/create"
    assert body == {
        "symbol": "BTCUSDT", "side": "Buy", "orderType": "Market", "category": "linear",
        "orderLinkId": "btabc-1-s42-o", "qty": "0.012",  # ccxt truncates to the 0.001 lot step
        "stopLoss": "40000", "takeProfit": "50000",
    }  # fmt: skip
    # Bybit's reply carries the ids only: the state is unknown until fetched.
    assert order.id == "1609920528435648000"
    assert order.status is None
    assert http.calls[0].request.headers["X-BAPI-API-KEY"] == "test-key"


def test_reduce_only_close_matches_ccxts_recorded_request(bybit, recorded, http):
    """ccxt's own request case for an inverse reduce-only market sell, through our adapter."""
    case = next(
        c for c in recorded["request"]["methods"]["createOrder"]
        if c["description"] == "Swap inverse market sell order"
    )  # fmt: skip
    http.add(responses.POST, f"{TESTNET}/v5/order/create", json=_body(recorded, "createOrder", 1))
    bybit().create_order(
        OrderRequest(
            client_order_id="btabc-1-s42-c", symbol="BTC/USD:BTC", side="sell", amount=Decimal(1),
            reduce_only=True,
        )
    )  # fmt: skip
    url, body = _sent(http.calls[0])
    assert url.split("?")[0] == case["url"]
    assert body == json.loads(case["output"]) | {"orderLinkId": "btabc-1-s42-c"}


def test_live_mode_talks_to_the_production_host(bybit, recorded, http):
    http.add(responses.POST, f"{LIVE}/v5/order/create", json=_body(recorded, "createOrder", 1))
    adapter = bybit(sandbox=False)
    adapter.create_order(
        OrderRequest(client_order_id="x1", symbol="LTC/USDT", side="buy", amount=Decimal("0.1"))
    )
    assert http.calls[0].request.url.startswith(LIVE)
    assert not adapter.sandbox


def _with_link_id(body: dict, client_order_id: str) -> dict:
    body = json.loads(json.dumps(body))
    body["result"]["list"][0]["orderLinkId"] = client_order_id
    return body


def test_find_order_asks_open_then_closed_orders_by_client_id(bybit, recorded, http):
    empty = _body(recorded, "fetchOpenOrder") | {"result": {"category": "linear", "list": []}}
    http.add(responses.GET, re.compile(f"{TESTNET}/v5/order/realtime.*"), json=empty)
    http.add(
        responses.GET,
        re.compile(f"{TESTNET}/v5/order/history.*"),
        json=_with_link_id(_body(recorded, "fetchClosedOrder"), "btabc-1-s42-o"),
    )
    order = bybit().find_order(client_order_id="btabc-1-s42-o", symbol="BTC/USDT:USDT")
    assert [c.request.url for c in http.calls] == [
        f"{TESTNET}/v5/order/realtime?symbol=BTCUSDT&category=linear&orderLinkId=btabc-1-s42-o",
        f"{TESTNET}/v5/order/history?symbol=BTCUSDT&category=linear&orderLinkId=btabc-1-s42-o",
    ]
    assert order.client_order_id == "btabc-1-s42-o"
    assert order.status == OrderStatus.CLOSED
    assert (order.filled, order.average, order.fee) == (
        Decimal("0.001"),
        Decimal("123498"),
        Decimal("0.0679239"),
    )


def test_find_order_ignores_orders_of_other_client_ids(bybit, recorded, http):
    """An exchange that ignores the filter returns other orders: they are not ours."""
    http.add(
        responses.GET,
        re.compile(f"{TESTNET}/v5/order/.*"),
        json=_with_link_id(_body(recorded, "fetchClosedOrder"), "someone-else"),
    )
    assert bybit().find_order(client_order_id="btabc-1-s42-o", symbol="BTC/USDT:USDT") is None


def test_fetch_order_reads_the_realtime_endpoint(bybit, recorded, http):
    http.add(
        responses.GET, re.compile(f"{TESTNET}/v5/order/realtime.*"),
        json=_body(recorded, "fetchOpenOrder"),
    )  # fmt: skip
    order = bybit().fetch_order(
        order_id="3606515b-e4d7-4ea4-b096-bb247d0661ae", symbol="BTC/USDT:USDT"
    )
    assert "orderId=3606515b-e4d7-4ea4-b096-bb247d0661ae" in http.calls[0].request.url
    assert order.status == OrderStatus.OPEN
    assert order.filled == 0


def test_balance_and_positions_from_recorded_answers(bybit, recorded, http):
    http.add(responses.GET, re.compile(f"{TESTNET}/v5/account/wallet-balance.*"),
             json=_body(recorded, "fetchBalance"))  # fmt: skip
    http.add(responses.GET, re.compile(f"{TESTNET}/v5/position/list.*"),
             json=_body(recorded, "fetchPositions"))  # fmt: skip
    adapter = bybit()
    usdt = adapter.fetch_balance()["USDT"]
    assert (usdt.free, usdt.used) == (Decimal("3229.64065465"), Decimal("92.61831144"))
    [position] = adapter.fetch_positions(["LTC/USDT:USDT"])
    assert (position.symbol, position.side, position.amount) == (
        "LTC/USDT:USDT",
        "long",
        Decimal("1.2"),
    )
    assert position.entry_price == Decimal("64.59947917")


def test_market_rules_from_the_exchange_market_list(bybit):
    rules = bybit().market_rules(["BTC/USDT:USDT", "BTC/USDT", "NOPE/USDT"])
    assert set(rules) == {"BTC/USDT:USDT", "BTC/USDT"}
    assert rules["BTC/USDT:USDT"].amount_step == Decimal("0.001")
    assert rules["BTC/USDT:USDT"].min_amount == Decimal("0.001")
    assert rules["BTC/USDT"].min_notional == Decimal("5")


def _order(adapter):
    return adapter.create_order(
        OrderRequest(client_order_id="c1", symbol="BTC/USDT:USDT", side="buy", amount=Decimal(1))
    )


@pytest.mark.parametrize(
    ("answer", "expected", "reason"),
    [
        (requests.exceptions.ReadTimeout("timed out"), TemporaryExchangeError, "RequestTimeout"),
        (requests.exceptions.ConnectionError("refused"), TemporaryExchangeError, "NetworkError"),
        ({"status": 502, "body": "Bad Gateway"}, TemporaryExchangeError, "ExchangeNotAvailable"),
        ({"json": {"retCode": 10006, "retMsg": "Too many visits!", "result": {}, "retExtInfo": {},
                   "time": 1}}, TemporaryExchangeError, "RateLimitExceeded"),
        ({"json": {"retCode": 10016, "retMsg": "System error. Please try again later.",
                   "result": {}, "retExtInfo": {}, "time": 1}}, TemporaryExchangeError, "10016"),
        ({"json": {"retCode": 110007, "retMsg": "ab not enough for new order", "result": {},
                   "retExtInfo": {}, "time": 1}}, PermanentExchangeError, "InsufficientFunds"),
        ({"json": {"retCode": 10003, "retMsg": "API key is invalid.", "result": {},
                   "retExtInfo": {}, "time": 1}}, PermanentExchangeError, "AuthenticationError"),
    ],
)  # fmt: skip
def test_ccxt_errors_become_temporary_or_permanent(bybit, http, answer, expected, reason):
    url = f"{TESTNET}/v5/order/create"
    if isinstance(answer, Exception):
        http.add(responses.POST, url, body=answer)
    else:
        http.add(responses.POST, url, **answer)
    with pytest.raises(expected, match=reason):
        _order(bybit())


def test_credentials_never_in_repr(bybit):
    adapter = bybit()
    assert "test-key" not in repr(adapter)
    assert "test-secret" not in repr(adapter)
    assert repr(adapter) == "<CcxtExchange bybit sandbox=True>"


def test_unknown_exchange_is_permanent():
    with pytest.raises(PermanentExchangeError, match="no exchange 'nosuchexchange'"):
        CcxtExchange("nosuchexchange", sandbox=False)
