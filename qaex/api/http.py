"""The HTTP API: a Quart blueprint that decodes, authorizes, calls the Exchange and encodes.

Every route is declared once with :func:`route`, which registers the view and its entry in
``ROUTES``, the table /openapi.json is generated from. Every answer is JSON, errors included:
``{"error": {"code": "...", "message": "..."}}``; see docs/http-api.md for the status codes.
"""

from __future__ import annotations

import gc
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import msgspec
import trio
from quart import Blueprint, ResponseReturnValue, current_app, request
from quart.blueprints import BlueprintSetupState
from quart.wrappers import Response
from werkzeug.exceptions import HTTPException, MethodNotAllowed
from werkzeug.routing import BaseConverter, Map

from qaex.api.auth import TokenError, TokenSigner, bearer, is_admin_token
from qaex.api.events import StreamHandle, sse_body
from qaex.api.metrics import Histogram, exposition, sample
from qaex.config import Config
from qaex.core import limits
from qaex.core.calendar import published_trading_time
from qaex.core.chart import MAX_VIEW_WIDTH
from qaex.core.errors import QaexError
from qaex.core.instruments import TradingTime
from qaex.core.orders import InsertOrder
from qaex.core.quote import DEPTH_LEVELS, QuoteBook
from qaex.core.throttle import Throttled
from qaex.exchange.exchange import Exchange
from qaex.exchange.market import MarketData
from qaex.protocol import http as proto
from qaex.protocol import strict_json
from qaex.protocol.http import Auth, RouteDoc

log = logging.getLogger("qaex.http")

T = TypeVar("T")
View = TypeVar("View", bound=Callable[..., Awaitable[ResponseReturnValue]])

blueprint = Blueprint("qaex", __name__)
ROUTES: list[RouteDoc] = []

# Where a core error code deserves a more precise status than its class gives it.
STATUS_BY_CODE = {
    "user_exists": 409,
    "duplicate_order_id": 409,
    "order_finished": 409,
    "insufficient_funds": 422,
    "not_tradable": 422,  # a KQ.m@ main-contract series: the message names the contract to trade
    "rate_limited": 429,
    "market_closed": 422,
}


@dataclass(slots=True)
class Services:
    """What the routes use, installed in ``app.extensions["qaex"]`` by qaex.app before serving."""

    config: Config
    exchange: Exchange
    tokens: TokenSigner
    admin_token: str
    order_latency: Histogram = field(
        default_factory=lambda: Histogram("qaex_http_order_submit_seconds", "HTTP order submit handling time")
    )
    command_latency: Histogram = field(
        default_factory=lambda: Histogram(
            "qaex_router_command_seconds", "Time from handing a command to the router to its durable result"
        )
    )


def services() -> Services:
    found: Services = current_app.extensions["qaex"]
    return found


class HttpError(QaexError):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message, code=code)
        self.http_status = status


# -- plumbing ----------------------------------------------------------------------------------------------
def route(
    method: str,
    path: str,
    summary: str,
    *,
    auth: Auth = "none",
    body: Any = None,
    answer: Any = None,
    status: int = 200,
    errors: tuple[proto.ErrorSpec, ...] = (),
) -> Callable[[View], View]:
    """Register a view on the blueprint and document it in ROUTES, from one declaration."""

    def register(view: View) -> View:
        doc = RouteDoc(method, path, summary, auth, body, answer, status, errors)
        ROUTES.append(doc)
        # The URL rule is made when the blueprint is registered on an app, when ROUTES is complete.
        blueprint.record(
            lambda state: state.add_url_rule(_url_rule(doc, ROUTES), view.__name__, view, methods=[method])
        )
        return view

    return register


class _SegmentExcept(BaseConverter):
    """One path segment, except the given words."""

    def __init__(self, url_map: Map, *words: str) -> None:
        super().__init__(url_map)
        self.regex = f"(?!(?:{'|'.join(map(re.escape, words))})\\Z)[^/]+"


