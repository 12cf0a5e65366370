"""Run by tests/test_history.py in a subprocess (TqApi runs its own asyncio loop): against a fresh
server, time the first K-line serials and the first quote, and print one ``RESULT {json}`` line."""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path

sys.modules.setdefault("tqsdk.changelog_notification", types.ModuleType("tqsdk.changelog_notification"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "examples"))

from tqsdk import TqAccount, TqApi  # noqa: E402
from tqsdk_demo import LocalAuth  # noqa: E402


def main() -> None:
    diff, user, password, symbol = sys.argv[1:5]
    result: dict[str, object] = {}
    started = time.monotonic()
    api = TqApi(TqAccount("qaex", user, password, td_url=diff), auth=LocalAuth(user), _md_url=diff)
    try:
        result["connect_s"] = time.monotonic() - started
        begin = time.monotonic()
        quote = api.get_quote(symbol)
        result["quote_s"] = time.monotonic() - begin
        result["last_price"] = quote.last_price
        result["pre_close"] = quote.pre_close
        result["pre_settlement"] = quote.pre_settlement
        begin = time.monotonic()
        minutes = api.get_kline_serial(symbol, 60, 200)
        result["minutes_s"] = time.monotonic() - begin
        begin = time.monotonic()
        days = api.get_kline_serial(symbol, 86400, 100)
        result["days_s"] = time.monotonic() - begin
        cols = ["open", "high", "low", "close"]
        result["minute_rows"] = len(minutes)
        result["minute_nan"] = int(minutes[cols].isna().sum().sum())
        result["day_rows"] = len(days)
        result["day_nan"] = int(days[cols].isna().sum().sum())
        result["last_minute_close"] = float(minutes.close.iloc[-1])
        result["minute_datetimes_increase"] = bool(minutes.datetime.is_monotonic_increasing)
        result["day_close_before_today"] = float(days.close.iloc[-2])
        result["finite"] = all(math.isfinite(x) for x in minutes.close)
        begin = time.monotonic()
        full = api.get_kline_serial(symbol, 60, 10000)
        result["full_s"] = time.monotonic() - begin
        result["full_rows"] = len(full)
        result["full_nan"] = int(full[cols].isna().sum().sum())
    except Exception as exc:
        result["failed"] = repr(exc)
    finally:
        api.close()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
