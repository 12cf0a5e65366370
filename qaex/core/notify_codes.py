"""The numeric DIFF notify codes: every one the exchange sends, in one place.

A notify is ``{"type": "MESSAGE", "level": ..., "code": N, "content": ...}`` under ``notify/{key}``
(docs/diff-protocol.md, "Notify", lists each code with its meaning; ``tests/test_diff_session.py``
checks that every constant here is in that table). The 40x-42x codes are open-trade-gateway's
simulator's, which clients already know; 425, 429 and the 49x codes are qaex's own.

They live in the core because the engine and the core's errors carry them (``QaexError.diff_code``)
and the core imports nothing from ``qaex.protocol``; ``qaex.protocol.diff`` re-exports them.
"""

from __future__ import annotations

from typing import Final

NOTIFY_REFUSED: Final = 400
"""A request refused without a more specific code (an order kind qaex refuses, a weak new password)."""
NOTIFY_DUPLICATE_LOGIN: Final = 400
"""A second req_login on one connection (open-trade-gateway's code, which is also its generic refusal)."""
NOTIFY_LOGIN_OK: Final = 401
NOTIFY_LOGIN_FAILED: Final = 402
"""Unknown user or wrong password (one text for both); also a wrong old password in change_password."""
NOTIFY_PRICE_ABOVE_LIMIT: Final = 404
NOTIFY_PRICE_BELOW_LIMIT: Final = 405
NOTIFY_DUPLICATE_ORDER_ID: Final = 407
NOTIFY_WRONG_USER: Final = 408
"""A trade message before login, or an insert_order for another user_id."""
NOTIFY_BAD_INSTRUMENT: Final = 409
"""An unknown or suspended instrument (orders, subscribe_quote, set_chart)."""
NOTIFY_BAD_VOLUME: Final = 411
NOTIFY_PRICE_OFF_TICK: Final = 412
NOTIFY_INSUFFICIENT_FUNDS: Final = 413
NOTIFY_INSUFFICIENT_POSITION: Final = 414
NOTIFY_CANCEL_WRONG_USER: Final = 418
NOTIFY_CANCEL_OK: Final = 419
NOTIFY_CANCEL_FAILED: Final = 420
"""The order to cancel is not found or already finished."""
NOTIFY_TRANSFER_OK: Final = 421
NOTIFY_TRANSFER_FAILED: Final = 422
"""A refused req_transfer: amount zero or out of bounds, not enough available, wrong future_password."""
NOTIFY_SELF_TRADE: Final = 423
NOTIFY_MARKET_CLOSED: Final = 425
"""An order outside its contract's trading sessions (``QAEX_MARKET_HOURS=exchange``); the text says
when the contract opens next."""
NOTIFY_RATE_LIMITED: Final = 429
"""Too many messages (session) or orders (user) per second, or too many failed logins (throttle)."""
NOTIFY_BAD_MESSAGE: Final = 490
"""A frame that is not a valid DIFF message (the text says what and where), or a set_chart refused."""
NOTIFY_BAD_CHART: Final = NOTIFY_BAD_MESSAGE
"""A set_chart with bad fields or a duration TqSdk refuses (qaex.core.market)."""
NOTIFY_UNKNOWN_AID: Final = 491
NOTIFY_TOO_MANY_SESSIONS: Final = 492
"""req_login refused: the user already holds ``QAEX_MAX_SESSIONS_PER_USER`` sessions."""
NOTIFY_PASSWORD_CHANGED: Final = 493
"""change_password succeeded (INFO)."""
NOTIFY_CONTRACT_EXPIRED: Final = 494
"""A contract the user held expired: the position was closed out in cash at the final settlement price
(INFO)."""
