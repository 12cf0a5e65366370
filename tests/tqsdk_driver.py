"""Drive the real TqSdk client (TqApi) against a running qaex server; print one JSON result.

Run by tests/test_tqsdk.py in a subprocess (TqApi is synchronous and runs its own asyncio loop)::

    python tests/tqsdk_driver.py SCENARIO --http=URL --diff=URL --admin=TOKEN \
        --user-a=ID --password-a=PASSWORD [--user-b=ID --password-b=PASSWORD] [--quiet=SYMBOL] \
        [--td=URL] [--md=URL]   # trade / take market data through another DIFF server (a gateway)
        [--long-bars=N]   # also a get_kline_serial of N minute bars, checked against the HTTP API

(use the ``--opt=value`` form: an admin token may start with "-").

Scenarios:

* ``main``: market data (quote, 1-minute / 1-day K-lines, ticks, their updates), a market order
  against the liquidity simulator, then two TqSdk accounts in one TqApi (``TqMultiAccount``) on a
  contract nobody else trades (``--quiet``, created by the test with SHFE's real hours, which
  the server publishes as always open): a resting limit order crossed by the other account, FAK, FOK, ``cancel_order``,
  CLOSETODAY, CLOSE after an admin settlement, ``TargetPosTask``, ``req_transfer``. Account and
  position snapshots are taken from TqSdk and, at the same moment, from qaex's HTTP API.
* ``bad_login``: TqApi with a wrong password; records what TqSdk does about it.
* ``saturday`` (``--mode=always|exchange``): run under libfaketime by tests/test_tqsdk_calendar.py on
  the product listing: the main contract of rb, then TargetPosTask to +2 and back to 0 (``always``),
  or a limit order refused as out of hours (``exchange``).

The result is the last stdout line, ``RESULT {json}`` (TqSdk prints to stdout too).

Nothing here reaches the internet: ``offline()`` refuses every socket connection that is not to
the loopback interface, and stubs the one module TqSdk would otherwise use to fetch its changelog.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import json
import math
import socket
import sys
import time
import traceback
import types
from collections.abc import Callable
from typing import Any

import httpx

LOOPBACK = ("127.0.0.1", "::1", "localhost")
REFUSED: list[str] = []
"""Every connection ``offline()`` refused (reported in the result: the test expects none)."""


def offline() -> None:
    """Refuse any connection that leaves the machine, before tqsdk is imported.

    * ``tqsdk.changelog_notification`` (imported by ``TqApi.__init__``) GETs a metadata file from
      Shinnytech's CDN; it is replaced by an empty module.
    * ``TqAuth.login`` / ``expire_datetime`` and the md/td name services are avoided by
      :class:`LocalAuth`, ``TqAccount(td_url=...)`` and ``TqApi(_md_url=...)``; the contract list
      (``_stock=False``) is not used: TqApi 3.10.4 defaults to ``_stock=True`` (a file in its wheel).
    * Anything else that tries is refused here with an OSError naming the host.
    """
    real_getaddrinfo = socket.getaddrinfo
    real_connect = socket.socket.connect
    real_connect_ex = socket.socket.connect_ex

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host is not None and str(host) not in LOOPBACK:
            REFUSED.append(f"getaddrinfo {host}")
            raise OSError(f"tqsdk_driver: network access to {host!r} refused (offline)")
        return real_getaddrinfo(host, *args, **kwargs)

    def check(address: Any) -> None:
        if isinstance(address, tuple) and str(address[0]) not in LOOPBACK:
            REFUSED.append(f"connect {address[0]}")
            raise OSError(f"tqsdk_driver: connection to {address!r} refused (offline)")

    def connect(self: socket.socket, address: Any) -> None:
        check(address)
        real_connect(self, address)

    def connect_ex(self: socket.socket, address: Any) -> int:
        check(address)
        return real_connect_ex(self, address)

    socket.getaddrinfo = getaddrinfo  # type: ignore[assignment]
    socket.socket.connect = connect  # type: ignore[method-assign]
    socket.socket.connect_ex = connect_ex  # type: ignore[method-assign]
    sys.modules.setdefault("tqsdk.changelog_notification", types.ModuleType("tqsdk.changelog_notification"))


offline()

from tqsdk import TargetPosTask, TqAccount, TqApi, TqAuth, TqMultiAccount  # noqa: E402


class LocalAuth(TqAuth):  # type: ignore[misc]
    """A TqAuth that never contacts Shinnytech: it grants what TqApi checks, for the given accounts."""

    def __init__(self, accounts: list[str]) -> None:
        super().__init__("qaex", "qaex")
        self._local_accounts = list(accounts)

    def login(self) -> None:
        self._grants = {"features": ["futr", "sec"], "accounts": list(self._local_accounts)}
        self._auth_id = "qaex-local"
        self._expire_datetime = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)
        self._expire_days_left = 36500
        self._product_type = "qaex"


class Failed(Exception):
    pass


def wait_until(api: TqApi, predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if not api.wait_update(deadline=deadline) and time.time() >= deadline:
            raise Failed(f"timed out after {timeout} s waiting for {what}")


def accepted(order: Any) -> bool:
    """The exchange has the order: TqSdk marks a new order ALIVE locally, before the server answers,
    so only ``exchange_order_id`` proves that an order from one account is in the book before
    another account's order (on another connection) is sent to meet it."""
    return bool(order.status == "ALIVE" and order.exchange_order_id != "")