def _url_rule(route: RouteDoc, routes: Sequence[RouteDoc]) -> str:
    """The Quart rule for `route`: OpenAPI's matching, concrete paths before templated ones.

    ``/api/order/submit`` (POST) has the shape of ``/api/order/<order_id>`` (GET) too. Werkzeug alone
    routes ``GET /api/order/submit`` to the order "submit", and lists GET in the ``Allow`` of a 405 or
    an OPTIONS there, while the document has only POST at that path. So a parameter does not match
    the words another documented path has at its place (``proto.taken_segments``, which the document
    states too): each path answers exactly the methods the document lists for it.
    """
    rule = route.path
    for name, words in proto.taken_segments(route, routes).items():
        rule = rule.replace(f"<{name}>", f"<segment_except({', '.join(map(repr, words))}):{name}>")
    return rule


@blueprint.record_once
def _install_converters(state: BlueprintSetupState) -> None:
    state.app.url_map.converters["segment_except"] = _SegmentExcept


def json_response(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        msgspec.json.encode(value), status=status, headers=headers, content_type="application/json"
    )


def error_response(status: int, code: str, message: str, **extra: Any) -> Response:
    return json_response({"error": {"code": code, "message": message}, **extra}, status)


_decoders: dict[Any, msgspec.json.Decoder[Any]] = {}


async def decode(body_type: type[T]) -> T:
    """The request body as `body_type`; an empty body counts as ``{}``.

    Strict (qaex.protocol.strict_json): bounded types, bounded nesting, no duplicate keys.
    """
    data = await request.get_data(cache=False)
    decoder = _decoders.get(body_type)
    if decoder is None:
        decoder = _decoders[body_type] = msgspec.json.Decoder(body_type)
    try:
        value: T = strict_json.decode(data if data.strip() else b"{}", decoder)
    except strict_json.StrictJsonError as exc:
        raise HttpError(400, "bad_request", f"invalid body: {exc}") from None
    return value


def client_address() -> str:
    """The request's source address as the throttles key it (``AccessGuard.source``: the peer, or
    what a trusted proxy says in ``X-Forwarded-For``)."""
    guard = services().exchange.guard
    peer = request.remote_addr or ""
    forwarded = ",".join(request.headers.getlist("X-Forwarded-For")) or None
    if forwarded is not None and not guard.trusts(peer):
        _warn_untrusted_forwarding(peer)
    return guard.source(peer, forwarded)


_warned_peers: set[str] = set()


def _warn_untrusted_forwarding(peer: str) -> None:
    """Once per peer (a few): behind a proxy that is not trusted, every client has the proxy's address."""
    if peer not in _warned_peers and len(_warned_peers) < 8:
        _warned_peers.add(peer)
        log.warning(
            "X-Forwarded-For from %s ignored: it is not in QAEX_TRUSTED_PROXIES, so its clients share "
            "its address for the login and account-opening limits (see docs/configuration.md)",
            peer,
        )


def query_int(name: str, default: int, low: int, high: int) -> int:
    """The query parameter `name` as an integer `low`..`high` (`default` when absent); 400 otherwise.

    ASCII digits only, at most as many as `high` has: ``str.isdigit`` and ``int`` accept other
    scripts' digits and superscripts (``²`` passes isdigit and fails int), and 5,000 digits exceed
    Python's int-string limit.
    """
    text = request.args.get(name)
    if text is None:
        return default
    if 0 < len(text) <= len(str(high)) and text.isascii() and text.isdigit():
        value = int(text)
        if low <= value <= high:
            return value
    shown = text if len(text) <= 20 else text[:20] + "..."
    raise HttpError(400, "bad_request", f"{name} must be an integer {low}-{high}, got {shown!r}")


_SECONDS = re.compile(r"[0-9]{1,6}(?:\.[0-9]{1,3})?")


def query_seconds(name: str, high: float) -> float:
    """The query parameter `name` as seconds 0..`high` with at most 3 decimals (0 when absent)."""
    text = request.args.get(name)
    if text is None:
        return 0.0
    if _SECONDS.fullmatch(text) and float(text) <= high:
        return float(text)
    shown = text if len(text) <= 20 else text[:20] + "..."
    raise HttpError(400, "bad_request", f"{name} must be seconds 0-{high:g} (e.g. 2.5), got {shown!r}")


