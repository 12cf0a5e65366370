"""Error codes shared by the core, the HTTP API and DIFF notifies.

Each rejection the core can produce has one stable code (a string for HTTP bodies) and, where
open-trade-gateway's simulator has one, the numeric DIFF notify code that clients already know
(constants in :mod:`qaex.core.notify_codes`).
"""

from __future__ import annotations

from qaex.core.notify_codes import (
    NOTIFY_BAD_INSTRUMENT,
    NOTIFY_BAD_VOLUME,
    NOTIFY_DUPLICATE_ORDER_ID,
    NOTIFY_INSUFFICIENT_FUNDS,
    NOTIFY_INSUFFICIENT_POSITION,
    NOTIFY_MARKET_CLOSED,
    NOTIFY_PRICE_ABOVE_LIMIT,
    NOTIFY_PRICE_BELOW_LIMIT,
    NOTIFY_PRICE_OFF_TICK,
    NOTIFY_RATE_LIMITED,
    NOTIFY_REFUSED,
    NOTIFY_SELF_TRADE,
)


class QaexError(Exception):
    """A request the exchange refuses; carries a stable code and a readable message."""

    code: str = "error"
    diff_code: int = 0
    http_status: int = 400

    def __init__(self, message: str, *, code: str | None = None, diff_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if diff_code is not None:
            self.diff_code = diff_code


class RiskError(QaexError):
    """Pre-trade risk or validation rejected an order; the order is FINISHED with last_msg = message."""


class NotFound(QaexError):
    code = "not_found"
    http_status = 404


class Forbidden(QaexError):
    code = "forbidden"
    http_status = 403


class Conflict(QaexError):
    code = "conflict"
    http_status = 409


# Risk/validation codes: (code, DIFF notify code)
UNKNOWN_INSTRUMENT = ("unknown_instrument", NOTIFY_BAD_INSTRUMENT)
INSTRUMENT_SUSPENDED = ("instrument_suspended", NOTIFY_BAD_INSTRUMENT)
INSTRUMENT_EXPIRED = ("instrument_expired", NOTIFY_BAD_INSTRUMENT)
PRICE_ABOVE_LIMIT = ("price_above_limit", NOTIFY_PRICE_ABOVE_LIMIT)
PRICE_BELOW_LIMIT = ("price_below_limit", NOTIFY_PRICE_BELOW_LIMIT)
PRICE_OFF_TICK = ("price_off_tick", NOTIFY_PRICE_OFF_TICK)
BAD_VOLUME = ("bad_volume", NOTIFY_BAD_VOLUME)
INSUFFICIENT_FUNDS = ("insufficient_funds", NOTIFY_INSUFFICIENT_FUNDS)
INSUFFICIENT_POSITION = ("insufficient_position", NOTIFY_INSUFFICIENT_POSITION)
DUPLICATE_ORDER_ID = ("duplicate_order_id", NOTIFY_DUPLICATE_ORDER_ID)
RATE_LIMITED = ("rate_limited", NOTIFY_RATE_LIMITED)
MARKET_CLOSED = ("market_closed", NOTIFY_MARKET_CLOSED)
SELF_TRADE = ("self_trade", NOTIFY_SELF_TRADE)
BAD_ORDER = ("bad_order", NOTIFY_REFUSED)
NOT_TRADABLE = ("not_tradable", NOTIFY_BAD_INSTRUMENT)  # a KQ.m@ main-contract series


def risk(pair: tuple[str, int], message: str) -> RiskError:
    """Build a RiskError from one of the (code, diff_code) pairs above."""
    return RiskError(message, code=pair[0], diff_code=pair[1])
