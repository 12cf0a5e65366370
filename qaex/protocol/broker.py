"""What the core and the DIFF gateways say to each other over the broker, and how a gateway keeps a
user's trade tree exact from a stream of numbered patches. Sans-IO: no trio, no sockets.

Subjects (prefix ``qaex.<exchange id>.v<PROTOCOL>.``, see Versions): ``u.<user_id>`` per-user
trade patches (:class:`UserPatch`: the core's epoch, the user's sequence number, the merge patch);
``q.<symbol>`` quote patches; ``qaex.<exchange id>.core.hb`` the core's heartbeat (:class:`Heartbeat`,
with the epoch and the version); ``rpc.login`` (:class:`LoginRequest` -> :class:`LoginReply`, the
user's tree and its sequence number; a tree larger than the broker's max_payload in several replies,
:func:`snapshot_parts` and :class:`SnapshotAssembly`),
``rpc.snapshot`` (a resync: the tree without a password check, for gateways only) and ``cmd``
(:class:`CommandRequest` -> :class:`CommandReply`); ``static`` the contract fields of listed or
changed instruments, ``rpc.market`` full quotes and the static patch (:class:`MarketRequest` ->
:class:`MarketReply`); ``k.<symbol>.<duration ns>`` the patches of a series some gateway holds
(``chart.hold``, :class:`SeriesHolds`), numbered per series, and ``rpc.chart`` its items in pages
(:class:`SeriesRequest` -> :class:`SeriesReply`). Everything is msgspec msgpack.

**Sequence numbers.** The core numbers each user's patches 1, 2, 3, ... within an *epoch*, a random
id drawn at each core start (:class:`Sequencer`). A snapshot carries the number of the last patch
its tree includes. A gateway (:class:`UserFeed`, one per user logged in on it) subscribes to
``u.<user_id>`` *first*, then asks for the snapshot: patches arriving meanwhile are buffered, and
once the snapshot is there those at or below its number are dropped (the tree has them), the rest
applied in order. From then on a patch must be number last+1 of the same epoch: a lower number is a
duplicate (dropped), a higher one a gap (lost on the way: the buffer of the broker or of the core
overflowed, the connection dropped), another epoch a core restart; both mean **resync**: ask for a
new snapshot and buffer until it comes. The heartbeat's epoch catches a restart with no patches.

**Versions.** Every subject but the heartbeat's carries :data:`PROTOCOL`, the version of everything
in this module (``qaex.<exchange id>.v1.u.<user_id>``), so a core and a gateway of different versions
never read each other's messages. The heartbeat (``qaex.<exchange id>.core.hb``, the same for every
version) says which version the core speaks: a gateway that hears another one refuses every request
at once with a notify that names both (qaex.exchange.remote) instead of waiting on a core it cannot
hear. Upgrade the core and its gateways together.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import msgspec

from qaex.core.patch import merge_patch

Patch = dict[str, Any]

PROTOCOL = 1
"""The version of these messages and subjects: raise it with any change an older peer would misread."""

MAX_BUFFERED = 10_000
"""Patches a feed buffers while it waits for a snapshot; past it the snapshot is asked again."""


def subject(exchange_id: str, suffix: str) -> str:
    """The subject of this version's `suffix` (``u.<user_id>``, ``cmd``, ...)."""
    return f"qaex.{exchange_id}.v{PROTOCOL}.{suffix}"


def heartbeat_subject(exchange_id: str) -> str:
    """The core's heartbeat: one subject for every version, so that a mismatch is heard."""
    return f"qaex.{exchange_id}.core.hb"


# -- wire messages --------------------------------------------------------------------------------
class UserPatch(msgspec.Struct, array_like=True):
    epoch: str
    seq: int
    patch: Patch


class Heartbeat(msgspec.Struct, array_like=True):
    epoch: str
    time_ns: int
    # Trailing, with a default: a heartbeat from before versions (no field) reads as version 0, and
    # a later version may append fields that this one ignores.
    protocol: int = 0


QuotePatch = UserPatch
"""``q.<symbol>`` and ``static`` carry the same numbered patches (numbered per symbol; ``static`` as one)."""


class MarketRequest(msgspec.Struct):
    symbols: list[str] = []
    static: bool = False


class InstrumentsRequest(msgspec.Struct):
    pass


class InstrumentsReply(msgspec.Struct):
    """What a gateway answers ``ins_query`` from: the listed contracts (``Instrument`` as builtins),
    the products' main contracts and the market-hours policy."""

    epoch: str
    instruments: list[dict[str, Any]]
    main_contracts: dict[str, str]
    market_hours: str


