"""DIFF wire format: client messages (a msgspec tagged union on ``aid``) and server frame encoders.

Field sets follow what TqSdk 3.10.4 and tqsdk-js actually send (checked against their sources), so no
message a real client sends is rejected. Fields a client adds that qaex does not use (TqSdk's
``account_key``, ``client_mac_address``, ``client_system_info``, ...) are ignored: msgspec skips unknown
fields. Messages are frozen: they are the events a :class:`~qaex.protocol.session.DiffSession` returns.

The decoder and encoder are created once at import (msgspec compiles them per type).
"""

from __future__ import annotations

from typing import Annotated, Any, Final, Literal

import msgspec

from qaex.core.orders import InsertOrder

NotifyLevel = Literal["INFO", "WARNING", "ERROR"]

# Notify codes. 400/408/418 are open-trade-gateway's (clients know them); 490/491 are qaex's own, for
# frames that are not a valid DIFF message at all.
NOTIFY_DUPLICATE_LOGIN: Final = 400
NOTIFY_WRONG_USER: Final = 408
NOTIFY_CANCEL_WRONG_USER: Final = 418
NOTIFY_BAD_MESSAGE: Final = 490
NOTIFY_UNKNOWN_AID: Final = 491


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
    bid: str
    user_name: str
    password: str


class ConfirmSettlement(_Message, frozen=True, tag="confirm_settlement"):
    """Sent by TqSdk right after req_login; qaex has no settlement statement to confirm."""


class SubscribeQuote(_Message, frozen=True, tag="subscribe_quote"):
    ins_list: str  # "SHFE.cu2601,DCE.m2601"; replaces the previous subscription, "" unsubscribes


class SetChart(_Message, frozen=True, tag="set_chart"):
    """Open, move or (with an empty ``ins_list``) close a K-line/tick chart.

    tqsdk-js may send ``trading_day_start``/``trading_day_count`` instead of ``view_width``; 500 is its
    default width then.
    """

    chart_id: str
    ins_list: str
    duration: int  # ns; 0 = ticks
    view_width: int = 500
    left_kline_id: int | None = None
    focus_datetime: int | None = None
    focus_position: int | None = None
    trading_day_start: int | None = None
    trading_day_count: int | None = None


class InsertOrderMessage(InsertOrder, frozen=True, kw_only=True, tag_field="aid", tag="insert_order"):
    """DIFF insert_order; it *is* a core :class:`InsertOrder`, so it goes to the order router as is."""

    volume: Annotated[int, msgspec.Meta(gt=0)]


class CancelOrder(_Message, frozen=True, tag="cancel_order"):
    user_id: str
    order_id: str


class ReqTransfer(_Message, frozen=True, tag="req_transfer"):
    amount: float  # > 0 deposits into the futures account, < 0 withdraws
    future_account: str = ""
    future_password: str = ""
    bank_id: str = ""
    bank_password: str = ""
    currency: str = "CNY"


class ChangePassword(_Message, frozen=True, tag="change_password"):
    old_password: str
    new_password: str


class InsQuery(_Message, frozen=True, tag="ins_query"):
    query_id: str
    query: str
    variables: dict[str, Any] | None = None  # TqSdk omits it for some queries


ClientMessage = (
    PeekMessage
    | ReqLogin
    | ConfirmSettlement
    | SubscribeQuote
    | SetChart
    | InsertOrderMessage
    | CancelOrder
    | ReqTransfer
    | ChangePassword
    | InsQuery
)

KNOWN_AIDS: Final[frozenset[str]] = frozenset(
    str(message_type.__struct_config__.tag) for message_type in ClientMessage.__args__
)

_message_decoder: Final[msgspec.json.Decoder[ClientMessage]] = msgspec.json.Decoder(ClientMessage)
_any_decoder: Final = msgspec.json.Decoder()
_encoder: Final = msgspec.json.Encoder()


def decode_client_message(frame: bytes | str) -> ClientMessage:
    """Decode one client frame; raise :class:`DiffProtocolError` with a readable reason if it is invalid."""
    try:
        return _message_decoder.decode(frame)
    except msgspec.ValidationError as exc:
        # Rare path: look at the frame as plain JSON to say which part is wrong.
        raise _explain(_any_decoder.decode(frame), exc) from None
    except msgspec.DecodeError as exc:
        raise DiffProtocolError(NOTIFY_BAD_MESSAGE, f"malformed JSON: {exc}") from None


def _explain(raw: Any, exc: msgspec.ValidationError) -> DiffProtocolError:
    if not isinstance(raw, dict):
        kind = "array" if isinstance(raw, list) else type(raw).__name__
        return DiffProtocolError(NOTIFY_BAD_MESSAGE, f"a DIFF message must be a JSON object, got {kind}")
    aid = raw.get("aid")
    if aid is None:
        return DiffProtocolError(NOTIFY_BAD_MESSAGE, "message has no `aid`")
    if not isinstance(aid, str) or aid not in KNOWN_AIDS:
        return DiffProtocolError(NOTIFY_UNKNOWN_AID, f"unknown aid {aid!r}")
    return DiffProtocolError(NOTIFY_BAD_MESSAGE, f"invalid {aid}: {exc}")


def encode_rtn_data(data: list[dict[str, Any]]) -> bytes:
    """The ``rtn_data`` frame for ``data`` (merge patches applied in order by the client).

    Float NaN/inf are encoded as ``null`` (msgspec's choice, kept): under ``quotes`` TqSdk ignores null, so
    a not-yet-known quote number may be NaN; in the trade tree null *deletes* the field, so the engine must
    put finite numbers there (0.0 for "none yet").
    """
    return _encoder.encode({"aid": "rtn_data", "data": data})


def notify(code: int, level: NotifyLevel, content: str, key: str) -> dict[str, Any]:
    """A patch that shows one message to the user; ``key`` must never have been used on this client."""
    return {"notify": {key: {"type": "MESSAGE", "level": level, "code": code, "content": content}}}


RTN_BROKERS: Final = b'{"aid":"rtn_brokers","brokers":["qaex"]}'
"""Sent once on connect (tqsdk-js waits for it before logging in)."""