def idle(api: TqApi, seconds: float) -> None:
    """Let TqApi apply whatever arrives during ``seconds``."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        api.wait_update(deadline=deadline)


def num(value: Any) -> Any:
    """JSON-safe: NaN -> None."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if hasattr(value, "item"):  # numpy scalars from DataFrames
        return num(value.item())
    return value


def order_view(order: Any) -> dict[str, Any]:
    keys = (
        "order_id", "exchange_order_id", "direction", "offset", "volume_orign", "volume_left",
        "limit_price", "price_type", "volume_condition", "time_condition", "status", "last_msg",
        "is_online", "is_dead", "is_error",
    )  # fmt: skip
    view = {key: num(order[key]) for key in keys}
    view["trade_records"] = {
        trade_id: {key: num(trade[key]) for key in ("volume", "price", "commission", "offset", "direction")}
        for trade_id, trade in order.trade_records.items()
    }
    return view


ACCOUNT_KEYS = (
    "balance", "available", "margin", "commission", "close_profit", "position_profit", "float_profit",
    "static_balance", "pre_balance", "deposit", "withdraw", "frozen_margin", "risk_ratio",
)  # fmt: skip
POSITION_KEYS = (
    "pos_long_today", "pos_long_his", "pos_short_today", "pos_short_his", "volume_long", "volume_short",
    "volume_long_today", "volume_long_his", "volume_short_today", "volume_short_his",
    "open_price_long", "open_price_short", "position_price_long", "position_price_short",
    "margin_long", "margin_short", "margin", "position_profit", "float_profit",
)  # fmt: skip


class Http:
    """qaex's HTTP API as one user sees it."""

    def __init__(self, base: str, user_id: str, password: str) -> None:
        token = httpx.post(f"{base}/api/auth/login", json={"user_id": user_id, "password": password}).json()
        self.client = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {token['token']}"})

    def snapshot(self, symbol: str) -> dict[str, Any]:
        account = self.client.get("/api/account").json()
        position = self.client.get("/api/positions").json()["positions"].get(symbol, {})
        return {
            "account": {key: num(account[key]) for key in ACCOUNT_KEYS},
            "position": {key: _dash(position.get(key, 0)) for key in POSITION_KEYS},
        }


def _dash(value: Any) -> Any:
    return None if value == "-" else value


def tq_snapshot(api: TqApi, account: TqAccount, symbol: str) -> dict[str, Any]:
    acc = api.get_account(account=account)
    pos = api.get_position(symbol, account=account)
    return {
        "account": {key: num(acc[key]) for key in ACCOUNT_KEYS},
        "position": {key: num(pos[key]) for key in POSITION_KEYS},
    }


