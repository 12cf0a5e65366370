"""DIFF wire format: client messages (a msgspec tagged union on ``aid``) and server frame encoders.

Field sets follow what TqSdk 3.10.4 and tqsdk-js actually send (checked against their sources), so no
message a real client sends is rejected. Fields a client adds that qaex does not use (TqSdk's
``account_key``, ``client_mac_address``, ``client_system_info``, ...) are ignored: msgspec skips unknown
fields. Messages are frozen: they are the events a :class:`~qaex.protocol.session.DiffSession` returns.

The decoder and encoder are created once at import (msgspec compiles them per type). The notify codes
are :mod:`qaex.core.notify_codes`'s (the core sends them too); those about client messages are
re-exported here.
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from qaex.core.ins_query import MAX_LIST_ITEMS, MAX_QUERY_LENGTH
from qaex.core.limits import (
    MAX_DURATION_NS,
    MAX_PASSWORD_LENGTH,
    ClientKey,
    ExchangeCode,
    InsList,
    Int64,
    OrderId,
    Password,
    ShortText,
    SignedAmount,
    Symbol,
    UserId,
)
from qaex.core.notify_codes import NOTIFY_BAD_MESSAGE as NOTIFY_BAD_MESSAGE
from qaex.core.notify_codes import NOTIFY_CANCEL_WRONG_USER as NOTIFY_CANCEL_WRONG_USER
from qaex.core.notify_codes import NOTIFY_DUPLICATE_LOGIN as NOTIFY_DUPLICATE_LOGIN
from qaex.core.notify_codes import NOTIFY_UNKNOWN_AID as NOTIFY_UNKNOWN_AID
from qaex.core.notify_codes import NOTIFY_WRONG_USER as NOTIFY_WRONG_USER
from qaex.core.orders import InsertOrder
from qaex.protocol import strict_json

NotifyLevel = Literal["INFO", "WARNING", "ERROR"]


class DiffProtocolError(Exception):
    """A frame that is not a valid DIFF client message; ``message`` says what is wrong, for a notify."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Message(msgspec.Struct, frozen=True, kw_only=True, tag_field="aid"):
    """Base of the client messages; each subclass sets its ``aid`` value as the tag."""


class PeekMessage(_Message, frozen=True, tag="peek_message"):
    """Ask for the next rtn_data (flow control)."""


class ReqLogin(_Message, frozen=True, tag="req_login"):
    bid: ShortText
    user_name: UserId
    password: Password


class ConfirmSettlement(_Message, frozen=True, tag="confirm_settlement"):
    """Sent by TqSdk right after req_login; qaex has no settlement statement to confirm."""


class SubscribeQuote(_Message, frozen=True, tag="subscribe_quote"):
    ins_list: InsList  # "SHFE.cu2601,DCE.m2601"; replaces the previous subscription, "" unsubscribes


class SetChart(_Message, frozen=True, tag="set_chart"):
    """Open, move or (with an empty ``ins_list``) close a K-line/tick chart.

    tqsdk-js may send ``trading_day_start``/``trading_day_count`` instead of ``view_width``; 500 is its
    default width then.
    """

    chart_id: ClientKey
    ins_list: InsList
    duration: Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_NS)]  # ns; 0 = ticks
    view_width: Annotated[int, msgspec.Meta(ge=0, le=1_000_000)] = 500
    left_kline_id: Int64 | None = None
    focus_datetime: Int64 | None = None
    focus_position: Annotated[int, msgspec.Meta(ge=-1_000_000, le=1_000_000)] | None = None
    trading_day_start: Int64 | None = None
    trading_day_count: Annotated[int, msgspec.Meta(ge=0, le=100_000)] | None = None


class InsertOrderMessage(InsertOrder, frozen=True, kw_only=True, tag_field="aid", tag="insert_order"):
    """DIFF insert_order; it *is* a core :class:`InsertOrder` (whose fields carry the bounds), so it
    goes to the order router as is. Ids entering here also follow the alphabets."""

    order_id: OrderId
    exchange_id: ExchangeCode
    instrument_id: Symbol


class CancelOrder(_Message, frozen=True, tag="cancel_order"):
    user_id: UserId
    order_id: OrderId


class ReqTransfer(_Message, frozen=True, tag="req_transfer"):
    amount: SignedAmount  # > 0 deposits into the futures account, < 0 withdraws
    future_account: ShortText = ""
    future_password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)] = ""
    bank_id: ShortText = ""
    bank_password: ShortText = ""
    currency: ShortText = "CNY"


class ChangePassword(_Message, frozen=True, tag="change_password"):
    old_password: Password
    new_password: Annotated[str, msgspec.Meta(max_length=MAX_PASSWORD_LENGTH)]