def current_user() -> str:
    """The user id of the request's valid bearer token (401 otherwise)."""
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise HttpError(401, "unauthorized", "missing 'Authorization: Bearer <token>' (POST /api/auth/login)")
    return _token_user(token)


def _token_user(token: str) -> str:
    try:
        user_id = services().tokens.verify(token)
    except TokenError as exc:
        raise HttpError(401, "unauthorized", str(exc)) from None
    if user_id not in services().exchange.engine.users:
        raise HttpError(401, "unauthorized", "invalid token")
    return user_id


def require_admin() -> None:
    token = bearer(request.headers.get("Authorization"))
    if token is None:
        raise HttpError(401, "unauthorized", "admin route: missing 'Authorization: Bearer <admin token>'")
    if not is_admin_token(token, services().admin_token):
        raise HttpError(403, "forbidden", "admin route: the token is not the admin token")


def same_user(claimed: str | None, user_id: str) -> None:
    if claimed is not None and claimed != user_id:
        raise HttpError(403, "forbidden", "user_id in the body is not the logged-in user")


async def timed(histogram: Histogram, call: Awaitable[T]) -> T:
    started = time.perf_counter()
    try:
        return await call
    finally:
        histogram.observe(time.perf_counter() - started)


# -- errors: JSON for every path, including routing errors and bugs ------------------------------------------
@blueprint.before_app_request
async def read_the_body_first() -> None:
    """Read every request's body before answering it.

    A handler may refuse a request before it reads the body (a missing token is a 401 at once). When
    the body reaches hypercorn after such an early response, hypercorn 0.18 leaves the keep-alive
    connection stalled and the client's next request on it never gets an answer. Reading the body
    first (it is kept for the handler; oversized bodies get their 413 here) makes the order
    request -> body -> response whatever the client's timing.
    """
    await request.get_data(cache=True)


@blueprint.app_errorhandler(QaexError)
async def on_qaex_error(exc: QaexError) -> Response:
    response = error_response(STATUS_BY_CODE.get(exc.code, exc.http_status), exc.code, exc.message)
    if isinstance(exc, Throttled):
        response.headers["Retry-After"] = str(exc.retry_after_seconds)
    return response


@blueprint.app_errorhandler(HTTPException)
async def on_http_exception(exc: HTTPException) -> Response:
    status = exc.code or 500
    code = (exc.name or "error").lower().replace(" ", "_")
    response = error_response(status, code, exc.description or exc.name)
    if isinstance(exc, MethodNotAllowed) and exc.valid_methods:
        response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
    return response


@blueprint.app_errorhandler(Exception)
async def on_unexpected(exc: Exception) -> Response:
    log.exception("unhandled error in %s %s", request.method, request.path)
    return error_response(500, "internal_error", "internal server error (logged)")


# -- service -------------------------------------------------------------------------------------------------
@route("GET", "/health", "Liveness and a few counts", answer=proto.Health)
async def health() -> Response:
    exchange = services().exchange
    users, sessions = len(exchange.engine.users), len(exchange.snapshots.links)
    engine = exchange.engine
    return json_response(proto.Health("ok", engine.trading_day, users, sessions, engine.market_hours))