def settle(http: str, admin: str, prices: dict[str, float]) -> dict[str, Any]:
    response = httpx.post(
        f"{http}/api/admin/settle", json={"prices": prices}, headers={"Authorization": f"Bearer {admin}"}
    )
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


# -- scenarios --------------------------------------------------------------------------------------
MD_SYMBOL = "SHFE.cu2601"
CONT_SYMBOL = "KQ.m@SHFE.rb"
MARKET_SYMBOL = "DCE.m2601"  # SHFE refuses market orders in TqSdk itself; the simulator trades m2601


def scenario_market(api: TqApi, a: TqAccount, http: str, out: dict[str, Any]) -> None:
    quote = api.get_quote(MD_SYMBOL)
    # The liquidity simulator's taker prints the first trade of the day within seconds; quotes are
    # published every QAEX_QUOTE_INTERVAL, so wait for a last price rather than read it at once.
    wait_until(api, lambda: not math.isnan(quote.last_price), 30, f"a last price on {MD_SYMBOL}")
    out["http_quote"] = httpx.get(f"{http}/api/market/quote/{MD_SYMBOL}").json()  # the same moment
    # The contract service (DIFF ins_query), as TqSdk's own query functions use it.
    out["query_quotes"] = {
        "shfe_futures": list(api.query_quotes(ins_class="FUTURE", exchange_id="SHFE")),
        "cu_not_expired": list(api.query_quotes(product_id="cu", expired=False)),
        "continuous": list(api.query_cont_quotes()),  # each product's main contract
        "rb_main": list(api.query_cont_quotes(exchange_id="SHFE", product_id="rb")),
        "options": list(api.query_options(MD_SYMBOL)),
    }
    # The main-contract series: its quote mirrors the main's, and names it.
    cont = api.get_quote(CONT_SYMBOL)
    cont_info = api.query_symbol_info(CONT_SYMBOL)
    out["cont"] = {
        "underlying_symbol": cont.underlying_symbol,
        "ins_class": cont.ins_class,
        "price_tick": num(cont.price_tick),
        "info_ins_class": cont_info.iloc[0]["ins_class"],
        "info_underlying_symbol": cont_info.iloc[0]["underlying_symbol"],
    }
    info = api.query_symbol_info([MD_SYMBOL, MARKET_SYMBOL])
    out["symbol_info"] = [
        {
            key: num(row[key])
            for key in (
                "instrument_id", "ins_class", "instrument_name", "exchange_id", "product_id", "price_tick",
                "volume_multiple", "max_limit_order_volume", "expired", "upper_limit", "lower_limit",
                "pre_settlement", "trading_time_day",
            )
        }
        for _, row in info.iterrows()
    ]  # fmt: skip
    out["quote"] = {
        key: num(quote[key])
        for key in (
            "instrument_id", "datetime", "last_price", "ask_price1", "bid_price1", "ask_volume1", "bid_volume1",
            "price_tick", "volume_multiple", "upper_limit", "lower_limit", "pre_settlement", "open_interest",
            "instrument_name", "exchange_id", "product_id", "expired", "price_decs", "volume",
        )
    }  # fmt: skip
    out["quote"]["trading_time"] = {k: list(map(list, v)) for k, v in dict(quote.trading_time).items()}

    m_quote = api.get_quote(MARKET_SYMBOL)
    minute = api.get_kline_serial(MARKET_SYMBOL, 60, 30)
    day = api.get_kline_serial(MARKET_SYMBOL, 86400, 5)
    ticks = api.get_tick_serial(MARKET_SYMBOL, 30)

    def last(frame: Any) -> dict[str, Any]:
        row = frame.iloc[-1]
        return {key: num(row[key]) for key in frame.columns if key not in ("symbol", "duration")}

    def round_trip() -> tuple[Any, Any]:
        """A market BUY then a market SELL CLOSE (ANY + IOC) against the liquidity simulator."""
        buy = api.insert_order(MARKET_SYMBOL, "BUY", "OPEN", 1, account=a)
        wait_until(api, lambda: buy.status == "FINISHED", 10, "market BUY to finish")
        sell = api.insert_order(MARKET_SYMBOL, "SELL", "CLOSE", 1, account=a)
        wait_until(api, lambda: sell.status == "FINISHED", 10, "market SELL CLOSE to finish")
        return buy, sell

    # The server may have seen no trade of the contract yet (a fresh start): the serials then start
    # empty and must fill in when the first trades happen.
    out["empty_at_start"] = not ticks.iloc[-1]["datetime"] > 0
    round_trip()
    wait_until(
        api,
        lambda: (
            ticks.iloc[-1]["datetime"] > 0
            and minute.iloc[-1]["datetime"] > 0
            and day.iloc[-1]["datetime"] > 0
        ),
        10,
        "the first ticks and bars",
    )
    idle(api, 0.2)
    before = {
        "minute": last(minute),
        "day": last(day),
        "tick": last(ticks),
        "quote_volume": num(m_quote.volume),
    }
    buy, sell = round_trip()  # our trades move ticks and bars (the simulator's may too)
    wait_until(
        api,
        lambda: ticks.iloc[-1]["id"] >= before["tick"]["id"] + 2 and minute.iloc[-1]["volume"] > 0,
        10,
        "ticks and K-lines to update",
    )
    idle(api, 0.3)
    out["market_orders"] = {"buy": order_view(buy), "sell": order_view(sell)}
    out["series"] = {
        "before": before,
        "after": {
            "minute": last(minute),
            "day": last(day),
            "tick": last(ticks),
            "quote_volume": num(m_quote.volume),
        },
        "minute_rows": len(minute),
        "day_rows": len(day),
        "tick_rows": len(ticks),
        "traded_prices": [num(t["price"]) for o in (buy, sell) for t in o.trade_records.values()],
    }
    out["m_position"] = {
        key: num(api.get_position(MARKET_SYMBOL, account=a)[key]) for key in POSITION_KEYS[:4]
    }