class QuoteSnapshot(msgspec.Struct, array_like=True):
    seq: int
    patch: Patch  # {"quotes": {symbol: every field}}


class MarketReply(msgspec.Struct):
    epoch: str
    static_seq: int = 0
    static: Patch | None = None  # {"quotes": {symbol: contract fields}} of every instrument
    quotes: dict[str, QuoteSnapshot] = {}  # the symbols asked for that exist


class SeriesRequest(msgspec.Struct):
    """``rpc.chart``: one page of a series' items (``duration`` 0: ticks), the newest first
    (``before_id`` None) then older ones (the items before ``before_id``). Asking holds the series on
    the core (:class:`SeriesHolds`), as a ``chart.hold`` does."""

    symbol: str
    duration: int
    before_id: int | None = None


class SeriesReply(msgspec.Struct):
    """A page: ``items`` are the ids ``start``, ``start + 1``, ...; ``seq`` the number of the last
    ``k.<symbol>.<duration>`` patch the series includes (meaningful in the newest page);
    ``first_id`` / ``last_id`` / ``max_len`` the series' own."""

    epoch: str
    seq: int = 0
    first_id: int = 0
    last_id: int = -1
    max_len: int = 1
    start: int = 0
    items: list[dict[str, Any]] = []
    error: ErrorInfo | None = None


class SeriesHold(msgspec.Struct):
    """``chart.hold``: the series a gateway mirrors, renewed every :data:`HOLD_RENEW` seconds."""

    series: list[tuple[str, int]]


class ErrorInfo(msgspec.Struct):
    message: str
    code: str
    diff_code: int
    kind: str = "QaexError"  # LoginThrottled: retry_after is set
    retry_after: float | None = None


class LoginRequest(msgspec.Struct):
    user_id: str
    password: str
    source: str | None = None


class SnapshotRequest(msgspec.Struct):
    user_id: str


class LoginReply(msgspec.Struct):
    ok: bool
    epoch: str = ""
    seq: int = 0
    tree: Patch | None = None  # the user's trade tree (without the ``trade/<user_id>`` root)
    error: ErrorInfo | None = None
    part: int = 0  # a tree too big for one message comes as `parts` replies (snapshot_parts)
    parts: int = 1


CommandKind = Literal["insert", "cancel", "deposit", "withdraw", "password"]


class CommandRequest(msgspec.Struct):
    kind: CommandKind
    user_id: str
    order: dict[str, Any] | None = None  # insert: the DIFF insert_order message's fields
    order_id: str = ""  # cancel
    amount: float = 0.0  # deposit, withdraw
    old_password: str = ""  # password
    new_password: str = ""
    source: str | None = None


class CommandReply(msgspec.Struct):
    ok: bool
    error: ErrorInfo | None = None


# -- core side ------------------------------------------------------------------------------------
@dataclass(slots=True)
class Sequencer:
    """The core's numbering: per user, 1, 2, 3, ... within one epoch."""

    epoch: str
    _last: dict[str, int] = field(default_factory=dict)

    def next(self, user_id: str) -> int:
        seq = self._last.get(user_id, 0) + 1
        self._last[user_id] = seq
        return seq

    def last(self, user_id: str) -> int:
        """The number of the user's latest patch (0: none yet in this epoch)."""
        return self._last.get(user_id, 0)


SeriesKey = tuple[str, int]

HOLD_LAPSE = 60.0
"""Seconds a series stays held on the core after the last ``chart.hold`` or ``rpc.chart`` naming it."""
HOLD_RENEW = 20.0
"""Seconds between two ``chart.hold`` messages of a gateway."""
MAX_HELD = 4096
"""Series the core holds for gateways at most (past it ``rpc.chart`` is refused)."""


def series_name(key: SeriesKey) -> str:
    """``<symbol>.<duration ns>``: the subject's suffix after ``k.`` and the series' numbering key."""
    return f"{key[0]}.{key[1]}"


def series_body(patch: Patch, key: SeriesKey) -> Patch | None:
    """The body (``{"last_id": N, "data": {...}}``) of one series' DIFF patch, or None."""
    symbol, duration = key
    if duration == 0:
        body = (patch.get("ticks") or {}).get(symbol)
    else:
        body = ((patch.get("klines") or {}).get(symbol) or {}).get(str(duration))
    return body if type(body) is dict else None


