"""HTTP request and response bodies (msgspec Structs) and the OpenAPI document built from them.

Requests are decoded straight into these types, so a wrong type, a missing field or an out-of-range
number is refused with msgspec's own message (``Expected `int` >= 1 - at `$.volume```) before any
handler code runs. Responses are the DIFF renderings of the core objects; their Structs here exist so
the OpenAPI document describes exactly the fields a client receives.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_type_hints

import msgspec

from qaex.core.account import ACCOUNT_FIELDS, Position
from qaex.core.calendar import MarketHours
from qaex.core.instruments import Instrument
from qaex.core.limits import (
    MAX_DURATION_NS,
    Amount,
    Cash,
    ExchangeCode,
    NewPassword,
    OrderId,
    Password,
    PositivePrice,
    Price,
    Symbol,
    TradingDay,
    UserId,
    Volume,
)
from qaex.core.orders import Direction, Offset, PriceType, TimeCondition, Trade, VolumeCondition


# -- requests -------------------------------------------------------------------------------------------
class Body(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    """Base of request bodies: an unknown field is an error (a typo must not be ignored silently)."""


class OpenAccountRequest(Body, kw_only=True):
    user_id: UserId
    password: NewPassword
    init_cash: Cash | None = None


class LoginRequest(Body, kw_only=True):
    user_id: UserId
    password: Password


class AmountRequest(Body, kw_only=True):
    amount: Amount


class SubmitOrderRequest(Body, kw_only=True):
    """The original design's body, extended with DIFF's insert_order fields.

    ``instrument_id`` is ``SHFE.cu2601``, or ``cu2601`` with ``exchange_id``. ``price`` and
    ``limit_price`` are the same thing; ``order_type`` MARKET means ``price_type`` ANY and IOC.
    """

    user_id: UserId | None = None
    order_id: OrderId | None = None
    exchange_id: ExchangeCode | None = None
    instrument_id: Symbol
    direction: Direction
    offset: Offset = "OPEN"
    volume: Volume
    order_type: Literal["LIMIT", "MARKET"] | None = None
    price: Price | None = None
    price_type: PriceType | None = None
    limit_price: Price | None = None
    time_condition: TimeCondition | None = None
    volume_condition: VolumeCondition = "ANY"


class CancelOrderRequest(Body, kw_only=True):
    order_id: OrderId
    user_id: UserId | None = None


class SettleRequest(Body, kw_only=True):
    prices: Annotated[dict[Symbol, PositivePrice], msgspec.Meta(max_length=10_000)] = msgspec.field(
        default_factory=dict
    )
    trading_day: TradingDay = ""


class HistoryFile(Body, kw_only=True):
    name: Annotated[str, msgspec.Meta(max_length=200)]  # for the error messages
    text: Annotated[str, msgspec.Meta(max_length=4_000_000)]  # a TqSdk DataDownloader K-line CSV


class HistoryImportRequest(Body, kw_only=True):
    files: Annotated[list[HistoryFile], msgspec.Meta(min_length=1, max_length=100)]
    symbol: Symbol | None = None  # the contract of header-less files
    # Bar seconds, any K-line duration (0 or absent for a tick file); default: from the rows.
    duration: Annotated[int, msgspec.Meta(ge=0, le=MAX_DURATION_NS // 1_000_000_000)] | None = None


class AdminDepositRequest(Body, kw_only=True):
    user_id: UserId
    amount: Amount


def _instrument_spec() -> type[msgspec.Struct]:
    """Every Instrument field, optional except the symbol's two parts: a create or a partial update."""
    hints = get_type_hints(Instrument, include_extras=True)  # the bounds are Annotated extras
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = [
        ("exchange_id", hints["exchange_id"]),
        ("instrument_id", hints["instrument_id"]),
    ]
    for name in Instrument.__struct_fields__:
        if name not in ("exchange_id", "instrument_id"):
            fields.append((name, hints[name] | msgspec.UnsetType, msgspec.UNSET))
    return msgspec.defstruct("InstrumentSpec", fields, bases=(Body,), kw_only=True)


InstrumentSpec = _instrument_spec()


# -- responses ------------------------------------------------------------------------------------------
class ErrorDetail(msgspec.Struct):
    code: str
    message: str


class ErrorResponse(msgspec.Struct):
    error: ErrorDetail


class Health(msgspec.Struct):
    status: str
    trading_day: str
    users: int
    sessions: int
    market_hours: MarketHours  # QAEX_MARKET_HOURS: "always" (round the clock) or "exchange" (real sessions)


class LoginResponse(msgspec.Struct):
    token: str
    user_id: str
    expires_at: int  # epoch seconds


AccountView = msgspec.defstruct(
    "AccountView", [(name, str if name in ("user_id", "currency") else float) for name in ACCOUNT_FIELDS]
)


class OrderView(msgspec.Struct):
    """An order exactly as DIFF shows it (``trade/{user}/orders/{order_id}``)."""

    seqno: int
    user_id: str
    order_id: str
    exchange_id: str
    instrument_id: str
    direction: Direction
    offset: Offset
    volume_orign: int
    price_type: PriceType
    limit_price: float | Literal["-"]  # "-" for market orders (no price), as DIFF sends it
    time_condition: TimeCondition
    volume_condition: VolumeCondition
    insert_date_time: int
    exchange_order_id: str
    status: Literal["ALIVE", "FINISHED"]
    volume_left: int
    frozen_margin: float
    last_msg: str


