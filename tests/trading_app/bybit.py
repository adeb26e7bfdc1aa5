"""A small Bybit stand-in for offline tests of the real ccxt adapter: it answers ccxt's HTTP
requests with bodies built from ccxt's recorded Bybit responses (../shared/data/ccxt/bybit) and
remembers the orders it accepted, so lost replies, retries and duplicates can be staged.

Test modules use it by importing the fixtures: `from tests.trading_app.bybit import bybit,
recorded, setup  # noqa: F401 (fixtures)`.
"""

import copy
import json
import re
from decimal import Decimal
from urllib.parse import parse_qs, urlparse

import pytest
import requests
import responses

from tests.trading_app import factories as f
from trading_app.exchanges import _ccxt_adapters, adapter_for
from trading_app.models import ExchangeAccount

HOST = "https://api-testnet.bybit.com"
PRICE = 50_000.0


class Bybit:
    """Bybit's order endpoints as far as these tests need them, from recorded bodies."""

    def __init__(self, recorded: dict, mock: responses.RequestsMock):
        self.templates = recorded["response"]["methods"]
        self.orders: dict[str, dict] = {}  # orderLinkId -> Bybit order row
        self.creates: list[dict] = []  # every create request body received
        self.fail_next_create: list = []  # exceptions or error bodies, consumed in order
        self.lose_reply = False  # accept the order but drop the HTTP reply (a timeout)
        self.positions: list[dict] = []
        mock.add_callback(responses.POST, f"{HOST}/v5/order/create", callback=self._create)
        mock.add_callback(responses.GET, re.compile(f"{HOST}/v5/order/realtime.*"), self._query)
        mock.add_callback(responses.GET, re.compile(f"{HOST}/v5/order/history.*"), self._query)
        mock.add_callback(
            responses.GET, re.compile(f"{HOST}/v5/account/wallet-balance.*"), self._balance
        )
        mock.add_callback(
            responses.GET, re.compile(f"{HOST}/v5/position/list.*"), self._position_list
        )

    def _reply(self, body: dict):
        return 200, {"Content-Type": "application/json"}, json.dumps(body)

    def _create(self, request):
        body = json.loads(request.body)
        self.creates.append(body)
        if self.fail_next_create:
            failure = self.fail_next_create.pop(0)
            if isinstance(failure, Exception):
                raise failure
            return self._reply(failure)
        link = body["orderLinkId"]
        row = copy.deepcopy(
            self.templates["fetchClosedOrder"][0]["httpResponse"]["result"]["list"][0]
        )
        row.update(
            orderId=f"id-{link}", orderLinkId=link, symbol=body["symbol"], side=body["side"],
            qty=body["qty"], cumExecQty=body["qty"], avgPrice=str(PRICE),
            cumExecValue=str(float(body["qty"]) * PRICE), cumExecFee="0.5",
            cumFeeDetail={"USDT": "0.5"}, reduceOnly=bool(body.get("reduceOnly")),
        )  # fmt: skip
        self.orders[link] = row
        if self.lose_reply:
            self.lose_reply = False
            raise requests.exceptions.ReadTimeout("reply lost")
        reply = copy.deepcopy(self.templates["createOrder"][1]["httpResponse"])
        reply["result"] = {"orderId": row["orderId"], "orderLinkId": link}
        return self._reply(reply)

    def _query(self, request):
        query = {k: v[0] for k, v in parse_qs(urlparse(request.url).query).items()}
        rows = [
            row for row in self.orders.values()
            if query.get("orderLinkId") in (None, row["orderLinkId"])
            and query.get("orderId") in (None, row["orderId"])
        ]  # fmt: skip
        if "/history" in request.url:
            rows = [r for r in rows if r["orderStatus"] == "Filled"]
        else:
            rows = [r for r in rows if "orderId" in query or r["orderStatus"] != "Filled"]
        body = copy.deepcopy(self.templates["fetchClosedOrder"][0]["httpResponse"])
        body["result"]["list"] = rows
        return self._reply(body)

    def _balance(self, request):
        return self._reply(self.templates["fetchBalance"][0]["httpResponse"])

    def _position_list(self, request):
        body = copy.deepcopy(self.templates["fetchPositions"][0]["httpResponse"])
        body["result"]["list"] = self.positions
        return self._reply(body)

    def hold(self, *, symbol: str, side: str, size: str) -> None:
        row = copy.deepcopy(
            self.templates["fetchPositions"][0]["httpResponse"]["result"]["list"][0]
        )
        row.update(symbol=symbol, side=side, size=size, avgPrice=str(PRICE))
        self.positions = [row]


@pytest.fixture(scope="module")
def recorded(shared_data):
    folder = shared_data / "ccxt" / "bybit"
    return {n: json.loads((folder / f"{n}.json").read_text()) for n in ("markets", "response")}


@pytest.fixture
def bybit(recorded):
    with responses.RequestsMock(assert_all_requests_are_fired=False) as mock:
        yield Bybit(recorded, mock)


@pytest.fixture
def setup(recorded, bybit):
    market = f.market("BTCUSDT", ccxt_symbol="BTC/USDT:USDT", amount_step=Decimal("0.001"),
                      min_amount=Decimal("0.001"), min_notional=None)  # fmt: skip
    f.store_candles(market, f.calm_candles(n=120, price=PRICE))
    account = ExchangeAccount(
        name="bybit-testnet", exchange="bybit", mode=ExchangeAccount.Mode.TESTNET,
        options={"enableUnifiedAccount": True, "enableUnifiedMargin": False},
    )  # fmt: skip
    account.set_credentials(api_key="testnet-key", secret="testnet-secret")
    account.save()
    _ccxt_adapters.clear()
    adapter_for(account).use_markets(recorded["markets"])
    trader = f.trader(account, [market], per_trade_percentage=10)  # 0.02 BTC at 50,000
    yield trader, market
    _ccxt_adapters.clear()