@route("GET", "/metrics", "Prometheus text exposition", answer=str)
async def metrics() -> Response:
    found = services()
    exchange = found.exchange
    engine = exchange.engine
    text = exposition(
        [
            sample("qaex_sessions", "gauge", "Connected DIFF sessions", len(exchange.snapshots.links)),
            sample("qaex_users", "gauge", "Accounts", len(engine.users)),
            *_notification_samples(exchange),
            *_market_samples(exchange),
            # The engine numbers orders and trades from 1, so the last number is the count ever made.
            sample("qaex_orders_total", "counter", "Orders inserted", engine.orders_inserted),
            sample("qaex_trades_total", "counter", "Trades (fills)", engine.trades_made),
            sample("qaex_commands_total", "counter", "Commands applied", exchange.router.commands_applied),
            sample(
                "qaex_batches_total", "counter", "Router batches flushed", exchange.router.batches_flushed
            ),
            sample("qaex_patches_total", "counter", "Per-user patches sent", exchange.gateway.patches_sent),
            sample(
                "qaex_records_total",
                "counter",
                "Changed records sent in patches",
                exchange.gateway.records_sent,
            ),
            sample(
                "qaex_gc_full_collections_total",
                "counter",
                "Full (oldest-generation) garbage collections",
                gc.get_stats()[2]["collections"],
            ),
            sample(
                "qaex_gc_frozen_objects",
                "gauge",
                "Objects frozen at start (gc.freeze)",
                gc.get_freeze_count(),
            ),
            found.order_latency.render(),
            found.command_latency.render(),
        ]
    )
    return Response(text, content_type="text/plain; version=0.0.4; charset=utf-8")


def _market_samples(exchange: Exchange) -> list[str]:
    market = exchange.market
    if market is None or market.history_store is None:
        return []
    pending = len(market.state.pending_history())
    help_text = "Contracts whose history is still to load"
    return [sample("qaex_market_history_pending", "gauge", help_text, pending)]


def _notification_samples(exchange: Exchange) -> list[str]:
    hub = exchange.snapshots.notifications
    if hub is None:
        return []
    return [
        sample("qaex_notification_connections", "gauge", "Open /ws and SSE streams", hub.connections),
        sample("qaex_notification_cutoffs_total", "counter", "Notification consumers cut off", hub.cut_off),
    ]


@route("GET", "/openapi.json", "This document", answer=proto.OpenApiDocument)
async def openapi() -> Response:
    return json_response(proto.openapi(ROUTES))


# -- accounts ------------------------------------------------------------------------------------------------
@route(
    "POST", "/api/account/open", "Open an account", body=proto.OpenAccountRequest, answer=proto.AccountView,
    status=201, errors=(400, 409, 429),
)  # fmt: skip
async def open_account() -> Response:
    found = services()
    body = await decode(proto.OpenAccountRequest)
    if body.user_id.startswith(limits.RESERVED_USER_PREFIX):
        reserved = limits.RESERVED_USER_PREFIX
        raise HttpError(400, "bad_user_id", f"user ids starting with {reserved!r} are the exchange's own")
    init_cash = found.config.init_cash if body.init_cash is None else body.init_cash
    guard, source = found.exchange.guard, client_address()
    guard.begin_account_opening(source, trio.current_time())  # 429 too_many_accounts
    try:
        account = await timed(
            found.command_latency, found.exchange.open_account(body.user_id, body.password, init_cash)
        )
    except QaexError:  # refused (bad id, weak password, taken): it does not count
        guard.account_not_opened(source, trio.current_time())
        raise
    return json_response(account.to_diff(), 201)


@route(
    "POST", "/api/auth/login", "Get a bearer token", body=proto.LoginRequest, answer=proto.LoginResponse,
    errors=(400, 401, 429),
)  # fmt: skip
async def login() -> Response:
    found = services()
    body = await decode(proto.LoginRequest)
    # Throttled per (user, address) and per address: 429 login_throttled, before any hashing.
    ok = await found.exchange.check_password(body.user_id, body.password, source=client_address())
    if not ok:
        raise HttpError(401, "bad_credentials", "wrong user_id or password")
    token, expires_at = found.tokens.issue(body.user_id)
    return json_response(proto.LoginResponse(token, body.user_id, expires_at))


@route(
    "GET", "/api/account", "The caller's account (DIFF accounts.CNY)", auth="user", answer=proto.AccountView
)
async def get_account() -> Response:
    user_id = current_user()
    return json_response(services().exchange.engine.users[user_id].account.to_diff())


@route(
    "POST", "/api/account/deposit", "Deposit into the caller's account",
    auth="user", body=proto.AmountRequest, answer=proto.AccountView, errors=(400,),
)  # fmt: skip
async def deposit() -> Response:
    user_id = current_user()
    body = await decode(proto.AmountRequest)
    found = services()
    account = await timed(found.command_latency, found.exchange.deposit(user_id, body.amount))
    return json_response(account.to_diff())


