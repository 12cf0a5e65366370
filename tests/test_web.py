"""The web terminal (qaex/web, served by qaex/api/web.py) in a real browser against a real server.

Debian's chromium driven by playwright (``executable_path=/usr/bin/chromium``: no browser download).
Without chromium or playwright the browser tests skip locally and FAIL when ``CI`` is set (.ci/run
installs chromium). The server runs with the market maker on. The browser tests share one page and
run in file order, each building on the last (log in, trade, restart, suspend); screenshots go to
docs/web/ (docs/web.md links them).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from qaex.api.web import default_diff_url
from tests.conftest import launch, wait_ready

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "docs" / "web"
PASSWORD = "web-pass-1234"
ENV = {"QAEX_MARKET_MAKER": "1", "QAEX_MARKET_MAKER_INTERVAL": "0.2", "QAEX_MARK_INTERVAL": "0.3"}


class Running:
    """The server under test; restarted in place (same data directory, same DIFF port)."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.server = launch(workdir, extra_env=ENV)
        wait_ready(self.server)
        self.user_id = f"w{os.getpid()}{int(time.time()) % 100000}"
        self.token = ""

    def restart(self) -> None:
        diff_port = self.server.diff_url.rsplit(":", 1)[1].split("/")[0]
        assert self.server.stop() == 0
        self.server = launch(
            self.workdir, data_dir=self.server.data_dir, extra_env={**ENV, "QAEX_DIFF_PORT": diff_port}
        )
        wait_ready(self.server)
        self.token = ""

    def http(self) -> httpx.Client:
        if not self.token:
            login = httpx.post(
                self.server.http_url + "/api/auth/login", json={"user_id": self.user_id, "password": PASSWORD}
            )
            assert login.status_code == 200, login.text
            self.token = login.json()["token"]
        return httpx.Client(base_url=self.server.http_url, headers={"Authorization": f"Bearer {self.token}"})

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {self.server.admin_token}"}
        return httpx.request(method, self.server.http_url + path, headers=headers, **kwargs)


@pytest.fixture(scope="module")
def running(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Running]:
    state = Running(tmp_path_factory.mktemp("qaex-web"))
    yield state
    state.server.stop()


