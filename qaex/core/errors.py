"""Error codes shared by the core, the HTTP API and DIFF notifies.

Each rejection the core can produce has one stable code (a string for HTTP bodies) and, where
open-trade-gateway's simulator has one, the numeric DIFF notify code that clients already know.
"""

from __future__ import annotations


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
UNKNOWN_INSTRUMENT = ("unknown_instrument", 409)
INSTRUMENT_SUSPENDED = ("instrument_suspended", 409)
PRICE_ABOVE_LIMIT = ("price_above_limit", 404)
PRICE_BELOW_LIMIT = ("price_below_limit", 405)
PRICE_OFF_TICK = ("price_off_tick", 412)
BAD_VOLUME = ("bad_volume", 411)
INSUFFICIENT_FUNDS = ("insufficient_funds", 413)
INSUFFICIENT_POSITION = ("insufficient_position", 414)
DUPLICATE_ORDER_ID = ("duplicate_order_id", 407)
RATE_LIMITED = ("rate_limited", 429)
SELF_TRADE = ("self_trade", 423)
BAD_ORDER = ("bad_order", 400)
NO_LIQUIDITY = ("no_liquidity", 424)


def risk(pair: tuple[str, int], message: str) -> RiskError:
    """Build a RiskError from one of the (code, diff_code) pairs above."""
    return RiskError(message, code=pair[0], diff_code=pair[1])


# A deposit or withdrawal amount that is not a positive finite number (DIFF: 422, transfer failed).
AMOUNT_INVALID = ("amount_invalid", 422)