@route(
    "POST", "/api/account/withdraw", "Withdraw from the caller's account",
    auth="user", body=proto.AmountRequest, answer=proto.AccountView, errors=(400, 422),
)  # fmt: skip
async def withdraw() -> Response:
    user_id = current_user()
    body = await decode(proto.AmountRequest)
    found = services()
    account = await timed(found.command_latency, found.exchange.withdraw(user_id, body.amount))
    return json_response(account.to_diff())


# -- orders --------------------------------------------------------------------------------------------------
def insert_request(body: proto.SubmitOrderRequest, user_id: str, exchange: Exchange) -> InsertOrder:
    """Translate the original design's fields and DIFF's into one InsertOrder."""
    exchange_id, dot, instrument_id = body.instrument_id.rpartition(".")
    if not dot:
        exchange_id = body.exchange_id or _exchange_of(instrument_id, exchange)
    elif body.exchange_id is not None and body.exchange_id != exchange_id:
        raise HttpError(
            400, "bad_request", f"exchange_id {body.exchange_id!r} contradicts {body.instrument_id!r}"
        )
    if body.price is not None and body.limit_price is not None and body.price != body.limit_price:
        raise HttpError(400, "bad_request", "price and limit_price differ: send one of them")
    price = body.price if body.price is not None else body.limit_price
    price_type = body.price_type or ("ANY" if body.order_type == "MARKET" else "LIMIT")
    if body.order_type is not None and (body.order_type == "MARKET") != (price_type != "LIMIT"):
        raise HttpError(
            400, "bad_request", f"order_type {body.order_type} contradicts price_type {price_type}"
        )
    if price_type == "LIMIT" and price is None:
        raise HttpError(400, "bad_request", "a LIMIT order needs price (or limit_price)")
    return InsertOrder(
        user_id=user_id,
        order_id=body.order_id or f"http-{uuid.uuid4().hex[:20]}",
        exchange_id=exchange_id,
        instrument_id=instrument_id,
        direction=body.direction,
        offset=body.offset,
        volume=body.volume,
        price_type=price_type,
        limit_price=price if price is not None and price_type == "LIMIT" else 0.0,
        time_condition=body.time_condition or ("GFD" if price_type == "LIMIT" else "IOC"),
        volume_condition=body.volume_condition,
    )


def _exchange_of(instrument_id: str, exchange: Exchange) -> str:
    """The exchange listing `instrument_id`, when the client left it out and only one exchange lists it."""
    matches = [
        i.exchange_id for i in exchange.engine.instruments.values() if i.instrument_id == instrument_id
    ]
    if len(matches) != 1:
        raise HttpError(
            400 if matches else 404,
            "bad_request" if matches else "unknown_instrument",
            f"instrument {instrument_id!r}: give it as EXCHANGE.{instrument_id} or set exchange_id",
        )
    return matches[0]


async def _submit_order() -> Response:
    user_id = current_user()
    body = await decode(proto.SubmitOrderRequest)
    same_user(body.user_id, user_id)
    found = services()
    order = await timed(
        found.command_latency, found.exchange.insert_order(insert_request(body, user_id, found.exchange))
    )
    if order["status"] == "FINISHED" and not order["exchange_order_id"]:
        return error_response(422, "order_rejected", order["last_msg"], order=order)
    return json_response(order)


@route(
    "POST", "/api/order/submit", "Insert an order", auth="user", body=proto.SubmitOrderRequest,
    answer=proto.OrderView, errors=(400, 403, 404, 409, (422, proto.RejectedOrderResponse), 429),
)  # fmt: skip
async def submit_order() -> Response:
    services_ = services()
    started = time.perf_counter()
    try:
        return await _submit_order()
    finally:
        services_.order_latency.observe(time.perf_counter() - started)