QueryValue = str | Int64 | bool | None | Annotated[list[str | Int64], msgspec.Meta(max_length=MAX_LIST_ITEMS)]


class InsQuery(_Message, frozen=True, tag="ins_query"):
    query_id: ClientKey
    query: Annotated[str, msgspec.Meta(max_length=MAX_QUERY_LENGTH)]
    # TqSdk omits it for some queries; values are flat (strings, integers, lists of them).
    variables: Annotated[dict[ShortText, QueryValue], msgspec.Meta(max_length=64)] | None = None


ClientEvent = (
    ReqLogin
    | SubscribeQuote
    | SetChart
    | InsertOrderMessage
    | CancelOrder
    | ReqTransfer
    | ChangePassword
    | InsQuery
)
"""What :meth:`~qaex.protocol.session.DiffSession.receive` hands to the exchange (peek and
confirm_settlement are the session's own)."""

ClientMessage = PeekMessage | ConfirmSettlement | ClientEvent

KNOWN_AIDS: Final[frozenset[str]] = frozenset(
    str(message_type.__struct_config__.tag) for message_type in ClientMessage.__args__
)

_message_decoder: Final[msgspec.json.Decoder[ClientMessage]] = msgspec.json.Decoder(ClientMessage)
_encoder: Final = msgspec.json.Encoder()


class _Aid(msgspec.Struct):
    """Only the ``aid`` of a frame that failed to decode, to say what is wrong with it."""

    aid: msgspec.Raw = msgspec.Raw(b"null")


_aid_decoder: Final = msgspec.json.Decoder(_Aid)


def decode_client_message(frame: bytes | str) -> ClientMessage:
    """Decode one client frame; raise :class:`DiffProtocolError` with a readable reason if it is invalid.

    Every way a frame can be wrong ends here as a DiffProtocolError (a notify), never another exception:
    a value out of its bounds, deep nesting, a duplicate key, a number too large for any type.
    """
    try:
        message = _message_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        raise _explain(frame, exc) from None
    except msgspec.DecodeError as exc:
        raise DiffProtocolError(NOTIFY_BAD_MESSAGE, f"malformed JSON: {strict_json.error_text(exc)}") from exc
    except RecursionError:
        raise DiffProtocolError(NOTIFY_BAD_MESSAGE, strict_json.MAX_DEPTH_MESSAGE) from None
    except UnicodeError:  # a str frame with a lone surrogate (a WebSocket text frame cannot carry one)
        raise DiffProtocolError(NOTIFY_BAD_MESSAGE, "malformed text: not UTF-8") from None
    if type(message) is not PeekMessage:  # the most frequent frame has nothing to be ambiguous about
        problem = strict_json.key_problem(frame)
        if problem is not None:
            aid = message.__struct_config__.tag
            raise DiffProtocolError(NOTIFY_BAD_MESSAGE, f"invalid {aid}: {problem}")
    return message


def _explain(frame: bytes | str, exc: msgspec.ValidationError) -> DiffProtocolError:
    """Rare path: look at the frame's ``aid`` alone to say which part is wrong."""
    try:
        raw = bytes(_aid_decoder.decode(frame).aid)
    except msgspec.ValidationError:
        text = frame.lstrip() if isinstance(frame, str) else frame.lstrip().decode(errors="replace")
        kind = _JSON_KINDS.get(text[:1], "number")
        return DiffProtocolError(NOTIFY_BAD_MESSAGE, f"a DIFF message must be a JSON object, got {kind}")
    except (msgspec.DecodeError, RecursionError):
        return DiffProtocolError(NOTIFY_BAD_MESSAGE, f"invalid message: {strict_json.error_text(exc)}")
    if raw == b"null":
        return DiffProtocolError(NOTIFY_BAD_MESSAGE, "message has no `aid`")
    try:
        aid = msgspec.json.decode(raw) if raw.startswith(b'"') else None
    except msgspec.DecodeError:  # the raw value was skipped unchecked: invalid UTF-8, say
        aid = None
    if aid not in KNOWN_AIDS:
        shown = repr(aid[:64]) if isinstance(aid, str) else raw[:64].decode(errors="replace")
        return DiffProtocolError(NOTIFY_UNKNOWN_AID, f"unknown aid {shown}")
    return DiffProtocolError(NOTIFY_BAD_MESSAGE, f"invalid {aid}: {strict_json.error_text(exc)}")


_JSON_KINDS: Final = {"[": "array", '"': "str", "t": "bool", "f": "bool", "n": "NoneType"}