class RejectedOrderResponse(msgspec.Struct):
    """422 answer to an order the exchange refused: the reason, and the order itself when it was
    recorded (a risk check); an order refused whole (``market_closed``: outside its contract's
    sessions under QAEX_MARKET_HOURS=exchange) is not recorded and has none."""

    error: ErrorDetail
    order: OrderView | None = None


class OrdersResponse(msgspec.Struct):
    orders: dict[str, OrderView]


class TradesResponse(msgspec.Struct):
    trades: dict[str, Trade]


class PositionsResponse(msgspec.Struct):
    positions: dict[str, Position]


class InstrumentsResponse(msgspec.Struct):
    instruments: dict[str, Instrument]


class UsersResponse(msgspec.Struct):
    users: dict[str, AccountView]  # type: ignore[valid-type]


class DepthResponse(msgspec.Struct):
    symbol: str
    bids: list[tuple[float, int]]  # [price, volume], best first
    asks: list[tuple[float, int]]


class QuoteResponse(msgspec.Struct):
    """The DIFF quote, rendered as over DIFF (``QuoteBook.full``) with ``null`` for a price that does
    not exist, plus ``bids``/``asks`` and ``suspended``. Every DIFF quote field is there (OHLC,
    ``volume``, ``amount``, ``average``, ``bid/ask_price1..5``, ``margin``, ...); the schema names the
    main ones."""

    instrument_id: str
    exchange_id: str
    instrument_name: str
    last_price: float | None
    bid_price1: float | None
    bid_volume1: int
    ask_price1: float | None
    ask_volume1: int
    bids: list[tuple[float, int]]
    asks: list[tuple[float, int]]
    upper_limit: float | None
    lower_limit: float | None
    pre_settlement: float | None
    pre_close: float | None
    open_interest: int
    price_tick: float
    volume_multiple: int
    suspended: bool


class HistoryImported(msgspec.Struct):
    symbol: str
    duration: int
    bars: int


class HistoryImportResponse(msgspec.Struct):
    imported: list[HistoryImported]
    next_start: list[str]  # contracts already served from their old history: the import applies at restart


class SettleResponse(msgspec.Struct):
    prices: dict[str, float]
    trading_day: str


class KlineView(msgspec.Struct):
    """One K-line bar: ``datetime`` is the bar start in epoch ns; ``id`` numbers the bars of a series."""

    id: int
    datetime: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    open_oi: int
    close_oi: int


class KlinesResponse(msgspec.Struct):
    symbol: str
    duration: int  # seconds
    last_id: int  # -1 while there is no bar yet
    klines: list[KlineView]  # oldest first


class OpenApiDocument(msgspec.Struct):
    """``GET /openapi.json``: an OpenAPI 3.1 document."""

    openapi: str
    info: dict[str, Any]
    paths: dict[str, Any]
    components: dict[str, Any]


class TicksResponse(msgspec.Struct):
    symbol: str
    last_id: int
    ticks: list[dict[str, Any]]  # DIFF Tick fields plus "id", oldest first; a missing price is null


# -- OpenAPI ---------------------------------------------------------------------------------------------
Auth = Literal["none", "user", "admin"]


ErrorSpec = int | tuple[int, Any]
"""A documented error status: ``404`` (an ErrorResponse), or ``(422, RejectedOrderResponse)``."""


EVENT_STREAM = "text/event-stream"
"""The `answer` of a Server-Sent Events route (GET /api/events)."""


@dataclass(frozen=True, slots=True)
class RouteDoc:
    """One route as documented: the blueprint registers routes and this table from the same call."""

    method: str
    path: str  # Quart syntax: /api/order/<order_id>
    summary: str
    auth: Auth = "none"
    body: Any = None  # a request Struct type
    # A response Struct type; str for a text/plain answer; EVENT_STREAM (SSE); None: not described.
    answer: Any = None
    status: int = 200
    errors: Sequence[ErrorSpec] = ()


_PATH_PARAMETER = re.compile(r"<(?:\w+:)?(\w+)>")
_ERROR_TEXT = {
    400: "Malformed JSON or a body that fails validation",
    401: "No token, or a bad or expired one",
    403: "The token is valid but not for this resource",
    404: "Unknown resource",
    409: "Conflict with the current state",
    405: "The path is another operation's (a parameter cannot be one of the words in its schema's `not`)",
    413: "Body larger than QAEX_MAX_MESSAGE_SIZE",
    422: "Refused by the exchange (risk, funds, limits)",
    429: "Too many requests for now: retry later (Retry-After, when given, says when)",
}
_ALLOW = {
    "description": "The methods of the path that was matched",
    "required": True,
    "schema": {"type": "string"},
}
_RETRY_AFTER = {
    "description": "Seconds to wait (login_throttled, too_many_accounts)",
    "schema": {"type": "integer", "minimum": 1},
}


