"""Merge patches: apply (RFC 7386), coalesce (PendingPatches), compute (diff)."""

from __future__ import annotations

import copy
from typing import Any

from qaex.core.patch import PendingPatches, copy_tree, diff, merge_patch, tree_size


def applied(tree: dict[str, Any], *patches: dict[str, Any]) -> dict[str, Any]:
    result = copy.deepcopy(tree)
    for patch in patches:
        merge_patch(result, patch)
    return result


def coalesced(*patches: dict[str, Any]) -> list[dict[str, Any]]:
    pending = PendingPatches()
    for patch in patches:
        pending.add(patch)
    return pending.take()


# -- merge_patch ---------------------------------------------------------------------------------------


def test_merge_null_deletes_key() -> None:
    assert applied({"a": 1, "b": 2}, {"a": None}) == {"b": 2}


def test_merge_null_for_missing_key_is_noop() -> None:
    assert applied({"b": 2}, {"a": None}) == {"b": 2}


def test_merge_objects_merge_recursively() -> None:
    tree = {"orders": {"o1": {"status": "ALIVE", "volume_left": 2}}}
    assert applied(tree, {"orders": {"o1": {"volume_left": 0}}}) == {
        "orders": {"o1": {"status": "ALIVE", "volume_left": 0}}
    }


def test_merge_arrays_replace() -> None:
    assert applied({"t": [1, 2, 3]}, {"t": [4]}) == {"t": [4]}


def test_merge_object_replaces_scalar_without_its_nulls() -> None:
    assert applied({"a": 5}, {"a": {"x": 1, "y": None}}) == {"a": {"x": 1}}


def test_merge_scalar_replaces_object() -> None:
    assert applied({"a": {"x": 1}}, {"a": 7}) == {"a": 7}


def test_merge_inserted_dicts_are_not_aliased_to_the_patch() -> None:
    patch = {"orders": {"o1": {"status": "ALIVE"}}}
    tree: dict[str, Any] = {}
    merge_patch(tree, patch)
    merge_patch(tree, {"orders": {"o1": {"status": "FINISHED"}}})
    assert patch == {"orders": {"o1": {"status": "ALIVE"}}}


# -- diff ----------------------------------------------------------------------------------------------


def test_diff_of_equal_trees_is_none() -> None:
    assert diff({"a": {"b": 1}}, {"a": {"b": 1}}) is None


def test_diff_sends_only_changed_fields() -> None:
    old = {"q": {"last_price": 1.0, "volume": 5, "name": "cu"}}
    new = {"q": {"last_price": 2.0, "volume": 5, "name": "cu"}}
    assert diff(old, new) == {"q": {"last_price": 2.0}}


def test_diff_marks_removed_keys_with_null() -> None:
    assert diff({"a": 1, "b": 2}, {"a": 1}) == {"b": None}


def test_diff_adds_new_subtree() -> None:
    assert diff({}, {"o": {"x": 1}}) == {"o": {"x": 1}}


def test_diff_treats_type_change_as_change() -> None:
    assert diff({"a": 1}, {"a": 1.0}) == {"a": 1.0}


def test_diff_applied_to_old_gives_new() -> None:
    old = {"a": {"b": 1, "c": [1]}, "d": 3, "e": {"f": 1}}
    new = {"a": {"b": 2, "c": [1]}, "e": 4, "g": {"h": {"i": 1}}}
    patch = diff(old, new)
    assert patch is not None
    assert applied(old, patch) == new


# -- PendingPatches --------------------------------------------------------------------------------------


def test_pending_usually_coalesces_into_one_patch() -> None:
    patches: list[dict[str, Any]] = [
        {"trade": {"u": {"accounts": {"CNY": {"balance": 1.0, "available": 1.0}}}}},
        {"trade": {"u": {"orders": {"o1": {"status": "ALIVE", "volume_left": 1}}}}},
        {"trade": {"u": {"accounts": {"CNY": {"balance": 2.0}}, "orders": {"o1": {"volume_left": 0}}}}},
    ]
    assert coalesced(*patches) == [
        {
            "trade": {
                "u": {
                    "accounts": {"CNY": {"balance": 2.0, "available": 1.0}},
                    "orders": {"o1": {"status": "ALIVE", "volume_left": 0}},
                }
            }
        }
    ]


def test_pending_keeps_nulls_of_patches() -> None:
    assert coalesced({"orders": {"o1": {"a": 1}}}, {"orders": {"o2": None}}) == [
        {"orders": {"o1": {"a": 1}, "o2": None}}
    ]