# -- without a browser -----------------------------------------------------------------------------------
def test_pages_are_served_with_revalidation_and_csp(running: Running) -> None:
    base = running.server.http_url
    for path, kind in [("/", "text/html"), ("/admin", "text/html"), ("/web/js/terminal.js", "text/javascript"),
                       ("/web/style.css", "text/css")]:  # fmt: skip
        page = httpx.get(base + path)
        assert page.status_code == 200, path
        assert page.headers["content-type"].startswith(kind)
        assert page.headers["cache-control"] == "no-cache"
        assert "script-src 'self'" in page.headers["content-security-policy"]
        again = httpx.get(base + path, headers={"If-None-Match": page.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
    for bad in ["/web/../app.py", "/web/%2e%2e/app.py", "/web/tests/merge.test.mjs", "/web/nothing.js"]:
        assert httpx.get(base + bad).status_code == 404, bad
    config = httpx.get(base + "/api/web/config").json()
    assert config == {"diff_url": running.server.diff_url.replace("127.0.0.1", "127.0.0.1")}
    # No CORS on the API, even when a page of another origin asks.
    answer = httpx.get(base + "/api/market/instruments", headers={"Origin": "https://evil.example"})
    assert not any(h.lower().startswith("access-control-") for h in answer.headers)
    paths = httpx.get(base + "/openapi.json").json()["paths"]
    assert "/api/web/config" in paths and "/" not in paths and "/admin" not in paths


def test_default_diff_url() -> None:
    assert default_diff_url("127.0.0.1:8000", False, 8001) == "ws://127.0.0.1:8001/ws/diff"
    assert default_diff_url("example.org", True, 9001) == "wss://example.org:9001/ws/diff"
    assert default_diff_url("[::1]:8000", False, 8001) == "ws://[::1]:8001/ws/diff"
    assert default_diff_url("", False, 8001) == "ws://127.0.0.1:8001/ws/diff"


def test_public_diff_url_and_allowed_origins_config() -> None:
    from qaex.config import Config, ConfigError

    config = Config.load(
        {"QAEX_PUBLIC_DIFF_URL": "wss://x.org/ws/diff", "QAEX_ALLOWED_ORIGINS": "https://x.org/, http://a:1"}
    )
    assert config.public_diff_url == "wss://x.org/ws/diff"
    assert config.allowed_origin_list == ["https://x.org", "http://a:1"]
    with pytest.raises(ConfigError, match="QAEX_PUBLIC_DIFF_URL"):
        Config.load({"QAEX_PUBLIC_DIFF_URL": "http://x.org/"})
    with pytest.raises(ConfigError, match="QAEX_ALLOWED_ORIGINS"):
        Config.load({"QAEX_ALLOWED_ORIGINS": "x.org"})


def test_allowed_origins_refuse_other_pages(tmp_path: Path) -> None:
    import trio_websocket  # noqa: F401  (the server's own dependency)
    from websockets.sync.client import connect  # type: ignore[import-not-found,unused-ignore]

    allowed = "http://good.example"
    server = launch(tmp_path, extra_env={"QAEX_ALLOWED_ORIGINS": allowed})
    try:
        wait_ready(server)
        with connect(server.diff_url, origin=allowed) as ws:  # type: ignore[arg-type,unused-ignore]
            assert "rtn_brokers" in ws.recv(timeout=5)
        with connect(server.diff_url) as ws:  # no Origin: TqSdk and scripts
            assert "rtn_brokers" in ws.recv(timeout=5)
        with pytest.raises(Exception, match="403"):
            connect(server.diff_url, origin="http://evil.example")  # type: ignore[arg-type,unused-ignore]
    finally:
        server.stop()


# -- in the browser ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("playwright is not installed (pip install -e '.[test]')")
        pytest.skip("playwright is not installed")
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI"):
            pytest.fail(f"{CHROMIUM} is missing: apt-get install -y chromium fonts-noto-cjk (.ci/run does)")
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium fonts-noto-cjk)")
    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield launched
        launched.close()


class Page:
    """The terminal tab, with the page's errors, its console errors and its sent orders."""

    def __init__(self, page: Any) -> None:
        self.page = page
        self.errors: list[str] = []
        self.tolerated: list[re.Pattern[str]] = []
        page.on("pageerror", lambda exc: self.errors.append(f"page error: {exc}"))
        page.on("console", self._console)

    def _console(self, message: Any) -> None:
        if message.type == "error" and not any(p.search(message.text) for p in self.tolerated):
            self.errors.append(f"console error: {message.text}")

    def until(self, check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = check()
            if value:
                return value
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}")

    def js(self, expression: str, arg: Any = None) -> Any:
        return self.page.evaluate(expression, arg)

    def shot(self, name: str) -> None:
        SHOTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(SHOTS / f"{name}.png"))
        self.clean()

    def clean(self) -> None:
        shown = self.page.inner_text("body")
        for bad in ("NaN", "undefined", "null", "[object"):
            assert bad not in shown, f"{bad!r} on the page: {shown[:2000]}"
        assert self.errors == []

    def select(self, symbol: str) -> None:
        self.page.click(f"#board tbody tr[data-key='{symbol}']")
        self.until(lambda: self.page.inner_text("#form-symbol") == symbol, "the contract selected")

    def place(
        self, direction: str, offset: str, kind: str, volume: int, price: float | None = None
    ) -> dict[str, Any]:
        """Fill the form and send; the insert_order messages the page sent."""
        before = self.js("window.sentOrders.length")
        p = self.page
        p.click(f"#f-direction button[data-value='{direction}']")
        p.click(f"#f-offset button[data-value='{offset}']")
        p.click(f"#f-kind button[data-value='{kind}']")
        if price is not None:
            p.fill("#f-price", str(price))
        p.fill("#f-volume", str(volume))
        p.click("#f-send")
        self.until(lambda: self.js("window.sentOrders.length") > before, "the order sent")
        sent: list[dict[str, Any]] = self.js("(n) => window.sentOrders.slice(n)", before)
        return {"sent": sent, "id": sent[-1]["order_id"]}

    def order(self, order_id: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.js(
            "(id) => { const u = window.qaex.ui.userId; return window.qaex.client.tree.trade?.[u]?.orders?.[id] || null; }",
            order_id,
        )
        return found

    def row_state(self, order_id: str) -> str | None:
        row = self.page.query_selector(f"#orders tr[data-order-id='{order_id}']")
        return row.get_attribute("data-state") if row else None

    def quote(self, symbol: str) -> dict[str, Any]:
        found: dict[str, Any] = self.js("(s) => window.qaex.client.tree.quotes?.[s] || {}", symbol)
        return found


@pytest.fixture(scope="module")
def tab(browser: Any, running: Running) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1280, "height": 720}, locale="zh-CN")
    page = Page(context.new_page())
    yield page
    context.close()


