"""Shared patches (DiffSession.push_shared): encoded once, and the client ends with the same tree as
when every patch is merged per session (DiffSession.push), whatever the interleaving."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.patch import merge_patch
from qaex.protocol.diff import SharedPatch
from qaex.protocol.session import MAX_RUNS, MAX_SHARED_PENDING, DiffSession

keys = st.sampled_from(["a", "b", "c", "quotes"])
scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "-"]), st.lists(st.integers(0, 2), max_size=2))
patch_values = st.recursive(
    st.one_of(scalars, st.none()), lambda children: st.dictionaries(keys, children, max_size=3), max_leaves=8
)
patches = st.dictionaries(keys, patch_values, max_size=3)

# An operation: push a private patch, push one of the shared patches (by index: the same object is
# pushed again, as a publish pushes one object to every subscriber), a peek, or the writer's turn.
operations = st.lists(
    st.one_of(
        st.tuples(st.just("push"), patches),
        st.tuples(st.just("shared"), st.integers(0, 5)),
        st.tuples(st.just("peek"), st.none()),
        st.tuples(st.just("send"), st.none()),
    ),
    max_size=40,
)

PEEK = b'{"aid":"peek_message"}'


def apply_frame(tree: dict[str, Any], frame: bytes | None) -> None:
    if frame is None:
        return
    message = json.loads(frame)
    assert message["aid"] == "rtn_data"
    for patch in message["data"]:
        merge_patch(tree, patch)


@settings(max_examples=300, deadline=None)
@given(st.lists(patches, min_size=6, max_size=6), operations)
def test_any_interleaving_gives_the_client_the_same_tree_as_merging_per_session(
    pool: list[dict[str, Any]], ops: list[tuple[str, Any]]
) -> None:
    shared = [SharedPatch(patch) for patch in pool]
    with_shared, merged = DiffSession(1), DiffSession(2)
    client_shared: dict[str, Any] = {}
    client_merged: dict[str, Any] = {}
    for kind, value in ops:
        if kind == "push":
            with_shared.push(value)
            merged.push(value)
        elif kind == "shared":
            with_shared.push_shared(shared[value])
            merged.push(shared[value].patch)
        elif kind == "peek":
            with_shared.receive(PEEK)
            merged.receive(PEEK)
        else:
            assert with_shared.wants_data() == merged.wants_data()
            apply_frame(client_shared, with_shared.data_to_send())
            apply_frame(client_merged, merged.data_to_send())
            assert client_shared == client_merged
    for session, client in ((with_shared, client_shared), (merged, client_merged)):
        session.receive(PEEK)
        apply_frame(client, session.data_to_send())
    assert client_shared == client_merged
    # ... and the tree a client gets by applying every patch as it was pushed, one by one.
    model: dict[str, Any] = {"mdhis_more_data": False}
    for kind, value in ops:
        if kind == "push":
            merge_patch(model, value)
        elif kind == "shared":
            merge_patch(model, shared[value].patch)
    assert client_shared == model
    assert [patch.patch for patch in shared] == pool  # never merged into


def test_a_session_with_only_shared_data_sends_the_shared_bytes() -> None:
    quote = SharedPatch({"quotes": {"SHFE.cu2601": {"last_price": 86000.0, "bid_price1": "-"}}})
    sessions = [DiffSession(n) for n in range(3)]
    for session in sessions:
        session.receive(PEEK)
        session.data_to_send()  # the first rtn_data (mdhis_more_data)
        session.receive(PEEK)
        session.push_shared(quote)
    frames = {session.data_to_send() for session in sessions}
    assert frames == {b'{"aid":"rtn_data","data":[' + bytes(quote.raw) + b"]}"}
    assert quote.raw is quote.raw  # encoded once


def test_a_private_patch_after_a_shared_one_is_merged_in_order() -> None:
    session = DiffSession(1)
    session.receive(PEEK)
    session.data_to_send()
    session.push_shared(SharedPatch({"quotes": {"A": {"p": 1, "q": 1}}}))
    session.push({"quotes": {"A": None}})
    session.push_shared(SharedPatch({"quotes": {"A": {"p": 2}}}))
    session.receive(PEEK)
    tree: dict[str, Any] = {"quotes": {"A": {"old": 0}}}
    apply_frame(tree, session.data_to_send())
    assert tree == {"quotes": {"A": {"p": 2}}}


def test_more_shared_patches_than_kept_are_merged_and_nothing_is_lost() -> None:
    session = DiffSession(1)
    for n in range(3 * MAX_SHARED_PENDING + 1):
        session.push_shared(SharedPatch({"quotes": {f"S{n % 5}": {"n": n}}}))
    session.receive(PEEK)
    frame = session.data_to_send()
    assert frame is not None
    data = json.loads(frame)["data"]
    assert len(data) <= MAX_SHARED_PENDING + 2  # the merged patches, then at most the kept ones
    tree: dict[str, Any] = {}
    for patch in data:
        merge_patch(tree, patch)
    last = 3 * MAX_SHARED_PENDING
    assert tree["quotes"] == {f"S{n % 5}": {"n": n} for n in range(last - 4, last + 1)}


def test_shared_patches_merged_past_the_pending_bound_start_a_resync() -> None:
    session = DiffSession(1, max_pending=50)
    for n in range(MAX_SHARED_PENDING + 1):
        session.push_shared(SharedPatch({"quotes": {f"S{n}": {f"f{i}": i for i in range(10)}}}))
    assert session.resync_needed
    session.push_shared(SharedPatch({"quotes": {"later": {"x": 1}}}))  # dropped: the reset has it
    session.reset([{"quotes": {"full": {"x": 1}}}])
    session.receive(PEEK)
    tree: dict[str, Any] = {}
    apply_frame(tree, session.data_to_send())
    assert tree == {"mdhis_more_data": False, "quotes": {"full": {"x": 1}}}


def test_a_shared_patch_cannot_carry_a_notify() -> None:
    with pytest.raises(ValueError):
        SharedPatch({"notify": {"k": {}}})


def test_raw_bytes_are_the_json_of_the_patch() -> None:
    patch = {"quotes": {"A": {"p": 1.5, "s": "-", "l": [1, 2]}}}
    assert msgspec.json.decode(bytes(SharedPatch(patch).raw)) == patch


def fresh() -> DiffSession:
    session = DiffSession(1)
    session.receive(PEEK)
    session.data_to_send()  # the first rtn_data (mdhis_more_data)
    session.receive(PEEK)
    return session


def test_a_private_patch_after_shared_ones_leaves_their_bytes_as_they_are() -> None:
    session = fresh()
    one, two = SharedPatch({"quotes": {"A": {"p": 1}}}), SharedPatch({"quotes": {"B": {"p": 2}}})
    session.push_shared(one)
    session.push({"trade": {"u": {"accounts": {"CNY": {"balance": 1.0}}}}})
    session.push_shared(two)
    frame = session.data_to_send()
    assert frame == (
        b'{"aid":"rtn_data","data":[' + bytes(one.raw) + b',{"trade":{"u":{"accounts":{"CNY":{"balance":1.0}}}}},'
        + bytes(two.raw) + b"]}"
    )


def test_runs_past_the_limit_are_merged_into_one() -> None:
    session = fresh()
    tree: dict[str, Any] = {}
    for n in range(3 * MAX_RUNS):
        session.push_shared(SharedPatch({"quotes": {"A": {"n": n}}}))
        session.push({"trade": {"u": {"n": n}}})
    frame = session.data_to_send()
    data = json.loads(frame or b"")["data"]
    assert len(data) <= MAX_RUNS * (2 + MAX_SHARED_PENDING)
    for patch in data:
        merge_patch(tree, patch)
    last = 3 * MAX_RUNS - 1
    assert tree == {"quotes": {"A": {"n": last}}, "trade": {"u": {"n": last}}}


def test_the_pending_bound_counts_the_private_patches_of_every_run() -> None:
    session = DiffSession(1, max_pending=60)
    for n in range(MAX_RUNS - 1):  # each run's private patch is under the bound, all together over it
        session.push({"trade": {"u": {f"r{n}": {f"f{i}": i for i in range(20)}}}})
        session.push_shared(SharedPatch({"quotes": {"A": {"n": n}}}))
        assert not session.resync_needed
    session.push({"trade": {"u": {"last": {f"f{i}": i for i in range(20)}}}})
    session.push({"trade": {"u": {"more": 1}}})
    assert session.resync_needed
