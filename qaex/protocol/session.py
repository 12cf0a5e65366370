"""The state of one DIFF connection, with no IO (in the manner of h11's ``Connection``).

The WebSocket handler feeds each received frame to :meth:`DiffSession.receive` and acts on the events it
returns; the SnapshotManager :meth:`~DiffSession.push`-es every change this connection must see; whenever
:meth:`~DiffSession.wants_data` is true the writer sends :meth:`~DiffSession.data_to_send`.

The session makes the protocol's decisions and the owner (``qaex.api.diff_server``) does the IO:
:meth:`~DiffSession.receive` applies the per-second message limit to the owner's clock (dropping frames,
or a :class:`CloseConnection` the owner carries out), checks login and ``user_id``, and answers what needs
no exchange; :meth:`~DiffSession.transfer` says what a req_transfer asks for (:class:`Deposit`,
:class:`Withdraw`, or a refusal); the owner reports each exchange outcome through one method
(:meth:`~DiffSession.login_succeeded`, :meth:`~DiffSession.login_refused`, :meth:`~DiffSession.refused`,
:meth:`~DiffSession.password_changed`, ...), and the session turns it into the notify, so every text and
code the client reads comes from here (codes from :mod:`qaex.core.notify_codes`).

Flow control (DIFF.md): a peek is a flag, not a counter; one rtn_data answers it; changes accumulate in a
:class:`~qaex.core.patch.PendingPatches` between peeks. Notifies ride in the next rtn_data too rather than in
frames of their own: TqSdk and tqsdk-js always keep a peek outstanding, so they arrive at once anyway, and
one kind of outgoing frame keeps the writer trivial.

Memory stays bounded for a client that never peeks: when the pending size passes :attr:`pending_limit`,
the pending patches are dropped and :attr:`resync_needed` is set; from then on pushes are ignored until
the owner calls :meth:`reset` with the connection's complete current view (built from the snapshots, so
nothing is lost). The limit is ``max(max_pending, 2 * view_size)``: a user's view legitimately grows (every
trade of the day stays in it), and a resync costs a full view anyway, so pending changes worth up to twice
the full view are kept before falling back to it. Resyncs are thus rare even for a growing view (the limit
doubles with it) and each costs O(view): amortised O(1) per pushed key.

Shared patches (:meth:`DiffSession.push_shared`, a market-data publish that every subscriber receives
alike) are kept by reference, in order, and sent as their pre-encoded bytes
(:class:`~qaex.protocol.diff.SharedPatch`): they cost a session no merge and no encoding. The pending
data is a sequence of runs - private patches coalesced in a PendingPatches, then the shared patches
pushed after them, then the next private run, ... - and the rtn_data lists them in that order, so the
client applies the same patches in the same order as if each had been merged. The runs are bounded:
past :data:`MAX_SHARED_PENDING` shared patches in a run they are merged into the run's private
patches, and past :data:`MAX_RUNS` runs all are merged into one, as every patch was before shared
patches existed. The pending bound counts the private patches of every run.

Notifies are not part of any snapshot, so they are kept apart, survive a resync, and are bounded by
count (:data:`MAX_PENDING_NOTIFIES`, the oldest dropped first).
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

import msgspec

from qaex.core import ins_query
from qaex.core.calendar import MarketHours
from qaex.core.errors import QaexError
from qaex.core.instruments import Instrument
from qaex.core.notify_codes import (
    NOTIFY_BAD_MESSAGE,
    NOTIFY_CANCEL_WRONG_USER,
    NOTIFY_DUPLICATE_LOGIN,
    NOTIFY_LOGIN_FAILED,
    NOTIFY_LOGIN_OK,
    NOTIFY_PASSWORD_CHANGED,
    NOTIFY_RATE_LIMITED,
    NOTIFY_REFUSED,
    NOTIFY_TRANSFER_FAILED,
    NOTIFY_WRONG_USER,
)
from qaex.core.patch import Patch, PendingPatches
from qaex.protocol.diff import (
    CancelOrder,
    ChangePassword,
    ClientEvent,
    ConfirmSettlement,
    DiffProtocolError,
    InsertOrderMessage,
    InsQuery,
    NotifyLevel,
    PeekMessage,
    ReqLogin,
    ReqTransfer,
    SetChart,
    SharedPatch,
    SubscribeQuote,
    decode_client_message,
    encode_rtn_data,
)


class CloseConnection(msgspec.Struct, frozen=True):
    """The session must end: the owner closes the WebSocket with ``code`` and ``reason`` and reads no more."""

    code: int
    reason: str


Event = ClientEvent | CloseConnection
"""What :meth:`DiffSession.receive` returns."""

CLOSE_RATE_LIMITED: Final = CloseConnection(1008, "message rate limit exceeded")
"""Past :data:`RATE_CLOSE_FACTOR` times the message rate in one second: 1008 (policy violation)."""
RATE_CLOSE_FACTOR: Final = 4


class Deposit(msgspec.Struct, frozen=True):
    """A req_transfer with a positive amount: move ``amount`` from the bank into the futures account."""

    amount: float
    future_password: str = ""
    """To check before the transfer when not empty (``req_transfer``'s own password field)."""


class Withdraw(msgspec.Struct, frozen=True):
    """A req_transfer with a negative amount: move ``amount`` (> 0 here) out of the futures account."""

    amount: float
    future_password: str = ""


DEFAULT_MAX_PENDING: Final = 20_000
"""Floor of the pending bound, in keys (see :func:`~qaex.core.patch.tree_size`): a few hundred quotes."""

VIEW_SIZE_FACTOR: Final = 2
MAX_PENDING_NOTIFIES: Final = 100
MAX_SHARED_PENDING: Final = 16
"""Shared patches kept as they are in one run (see :meth:`DiffSession.push_shared`); a publish
pushes one per changed subscribed quote, so this covers a session watching a dozen symbols."""
MAX_RUNS: Final = 4
"""Runs of private then shared patches kept between two rtn_data before all are merged into one."""
MAX_NOTIFY_TEXT: Final = 1_000
"""Characters of one notify's content (longer ones are cut): pending notifies cost at most ~100 KB."""
MAX_CHARTS: Final = 256
"""Charts one connection may hold open; each costs the server a K-line feed."""

_PROCESS_TOKEN: Final = secrets.token_hex(3)
"""Part of every notify key: a client reconnecting after a server restart has seen the old keys and
would silently skip a reused one."""

_TRADE_MESSAGES: Final = (InsertOrderMessage, CancelOrder, ReqTransfer, ChangePassword)


class DiffSession:
    """One DIFF connection: decodes client frames, holds the peek flag and the pending patches."""

    def __init__(
        self,
        session_id: int,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        max_messages_per_second: int | None = None,
    ) -> None:
        self.session_id = session_id
        self.max_messages_per_second = max_messages_per_second
        """Frames taken per second of the owner's clock; ``None``: no limit (see :meth:`receive`)."""
        self.user_id: str | None = None
        """Set by the owner through :meth:`logged_in` once it accepted a req_login."""
        self.ins_list: list[str] = []
        self.charts: dict[str, SetChart] = {}
        self.view_size = 0
        """Size of this connection's full view, in keys; the owner may set it, :meth:`reset` records it."""
        self.resync_needed = False
        self._max_pending = max_pending
        self._ins_list_echo: str | None = None
        self._peeked = False
        self._login_pending = False
        self._notify_count = 0
        self._notifies: dict[str, Any] = {}
        self._rate_window: int | None = None  # the whole second of the owner's clock being counted
        self._rate_count = 0
        self._pending = PendingPatches()
        self._shared: list[SharedPatch] = []  # after the pending patches, in order, not merged yet
        # Earlier runs, closed when a private patch followed their shared ones: patches as taken
        # from their PendingPatches, and shared patches, in order; their private patches' size.
        self._earlier: list[Patch | SharedPatch] = []
        self._earlier_runs = 0
        self._earlier_size = 0
        # TqApi blocks until it sees mdhis_more_data == false: the first peek is answered at once.
        self._pending.add({"mdhis_more_data": False})

    @property
    def pending_limit(self) -> int:
        """Pending size (in keys) above which the pending patches are dropped for a resync."""
        return max(self._max_pending, VIEW_SIZE_FACTOR * self.view_size)

    @property
    def pending_size(self) -> int:
        """Estimated size of the pending private patches, in keys (:attr:`PendingPatches.size`);
        shared patches are held by reference and not counted."""
        return self._earlier_size + self._pending.size

    # -- client → server -------------------------------------------------------------------------------

    def receive(self, frame: bytes | str, now: float = 0.0) -> list[Event]:
        """Take one client frame received at ``now`` (seconds on the owner's clock); return what to act on.

        A bad or unauthorised message is answered here with an ERROR notify; the session carries on.
        Past :attr:`max_messages_per_second` frames in one second of ``now`` (a window per whole
        second), frames are dropped undecoded, the first of them with one ERROR notify 429; past
        :data:`RATE_CLOSE_FACTOR` times the limit the answer is :data:`CLOSE_RATE_LIMITED`.
        """
        limit = self.max_messages_per_second
        if limit is not None and self._over_rate(limit, int(now)):
            return [CLOSE_RATE_LIMITED] if self._rate_count > RATE_CLOSE_FACTOR * limit else []
        try:
            message = decode_client_message(frame)
        except DiffProtocolError as exc:
            self.notify(exc.code, "ERROR", exc.message)
            return []
        if isinstance(message, PeekMessage):
            self._peeked = True
            return []
        if isinstance(message, ConfirmSettlement):
            # Accepted silently in any state: TqSdk sends it right behind req_login, before the result.
            return []
        if isinstance(message, SubscribeQuote):
            self.ins_list = list(
                dict.fromkeys(s for s in (p.strip() for p in message.ins_list.split(",")) if s)
            )
            self._ins_list_echo = message.ins_list
            self.push({"ins_list": message.ins_list})
            return [message]
        if isinstance(message, SetChart):
            return self._set_chart(message)
        if isinstance(message, ReqLogin):
            if self.user_id is not None or self._login_pending:
                self.notify(NOTIFY_DUPLICATE_LOGIN, "ERROR", "already logged in on this connection")
                return []
            self._login_pending = True
            return [message]
        if isinstance(message, _TRADE_MESSAGES):
            return self._trade(message)
        return [message]

    def _over_rate(self, limit: int, window: int) -> bool:
        """Count one frame in its second; true if it is past the limit (the first such frame notifies)."""
        if window != self._rate_window:
            self._rate_window, self._rate_count = window, 0
        self._rate_count += 1
        if self._rate_count <= limit:
            return False
        if self._rate_count == limit + 1:
            self.notify(NOTIFY_RATE_LIMITED, "ERROR", f"too many messages: at most {limit} per second")
        return True

    def _set_chart(self, message: SetChart) -> list[Event]:
        if not message.ins_list:
            self.charts.pop(message.chart_id, None)
            self.push({"charts": {message.chart_id: None}})
            return [message]
        if message.chart_id not in self.charts and len(self.charts) >= MAX_CHARTS:
            self.notify(NOTIFY_BAD_MESSAGE, "ERROR", f"too many charts (at most {MAX_CHARTS})")
            return []
        self.charts[message.chart_id] = message
        return [message]

    def _trade(self, message: InsertOrderMessage | CancelOrder | ReqTransfer | ChangePassword) -> list[Event]:
        if self.user_id is None:
            aid = message.__struct_config__.tag
            self.notify(NOTIFY_WRONG_USER, "ERROR", f"{aid} refused: not logged in")
            return []
        if isinstance(message, InsertOrderMessage | CancelOrder) and message.user_id != self.user_id:
            code = NOTIFY_WRONG_USER if isinstance(message, InsertOrderMessage) else NOTIFY_CANCEL_WRONG_USER
            aid = message.__struct_config__.tag
            self.notify(
                code, "ERROR", f"{aid} refused: user_id {message.user_id!r} is not the logged-in user"
            )
            return []
        return [message]

    # -- owner → session -------------------------------------------------------------------------------

    def logged_in(self, user_id: str) -> None:
        """The owner accepted this connection's req_login: trade messages for ``user_id`` are allowed now."""
        self.user_id = user_id
        self._login_pending = False

    def login_failed(self) -> None:
        """The owner refused the req_login (it notified why): the client may try again."""
        self._login_pending = False

    def login_succeeded(self) -> None:
        """Tell the client its req_login was accepted (after :meth:`logged_in`)."""
        self.notify(NOTIFY_LOGIN_OK, "INFO", "登录成功")

    def login_refused(self, *, retry_after_seconds: int | None = None) -> None:
        """The owner refused the req_login: a wrong user name or password (one text for both), or,
        with ``retry_after_seconds``, throttled (too many failures: nothing was checked)."""
        self.login_failed()
        if retry_after_seconds is None:
            self.notify(NOTIFY_LOGIN_FAILED, "ERROR", "登录失败: 用户名或密码错误")
        else:
            self.notify(
                NOTIFY_RATE_LIMITED, "ERROR", f"登录失败: 失败次数过多, 请 {retry_after_seconds} 秒后再试"
            )

    def refused(self, error: QaexError) -> None:
        """The exchange refused this connection's request: an ERROR notify with the error's code and text."""
        self.notify(error.diff_code or NOTIFY_REFUSED, "ERROR", error.message)

    def order_refused(self, message: InsertOrderMessage, error: QaexError) -> None:
        """The exchange refused an insert_order as a whole (out of hours, over the order rate, ...):
        the ERROR notify, and the order as the client keeps it, FINISHED with the reason in
        ``last_msg`` and nothing filled, under ``trade/{user}/orders/{order_id}``. TqSdk marks an order
        ALIVE when it sends it and waits for the exchange's word; without it a refused order would
        stay ALIVE there for ever (and a TargetPosTask with it). The exchange keeps no trace of it.
        Not for a duplicate order id: that order exists, and its state is the exchange's."""
        self.refused(error)
        if error.code == "duplicate_order_id" or self.user_id is None:
            return
        refused = {
            "order_id": message.order_id,
            "exchange_id": message.exchange_id,
            "instrument_id": message.instrument_id,
            "direction": message.direction,
            "offset": message.offset,
            "volume_orign": message.volume,
            "price_type": message.price_type,
            "limit_price": message.limit_price if message.limit_price == message.limit_price else "-",
            "exchange_order_id": "",
            "status": "FINISHED",
            "volume_left": message.volume,
            "last_msg": error.message,
        }
        self.push({"trade": {self.user_id: {"orders": {message.order_id: refused}}}})

    def password_changed(self) -> None:
        """The exchange accepted a change_password."""
        self.notify(NOTIFY_PASSWORD_CHANGED, "INFO", "修改密码成功")

    def transfer(self, message: ReqTransfer) -> Deposit | Withdraw | None:
        """What a req_transfer asks the exchange for: its amount's sign says deposit (> 0) or withdraw
        (< 0); an amount of zero asks for nothing and is refused here (ERROR notify 422, ``None``)."""
        if message.amount > 0:
            return Deposit(message.amount, message.future_password)
        if message.amount < 0:
            return Withdraw(-message.amount, message.future_password)
        self.notify(NOTIFY_TRANSFER_FAILED, "ERROR", "转账失败: 转账金额不能为 0")
        return None

    def transfer_password_wrong(self) -> None:
        """The req_transfer's ``future_password`` is not the user's: nothing was transferred."""
        self.notify(NOTIFY_TRANSFER_FAILED, "ERROR", "转账失败: 期货账户密码错误")

    def answer_query(
        self,
        message: InsQuery,
        instruments: Iterable[Instrument],
        main_contracts: Mapping[str, str] | None = None,
        market_hours: MarketHours = "always",
    ) -> None:
        """Answer an ins_query under ``symbols/{query_id}`` from the listed ``instruments`` and the
        products' ``main_contracts`` (:func:`qaex.core.ins_query.answer`), with ``trading_time`` as
        the ``market_hours`` policy publishes it; an empty query drops the answer.

        A query qaex does not understand is still answered (empty), so that the client does not wait for
        its timeout, with an ERROR notify saying why; the refused query is not echoed back (it may be as
        large as the frame limit).
        """
        if not message.query:
            self.push({"symbols": {message.query_id: None}})
            return
        query, variables = message.query, message.variables or {}
        try:
            result = ins_query.answer(
                query, instruments, message.variables, main_contracts, market_hours=market_hours
            )
        except ins_query.UnsupportedQuery as exc:
            self.notify(NOTIFY_BAD_MESSAGE, "ERROR", str(exc))
            result, query, variables = {}, "", {}
        self.push({"symbols": {message.query_id: {"query": query, "variables": variables, "result": result}}})

    def push(self, patch: Patch) -> None:
        """Queue a change this connection must see. ``patch`` is never mutated, nor merged into later."""
        if "notify" in patch:
            notifies = patch["notify"]
            if type(notifies) is dict:
                for key, body in notifies.items():
                    self._queue_notify(key, body)
            if len(patch) == 1:
                return
            patch = {key: value for key, value in patch.items() if key != "notify"}
        if self.resync_needed:
            return  # the full view the owner will pass to reset() includes this change
        if self._shared:
            self._close_run()
        self._add(patch)

    def push_shared(self, shared: SharedPatch) -> None:
        """Queue a patch many sessions get alike (``shared.patch`` is never mutated, nor merged into
        while it is kept). It is kept by reference and sent as its encoded bytes, after what was
        pushed before it; past :data:`MAX_SHARED_PENDING` in a run, the run's shared patches are
        merged into its private ones like any patch (see the module docstring)."""
        if self.resync_needed or not shared.patch:
            return
        if len(self._shared) >= MAX_SHARED_PENDING:
            shared_run, self._shared = self._shared, []
            for one in shared_run:
                self._add(one.patch)
                if self.resync_needed:
                    return
        self._shared.append(shared)

    def _close_run(self) -> None:
        """A private patch follows shared ones: keep this run as it is and start the next one, or,
        past :data:`MAX_RUNS`, merge every run into one (in order)."""
        pending, shared = self._pending, self._shared
        self._shared = []
        if self._earlier_runs + 1 < MAX_RUNS:
            self._earlier_size += pending.size  # a borrowed patch counts too: several may be kept
            self._earlier.extend(pending.take())
            self._earlier.extend(shared)
            self._earlier_runs += 1
            if self._earlier_size > self.pending_limit:
                self._drop_pending()
                self.resync_needed = True
            return
        earlier = self._earlier
        self._earlier, self._earlier_runs, self._earlier_size = [], 0, 0
        self._pending = PendingPatches()
        for item in (*earlier, *pending.take(), *shared):
            self._add(item.patch if isinstance(item, SharedPatch) else item)
            if self.resync_needed:
                return

    def _add(self, patch: Patch) -> None:
        pending = self._pending
        pending.add(patch)
        if not pending.borrowing and self._earlier_size + pending.size > self.pending_limit:
            self._drop_pending()
            self.resync_needed = True

    def _drop_pending(self) -> None:
        self._pending = PendingPatches()
        self._shared = []
        self._earlier, self._earlier_runs, self._earlier_size = [], 0, 0

    def notify(self, code: int, level: NotifyLevel, content: str) -> None:
        """Show a message to this connection's user, under a key no client has seen before."""
        self._notify_count += 1
        key = f"qaex-{_PROCESS_TOKEN}-{self.session_id}-{self._notify_count}"
        if len(content) > MAX_NOTIFY_TEXT:  # e.g. a list of unknown symbols: 100 notifies stay small
            content = content[: MAX_NOTIFY_TEXT - 1] + "…"
        self._queue_notify(key, {"type": "MESSAGE", "level": level, "code": code, "content": content})

    def _queue_notify(self, key: str, body: Any) -> None:
        self._notifies[key] = body
        if len(self._notifies) > MAX_PENDING_NOTIFIES:
            del self._notifies[next(iter(self._notifies))]

    def reset(self, full_view: list[Patch]) -> None:
        """Replace the pending patches by this connection's complete current view (after a resync).

        ``full_view`` is what the owner knows (trade tree, subscribed quotes, charts and their bars); the
        session adds what it owns (``mdhis_more_data``, the ``ins_list`` echo). Deleting a parent the client
        holds objects of (``trade/{user}``, ``charts``) would orphan TqSdk's references to them
        (``api.get_account()``, K-line serials): prefer full objects merged over the old ones. Chart
        deletions dropped with the pending patches are not repeated; a stale chart entry is harmless.
        """
        self._drop_pending()
        self._pending.add({"mdhis_more_data": False})
        if self._ins_list_echo is not None:
            self._pending.add({"ins_list": self._ins_list_echo})
        for patch in full_view:
            self._pending.add(patch)
        self.view_size = self._pending.size
        self.resync_needed = False

    # -- session → client ------------------------------------------------------------------------------

    def wants_data(self) -> bool:
        """A peek is waiting and there is something to answer it with.

        Also true when :attr:`resync_needed`: the owner must then :meth:`reset` before :meth:`data_to_send`.
        """
        return self._peeked and (
            bool(self._pending)
            or bool(self._shared)
            or bool(self._earlier)
            or bool(self._notifies)
            or self.resync_needed
        )

    def data_to_send(self) -> bytes | None:
        """The rtn_data frame answering the pending peek, or ``None`` if there is no peek or nothing to send.

        Also ``None`` while :attr:`resync_needed`: the owner must :meth:`reset` first.
        """
        if not self._peeked or self.resync_needed:
            return None
        data: list[Patch | msgspec.Raw] = []
        if self._earlier:
            data.extend(item.raw if isinstance(item, SharedPatch) else item for item in self._earlier)
            self._earlier, self._earlier_runs, self._earlier_size = [], 0, 0
        data.extend(self._pending.take())
        if self._shared:
            data.extend(shared.raw for shared in self._shared)
            self._shared = []
        if self._notifies:
            data.append({"notify": self._notifies})
            self._notifies = {}
        if not data:
            return None
        self._peeked = False
        return encode_rtn_data(data)
