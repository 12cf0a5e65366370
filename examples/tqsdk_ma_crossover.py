"""A moving-average crossover strategy in TqSdk, against qaex: it has bars from the first second.

qaex builds every contract's past (synthetic history, docs/market-data.md "History"), so the 1-minute
K-lines are full at once and the strategy trades right away: long 1 lot while the 5-bar average is above
the 20-bar one, short 1 lot while it is below (TqSdk's ``TargetPosTask``). Needs ``pip install
tqsdk==3.10.4`` and a qaex server with its market maker on (the default)::

    python -m qaex serve
    python examples/tqsdk_ma_crossover.py --open --symbol KQ.m@SHFE.rb --seconds 60
"""

from __future__ import annotations

import argparse
import sys
import time
import types

sys.modules.setdefault("tqsdk.changelog_notification", types.ModuleType("tqsdk.changelog_notification"))

from tqsdk import TargetPosTask, TqAccount, TqApi  # noqa: E402
from tqsdk.tafunc import ma  # noqa: E402

from tqsdk_demo import LocalAuth, open_account  # noqa: E402  (examples/tqsdk_demo.py)

FAST, SLOW = 5, 20


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--diff", default="ws://127.0.0.1:8001/ws/diff")
    parser.add_argument("--http", default="http://127.0.0.1:8000")
    parser.add_argument("--user")
    parser.add_argument("--password")
    parser.add_argument("--open", action="store_true", help="open a new account over HTTP first")
    parser.add_argument("--symbol", default="KQ.m@SHFE.rb", help="a contract, or a main series (KQ.m@...)")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long to run")
    args = parser.parse_args()
    if args.open:
        args.user, args.password = open_account(args.http)
    if not args.user or not args.password:
        parser.error("give --user and --password, or --open")

    account = TqAccount("qaex", args.user, args.password, td_url=args.diff)
    api = TqApi(account, auth=LocalAuth(args.user), _md_url=args.diff)
    try:
        symbol = args.symbol
        if symbol.startswith("KQ.m@"):  # trade the main contract the series follows
            symbol = api.get_quote(symbol).underlying_symbol
        klines = api.get_kline_serial(symbol, 60, 200)
        position = api.get_position(symbol)
        target = TargetPosTask(api, symbol)
        print(f"{symbol}: {len(klines)} bars, last close {klines.close.iloc[-1]}", flush=True)
        deadline = time.time() + args.seconds
        last_target = None
        while api.wait_update(deadline=deadline):
            fast = ma(klines.close, FAST).iloc[-1]
            slow = ma(klines.close, SLOW).iloc[-1]
            wanted = 1 if fast > slow else -1
            if wanted != last_target:
                print(f"MA{FAST} {fast:.2f} MA{SLOW} {slow:.2f}: target {wanted}", flush=True)
                target.set_target_volume(wanted)
                last_target = wanted
            if api.is_changing(position, "pos"):
                print(f"POSITION {position.pos}", flush=True)
    finally:
        api.close()


if __name__ == "__main__":
    main()
