"""Bounds on every value that enters the exchange: one home for each limit.

The HTTP bodies (:mod:`qaex.protocol.http`), the DIFF messages (:mod:`qaex.protocol.diff`) and the
journal's commands (:mod:`qaex.core.commands`) are msgspec types built from the annotated types
below, so a value out of bounds is refused where it is decoded, with msgspec's message naming the
field (``Expected `int` <= 100000 - at `$.volume```), before any handler or engine code sees it.
The engine checks the same constants again for commands built in-process (the market maker,
tests), so no path around the decoders reaches arithmetic with an unbounded value.

Limits are chosen wide enough for every real contract and client, and small enough that no
arithmetic the exchange does with them can overflow a float or a 64-bit integer:

- a volume times a multiplier times a price (at most 1e5 × 1e6 × 1e9 = 1e20) stays far below a
  float's 1e308, and every integer fits in 64 bits (msgpack, the journal's encoding, holds no more);
- an amount of money is at most ``MAX_AMOUNT``; a balance grows by at most that per transfer;
- ids are short printable ASCII, the same pattern for HTTP, DIFF, URLs and the journal.
"""

from __future__ import annotations

import re
from typing import Annotated, Final

import msgspec


# -- identifiers -------------------------------------------------------------------------------------------
def whole(body: str) -> str:
    """A pattern matching `body` as the whole string. msgspec *searches* a pattern, and ``$`` alone
    also matches before a final newline (``"alice\n"``): the lookahead refuses that, in Python's and
    in JSON Schema's (ECMA) regexes alike."""
    return f"^(?:{body})(?!\n)$"


MAX_ID_LENGTH: Final = 64
"""Longest user id, order id, query id or chart id, everywhere."""

USER_ID_PATTERN: Final = whole(r"[A-Za-z0-9_-]{1,64}")
"""User ids: ASCII letters, digits, ``_`` and ``-`` (no ``.``: tokens are ``user.expiry.signature``;
no other scripts: ``аlice`` with a Cyrillic ``а`` must not pass for ``alice``)."""

ORDER_ID_PATTERN: Final = whole(r"[A-Za-z0-9_.:|@#+=-]{1,64}")
"""Order ids: printable ASCII without spaces, quotes, ``/``, ``?``, ``%`` or ``&``, so that every id
fits in a URL path segment (``GET /api/order/{order_id}``) as it is. TqSdk sends
``PYSDK_insert_<32 hex>``, tqsdk-js ``TQJS_...``, the market maker ``rb2601.17`` / ``rb2601.18t``."""

RESERVED_USER_PREFIX: Final = "qaex-"
"""User ids the exchange keeps for its own participants (the market maker's ``qaex-mm``, ``qaex-taker``):
nobody can open one over HTTP, so a later start with the market maker on never trades a user's account."""

KEY_PATTERN: Final = whole(r"[A-Za-z0-9_.:|@#+=-]{1,64}")
"""Client-chosen keys of the DIFF tree: ``ins_query`` query ids and ``set_chart`` chart ids."""

SYMBOL_PATTERN: Final = whole(r"[A-Za-z0-9_.@-]{1,64}")
"""``SHFE.cu2601`` or ``cu2601``: exchange and instrument codes are ASCII letters, digits, ``_ . -``;
``@`` too, for the main-contract series ``KQ.m@SHFE.rb`` (quoted, and refused with a reason when
an order names one)."""

UserId = Annotated[str, msgspec.Meta(pattern=USER_ID_PATTERN, description="1-64 of A-Z a-z 0-9 _ -")]
OrderId = Annotated[str, msgspec.Meta(pattern=ORDER_ID_PATTERN, description="1-64 of A-Z a-z 0-9 _.:|@#+=-")]
ClientKey = Annotated[str, msgspec.Meta(pattern=KEY_PATTERN)]
Symbol = Annotated[str, msgspec.Meta(pattern=SYMBOL_PATTERN)]
ExchangeCode = Annotated[str, msgspec.Meta(pattern=whole(r"[A-Za-z0-9_]{1,16}"))]
TradingDay = Annotated[str, msgspec.Meta(pattern=whole(r"([0-9]{8})?"))]
"""``YYYYMMDD``, or empty for "the next one"."""
Int64 = Annotated[int, msgspec.Meta(ge=-(2**63), le=2**63 - 1)]
"""Any integer a client sends that has no tighter bound: msgspec alone accepts up to 4,300 digits."""

