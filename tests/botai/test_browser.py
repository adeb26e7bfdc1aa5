"""End to end in a real browser: log into the admin, edit a trader's risk settings (the admin's
validation shows its message), then open the dashboard from the admin index.

Runs headless Debian Chromium through chromedriver against pytest-django's live server. `make
test` installs chromium and chromium-driver when they are missing and it can; where it cannot,
this test is skipped with the reason."""

import shutil
import tempfile
from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from signals_app.models import Market
from trading_app.models import EquitySnapshot, ExchangeAccount, Trader

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--window-size=1400,1000",
)  # fmt: skip

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and CHROMEDRIVER),
    reason="headless Chromium not installed: `apt-get install chromium chromium-driver` "
    "(make test installs them when it can)",
)


@pytest.fixture
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.TemporaryDirectory(prefix="botai-chromium-")
    for flag in (*FLAGS, f"--user-data-dir={profile.name}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.implicitly_wait(5)
    yield driver
    driver.quit()
    profile.cleanup()


@pytest.fixture
def trader() -> Trader:
    account = ExchangeAccount.objects.create(name="paper-bybit", exchange="bybit")
    trader = Trader.objects.create(name="multi_crypto_10", account=account)
    trader.markets.set(
        [Market.objects.create(exchange="bybit", symbol="BTCUSDT", ccxt_symbol="BTC/USDT")]
    )
    now = timezone.now()
    for minutes in range(0, 60, 5):
        EquitySnapshot.objects.create(
            trader=trader, time=now - timedelta(minutes=minutes), equity=10000 - minutes,
            realized_pnl=0, unrealized_pnl=0, open_positions=0, peak_equity=10000,
            drawdown_percentage=minutes / 100,
        )  # fmt: skip
    return trader


def _fill(browser, field: str, value) -> None:
    element = browser.find_element("id", f"id_{field}")
    element.clear()
    element.send_keys(str(value))


def test_admin_edit_trader_risk_then_open_dashboard(live_server, browser, trader):
    get_user_model().objects.create_superuser("ops", password="a-long-test-password")
    browser.get(f"{live_server.url}/admin/login/")
    _fill(browser, "username", "ops")
    _fill(browser, "password", "a-long-test-password")
    browser.find_element("css selector", "input[type=submit]").click()
    assert browser.find_element("id", "user-tools").text.upper().startswith("WELCOME")

    browser.get(f"{live_server.url}/admin/trading_app/trader/{trader.pk}/change/")
    # A take profit under the stop loss is refused with the rule's message.
    _fill(browser, "stop_loss_percentage", 3)
    _fill(browser, "take_profit_percentage", 2.5)
    browser.find_element("name", "_save").click()
    errors = browser.find_element("css selector", ".field-take_profit_percentage .errorlist")
    assert "take profit must be above the stop loss" in errors.text
    trader.refresh_from_db()
    assert trader.stop_loss_percentage == 2

    _fill(browser, "take_profit_percentage", 6)
    _fill(browser, "max_drawdown_percentage", 15)
    browser.find_element("name", "_save").click()
    assert "was changed successfully" in browser.find_element("css selector", ".messagelist").text
    trader.refresh_from_db()
    assert (trader.stop_loss_percentage, trader.take_profit_percentage) == (3, 6)
    assert trader.max_drawdown_percentage == 15
    assert list(trader.markets.values_list("symbol", flat=True)) == ["BTCUSDT"]

    browser.get(f"{live_server.url}/admin/")
    browser.find_element("link text", "Dashboard").click()
    assert browser.title.startswith("botai dashboard")
    equity = browser.find_element("css selector", 'svg[aria-label="equity multi_crypto_10"]')
    assert equity.find_element("css selector", "polyline").get_attribute("points")
    assert equity.size["width"] > 100  # drawn, not collapsed
    assert browser.find_element("id", "last-cycle").text.endswith("is beat running (make up)?")