def test_pending_null_then_object_replaces_without_stale_fields() -> None:
    client = {"orders": {"o1": {"status": "FINISHED", "stale": 1}}}
    patches: list[dict[str, Any]] = [{"orders": {"o1": None}}, {"orders": {"o1": {"status": "ALIVE"}}}]
    assert applied(client, *coalesced(*patches)) == {"orders": {"o1": {"status": "ALIVE"}}}


def test_pending_scalar_then_object_replaces_without_stale_fields() -> None:
    client = {"x": {"stale": 1}}
    patches: list[dict[str, Any]] = [{"x": 5}, {"x": {"fresh": 2}}]
    assert applied(client, *coalesced(*patches)) == applied(client, *patches) == {"x": {"fresh": 2}}


def test_pending_object_null_object_replaces_without_stale_fields() -> None:
    client = {"o": {"stale": 1}}
    patches: list[dict[str, Any]] = [{"o": {"a": 1}}, {"o": None}, {"o": {"b": 2}}]
    assert applied(client, *coalesced(*patches)) == {"o": {"b": 2}}


def test_pending_patch_after_replacement_merges_into_the_new_object() -> None:
    client = {"o": {"stale": 1}}
    patches: list[dict[str, Any]] = [{"o": None}, {"o": {"a": 1, "b": 2}}, {"o": {"b": None, "c": 3}}]
    assert applied(client, *coalesced(*patches)) == {"o": {"a": 1, "c": 3}}


def test_pending_alternating_delete_and_create_stays_two_patches() -> None:
    patches: list[dict[str, Any]] = []
    for n in range(100):
        patches += [{"o": None}, {"o": {"n": n}}]
    result = coalesced(*patches)
    assert len(result) == 2
    assert applied({"o": {"stale": 1}}, *result) == {"o": {"n": 99}}


def test_pending_does_not_mutate_added_patches() -> None:
    first = {"trade": {"u": {"orders": {"o1": {"status": "ALIVE"}}}}}
    second = {"trade": {"u": {"orders": {"o1": {"status": "FINISHED"}}}}}
    snapshot = copy.deepcopy([first, second])
    pending = PendingPatches()
    pending.add(first)
    pending.add(second)
    pending.add({"trade": {"u": {"orders": {"o1": None}}}})
    pending.add({"trade": {"u": {"orders": {"o1": {"x": 1}}}}})
    assert [first, second] == snapshot


def test_pending_later_patches_do_not_write_into_earlier_ones_through_take() -> None:
    shared = {"q": {"a": 1}}
    one, other = PendingPatches(), PendingPatches()
    one.add(shared)
    other.add(shared)
    one.add({"q": {"a": 2}})
    assert other.take() == [{"q": {"a": 1}}]


def test_pending_is_false_when_empty_and_after_take() -> None:
    pending = PendingPatches()
    assert not pending
    pending.add({"a": 1})
    assert pending
    pending.take()
    assert not pending
    assert pending.take() == []


def test_pending_size_counts_new_keys_only() -> None:
    pending = PendingPatches()
    pending.add({"acc": {"balance": 1.0, "available": 1.0}})
    assert pending.size == 3
    for n in range(1000):
        pending.add({"acc": {"balance": float(n), "available": float(n)}})
    assert pending.size == 3


def test_pending_size_grows_with_new_keys_and_resets_on_take() -> None:
    pending = PendingPatches()
    for n in range(10):
        pending.add({"trades": {f"t{n}": {"volume": 1, "price": 2.0}}})
    assert pending.size == 1 + 10 * 3
    pending.take()
    assert pending.size == 0


def test_pending_size_never_undercounts() -> None:
    pending = PendingPatches()
    patches: list[dict[str, Any]] = [
        {"o": {"a": {"b": 1}}},
        {"o": None},
        {"o": {"c": {"d": 2, "e": None}}},
        {"p": [1, 2]},
    ]
    for patch in patches:
        pending.add(patch)
    assert pending.size >= sum(tree_size(patch) for patch in pending.take())


def test_tree_size_counts_keys_at_every_depth() -> None:
    assert tree_size({"a": 1, "b": {"c": 1, "d": {"e": 1}}}) == 5


def test_copy_tree_copies_every_dict_and_shares_the_rest() -> None:
    levels = [1, 2]
    tree = {"a": {"b": {"c": 1.5}, "d": "x"}, "e": levels}
    copied = copy_tree(tree)
    assert copied == tree
    copied["a"]["b"]["c"] = 2.0
    copied["a"]["new"] = 1
    assert tree == {"a": {"b": {"c": 1.5}, "d": "x"}, "e": levels}  # the original is untouched
    assert copied["e"] is levels  # lists are immutable by convention: shared, not copied