@route(
    "POST", "/api/order/insert", "Same as /api/order/submit", auth="user", body=proto.SubmitOrderRequest,
    answer=proto.OrderView, errors=(400, 403, 404, 409, (422, proto.RejectedOrderResponse), 429),
)  # fmt: skip
async def insert_order() -> Response:
    return await submit_order()


@route(
    "POST", "/api/order/cancel", "Cancel one of the caller's orders",
    auth="user", body=proto.CancelOrderRequest, answer=proto.OrderView, errors=(400, 403, 404, 409),
)  # fmt: skip
async def cancel_order() -> Response:
    user_id = current_user()
    body = await decode(proto.CancelOrderRequest)
    same_user(body.user_id, user_id)
    found = services()
    return json_response(
        await timed(found.command_latency, found.exchange.cancel_order(user_id, body.order_id))
    )


@route(
    "GET",
    "/api/order/<order_id>",
    "One of the caller's orders",
    auth="user",
    answer=proto.OrderView,
    errors=(404,),
)
async def get_order(order_id: str) -> Response:
    order = services().exchange.engine.users[current_user()].orders.get(order_id)
    if order is None:
        raise HttpError(404, "unknown_order", f"no order {order_id!r}")
    return json_response(order.to_diff())


@route(
    "GET", "/api/orders", "The caller's orders of the trading day", auth="user", answer=proto.OrdersResponse
)
async def get_orders() -> Response:
    record = services().exchange.engine.users[current_user()]
    return json_response({"orders": {order_id: o.to_diff() for order_id, o in record.orders.items()}})


@route("GET", "/api/positions", "The caller's positions", auth="user", answer=proto.PositionsResponse)
async def get_positions() -> Response:
    account = services().exchange.engine.users[current_user()].account
    return json_response({"positions": {symbol: p.to_diff() for symbol, p in account.positions.items()}})


@route(
    "GET", "/api/trades", "The caller's trades of the trading day", auth="user", answer=proto.TradesResponse
)
async def get_trades() -> Response:
    record = services().exchange.engine.users[current_user()]
    return json_response({"trades": {trade_id: t.to_diff() for trade_id, t in record.trades.items()}})


# -- notifications (the per-event stream, docs/notifications.md) ---------------------------------------------
@route(
    "GET", "/api/events",
    "The caller's events as Server-Sent Events (trade, order_status, account_update; Last-Event-ID resumes; "
    "?max_events=N and ?timeout=seconds end the stream; ?token= for EventSource, which cannot send headers)",
    auth="user", answer=proto.EVENT_STREAM, errors=(400, 409, 503),
)  # fmt: skip
async def notification_events() -> Response:
    token = request.args.get("token")
    if token is not None and "Authorization" not in request.headers:
        user_id = _token_user(token)
    else:
        user_id = current_user()
    max_events = query_int("max_events", 0, 0, 1_000_000)
    timeout = query_seconds("timeout", 86_400.0)
    asked = request.headers.get("Last-Event-ID") or request.args.get("last_event_id")
    hub = services().exchange.snapshots.notifications
    handle = request.scope.get("qaex.stream")
    if hub is None or not isinstance(handle, StreamHandle):
        raise HttpError(503, "no_notifications", "this server runs without the notification stream")
    subscriber, gap = hub.subscribe(user_id, asked[:200] if asked else None)  # 409 too_many_sessions
    handle.attach(subscriber)
    response = Response(
        sse_body(subscriber, gap, asked, max_events=max_events, seconds=timeout),
        content_type="text/event-stream; charset=utf-8",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )
    response.timeout = None  # a stream, not a request with an answer: Quart's 60 s would end it
    return response


# -- market data ---------------------------------------------------------------------------------------------
@route("GET", "/api/market/instruments", "Every listed contract", answer=proto.InstrumentsResponse)
async def instruments() -> Response:
    """Each contract with the ``trading_time`` the market-hours policy publishes (as DIFF does)."""
    engine = services().exchange.engine
    listed = {}
    for symbol, instrument in engine.instruments.items():
        shown = published_trading_time(instrument.trading_time, engine.market_hours)
        listed[symbol] = msgspec.structs.replace(instrument, trading_time=TradingTime(**shown))
    return json_response({"instruments": listed})


