"""The sequence/epoch/gap logic of qaex.protocol.broker over an in-memory bus that loses, repeats and
delays messages, and restarts the core: a gateway's tree always ends equal to the core's."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.patch import copy_tree, merge_patch
from qaex.protocol.broker import (
    LoginReply,
    Resync,
    Sequencer,
    SnapshotAssembly,
    UserFeed,
    UserPatch,
    snapshot_parts,
    split_patch,
)


@dataclass
class Core:
    epoch: str = "e1"
    tree: dict[str, object] = field(default_factory=dict)
    seq: Sequencer = field(default_factory=lambda: Sequencer("e1"))

    def change(self, key: str, value: int | None) -> UserPatch:
        patch = {"k": {key: value}}
        merge_patch(self.tree, patch)
        return UserPatch(self.epoch, self.seq.next("u"), patch)

    def snapshot(self) -> tuple[str, int, dict[str, object]]:
        return self.epoch, self.seq.last("u"), copy_tree(self.tree)

    def restart(self, epoch: str) -> None:  # the tree is recovered from the journal; numbering starts over
        self.epoch, self.seq = epoch, Sequencer(epoch)


@dataclass
class Gateway:
    feed: UserFeed = field(default_factory=lambda: UserFeed("u"))
    tree: dict[str, object] | None = None
    waiting: bool = False  # a snapshot request is in flight
    resyncs: int = 0

    def apply(self, result: list[dict[str, object]] | Resync) -> None:
        if isinstance(result, Resync):
            self.waiting = True
            self.resyncs += 1
            return
        if result:
            assert self.tree is not None
        for patch in result:
            assert self.tree is not None
            merge_patch(self.tree, patch)

    def snapshot(self, epoch: str, seq: int, tree: dict[str, object]) -> None:
        self.waiting = False
        self.tree = tree
        self.apply(self.feed.snapshot(epoch, seq))


def test_buffered_patches_at_or_below_the_snapshot_are_dropped() -> None:
    core, gw = Core(), Gateway()
    early = core.change("a", 1)
    gw.apply(gw.feed.receive(early))  # subscribed first: buffered
    snap = core.snapshot()
    late = core.change("b", 2)
    gw.apply(gw.feed.receive(late))
    gw.snapshot(*snap)
    assert gw.tree == core.tree and gw.feed.last == 2


def test_gap_duplicate_and_new_epoch() -> None:
    feed = UserFeed("u")
    assert feed.snapshot("e1", 3) == []
    assert feed.receive(UserPatch("e1", 4, {"x": 1})) == [{"x": 1}]
    assert feed.receive(UserPatch("e1", 4, {"x": 1})) == []  # duplicate
    assert isinstance(feed.receive(UserPatch("e1", 6, {"x": 3})), Resync)  # 5 lost
    assert not feed.live
    assert feed.receive(UserPatch("e1", 7, {"x": 4})) == []  # buffered until the snapshot
    assert feed.snapshot("e1", 6) == [{"x": 4}]
    assert isinstance(feed.receive(UserPatch("e2", 1, {})), Resync)
    assert feed.snapshot("e2", 1) == []
    assert isinstance(feed.heartbeat("e3"), Resync)
    assert feed.heartbeat("e3") is None  # already resyncing


def test_a_snapshot_older_than_the_buffer_asks_again() -> None:
    feed = UserFeed("u")
    feed.receive(UserPatch("e1", 5, {}))
    assert isinstance(feed.snapshot("e1", 3), Resync)  # 4 is missing between the tree and the buffer
    assert feed.snapshot("e1", 5) == []


def test_buffer_overflow_asks_again() -> None:
    feed = UserFeed("u", max_buffered=3)
    for seq in range(1, 6):
        feed.receive(UserPatch("e1", seq, {}))
    assert isinstance(feed.snapshot("e1", 0), Resync)
    assert feed.snapshot("e1", 5) == [] and feed.live


def test_wire_messages_round_trip() -> None:
    message = UserPatch("e1", 7, {"trade": {"u": {"orders": {"o": {"volume_left": 1, "x": None}}}}})
    encoded = msgspec.msgpack.encode(message)
    assert msgspec.msgpack.decode(encoded, type=UserPatch) == message


@settings(max_examples=300)
@given(st.integers(0, 2**32), st.integers(20, 200))
def test_lossy_bus_always_converges(seed: int, steps: int) -> None:
    """Random changes, drops, duplicates, reorders within the bus, snapshot latency and restarts:
    once the bus is quiet and the last resync is answered, the gateway's tree is the core's."""
    rng = random.Random(seed)
    core, gw = Core(), Gateway()
    bus: list[UserPatch] = []  # in flight to the gateway
    pending_snapshot: tuple[str, int, dict[str, object]] | None = None
    epochs = 1
    gw.waiting = True  # the login: subscribed, asks for a snapshot
    for _ in range(steps):
        action = rng.random()
        if action < 0.5:
            bus.append(core.change(rng.choice("abcdef"), rng.choice([None, 1, 2, 3])))
        elif action < 0.55:
            if bus:
                bus.pop(rng.randrange(len(bus)))  # lost
        elif action < 0.6:
            if bus:
                bus.insert(rng.randrange(len(bus) + 1), rng.choice(bus))  # delivered twice
        elif action < 0.62:
            epochs += 1
            core.restart(f"e{epochs}")
            if rng.random() < 0.5:
                for feed_result in [gw.feed.heartbeat(core.epoch)]:
                    if feed_result is not None:
                        gw.apply(feed_result)
        elif action < 0.8:
            if bus:
                gw.apply(gw.feed.receive(bus.pop(0)))
        elif gw.waiting:
            if pending_snapshot is None:
                pending_snapshot = core.snapshot()  # the core answers now; the reply travels a while
            elif rng.random() < 0.5:
                gw.snapshot(*pending_snapshot)
                pending_snapshot = None
    # quiet: deliver what is in flight, answer the resyncs, until nothing moves
    for _ in range(100):
        while bus:
            gw.apply(gw.feed.receive(bus.pop(0)))
        if pending_snapshot is not None:
            gw.snapshot(*pending_snapshot)
            pending_snapshot = None
        elif gw.waiting:
            gw.snapshot(*core.snapshot())
        else:
            break
    # a lost last patch is only noticed with the next one, or the heartbeat: the core publishes one
    bus.append(core.change("z", 1))
    gw.apply(gw.feed.receive(bus.pop()))
    if gw.waiting:
        gw.snapshot(*core.snapshot())
    assert gw.feed.live
    assert gw.tree == core.tree


json_leaf = st.none() | st.integers(-5, 5) | st.text("pq", max_size=20)
objects = st.dictionaries(st.sampled_from("abcdef"), json_leaf, max_size=4)
kinds = st.sampled_from(["orders", "trades", "positions", "accounts"])
keyed = st.dictionaries(st.sampled_from(["x", "y", "z", "w", "v"]), objects | st.none(), max_size=5)


@settings(max_examples=300)
@given(
    st.dictionaries(kinds, keyed, max_size=4),
    st.dictionaries(st.sampled_from(["n1", "n2", "n3"]), objects, max_size=3),
    st.integers(40, 400),
)
def test_split_patches_merge_to_the_same_change(
    user: dict[str, object], notify: dict[str, object], limit: int
) -> None:
    patch: dict[str, object] = {"trade": {"u": user}}
    if notify:
        patch["notify"] = notify

    def fits(p: dict[str, object]) -> bool:
        return len(msgspec.msgpack.encode(p)) <= limit

    parts = split_patch(patch, "u", fits)
    base = {"trade": {"u": {"orders": {"x": {"a": 1}}, "accounts": {}}}, "notify": {}}
    whole, pieces = copy_tree(base), copy_tree(base)
    merge_patch(whole, patch)
    for part in parts:
        merge_patch(pieces, part)
    assert pieces == whole
    if fits(patch):
        assert parts == [patch]
    for part in parts:  # a part too big is one object that cannot be split
        assert fits(part) or len(msgspec.msgpack.encode(part)) <= len(msgspec.msgpack.encode(patch))


tree_leaf = st.integers(-5, 5) | st.text("pq", max_size=40)  # a tree holds no None (merge_patch drops it)
tree_objects = st.dictionaries(st.sampled_from("abcdef"), tree_leaf, max_size=4)
trees = st.dictionaries(
    kinds | st.just("user_id"),
    st.dictionaries(st.text("xyzwv", min_size=1, max_size=3), tree_objects, max_size=12) | tree_leaf,
    max_size=5,
)


@settings(max_examples=300)
@given(trees, st.integers(300, 2000))
def test_a_snapshot_in_parts_assembles_to_the_tree(tree: dict[str, Any], limit: int) -> None:
    """Whatever its size, a snapshot crosses a broker of `limit` bytes a message in parts that each
    fit and assemble, in order, to the tree; parts out of order are refused."""
    reply = LoginReply(True, "e1", 7, copy_tree(tree))
    parts = snapshot_parts(reply, limit)
    assert parts is not None  # every object here fits alone
    assert all(len(msgspec.msgpack.encode(part)) <= limit for part in parts)
    assert [p.part for p in parts] == list(range(len(parts))) and {p.parts for p in parts} == {len(parts)}
    decoded = [msgspec.msgpack.decode(msgspec.msgpack.encode(p), type=LoginReply) for p in parts]
    assembly = SnapshotAssembly()
    assert [assembly.add(p) for p in decoded] == [False] * (len(parts) - 1) + [True]
    whole = assembly.reply()
    assert (whole.ok, whole.epoch, whole.seq, whole.tree) == (True, "e1", 7, tree)
    if len(parts) > 1:
        with pytest.raises(msgspec.ValidationError):
            SnapshotAssembly().add(decoded[1])


def test_a_snapshot_with_one_object_above_the_limit_cannot_be_split() -> None:
    tree = {"orders": {"o1": {"text": "x" * 1000}, "o2": {"text": "y"}}}
    assert snapshot_parts(LoginReply(True, "e1", 1, tree), 1500) == [LoginReply(True, "e1", 1, tree)]
    assert snapshot_parts(LoginReply(True, "e1", 1, tree), 600) is None
    refusal = LoginReply(ok=False)
    assert snapshot_parts(refusal, 10) == [refusal]


class FakeClient:
    """What BrokerCore asks of its NATS client, as an in-memory bus that can be switched off."""

    def __init__(self) -> None:
        self.up = True
        self.max_payload = 1 << 20
        self.sent: list[tuple[str, bytes]] = []

    @property
    def is_connected(self) -> bool:
        return self.up

    def publish(self, subject: str, payload: bytes) -> bool:
        if self.up:
            self.sent.append((subject, payload))
        return self.up


def test_the_core_marks_a_lost_last_patch_so_that_the_gateway_resyncs() -> None:
    from qaex.exchange.broker_core import BrokerCore

    client = FakeClient()
    core = BrokerCore(object(), client, "x")  # type: ignore[arg-type]
    feed = UserFeed("u")
    feed.snapshot(core.epoch, 0)

    def deliver() -> list[object]:
        out = [feed.receive(msgspec.msgpack.decode(p, type=UserPatch)) for _, p in client.sent]
        client.sent.clear()
        return out

    core.user_patch("u", {"trade": {"u": {"accounts": {"CNY": {"balance": 1}}}}})
    assert deliver() == [[{"trade": {"u": {"accounts": {"CNY": {"balance": 1}}}}}]]
    client.up = False
    core.user_patch("u", {"trade": {"u": {"accounts": {"CNY": {"balance": 2}}}}})  # lost: the broker is away
    core._mark_gaps()  # still away: nothing yet
    client.up = True
    core._mark_gaps()  # the next heartbeat tick
    [result] = deliver()
    assert isinstance(result, Resync) and "gap" in result.reason
    core._mark_gaps()
    assert client.sent == []  # marked once


class LosingClient(FakeClient):
    """A broker connection that takes a command and then loses the connection before the answer."""

    def request_callback(self, subject: str, payload: bytes, callback: Any, within: float) -> None:
        from qaex.exchange.nats_client import ConnectionLost

        self.sent.append((subject, payload))
        callback(ConnectionLost("connection to the broker lost"))

    def subscribe(self, *args: object, **kwargs: object) -> None:
        return None


async def test_a_lost_answer_is_an_outcome_unknown_refusal_and_a_down_broker_refuses_at_once() -> None:
    import trio

    from qaex.core.orders import InsertOrder
    from qaex.exchange.remote import RemoteExchange

    client = LosingClient()
    remote = RemoteExchange(client, "x", market=False)  # type: ignore[arg-type]
    remote._last_beat = trio.current_time()  # the core's heartbeat was just heard
    order = InsertOrder(
        user_id="u", order_id="o1", exchange_id="SHFE", instrument_id="cu2601",
        direction="BUY", offset="OPEN", volume=1, limit_price=80000.0,
    )  # fmt: skip
    outcomes: list[Any] = []
    await remote.submit_insert_order(order, outcomes.append)
    [outcome] = outcomes
    assert outcome.error.code == "outcome_unknown" and "结果未知" in outcome.error.message
    [(subject, payload)] = client.sent
    request = msgspec.msgpack.decode(payload)
    assert subject == "qaex.x.v1.cmd" and request["kind"] == "insert" and request["order"]["order_id"] == "o1"
    client.up = False  # broker down: refused before anything is sent
    await remote.submit_cancel_order("u", "o1", outcomes.append)
    assert outcomes[1].error.code == "broker_unavailable" and len(client.sent) == 1


class RefusingClient(FakeClient):
    """A broker connection on which the core answers every snapshot with a refusal."""

    def __init__(self, refusal: LoginReply) -> None:
        super().__init__()
        self.refusal = refusal

    async def wait_connected(self) -> None:
        return None

    async def request_many(self, subject: str, payload: bytes, last: Any, within: float) -> list[Any]:
        from qaex.protocol.nats import Msg

        self.sent.append((subject, payload))
        answer = Msg(subject="_INBOX.x.1", sid="0", reply=None, payload=msgspec.msgpack.encode(self.refusal))
        assert last(answer)
        return [answer]


async def test_a_resync_the_core_refuses_is_told_to_the_users_sessions() -> None:
    """A snapshot the core cannot send (one object above max_payload): the user's sessions on the
    gateway get an ERROR notify instead of a view that silently stays stale."""
    from qaex.exchange.broker_core import TOO_LARGE
    from qaex.exchange.remote import RemoteExchange
    from qaex.exchange.snapshot import SessionLink
    from qaex.protocol.session import DiffSession

    client = RefusingClient(LoginReply(ok=False, error=TOO_LARGE))
    remote = RemoteExchange(client, "x", market=False)  # type: ignore[arg-type]
    remote.feeds["u"] = UserFeed("u")
    link = SessionLink(DiffSession(1))
    remote.snapshots.sessions["u"] = {link}
    await remote._fetch_snapshot("u")
    [(subject, _)] = client.sent
    assert subject == "qaex.x.v1.rpc.snapshot"
    [note] = link.session._notifies.values()
    assert note["level"] == "ERROR" and "not resynchronized" in note["content"]
    assert "max_payload" in note["content"] and note["code"] == TOO_LARGE.diff_code
    assert not remote.feeds["u"].live and "u" not in remote._resyncing


def test_subjects_carry_the_protocol_version_except_the_heartbeat() -> None:
    from qaex.protocol import broker as wire

    assert wire.subject("x", "u.alice") == f"qaex.x.v{wire.PROTOCOL}.u.alice"
    assert wire.heartbeat_subject("x") == "qaex.x.core.hb"  # shared by every version: a mismatch is heard


def test_heartbeats_of_other_versions_decode_with_their_protocol() -> None:
    from qaex.protocol.broker import Heartbeat

    before_versions = msgspec.msgpack.encode(["e1", 123])  # a core from before the version field
    assert msgspec.msgpack.decode(before_versions, type=Heartbeat) == Heartbeat("e1", 123, 0)
    later = msgspec.msgpack.encode(["e2", 456, 7, "a field of a later version"])
    assert msgspec.msgpack.decode(later, type=Heartbeat) == Heartbeat("e2", 456, 7)