def scenario_long_serial(api: TqApi, http: str, bars: int, out: dict[str, Any]) -> None:
    """``get_kline_serial`` of ``bars`` minute bars (history included), then the same bars from the
    HTTP API: every closed bar TqSdk shows is the server's (the newest may still change)."""
    serial = api.get_kline_serial(MARKET_SYMBOL, 60, bars)
    wait_until(api, lambda: bool((serial["datetime"] > 0).all()), 30, f"{bars} minute bars")
    idle(api, 0.2)
    answer = httpx.get(f"{http}/api/market/klines/{MARKET_SYMBOL}", params={"duration": 60, "count": bars})
    served = {bar["datetime"]: bar for bar in answer.json()["klines"]}
    rows = serial.to_dict("records")
    fields = ("open", "high", "low", "close", "volume", "open_oi", "close_oi")
    closed = rows[:-1]
    out["long_serial"] = {
        "rows": len(rows),
        "ids": [int(row["id"]) for row in rows],
        "closed": len(closed),
        "matched": sum(
            1
            for row in closed
            if int(row["datetime"]) in served
            and all(num(row[key]) == served[int(row["datetime"])][key] for key in fields)
        ),
    }


def scenario_trading(
    api: TqApi, a: TqAccount, b: TqAccount, args: argparse.Namespace, out: dict[str, Any]
) -> None:
    symbol = args.quiet
    quote = api.get_quote(symbol)
    tick = quote.price_tick
    price = quote.pre_settlement
    http_a, http_b = Http(args.http, *args.user_a), Http(args.http, *args.user_b)
    steps: dict[str, Any] = {}
    out["trading"] = steps

    # 1. A limit order rests; the other account crosses it.
    rest = api.insert_order(symbol, "BUY", "OPEN", 2, limit_price=price, account=a)
    wait_until(
        api, lambda: rest.status == "ALIVE" and rest.exchange_order_id != "", 15, "resting order ALIVE"
    )
    steps["resting"] = order_view(rest)
    cross = api.insert_order(symbol, "SELL", "OPEN", 2, limit_price=price, account=b)
    wait_until(api, lambda: rest.status == cross.status == "FINISHED", 15, "both orders FINISHED")
    wait_until(api, lambda: rest.trade_records and cross.trade_records, 15, "both trades")
    idle(api, 0.3)
    steps["crossed"] = {"maker": order_view(rest), "taker": order_view(cross)}
    steps["snapshot_1"] = {
        "tq": {"a": tq_snapshot(api, a, symbol), "b": tq_snapshot(api, b, symbol)},
        "http": {"a": http_a.snapshot(symbol), "b": http_b.snapshot(symbol)},
    }

    # 2. FAK partly filled: 1 lot offered, FAK for 3.
    offer = api.insert_order(symbol, "SELL", "OPEN", 1, limit_price=price + tick, account=b)
    wait_until(api, lambda: accepted(offer), 15, "offer ALIVE (accepted by the exchange)")
    fak = api.insert_order(symbol, "BUY", "OPEN", 3, limit_price=price + tick, advanced="FAK", account=a)
    wait_until(api, lambda: fak.status == "FINISHED" and offer.status == "FINISHED", 15, "FAK FINISHED")
    steps["fak"] = order_view(fak)

    # 3. FOK that cannot fill (1 lot offered, FOK for 5), then cancel_order of the resting offer.
    offer2 = api.insert_order(symbol, "SELL", "OPEN", 1, limit_price=price + 2 * tick, account=b)
    wait_until(api, lambda: accepted(offer2), 15, "offer2 ALIVE (accepted by the exchange)")
    fok = api.insert_order(symbol, "BUY", "OPEN", 5, limit_price=price + 2 * tick, advanced="FOK", account=a)
    wait_until(api, lambda: fok.status == "FINISHED", 15, "FOK FINISHED")
    steps["fok"] = order_view(fok)
    api.cancel_order(offer2, account=b)
    wait_until(api, lambda: offer2.status == "FINISHED", 15, "cancelled offer FINISHED")
    steps["cancelled"] = order_view(offer2)

    # A is long 3 today, B short 3 today. 4. CLOSETODAY 1 lot; CLOSE of today's lots is refused on SHFE.
    bid = api.insert_order(symbol, "BUY", "CLOSETODAY", 1, limit_price=price, account=b)
    wait_until(api, lambda: accepted(bid), 15, "CLOSETODAY bid ALIVE (accepted by the exchange)")
    close_today = api.insert_order(symbol, "SELL", "CLOSETODAY", 1, limit_price=price, account=a)
    wait_until(api, lambda: close_today.status == bid.status == "FINISHED", 15, "CLOSETODAY FINISHED")
    refused = api.insert_order(symbol, "SELL", "CLOSE", 1, limit_price=price, account=a)
    wait_until(api, lambda: refused.status == "FINISHED", 15, "refused CLOSE FINISHED")
    steps["closetoday"] = {"a": order_view(close_today), "b": order_view(bid)}
    steps["close_refused"] = order_view(refused)
    idle(api, 0.2)
    steps["before_settle"] = {
        "a": {key: num(api.get_position(symbol, account=a)[key]) for key in POSITION_KEYS[:4]},
        "b": {key: num(api.get_position(symbol, account=b)[key]) for key in POSITION_KEYS[:4]},
    }

    # 5. Settlement turns today's lots into yesterday's; CLOSE closes them.
    settle_price = price + 3 * tick
    steps["settle"] = settle(args.http, args.admin, {symbol: settle_price})
    pos_a = api.get_position(symbol, account=a)
    wait_until(api, lambda: pos_a.pos_long_his == 2 and pos_a.pos_long_today == 0, 10, "yesterday's position")
    steps["after_settle"] = {key: num(pos_a[key]) for key in POSITION_KEYS}
    steps["trading_day"] = api._data["trade"][a._account_key].get("trading_day")
    bid2 = api.insert_order(symbol, "BUY", "CLOSE", 2, limit_price=settle_price, account=b)
    wait_until(api, lambda: accepted(bid2), 15, "CLOSE bid ALIVE (accepted by the exchange)")
    close_his = api.insert_order(symbol, "SELL", "CLOSE", 2, limit_price=settle_price, account=a)
    wait_until(api, lambda: close_his.status == bid2.status == "FINISHED", 15, "CLOSE FINISHED")
    idle(api, 0.2)
    steps["close"] = order_view(close_his)
    steps["after_close"] = {key: num(pos_a[key]) for key in POSITION_KEYS[:4]}

    # 6. TargetPosTask: B offers 3 lots, A's task buys up to a target of 2.
    offer3 = api.insert_order(symbol, "SELL", "OPEN", 3, limit_price=settle_price, account=b)
    wait_until(api, lambda: accepted(offer3), 15, "offer3 ALIVE (accepted by the exchange)")
    task = TargetPosTask(api, symbol, account=a)
    task.set_target_volume(2)
    wait_until(api, lambda: pos_a.pos_long == 2, 15, "TargetPosTask to reach 2 lots")
    api.cancel_order(offer3, account=b)
    wait_until(api, lambda: offer3.status == "FINISHED", 15, "offer3 cancelled")
    steps["target_pos"] = {"pos_long": num(pos_a.pos_long), "offer_left": num(offer3.volume_left)}

    # 7. req_transfer (TqSdk 3.10.4 has no public call for it: sent on the account's trade channel).
    account_a = api.get_account(account=a)
    deposit_before = account_a.deposit
    a._td_send_chan.send_nowait(
        {
            "aid": "req_transfer", "future_account": args.user_a[0], "future_password": args.user_a[1],
            "bank_id": "qaex", "bank_password": "", "currency": "CNY", "amount": 1000.0,
        }
    )  # fmt: skip
    wait_until(api, lambda: account_a.deposit == deposit_before + 1000.0, 15, "the deposit")
    transfers = api._data["trade"][a._account_key].get("transfers", {})
    steps["transfer"] = {
        "deposit": num(account_a.deposit),
        "transfers": [{k: num(v) for k, v in t.items() if not k.startswith("_")} for t in transfers.values()],
    }
    idle(api, 0.3)
    steps["snapshot_2"] = {
        "tq": {"a": tq_snapshot(api, a, symbol), "b": tq_snapshot(api, b, symbol)},
        "http": {"a": http_a.snapshot(symbol), "b": http_b.snapshot(symbol)},
    }