def _depth(symbol: str, levels: int) -> tuple[list[tuple[float, int]], list[tuple[float, int]]]:
    engine = services().exchange.engine
    instrument = engine.instrument(symbol)  # 404 for an unknown symbol
    bids, asks = engine.books[symbol].depth(levels)
    return (
        [(instrument.from_ticks(price), volume) for price, volume in bids],
        [(instrument.from_ticks(price), volume) for price, volume in asks],
    )


@route(
    "GET", "/api/market/quote/<symbol>", "The DIFF quote: every field, plus the 5 levels as lists",
    answer=proto.QuoteResponse, errors=(404,),
)  # fmt: skip
async def quote(symbol: str) -> Response:
    engine = services().exchange.engine
    bids, asks = _depth(symbol, DEPTH_LEVELS)
    instrument = engine.instruments[symbol]
    market = services().exchange.market
    # The one quote renderer DIFF uses too (QuoteBook.full), with the engine's book, last price and
    # open interest over the market service's quote: those are the truth at this instant, while the
    # service may be a batch behind. Without the service, a quote with no daily figures yet.
    book = market.quotes[symbol] if market is not None else QuoteBook(instrument)
    last_price = engine.last_price.get(symbol, book.last_price)  # no trade yet: history's last close
    answer = book.at(bids, asks, last_price, engine.open_interest.get(symbol, 0)).full()
    answer.update(bids=bids, asks=asks, suspended=instrument.suspended)
    return json_response(answer)  # NaN is encoded as null: the HTTP API's "no such price"


def _market_data(symbol: str) -> MarketData:
    services().exchange.engine.instrument(symbol)  # 404 for an unknown symbol
    market = services().exchange.market
    if market is None:
        raise HttpError(503, "no_market_data", "this server runs without the market data service")
    return market


