"""The state of one DIFF connection, with no IO (in the manner of h11's ``Connection``).

The WebSocket handler feeds each received frame to :meth:`DiffSession.receive` and acts on the events it
returns; the SnapshotManager :meth:`~DiffSession.push`-es every change this connection must see; whenever
:meth:`~DiffSession.wants_data` is true the writer sends :meth:`~DiffSession.data_to_send`.

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

Notifies are not part of any snapshot, so they are kept apart, survive a resync, and are bounded by
count (:data:`MAX_PENDING_NOTIFIES`, the oldest dropped first).
"""

from __future__ import annotations

import secrets
from typing import Any, Final

from qaex.core.patch import Patch, PendingPatches
from qaex.protocol.diff import (
    NOTIFY_BAD_MESSAGE,
    NOTIFY_CANCEL_WRONG_USER,
    NOTIFY_DUPLICATE_LOGIN,
    NOTIFY_WRONG_USER,
    CancelOrder,
    ChangePassword,
    ConfirmSettlement,
    DiffProtocolError,
    InsertOrderMessage,
    InsQuery,
    NotifyLevel,
    PeekMessage,
    ReqLogin,
    ReqTransfer,
    SetChart,
    SubscribeQuote,
    decode_client_message,
    encode_rtn_data,
)

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
"""What :meth:`DiffSession.receive` hands to the exchange (peek and confirm_settlement are handled here)."""

DEFAULT_MAX_PENDING: Final = 20_000
"""Floor of the pending bound, in keys (see :func:`~qaex.core.patch.tree_size`): a few hundred quotes."""

VIEW_SIZE_FACTOR: Final = 2
MAX_PENDING_NOTIFIES: Final = 100
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

    def __init__(self, session_id: int, *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.session_id = session_id
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
        self._pending = PendingPatches()
        # TqApi blocks until it sees mdhis_more_data == false: the first peek is answered at once.
        self._pending.add({"mdhis_more_data": False})

    @property
    def pending_limit(self) -> int:
        """Pending size (in keys) above which the pending patches are dropped for a resync."""
        return max(self._max_pending, VIEW_SIZE_FACTOR * self.view_size)

    @property
    def pending_size(self) -> int:
        """Estimated size of the pending patches, in keys (:attr:`PendingPatches.size`)."""
        return self._pending.size

    # -- client → server -------------------------------------------------------------------------------

    def receive(self, frame: bytes | str) -> list[ClientEvent]:
        """Take one client frame; return what the exchange must act on (possibly nothing).

        A bad or unauthorised message is answered here with an ERROR notify; the session carries on.
        """
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

    def _set_chart(self, message: SetChart) -> list[ClientEvent]:
        if not message.ins_list:
            self.charts.pop(message.chart_id, None)
            self.push({"charts": {message.chart_id: None}})
            return [message]
        if message.chart_id not in self.charts and len(self.charts) >= MAX_CHARTS:
            self.notify(NOTIFY_BAD_MESSAGE, "ERROR", f"too many charts (at most {MAX_CHARTS})")
            return []
        self.charts[message.chart_id] = message
        return [message]

    def _trade(
        self, message: InsertOrderMessage | CancelOrder | ReqTransfer | ChangePassword
    ) -> list[ClientEvent]:
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
        pending = self._pending
        pending.add(patch)
        if not pending.borrowing and pending.size > self.pending_limit:
            self._pending = PendingPatches()
            self.resync_needed = True

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
        self._pending = PendingPatches()
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
        return self._peeked and (bool(self._pending) or bool(self._notifies) or self.resync_needed)

    def data_to_send(self) -> bytes | None:
        """The rtn_data frame answering the pending peek, or ``None`` if there is no peek or nothing to send.

        Also ``None`` while :attr:`resync_needed`: the owner must :meth:`reset` first.
        """
        if not self._peeked or self.resync_needed:
            return None
        data = self._pending.take()
        if self._notifies:
            data.append({"notify": self._notifies})
            self._notifies = {}
        if not data:
            return None
        self._peeked = False
        return encode_rtn_data(data)