def _spy(tab: Page) -> None:
    tab.until(lambda: tab.js("!!window.qaex"), "the terminal started")
    tab.js(
        """() => { window.sentOrders = []; const c = window.qaex.client; const send = c.send.bind(c);
        c.send = (m) => { if (m.aid === 'insert_order') window.sentOrders.push(m); return send(m); }; }"""
    )


def test_login_shows_the_account(tab: Page, running: Running) -> None:
    page = tab.page
    page.goto(running.server.http_url + "/")
    page.wait_for_selector("#login-user")
    tab.shot("login")
    page.fill("#login-user", running.user_id)
    page.fill("#login-pass", PASSWORD)
    page.click("#open-btn")  # opens the account over HTTP, then req_login over DIFF
    page.wait_for_selector("#login", state="hidden", timeout=15000)
    _spy(tab)
    tab.until(lambda: "1,000,000.00" in page.inner_text("#who"), "the account's balance")
    assert running.user_id in page.inner_text("#who")
    page.click("#tabs button[data-tab='account']")
    assert page.inner_text("#acc-balance") == "1,000,000.00"
    assert page.inner_text("#acc-available") == "1,000,000.00"
    page.click("#tabs button[data-tab='orders']")
    tab.until(lambda: "已连接" in page.inner_text("#conn-text"), "the connection light")
    tab.shot("terminal")


def test_quotes_arrive_without_reload(tab: Page) -> None:
    page = tab.page
    rows = page.query_selector_all("#board tbody tr")
    assert len(rows) == 9  # tests/pinned_instruments.toml
    first = page.inner_text("#board tbody")
    tab.until(lambda: page.inner_text("#board tbody") != first, "a quote to change on the board", 20)
    assert "沪铜2601" in page.inner_text("#board")


def test_ladder_click_fills_the_form(tab: Page) -> None:
    tab.select("SHFE.cu2601")
    page = tab.page
    tab.until(
        lambda: page.inner_text("#ladder tbody tr.bid td.price") not in ("-", ""), "a bid in the ladder"
    )
    cell = page.query_selector("#ladder tbody tr.bid td.price")
    assert cell is not None
    shown = cell.inner_text()
    cell.click()
    assert float(page.input_value("#f-price")) == float(shown)


def test_limit_fak_fok_market_orders_land(tab: Page, running: Running) -> None:
    page = tab.page
    q = tab.quote("SHFE.cu2601")
    resting_price = q["lower_limit"] + 10 * q["price_tick"]  # far below the market: rests
    limit = tab.place("BUY", "OPEN", "LIMIT", 2, resting_price)
    tab.until(lambda: tab.row_state(limit["id"]) == "ALIVE", "the limit order resting")
    # The resting price is outside the 5 levels; to see own volume in the ladder, join the best bid.
    bid = tab.quote("SHFE.cu2601")["bid_price1"]
    joined = tab.place("BUY", "OPEN", "LIMIT", 1, bid)
    tab.until(lambda: tab.row_state(joined["id"]) in ("ALIVE", "FILLED"), "the bid order")
    if tab.row_state(joined["id"]) == "ALIVE":
        tab.until(
            lambda: page.query_selector("#ladder tbody td.mine:not(:empty)") is not None,
            "own volume in the ladder",
            5,
        )
    tab.shot("ladder-own-order")
    fak = tab.place("BUY", "OPEN", "FAK", 1, resting_price)
    fok = tab.place("BUY", "OPEN", "FOK", 1, resting_price)
    market = tab.place("BUY", "OPEN", "MARKET", 2)
    assert fak["sent"][0]["time_condition"] == "IOC" and fak["sent"][0]["volume_condition"] == "ANY"
    assert fok["sent"][0]["volume_condition"] == "ALL"
    assert market["sent"][0]["price_type"] == "ANY" and "limit_price" not in market["sent"][0]
    tab.until(lambda: tab.row_state(fak["id"]) == "CANCELLED", "the FAK cancelled (nothing to match)")
    tab.until(lambda: tab.row_state(fok["id"]) == "CANCELLED", "the FOK cancelled")
    tab.until(lambda: tab.row_state(market["id"]) == "FILLED", "the market order filled")
    page.click(f"#orders tr[data-order-id='{limit['id']}'] button.cancel")
    tab.until(lambda: tab.row_state(limit["id"]) == "CANCELLED", "the limit order cancelled")
    with running.http() as http:
        orders = http.get("/api/orders").json()["orders"]
        for sent in (limit, fak, fok, market):
            order = orders[sent["id"]]
            shown = tab.order(sent["id"])
            assert shown is not None
            assert (shown["status"], shown["volume_left"], shown["last_msg"]) == (
                order["status"],
                order["volume_left"],
                order["last_msg"],
            )
            row = page.inner_text(f"#orders tr[data-order-id='{sent['id']}']")
            assert order["last_msg"] in row