@dataclass(slots=True)
class SeriesHolds:
    """The series the core keeps for gateways, each until ``lapse`` seconds after it was last named.

    :meth:`hold` says whether a series is new (the caller starts it) and refuses past ``limit``;
    :meth:`expired` hands out those that lapsed (the caller releases them)."""

    lapse: float = HOLD_LAPSE
    limit: int = MAX_HELD
    _until: dict[SeriesKey, float] = field(default_factory=dict)

    def __contains__(self, key: object) -> bool:
        return key in self._until

    def __len__(self) -> int:
        return len(self._until)

    def hold(self, key: SeriesKey, now: float) -> bool | None:
        """Renew or start holding: True when new, False when renewed, None when full (not held)."""
        if key in self._until:
            self._until[key] = now + self.lapse
            return False
        if len(self._until) >= self.limit:
            return None
        self._until[key] = now + self.lapse
        return True

    def drop(self, key: SeriesKey) -> None:
        self._until.pop(key, None)

    def expired(self, now: float) -> list[SeriesKey]:
        gone = [key for key, until in self._until.items() if until <= now]
        for key in gone:
            del self._until[key]
        return gone


# -- gateway side ---------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Resync:
    """The feed lost its place (a gap, a new epoch, too much buffered): ask for a snapshot."""

    reason: str


@dataclass(slots=True)
class UserFeed:
    """One user's patch stream on a gateway: buffering until a snapshot, then in order or resync.

    ``receive`` and ``snapshot`` return the patches to apply now (in order), or a :class:`Resync`.
    """

    user_id: str
    epoch: str | None = None
    last: int = 0
    live: bool = False  # False: waiting for a snapshot, patches buffered
    max_buffered: int = MAX_BUFFERED
    _buffer: list[UserPatch] = field(default_factory=list)
    overflowed: bool = False

    def receive(self, message: UserPatch) -> list[Patch] | Resync:
        if not self.live:
            if len(self._buffer) >= self.max_buffered:
                self.overflowed = True
                self._buffer.clear()
            else:
                self._buffer.append(message)
            return []
        if message.epoch != self.epoch:
            return self._lost(f"new epoch {message.epoch} (was {self.epoch})", message)
        if message.seq <= self.last:
            return []  # a duplicate
        if message.seq != self.last + 1:
            return self._lost(f"gap: patch {message.seq} after {self.last}", message)
        self.last = message.seq
        return [message.patch]

    def _lost(self, reason: str, message: UserPatch) -> Resync:
        self.live = False
        self._buffer = [message]
        self.overflowed = False
        return Resync(reason)

    def snapshot(self, epoch: str, seq: int) -> list[Patch] | Resync:
        """The snapshot's tree includes patches up to `seq` of `epoch`: the buffered patches to apply
        on top of it, or Resync when the buffer cannot continue it (then ask again)."""
        if self.overflowed:
            self.overflowed = False
            self._buffer.clear()
            return Resync("too many patches buffered while waiting for the snapshot")
        self.epoch, self.last, self.live = epoch, seq, True
        buffered, self._buffer = self._buffer, []
        out: list[Patch] = []
        for message in buffered:
            if message.epoch != epoch:
                continue  # from before a restart the snapshot already reflects, or a later one: see below
            if message.seq <= self.last:
                continue
            if message.seq != self.last + 1:
                return self._lost(f"gap: patch {message.seq} after {self.last}", message)
            self.last = message.seq
            out.append(message.patch)
        return out

    def heartbeat(self, epoch: str) -> Resync | None:
        if self.live and epoch != self.epoch:
            self.live = False
            self._buffer = []
            return Resync(f"the core restarted (epoch {epoch}, was {self.epoch})")
        return None

    def disconnected(self) -> Resync:
        """The broker connection was lost (patches may be missing): resync on reconnection."""
        self.live = False
        self._buffer = []
        return Resync("broker connection lost")


def split_patch(patch: Patch, user_id: str, fits: Callable[[Patch], bool]) -> list[Patch]:
    """``patch`` as several patches that, merged in order, make the same change, each one `fits`
    when it can (a patch bigger than the broker's ``max_payload`` cannot be published whole).

    A merge patch's paths are independent, so it splits along them: the objects under
    ``trade/<user_id>/<kind>/<key>`` (an order, a position, ...) are packed greedily into chunks,
    the notifies and any other top-level key go in chunks of their own. A single object that does
    not fit on its own is returned alone (the caller decides: the subscriber then sees a gap).
    """
    if fits(patch):
        return [patch]
    items: list[Patch] = []  # one-path patches, in order
    trade = patch.get("trade")
    user = trade.get(user_id) if type(trade) is dict else None
    for top, value in patch.items():
        if top == "trade" and type(trade) is dict and type(user) is dict:
            items.extend({"trade": {user_id: path}} for path in _paths(user))
            others = {k: v for k, v in trade.items() if k != user_id}
            if others:
                items.append({"trade": others})
        elif top == "notify" and type(value) is dict:
            items.extend({"notify": {key: note}} for key, note in value.items())
        else:
            items.append({top: value})
    chunks: list[Patch] = []
    current: Patch = {}
    for item in items:
        candidate = _merged(current, item)
        if not current or fits(candidate):
            current = candidate
        else:
            chunks.append(current)
            current = item
    if current:
        chunks.append(current)
    return chunks