def run_main(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {"timings": {}}
    td = args.td or args.diff  # trading through a DIFF gateway (qaex gateway)
    a = TqAccount("qaex", args.user_a[0], args.user_a[1], td_url=td)
    b = TqAccount("qaex", args.user_b[0], args.user_b[1], td_url=td)
    started = time.monotonic()
    api = TqApi(
        TqMultiAccount([a, b]),
        auth=LocalAuth([args.user_a[0], args.user_b[0]]),
        _md_url=args.md or args.diff,  # market data through a gateway too
        disable_print=True,
    )
    out["timings"]["init"] = time.monotonic() - started
    try:
        scenario_market(api, a, args.http, out)
        if args.long_bars:
            scenario_long_serial(api, args.http, args.long_bars, out)
        out["timings"]["market"] = time.monotonic() - started
        scenario_trading(api, a, b, args, out)
        out["timings"]["trading"] = time.monotonic() - started
    except Exception as exc:  # keep what was gathered: the test shows it
        out["failed"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    finally:
        api.close()
    return out


def run_bad_login(args: argparse.Namespace) -> dict[str, Any]:
    """TqSdk has no login-failure path: it prints the server's ERROR notify and TqApi() raises
    TqTimeoutError after its fixed 60 s wait for the trade snapshot."""
    printed = io.StringIO()
    started = time.monotonic()
    error: dict[str, Any] = {}
    with contextlib.redirect_stdout(printed):
        try:
            api = TqApi(
                TqAccount("qaex", args.user_a[0], args.user_a[1], td_url=args.diff),
                auth=LocalAuth([args.user_a[0]]),
                _md_url=args.diff,
            )
            api.close()
        except Exception as exc:  # what TqApi raises is the point of this scenario
            error = {"type": type(exc).__name__, "message": str(exc)}
    return {
        "error": error,
        "elapsed": time.monotonic() - started,
        "notices": [line for line in printed.getvalue().splitlines() if "通知" in line],
    }


def run_saturday(args: argparse.Namespace) -> dict[str, Any]:
    """The contracts a user gets (the product listing), with the clock on a Saturday: the main
    contract of rb from ``KQ.m@SHFE.rb``, then TqSdk's TargetPosTask to +2 and back to 0 against the
    market maker (``always``), or one limit order and the server's answer (``exchange``)."""
    out: dict[str, Any] = {"local_time": datetime.datetime.now(datetime.UTC).isoformat()}
    a = TqAccount("qaex", args.user_a[0], args.user_a[1], td_url=args.diff)
    api = TqApi(a, auth=LocalAuth([args.user_a[0]]), _md_url=args.diff, disable_print=True)
    try:
        cont = api.get_quote("KQ.m@SHFE.rb")
        wait_until(api, lambda: bool(cont.underlying_symbol), 15, "the main contract of rb")
        symbol = cont.underlying_symbol
        out["main"] = symbol
        quote = api.get_quote(symbol)
        wait_until(api, lambda: quote.datetime != "", 15, "the main contract's quote")
        out["quote"] = {
            "datetime": quote.datetime,
            "expired": quote.expired,
            "last_price": num(quote.last_price),
        }
        position = api.get_position(symbol, account=a)
        if args.mode == "always":
            task = TargetPosTask(api, symbol, account=a)
            task.set_target_volume(2)
            wait_until(api, lambda: position.pos_long == 2, 30, "TargetPosTask to reach +2")
            out["reached"] = num(position.pos_long)
            task.set_target_volume(0)
            wait_until(api, lambda: position.pos_long == 0 and position.pos_short == 0, 30, "back to 0")
            out["back"] = num(position.pos)
        else:
            order = api.insert_order(symbol, "BUY", "OPEN", 1, limit_price=quote.pre_settlement, account=a)

            def notifies() -> list[dict[str, Any]]:  # as TqSdk keeps them (TqNotify reads these)
                kept = api._data.get("notify", {})
                return [dict(kept[k]) for k in kept if not k.startswith("_")]

            try:
                wait_until(api, lambda: order.status == "FINISHED", 15, "the refused order FINISHED")
            finally:
                out["notifies"] = [{k: n.get(k) for k in ("code", "level", "content")} for n in notifies()]
                out["order"] = {
                    "status": order.status,
                    "exchange_order_id": order.exchange_order_id,
                    "last_msg": order.last_msg,
                    "volume_left": order.volume_left,
                }
    except Exception as exc:  # keep what was gathered: the test shows it
        out["failed"] = f"{type(exc).__name__}: {exc}"
        out["traceback"] = traceback.format_exc()
    finally:
        api.close()
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenario", choices=("main", "bad_login", "saturday"))
    parser.add_argument("--mode", choices=("always", "exchange"), default="always")
    parser.add_argument("--http", required=True)
    parser.add_argument("--diff", required=True)
    parser.add_argument("--td", default="", help="trade server URL (default: --diff)")
    parser.add_argument("--md", default="", help="market data server URL (default: --diff)")
    parser.add_argument("--long-bars", type=int, default=0, help="also a serial of this many minute bars")
    parser.add_argument("--admin", default="")
    parser.add_argument("--user-a", required=True)
    parser.add_argument("--password-a", required=True)
    parser.add_argument("--user-b", default="")
    parser.add_argument("--password-b", default="")
    parser.add_argument("--quiet", default="SHFE.zn2601")
    args = parser.parse_args(argv)
    args.user_a = (args.user_a, args.password_a)
    args.user_b = (args.user_b, args.password_b)
    try:
        scenarios = {"main": run_main, "bad_login": run_bad_login, "saturday": run_saturday}
        result = scenarios[args.scenario](args)
    except Exception as exc:
        result = {"failed": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc()}
    result["refused_connections"] = REFUSED
    sys.stdout.flush()
    print("RESULT " + json.dumps(result, ensure_ascii=False, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