class SharedPatch:
    """A merge patch many sessions receive as it is (a market-data publish): JSON-encoded once.

    A :class:`~qaex.protocol.session.DiffSession` whose pending data at its next rtn_data is only
    shared patches sends their bytes (:attr:`raw`) as they are, and one that also has data of its own
    pending merges the shared patch in as it merges any other (``DiffSession.push_shared``). So a
    quote patch published to 1,000 subscribers is encoded once, not 1,000 times. ``patch`` must not
    change after it was pushed (the bytes are kept), and holds no ``notify`` (notifies are per
    session: ValueError).
    """

    __slots__ = ("_raw", "patch")

    def __init__(self, patch: dict[str, Any]) -> None:
        if "notify" in patch:
            raise ValueError("a shared patch carries no notify")
        self.patch = patch
        self._raw: msgspec.Raw | None = None

    @property
    def raw(self) -> msgspec.Raw:
        """The patch as JSON, encoded at the first use (:func:`encode_rtn_data` copies it as is)."""
        raw = self._raw
        if raw is None:
            raw = self._raw = msgspec.Raw(_encoder.encode(self.patch))
        return raw


def encode_rtn_data(data: list[dict[str, Any] | msgspec.Raw]) -> bytes:
    """The ``rtn_data`` frame for ``data`` (merge patches applied in order by the client; a
    :class:`msgspec.Raw` one, e.g. :attr:`SharedPatch.raw`, is copied into the frame as it is).

    Float NaN/inf are encoded as ``null`` (msgspec's choice, kept): market data reaches this encoder
    already through :func:`market_patch` (NaN as ``"-"``); in the trade tree null *deletes* the field, so
    the engine must put finite numbers there (0.0 for "none yet", ``"-"`` for a price that does not exist).
    """
    return _encoder.encode({"aid": "rtn_data", "data": data})


NAN_ON_WIRE: Final = "-"
"""How a NaN market-data price travels over DIFF (what Shinnytech's own market-data servers send).

msgspec encodes NaN as ``null``, and TqSdk 3.10.4 *ignores* ``null`` under ``quotes`` (quotes are
"persist" objects for it), so a price that becomes NaN - an emptied depth level, the daily high at a
new trading day - would keep its stale value on the client. TqSdk replaces a *string* sent for a
numeric field by that field's default, which is NaN for every price, so the client ends up with NaN.
The core renders real NaN; this transport decides how it travels (the HTTP API sends ``null``)."""


def wire_fields(fields: dict[str, Any]) -> dict[str, Any]:
    """``fields`` with every NaN value as :data:`NAN_ON_WIRE`: ``fields`` itself when none is NaN,
    else a copy (a rendered dict may be shared: it is never changed)."""
    for value in fields.values():
        if value != value:  # NaN, the one value unequal to itself
            return {key: NAN_ON_WIRE if value != value else value for key, value in fields.items()}
    return fields


def market_patch(patch: dict[str, Any]) -> dict[str, Any]:
    """A market-data patch as DIFF carries it: NaN in ``quotes/{symbol}`` and in the tick records of
    ``ticks/{symbol}/data`` travels as :data:`NAN_ON_WIRE` (K-line bars and charts hold no NaN).

    The patch itself when nothing is NaN, else a copy of the parts that change: the core's patches
    are shared (one build per change, every subscriber), so none is modified."""
    quotes = patch.get("quotes")
    ticks = patch.get("ticks")
    if quotes is None and ticks is None:
        return patch
    wire = patch
    if quotes is not None:
        converted = {symbol: wire_fields(fields) for symbol, fields in quotes.items()}
        if any(converted[symbol] is not fields for symbol, fields in quotes.items()):
            wire = {**wire, "quotes": converted}
    if ticks is not None:
        converted = {symbol: _wire_ticks(body) for symbol, body in ticks.items()}
        if any(converted[symbol] is not body for symbol, body in ticks.items()):
            wire = {**wire, "ticks": converted}
    return wire


def _wire_ticks(body: Any) -> Any:
    """One symbol's ``{"last_id": N, "data": {id: tick}}``, NaN as :data:`NAN_ON_WIRE` (copied if so)."""
    data = body.get("data") if type(body) is dict else None
    if type(data) is not dict:
        return body
    wire = {key: wire_fields(tick) if type(tick) is dict else tick for key, tick in data.items()}
    if all(wire[key] is tick for key, tick in data.items()):
        return body
    return {**body, "data": wire}


RTN_BROKERS: Final = b'{"aid":"rtn_brokers","brokers":["qaex"]}'
"""Sent once on connect (tqsdk-js waits for it before logging in)."""