def _paths(tree: Patch) -> Iterator[Patch]:
    """A user's tree (or patch) as one-path patches: each object under ``<kind>/<key>`` alone, any
    other member whole; merged in order they make `tree`."""
    for kind, objects in tree.items():
        if type(objects) is dict and objects:
            for key, obj in objects.items():
                yield {kind: {key: obj}}
        else:
            yield {kind: objects}


def _merged(a: Patch, b: Patch) -> Patch:
    """Two patches with disjoint paths as one (copies the dicts along the way, never the leaves)."""
    out = dict(a)
    for key, value in b.items():
        mine = out.get(key)
        out[key] = _merged(mine, value) if type(mine) is dict and type(value) is dict else value
    return out


# -- snapshots in parts ---------------------------------------------------------------------------
MAX_SNAPSHOT_PARTS = 4096
"""Messages one snapshot may take: a tree of at most this many times the broker's max_payload."""
SNAPSHOT_PART_MARGIN = 256
"""Bytes kept free in each part for the reply's own fields and the map headers its objects share."""

_encode = msgspec.msgpack.Encoder().encode


def snapshot_parts(reply: LoginReply, limit: int) -> list[LoginReply] | None:
    """``reply`` as the messages that carry it through a broker taking `limit` bytes a message:
    itself when it fits, else its tree in ``parts`` replies that merged in order make the tree (the
    objects under ``<kind>/<key>`` packed greedily, each encoded once: linear in the tree's size);
    None when one object alone does not fit or it would take more than MAX_SNAPSHOT_PARTS."""
    if reply.tree is None or len(_encode(reply)) <= limit:
        return [reply]
    pieces: list[Patch] = []
    current: Patch = {}
    size = 0
    for path in _paths(reply.tree):
        path_size = len(_encode(path))
        if current and size + path_size + SNAPSHOT_PART_MARGIN > limit:
            pieces.append(current)
            current, size = {}, 0
        _add_path(current, path)
        size += path_size
    if current:
        pieces.append(current)
    if len(pieces) > MAX_SNAPSHOT_PARTS:
        return None
    parts = [
        LoginReply(True, reply.epoch, reply.seq, piece, part=i, parts=len(pieces))
        for i, piece in enumerate(pieces)
    ]
    return parts if all(len(_encode(part)) <= limit for part in parts) else None


def _add_path(target: Patch, path: Patch) -> None:
    """Merge a one-path patch of :func:`_paths` into `target` in place (paths are disjoint, so only
    the wrapping dicts `_paths` made are written into, never the tree's objects)."""
    for kind, objects in path.items():
        mine = target.get(kind)
        if type(mine) is dict and type(objects) is dict:
            mine.update(objects)
        else:
            target[kind] = dict(objects) if type(objects) is dict else objects


@dataclass(slots=True)
class SnapshotAssembly:
    """The replies to one ``rpc.login`` / ``rpc.snapshot``: one, or the ``parts`` of a tree too big
    for one message (:func:`snapshot_parts`), which arrive in order (one publisher, one subscriber)."""

    _parts: list[LoginReply] = field(default_factory=list)

    def add(self, reply: LoginReply) -> bool:
        """Take the next reply; True once the answer is complete (then :meth:`reply`)."""
        first = self._parts[0] if self._parts else reply
        if (
            reply.part != len(self._parts)
            or not 1 <= reply.parts <= MAX_SNAPSHOT_PARTS
            or (reply.epoch, reply.seq, reply.parts) != (first.epoch, first.seq, first.parts)
        ):
            raise msgspec.ValidationError(f"snapshot part {reply.part} of {reply.parts} out of order")
        self._parts.append(reply)
        return len(self._parts) == reply.parts

    def reply(self) -> LoginReply:
        first = self._parts[0]
        if first.parts == 1:
            return first
        tree: Patch = {}
        for part in self._parts:
            merge_patch(tree, part.tree or {})
        return LoginReply(True, first.epoch, first.seq, tree)