def test_a_rejected_order_shows_its_notify_and_last_msg(tab: Page) -> None:
    page = tab.page
    rejected = tab.place(
        "BUY", "OPEN", "LIMIT", 500, tab.quote("SHFE.cu2601")["bid_price1"]
    )  # 500 lots: no money
    tab.until(lambda: tab.row_state(rejected["id"]) == "REJECTED", "the order rejected")
    order = tab.order(rejected["id"])
    assert order is not None and order["last_msg"]
    assert order["last_msg"] in page.inner_text(f"#orders tr[data-order-id='{rejected['id']}']")
    tab.until(
        lambda: "资金不足" in page.inner_text("#toasts") or order["last_msg"] in page.inner_text("#toasts"),
        "the notify toast",
    )
    tab.shot("orders")


def test_positions_close_today_and_pnl(tab: Page, running: Running) -> None:
    page = tab.page
    page.click("#tabs button[data-tab='positions']")
    row = "#positions tr[data-key='SHFE.cu2601|long']"
    page.wait_for_selector(row, timeout=10000)
    tab.until(lambda: int(page.inner_text(f"{row} td:nth-child(3)")) >= 2, "the long position")
    closed = tab.place("SELL", "CLOSE", "MARKET", 1)  # SHFE, today's position: the page sends CLOSETODAY
    assert [m["offset"] for m in closed["sent"]] == ["CLOSETODAY"]
    tab.until(lambda: tab.row_state(closed["id"]) == "FILLED", "the close filled")
    with running.http() as http:
        assert http.get(f"/api/order/{closed['id']}").json()["offset"] == "CLOSETODAY"
        position = http.get("/api/positions").json()["positions"]["SHFE.cu2601"]
    tab.until(
        lambda: int(page.inner_text(f"{row} td:nth-child(3)")) == position["volume_long"],
        "the position shrunk",
    )
    first = page.inner_text(f"{row} td.pnl")
    tab.until(lambda: page.inner_text(f"{row} td.pnl") != first, "the P&L to move", 30)
    tab.shot("positions")
    page.click("#tabs button[data-tab='orders']")


def test_chart_has_bars_and_its_last_bar_moves(tab: Page) -> None:
    page = tab.page
    page.select_option("#chart-duration", "5")
    last_bar = "() => { const t = window.qaex.client.tree; const s = t.klines?.['SHFE.cu2601']?.['5000000000']; if (!s || !s.data) return null; const ids = Object.keys(s.data).map(Number).sort((a, b) => a - b); const id = ids.at(-1); return {n: ids.length, id, close: s.data[id].close, volume: s.data[id].volume}; }"
    first = tab.until(lambda: tab.js(last_bar), "bars in the chart")
    tab.until(lambda: tab.js(last_bar) != first, "the last bar to change", 20)
    tab.until(lambda: tab.js(last_bar)["n"] >= 4, "a few 5 s bars", 20)
    tab.until(lambda: "O " in page.inner_text("#chart-label"), "the OHLC label")
    box = page.query_selector("#chart").bounding_box()
    page.mouse.move(box["x"] + box["width"] - 80, box["y"] + box["height"] / 3)
    assert re.search(r"O \d+ +H \d+ +L \d+ +C \d+", page.inner_text("#chart-label"))
    tab.shot("chart")
    page.select_option("#chart-duration", "60")
    tab.until(lambda: tab.js(last_bar.replace("5000000000", "60000000000")), "1 min bars")
    page.mouse.move(0, 0)
    page.select_option("#chart-duration", "0")
    tab.until(
        lambda: tab.js("Object.keys(window.qaex.client.tree.ticks?.['SHFE.cu2601']?.data || {}).length") > 0,
        "ticks",
    )
    page.select_option("#chart-duration", "60")


