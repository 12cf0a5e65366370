"""Properties of merge patches: coalescing is exact, diff is the inverse of apply."""

from __future__ import annotations

import copy
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.patch import PendingPatches, diff, merge_patch, tree_size

keys = st.sampled_from(["a", "b", "c", "d"])
scalars = st.one_of(st.integers(-3, 3), st.sampled_from(["x", "y"]), st.lists(st.integers(0, 2), max_size=2))

# Documents (what a client holds) have no nulls; patches do (null = delete).
documents = st.recursive(scalars, lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=12)
patch_values = st.recursive(
    st.one_of(scalars, st.none()), lambda children: st.dictionaries(keys, children, max_size=4), max_leaves=10
)
trees = st.dictionaries(keys, documents, max_size=4)
patches = st.dictionaries(keys, patch_values, max_size=4)


def applied(tree: dict[str, Any], patch_list: list[dict[str, Any]]) -> dict[str, Any]:
    result = copy.deepcopy(tree)
    for patch in patch_list:
        merge_patch(result, patch)
    return result


@settings(max_examples=200)
@given(trees, st.lists(patches, max_size=8))
def test_coalesced_patches_apply_like_the_originals(tree: dict[str, Any], patch_list: list[Any]) -> None:
    pending = PendingPatches()
    for patch in patch_list:
        pending.add(patch)
    assert applied(tree, pending.take()) == applied(tree, patch_list)


@settings(max_examples=100)
@given(trees, st.lists(st.lists(patches, max_size=4), max_size=4))
def test_coalescing_is_exact_across_several_takes(tree: dict[str, Any], batches: list[Any]) -> None:
    pending = PendingPatches()
    client = copy.deepcopy(tree)
    for batch in batches:
        for patch in batch:
            pending.add(patch)
        for patch in pending.take():
            merge_patch(client, patch)
    assert client == applied(tree, [patch for batch in batches for patch in batch])


@given(st.lists(patches, max_size=8))
def test_coalescing_never_mutates_the_added_patches(patch_list: list[Any]) -> None:
    before = copy.deepcopy(patch_list)
    pending = PendingPatches()
    for patch in patch_list:
        pending.add(patch)
    taken = pending.take()
    more = PendingPatches()
    for patch in taken:  # what was taken is only read (encoded, or merged from), never written
        more.add(patch)
    more.take()
    assert patch_list == before


@given(st.lists(patches, max_size=8))
def test_pending_size_bounds_the_coalesced_size(patch_list: list[Any]) -> None:
    pending = PendingPatches()
    for patch in patch_list:
        pending.add(patch)
    size = pending.size
    assert size >= sum(tree_size(patch) for patch in pending.take())


@given(trees, trees)
def test_diff_applied_to_old_gives_new(old: dict[str, Any], new: dict[str, Any]) -> None:
    patch = diff(old, new)
    if patch is None:
        assert old == new
    else:
        assert applied(old, [patch]) == new


@given(trees)
def test_diff_of_a_tree_with_itself_is_none(tree: dict[str, Any]) -> None:
    assert diff(tree, copy.deepcopy(tree)) is None
