"""A small TqSdk strategy on qaex: subscribe, print the quote, buy 1 lot, print the position, close it.

Needs ``pip install tqsdk==3.10.4`` (or ``pip install -e .[interop]``) and a qaex server with its
liquidity simulator on (the default)::

    python -m qaex                                   # DIFF on ws://127.0.0.1:8001/ws/diff, HTTP on :8000
    python examples/tqsdk_demo.py --open             # opens a demo account over HTTP first
    python examples/tqsdk_demo.py --user alice --password s3cret

TqSdk never contacts Shinnytech here: ``LocalAuth`` replaces the Shinnytech login, both connections
go to qaex (``TqAccount(td_url=...)``, ``TqApi(_md_url=...)``), and the changelog check TqApi would
run on start is stubbed. See docs/clients/tqsdk.md.
"""

from __future__ import annotations

import argparse
import datetime
import secrets
import sys
import time
import types

# TqApi.__init__ imports this module, which GETs a changelog from Shinnytech's CDN: stub it first.
sys.modules.setdefault("tqsdk.changelog_notification", types.ModuleType("tqsdk.changelog_notification"))

from tqsdk import TqAccount, TqApi, TqAuth  # noqa: E402


class LocalAuth(TqAuth):  # type: ignore[misc]
    """A TqAuth that grants TqApi what it checks, without contacting Shinnytech's auth server."""

    def __init__(self, account_id: str) -> None:
        super().__init__("qaex", "qaex")
        self._account_id = account_id

    def login(self) -> None:
        self._grants = {"features": ["futr", "sec"], "accounts": [self._account_id]}
        self._auth_id = "qaex-local"
        self._expire_datetime = datetime.datetime(2099, 12, 31, tzinfo=datetime.UTC)
        self._expire_days_left = 36500
        self._product_type = "qaex"


def open_account(http_url: str) -> tuple[str, str]:
    import httpx

    user, password = f"demo{secrets.token_hex(4)}", secrets.token_hex(8)
    response = httpx.post(f"{http_url}/api/account/open", json={"user_id": user, "password": password})
    response.raise_for_status()
    print(f"opened account {user} (password {password})")
    return user, password


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--diff", default="ws://127.0.0.1:8001/ws/diff", help="qaex's DIFF URL")
    parser.add_argument("--http", default="http://127.0.0.1:8000", help="qaex's HTTP URL (for --open)")
    parser.add_argument("--user", help="qaex account")
    parser.add_argument("--password")
    parser.add_argument("--open", action="store_true", help="open a new account over HTTP first")
    parser.add_argument("--symbol", default="KQ.m@SHFE.cu", help="a contract, or KQ.m@... for a main one")
    args = parser.parse_args()
    if args.open:
        args.user, args.password = open_account(args.http)
    if not args.user or not args.password:
        parser.error("give --user and --password, or --open")

    account = TqAccount("qaex", args.user, args.password, td_url=args.diff)
    api = TqApi(account, auth=LocalAuth(args.user), _md_url=args.diff)
    try:
        if args.symbol.startswith("KQ.m@"):  # a main-contract series: trade the contract it follows
            args.symbol = api.get_quote(args.symbol).underlying_symbol
        quote = api.get_quote(args.symbol)
        print(
            f"{quote.instrument_id} {quote.datetime} last {quote.last_price} "
            f"bid {quote.bid_price1} x {quote.bid_volume1} / ask {quote.ask_price1} x {quote.ask_volume1} "
            f"tick {quote.price_tick} x{quote.volume_multiple} "
            f"limits [{quote.lower_limit}, {quote.upper_limit}]"
        )

        order = api.insert_order(args.symbol, "BUY", "OPEN", 1, limit_price=quote.ask_price1)
        deadline = time.time() + 10
        while order.status != "FINISHED" and api.wait_update(deadline=deadline):
            pass
        print(
            f"buy: {order.status} {order.last_msg}, "
            f"filled {order.volume_orign - order.volume_left} at {order.trade_price}"
        )
        if order.status != "FINISHED":
            api.cancel_order(order)  # no seller at that price within 10 s

        position = api.get_position(args.symbol)
        account_view = api.get_account()
        print(
            f"position: long today {position.pos_long_today}, his {position.pos_long_his}, "
            f"open price {position.open_price_long}, margin {position.margin}"
        )
        print(f"account: balance {account_view.balance:.2f} available {account_view.available:.2f}")

        if position.pos_long_today > 0:
            offset = "CLOSETODAY" if args.symbol.split(".")[0] in ("SHFE", "INE") else "CLOSE"
            close = api.insert_order(
                args.symbol, "SELL", offset, position.pos_long_today, limit_price=quote.bid_price1
            )
            deadline = time.time() + 10
            while close.status != "FINISHED" and api.wait_update(deadline=deadline):
                pass
            print(f"close: {close.status} {close.last_msg} at {close.trade_price}")
        api.wait_update(deadline=time.time() + 0.5)
        print(
            f"after: long {position.pos_long}, close profit {account_view.close_profit:.2f}, "
            f"commission {account_view.commission:.2f}, balance {account_view.balance:.2f}"
        )
    finally:
        api.close()


if __name__ == "__main__":
    main()