# The journal's commands carry only what the engine itself checks on every command (lengths and
# ranges, cheap), so that whatever the engine applies and journals also decodes on replay; the
# alphabets above are for the edges (HTTP, DIFF), where ids first enter.
IdText = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)]
CodeText = Annotated[str, msgspec.Meta(min_length=1, max_length=16)]
SymbolText = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]

# -- passwords ---------------------------------------------------------------------------------------------
MAX_PASSWORD_LENGTH: Final = 256
"""Longest password accepted anywhere (it is hashed with scrypt, whose cost grows with the input)."""

Password = Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_PASSWORD_LENGTH)]
"""A password as it is typed to log in; the policy for new passwords is checked separately."""

# -- quantities --------------------------------------------------------------------------------------------
MAX_ORDER_VOLUME: Final = 100_000
"""Global ceiling of an order's lots, whatever an instrument's own limits say (real contracts: <= 1,000)."""

MAX_PRICE: Final = 1e9
"""Highest price any message may carry (real futures trade below 1e6); checked before tick arithmetic."""

MAX_AMOUNT: Final = 1e12
"""Largest deposit, withdrawal or initial cash, CNY."""

MAX_PRICE_TICK_DIGITS: Final = 6
"""A price tick is at least 10**-6: prices are shown and compared with at most six decimals."""

Volume = Annotated[int, msgspec.Meta(ge=1, le=MAX_ORDER_VOLUME)]
Price = Annotated[float, msgspec.Meta(ge=0, le=MAX_PRICE)]
PositivePrice = Annotated[float, msgspec.Meta(gt=0, le=MAX_PRICE)]
Amount = Annotated[float, msgspec.Meta(gt=0, le=MAX_AMOUNT)]
Cash = Annotated[float, msgspec.Meta(ge=0, le=MAX_AMOUNT)]
SignedAmount = Annotated[float, msgspec.Meta(ge=-MAX_AMOUNT, le=MAX_AMOUNT)]

MAX_DURATION_NS: Final = 366 * 86_400 * 1_000_000_000
"""Longest K-line a chart or ``GET /api/market/klines`` may ask for: one year."""

# -- sizes -------------------------------------------------------------------------------------------------
MAX_INS_LIST_LENGTH: Final = 65_536
"""Characters of a ``subscribe_quote`` / ``set_chart`` ``ins_list`` (about 5,000 symbols)."""

MAX_SHORT_TEXT: Final = 256
"""Free text a client sends that qaex ignores or echoes (bank ids, currency, broker id)."""

ShortText = Annotated[str, msgspec.Meta(max_length=MAX_SHORT_TEXT)]
InsList = Annotated[str, msgspec.Meta(max_length=MAX_INS_LIST_LENGTH)]


def amount_ok(amount: float) -> bool:
    """A deposit or withdrawal the engine accepts: finite, > 0 and at most ``MAX_AMOUNT``."""
    return 0 < amount <= MAX_AMOUNT


MIN_PASSWORD_LENGTH: Final = 8
NewPassword = Annotated[str, msgspec.Meta(min_length=MIN_PASSWORD_LENGTH, max_length=MAX_PASSWORD_LENGTH)]
"""A password being chosen: the policy's length bound, so that the schema shows it (the rest of the
policy, :func:`password_problem`, cannot be written as a schema)."""


def password_problem(user_id: str, password: str) -> str | None:
    """Why `password` may not be chosen as `user_id`'s new password, or None if it may.

    The policy for new passwords (opening an account, changing a password): at least
    ``MIN_PASSWORD_LENGTH`` characters, at most ``MAX_PASSWORD_LENGTH``, not the user id, and not one
    character repeated. Logging in checks only the length bounds, so an older password still works.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        return f"password must have at least {MIN_PASSWORD_LENGTH} characters"
    if len(password) > MAX_PASSWORD_LENGTH:
        return f"password must have at most {MAX_PASSWORD_LENGTH} characters"
    if password.casefold() == user_id.casefold():
        return "password must not be the user id"
    if len(set(password)) == 1:
        return "password must not be one character repeated"
    return None


_USER_ID = re.compile(USER_ID_PATTERN)


def is_user_id(text: str) -> bool:
    """`text` is a user id: it matches ``USER_ID_PATTERN`` as a whole.

    ``re.fullmatch``: the same rule as the decoders' (see :func:`whole`), for ids that come another way
    (a token's user part).
    """
    return _USER_ID.fullmatch(text) is not None