def test_the_page_recovers_after_a_server_restart(tab: Page, running: Running) -> None:
    page = tab.page
    tab.tolerated.append(re.compile(r"WebSocket connection to 'ws://.*' failed"))
    ids_before = set(tab.js("Object.keys(window.qaex.client.tree.trade[window.qaex.ui.userId].orders)"))
    running.restart()
    tab.until(
        lambda: tab.js("window.qaex.client.connected") and "已连接" in page.inner_text("#conn-text"),
        "reconnected",
        30,
    )
    tab.until(lambda: tab.js("window.qaex.client.loginState") == "ok", "logged in again", 15)
    with running.http() as http:
        orders = http.get("/api/orders").json()["orders"]
    assert set(orders) == ids_before
    tab.until(
        lambda: (
            set(tab.js("Object.keys(window.qaex.client.tree.trade[window.qaex.ui.userId].orders)"))
            == set(orders)
        ),
        "the same orders",
    )
    assert len(page.query_selector_all("#orders tbody tr")) == len(orders)
    first = page.inner_text("#board tbody")
    tab.until(lambda: page.inner_text("#board tbody") != first, "quotes again", 20)
    tab.tolerated.clear()
    tab.clean()


def test_an_admin_suspend_makes_the_next_order_fail(tab: Page, running: Running) -> None:
    page = tab.page
    assert running.admin("POST", "/api/admin/instruments/SHFE.rb2601/suspend").status_code == 200
    try:
        tab.select("SHFE.rb2601")
        page.evaluate("() => { document.getElementById('toasts').replaceChildren(); }")
        refused = tab.place("BUY", "OPEN", "MARKET", 1)
        tab.until(lambda: "409" in page.inner_text("#toasts"), "the notify of the suspended contract")
        order = tab.order(refused["id"])
        if order is not None:
            assert order["status"] == "FINISHED" and not order["exchange_order_id"]
    finally:
        assert running.admin("POST", "/api/admin/instruments/SHFE.rb2601/resume").status_code == 200
    tab.clean()


def test_admin_page(browser: Any, running: Running) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 720})
    admin = Page(context.new_page())
    try:
        admin.page.goto(running.server.http_url + "/admin")
        admin.page.fill("#token", running.server.admin_token)
        admin.page.click("#token-btn")
        admin.until(
            lambda: admin.page.query_selector("#contracts tbody tr[data-key='SHFE.cu2601']"), "the contracts"
        )
        admin.until(lambda: running.user_id in admin.page.inner_text("#users"), "the users")
        admin.until(
            lambda: (
                "qaex_" in admin.page.inner_text("#metrics") or "orders" in admin.page.inner_text("#metrics")
            ),
            "metrics",
        )
        admin.page.click("#contracts tbody tr[data-key='SHFE.au2602'] button.suspend")
        admin.until(
            lambda: running.admin("GET", "/api/market/quote/SHFE.au2602").json()["suspended"], "suspended"
        )
        admin.page.click("#contracts tbody tr[data-key='SHFE.au2602'] button.resume")
        admin.until(
            lambda: not running.admin("GET", "/api/market/quote/SHFE.au2602").json()["suspended"], "resumed"
        )
        assert admin.page.input_value("#settle tbody tr[data-key='SHFE.cu2601'] input") != ""
        admin.shot("admin")
    finally:
        context.close()


def test_no_errors_and_no_nan_at_the_end(tab: Page) -> None:
    tab.clean()


def test_the_full_listing_reads_at_1920x1080(browser: Any, tmp_path: Path) -> None:
    """The listing a user gets (every contract of the day, the market maker on), at full HD: every
    contract on the board, nothing wider than the window, no NaN or error; a screenshot for docs/web.md."""
    server = launch(tmp_path, extra_env={**ENV, "QAEX_INSTRUMENTS": ""})
    context = browser.new_context(viewport={"width": 1920, "height": 1080}, locale="zh-CN")
    full = Page(context.new_page())
    try:
        wait_ready(server)
        listed = httpx.get(server.http_url + "/api/market/instruments").json()["instruments"]
        page = full.page
        page.goto(server.http_url + "/")
        page.wait_for_selector("#login-user")
        page.fill("#login-user", f"hd{os.getpid()}")
        page.fill("#login-pass", PASSWORD)
        page.click("#open-btn")
        page.wait_for_selector("#login", state="hidden", timeout=15000)
        full.until(lambda: len(page.query_selector_all("#board tbody tr")) >= len(listed), "every contract")
        full.until(lambda: "已连接" in page.inner_text("#conn-text"), "the connection light")
        main = httpx.get(server.http_url + "/api/market/instruments").json()["instruments"]
        symbol = next(s for s in main if s.startswith("SHFE.rb27"))
        full.select(symbol)
        full.until(
            lambda: page.inner_text("#ladder tbody tr.ask td.price") not in ("-", ""), "the main's ladder", 20
        )
        assert full.js("document.documentElement.scrollWidth <= window.innerWidth")
        full.shot("terminal-1920")
    finally:
        context.close()
        server.stop()