@route(
    "GET", "/api/market/klines/<symbol>",
    "K-lines (?duration=seconds, default 60; ?count=1..10000, default 200)",
    answer=proto.KlinesResponse, errors=(400, 404),
)  # fmt: skip
async def klines(symbol: str) -> Response:
    market = _market_data(symbol)
    count = query_int("count", 200, 1, MAX_VIEW_WIDTH)
    duration = query_int("duration", 60, 1, limits.MAX_DURATION_NS // 1_000_000_000)
    try:
        series = await market.kline_history(symbol, duration * 1_000_000_000)
    except ValueError as exc:
        raise HttpError(400, "bad_request", str(exc)) from None
    bars = series.window(series.last_id - count + 1, series.last_id)
    return json_response(
        proto.KlinesResponse(
            symbol, duration, series.last_id,
            [proto.KlineView(id=int(bar_id), **bar) for bar_id, bar in bars.items()],
        )
    )  # fmt: skip


@route(
    "GET", "/api/market/ticks/<symbol>", "Ticks, one per trade (?count=1..10000, default 200)",
    answer=proto.TicksResponse, errors=(400, 404),
)  # fmt: skip
async def ticks(symbol: str) -> Response:
    market = _market_data(symbol)
    count = query_int("count", 200, 1, MAX_VIEW_WIDTH)
    series = await market.series(symbol, 0)
    if series is None:  # listed a moment ago: the market service has not seen it yet
        raise HttpError(404, "unknown_instrument", f"no ticks for {symbol!r} yet")
    window = series.window(series.last_id - count + 1, series.last_id)
    rows = [{"id": int(tick_id)} | tick for tick_id, tick in window.items()]  # NaN encodes as null
    return json_response(proto.TicksResponse(symbol, series.last_id, rows))


@route(
    "GET", "/api/market/depth/<symbol>", "Order book depth (?levels=1..50, default 5)",
    answer=proto.DepthResponse, errors=(400, 404),
)  # fmt: skip
async def depth(symbol: str) -> Response:
    levels = query_int("levels", 5, 1, 50)
    bids, asks = _depth(symbol, levels)
    return json_response(proto.DepthResponse(symbol, bids, asks))


# -- admin ---------------------------------------------------------------------------------------------------
@route(
    "POST", "/api/admin/instruments", "Create or update a contract", auth="admin", body=proto.InstrumentSpec,
    answer=proto.InstrumentsResponse, errors=(400, 403),
)  # fmt: skip
async def upsert_instrument() -> Response:
    require_admin()
    spec = msgspec.to_builtins(await decode(proto.InstrumentSpec))
    instrument = await services().exchange.upsert_instrument(spec)
    return json_response({"instruments": {instrument.symbol: instrument}})


async def _set_suspended(symbol: str, suspended: bool) -> Response:
    require_admin()
    instrument = await services().exchange.set_suspended(symbol, suspended)
    return json_response({"instruments": {instrument.symbol: instrument}})


@route(
    "POST", "/api/admin/instruments/<symbol>/suspend", "Stop trading a contract", auth="admin",
    answer=proto.InstrumentsResponse, errors=(403, 404),
)  # fmt: skip
async def suspend(symbol: str) -> Response:
    return await _set_suspended(symbol, True)


@route(
    "POST", "/api/admin/instruments/<symbol>/resume", "Resume trading a contract", auth="admin",
    answer=proto.InstrumentsResponse, errors=(403, 404),
)  # fmt: skip
async def resume(symbol: str) -> Response:
    return await _set_suspended(symbol, False)


@route(
    "POST", "/api/admin/settle", "Daily settlement", auth="admin", body=proto.SettleRequest,
    answer=proto.SettleResponse, errors=(400, 403),
)  # fmt: skip
async def settle() -> Response:
    require_admin()
    body = await decode(proto.SettleRequest)
    exchange = services().exchange
    unknown = sorted(set(body.prices) - set(exchange.engine.instruments))
    if unknown:
        raise HttpError(400, "unknown_instrument", f"prices for unknown instruments: {', '.join(unknown)}")
    prices = await exchange.settle(body.prices, body.trading_day)
    return json_response(proto.SettleResponse(prices, exchange.engine.trading_day))


@route(
    "POST", "/api/admin/history/import", "Replace contracts' kept history (DataDownloader K-line CSVs)",
    auth="admin", body=proto.HistoryImportRequest, answer=proto.HistoryImportResponse, errors=(400, 403),
)  # fmt: skip
async def import_history() -> Response:
    require_admin()
    body = await decode(proto.HistoryImportRequest)
    market = services().exchange.market
    if market is None:
        raise HttpError(503, "no_market_data", "this server runs without the market data service")
    try:
        done, later = await market.import_history(
            [(f.name, f.text) for f in body.files], symbol=body.symbol, duration=body.duration
        )
    except ValueError as exc:  # HistoryFileError, ImportRefused: names the file, line and column
        raise HttpError(400, "bad_history", f"{exc}; nothing imported") from None
    imported = [proto.HistoryImported(symbol, seconds, bars) for symbol, seconds, bars in done]
    return json_response(proto.HistoryImportResponse(imported, later))


@route("GET", "/api/admin/users", "Every account", auth="admin", answer=proto.UsersResponse, errors=(403,))
async def users() -> Response:
    require_admin()
    records = services().exchange.engine.users
    return json_response({"users": {user_id: r.account.to_diff() for user_id, r in records.items()}})


@route(
    "GET", "/api/admin/state-digest", "Hash of the whole exchange state and its journal seq", auth="admin",
    errors=(401, 403),
)  # fmt: skip
async def state_digest() -> Response:
    require_admin()
    engine = services().exchange.engine
    return json_response({"digest": engine.state_digest(), "seq": engine.seq})


@route(
    "POST", "/api/admin/deposit", "Deposit into any account", auth="admin", body=proto.AdminDepositRequest,
    answer=proto.AccountView, errors=(400, 403, 404),
)  # fmt: skip
async def admin_deposit() -> Response:
    require_admin()
    body = await decode(proto.AdminDepositRequest)
    account = await services().exchange.deposit(body.user_id, body.amount)
    return json_response(account.to_diff())