def taken_segments(route: RouteDoc, routes: Iterable[RouteDoc]) -> dict[str, list[str]]:
    """For each path parameter of `route`, the words it does not match: the literal segments other
    routes have at its place, on a path that is otherwise the same shape.

    ``/api/order/<order_id>`` and ``/api/order/submit``: ``submit`` is taken. OpenAPI matches concrete
    paths before templated ones, so ``GET /api/order/submit`` is the (POST-only) path
    ``/api/order/submit``, not the order "submit". The server routes the same way (qaex.api.http) and
    the document says so: the parameter's schema excludes the taken words.
    """
    segments = route.path.split("/")
    taken: dict[str, list[str]] = {}
    for index, segment in enumerate(segments):
        parameter = _PATH_PARAMETER.fullmatch(segment)
        if parameter is None:
            continue
        words = set()
        for other in routes:
            parts = other.path.split("/")
            if len(parts) != len(segments) or _PATH_PARAMETER.search(parts[index]):
                continue
            if all(
                i == index or a == b or _PATH_PARAMETER.search(a) or _PATH_PARAMETER.search(b)
                for i, (a, b) in enumerate(zip(segments, parts, strict=True))
            ):
                words.add(parts[index])
        if words:
            taken[parameter.group(1)] = sorted(words)
    return taken


def _has_required_field(body: Any) -> bool:
    return any(field.required for field in msgspec.structs.fields(body))


def openapi(routes: Iterable[RouteDoc], *, title: str = "qaex", version: str = "0.1.0") -> dict[str, Any]:
    """An OpenAPI 3.1 document for `routes`, with schemas generated from the msgspec types.

    Every operation documents every status the plumbing can add to its own: 401 where a token is
    required, 413 everywhere (every request's body is read, and bounded, before it is answered), and
    each error with its body schema (ErrorResponse unless the route names another).
    """
    routes = list(routes)
    error_types = {spec[1] for route in routes for spec in route.errors if isinstance(spec, tuple)}
    types = sorted(
        {t for route in routes for t in (route.body, route.answer) if t not in (None, str, EVENT_STREAM)}
        | error_types
        | {ErrorResponse},
        key=lambda t: t.__name__,
    )
    refs, components = msgspec.json.schema_components(types, ref_template="#/components/schemas/{name}")
    ref_of = dict(zip(types, refs, strict=True))
    paths: dict[str, dict[str, Any]] = {}
    for route in routes:
        path = _PATH_PARAMETER.sub(r"{\1}", route.path)
        operation: dict[str, Any] = {"summary": route.summary, "responses": {}}
        names = _PATH_PARAMETER.findall(route.path)
        taken = taken_segments(route, routes)
        if names:
            operation["parameters"] = [
                {"name": name, "in": "path", "required": True, "schema": _segment_schema(taken.get(name))}
                for name in names
            ]
        if route.auth != "none":
            operation["security"] = [{"userToken" if route.auth == "user" else "adminToken": []}]
        if route.body is not None:
            operation["requestBody"] = {
                # An empty body counts as {}: a body whose fields are all optional may be left out.
                "required": _has_required_field(route.body),
                "content": {"application/json": {"schema": ref_of[route.body]}},
            }
        ok: dict[str, Any] = {"description": "OK"}
        if route.answer is str:
            ok["content"] = {"text/plain": {"schema": {"type": "string"}}}
        elif route.answer == EVENT_STREAM:
            ok["content"] = {EVENT_STREAM: {"schema": {"type": "string"}}}
        elif route.answer is not None:
            ok["content"] = {"application/json": {"schema": ref_of[route.answer]}}
        operation["responses"][str(route.status)] = ok
        errors: dict[int, Any] = {413: ErrorResponse}
        if taken:  # /api/order/submit is not GET /api/order/{order_id} with order_id "submit"
            errors[405] = ErrorResponse
        if route.auth != "none":
            errors[401] = ErrorResponse
        for spec in route.errors:
            status, schema = spec if isinstance(spec, tuple) else (spec, ErrorResponse)
            errors[status] = schema
        for status, schema in sorted(errors.items()):
            response: dict[str, Any] = {
                "description": _ERROR_TEXT.get(status, "Error"),
                "content": {"application/json": {"schema": ref_of[schema]}},
            }
            if status == 405:
                response["headers"] = {"Allow": _ALLOW}
            elif status == 429:
                response["headers"] = {"Retry-After": _RETRY_AFTER}
            operation["responses"][str(status)] = response
        paths.setdefault(path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {
            "schemas": components,
            "securitySchemes": {
                "userToken": {"type": "http", "scheme": "bearer", "description": "from POST /api/auth/login"},
                "adminToken": {"type": "http", "scheme": "bearer", "description": "QAEX_ADMIN_TOKEN"},
            },
        },
    }


def _segment_schema(taken: list[str] | None) -> dict[str, Any]:
    """One path segment; `taken`: the words another documented path has there (taken_segments)."""
    schema: dict[str, Any] = {"type": "string", "minLength": 1}
    if taken:
        schema["not"] = {"enum": taken}
    return schema
