"""JSON merge patches (RFC 7386): apply, coalesce, compute.

Every change qaex pushes over DIFF is a merge patch on the client's data tree: objects merge recursively,
``None`` deletes a key, anything else (lists included) replaces. Three operations live here, all pure:

* :func:`merge_patch` applies a patch in place (a user's snapshot, a test's model of the client);
* :class:`PendingPatches` accumulates the patches a session has not sent yet, coalesced so that memory
  stays proportional to what changed, not to how often it changed;
* :func:`diff` computes the patch between two trees (send only changed fields).

Ownership rule, relied on for speed: patch objects are shared (one engine patch is pushed to every session
of a user), so nothing here mutates a patch it is given and nothing stores a patch's *dicts* by reference —
a stored dict would later be merged into, corrupting the shared patch. Non-dict values (numbers, strings,
lists) are immutable by convention and are stored by reference, never copied.

All trees are plain ``dict`` with ``str`` keys (``type(x) is dict`` is tested, not ``isinstance``, because it
is faster on this hot path and msgspec decodes to plain dicts).
"""

from __future__ import annotations

from typing import Any

Patch = dict[str, Any]

_MISSING: Any = object()


def merge_patch(target: Patch, patch: Patch) -> None:
    """Apply ``patch`` to ``target`` in place, as a DIFF client does (RFC 7386).

    Dicts the patch inserts where ``target`` has no dict are copied (with their ``None`` members dropped, as
    RFC 7386 says), so later merges into ``target`` never write through into the caller's patch.
    """
    for key, value in patch.items():
        if type(value) is dict:
            current = target.get(key)
            if type(current) is dict:
                merge_patch(current, value)
            else:
                target[key] = _document_copy(value)[0]
        elif value is None:
            target.pop(key, None)
        else:
            target[key] = value


def diff(old: Patch, new: Patch) -> Patch | None:
    """The merge patch that turns ``old`` into ``new``; ``None`` when they are equal.

    ``new`` must not hold ``None`` values (a merge patch cannot express a JSON null, it means "delete").
    Values are equal only if they have the same type too, so ``1`` → ``1.0`` or ``True`` → ``1`` is sent.
    The result shares ``new``'s sub-dicts where a whole subtree is added: apply or encode it, don't keep it.
    """
    patch: Patch = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, new_value in new.items():
        old_value = old.get(key, _MISSING)
        if type(new_value) is dict and type(old_value) is dict:
            sub = diff(old_value, new_value)
            if sub is not None:
                patch[key] = sub
        elif old_value is _MISSING or not (
            old_value is new_value or (type(old_value) is type(new_value) and old_value == new_value)
        ):
            patch[key] = new_value
    return patch or None


def copy_tree(tree: Patch) -> Patch:
    """A copy of every dict in ``tree``; other values are shared (immutable by convention, see above).

    What a session's snapshot needs: the tree keeps changing after the copy, the copy must not. About 5×
    faster than ``copy.deepcopy``, which dispatches on and memoizes every value.
    """
    return {key: copy_tree(value) if type(value) is dict else value for key, value in tree.items()}


def tree_size(tree: Patch) -> int:
    """Number of keys in ``tree`` at every depth: the unit of :attr:`PendingPatches.size`."""
    size = len(tree)
    for value in tree.values():
        if type(value) is dict:
            size += tree_size(value)
    return size


class PendingPatches:
    """The patches one DIFF session has not sent yet, coalesced exactly.

    Invariant: applying :meth:`take`'s list in order to any tree gives the same tree as applying every
    :meth:`add`-ed patch one by one.

    Most patches simply merge into one dict (patch composition: later values win, objects compose
    recursively). The exception is the pitfall DIFF.md warns about: a patch that puts an object where a
    pending patch put ``None`` or a scalar means "replace with exactly this object", which one merge patch
    cannot say — merging it would leave the client's stale fields in place. Such paths are recorded as
    *resets*: :meth:`take` then returns two patches, ``[resets, merged]``, where ``resets`` holds ``None`` at
    each replaced path (clearing the client's old object) and ``merged`` the new content. Below a reset path
    ``merged`` holds the complete value, so later patches there are applied to it like to a document.
    Because of this normal form the list never grows beyond two elements, however patches alternate.

    :attr:`size` is a running estimate of the memory held, in dict keys at every depth (the unit of
    :func:`tree_size`): each key created counts once, overwriting a key is free, so updating the same
    account fields 100,000 times costs nothing extra. It never under-counts (a subtree replaced by a
    scalar keeps its count until :meth:`take`), which is the safe direction for a memory bound.
    """

    __slots__ = ("_borrowed", "_merged", "_resets", "_size")

    def __init__(self) -> None:
        self._merged: Patch = {}
        self._resets: Patch = {}
        self._size = 0
        # The first patch after a take is held by reference, not copied: a session that peeks
        # promptly sends each shared patch as it is, with no copy at all. A second add copies it
        # into `_merged` first, so shared patches are still never merged into.
        self._borrowed: Patch | None = None

    @property
    def size(self) -> int:
        if self._size < 0:  # counted on demand for a borrowed patch (see `add`)
            self._size = tree_size(self._borrowed) if self._borrowed is not None else 0
        return self._size

    @property
    def borrowing(self) -> bool:
        """Only one patch is pending and it is held by reference: nothing is copied, no memory is held."""
        return self._borrowed is not None

    def __bool__(self) -> bool:
        return bool(self._merged) or self._borrowed is not None

    def add(self, patch: Patch) -> None:
        """Coalesce ``patch`` into the pending state; ``patch`` is never mutated.

        It may be kept by reference until the next add or take (see ``_borrowed``): callers must not
        mutate a patch after adding it, which holds for the shared patches the exchange pushes.
        """
        if not patch:
            return
        if self._borrowed is None and not self._merged:
            self._borrowed = patch
            self._size = -1  # not counted unless asked: most borrowed patches are sent as they are
            return
        if self._borrowed is not None:
            borrowed, self._borrowed = self._borrowed, None
            self._size = 0
            self._compose(self._merged, borrowed, self._resets, [], False)
        self._compose(self._merged, patch, self._resets, [], False)

    def take(self) -> list[Patch]:
        """The coalesced patches to send, in order; the pending state is cleared.

        The result may share the added patches' objects: encode it, don't mutate it.
        """
        if self._borrowed is not None:
            patches = [self._borrowed]
            self._borrowed = None
            self._size = 0
            return patches
        if not self._merged:
            return []
        patches = [self._resets, self._merged] if self._resets else [self._merged]
        self._merged = {}
        self._resets = {}
        self._size = 0
        return patches

    def _compose(
        self, merged: Patch, patch: Patch, resets: Patch | None, path: list[str], replaced: bool
    ) -> None:
        """Fold ``patch`` into ``merged`` (the pending patch at ``path``).

        ``resets`` is the resets node at ``path`` (``None`` if none exists yet; it is created on demand).
        ``replaced`` is true below a reset path: there ``merged`` is the client's complete value.
        """
        for key, value in patch.items():
            if type(value) is dict:
                current = merged.get(key, _MISSING)
                if type(current) is dict:
                    child_resets: Patch | None = None
                    child_replaced = replaced
                    if not replaced and resets is not None:
                        reset = resets.get(key, _MISSING)
                        if reset is None:
                            child_replaced = True
                        elif type(reset) is dict:
                            child_resets = reset
                    path.append(key)
                    self._compose(current, value, child_resets, path, child_replaced)
                    path.pop()
                elif replaced:
                    copy, count = _document_copy(value)
                    merged[key] = copy
                    self._size += count + (current is _MISSING)
                elif current is _MISSING:
                    # Nothing pending here: the patch applies to the client's value as it stands.
                    copy, count = _patch_copy(value)
                    merged[key] = copy
                    self._size += count + 1
                else:
                    # Pending put null or a scalar here: the object must replace, not merge (see class doc).
                    if resets is None:
                        resets = self._resets
                        for step in path:
                            node = resets.get(step)
                            if node is None:
                                node = resets[step] = {}
                                self._size += 1
                            resets = node
                    if key not in resets:
                        self._size += 1
                    resets[key] = None
                    copy, count = _document_copy(value)
                    merged[key] = copy
                    self._size += count
            elif replaced and value is None:
                merged.pop(key, None)
            else:
                if key not in merged:
                    self._size += 1
                merged[key] = value
                if resets is not None:
                    # A value overrides everything before it at this path: the reset is moot.
                    resets.pop(key, None)


def _patch_copy(patch: Patch) -> tuple[Patch, int]:
    """Copy the dicts of a patch (``None`` kept: it deletes); also return the number of keys copied."""
    count = len(patch)
    copy = patch.copy()
    for key, value in patch.items():
        if type(value) is dict:
            copy[key], sub_count = _patch_copy(value)
            count += sub_count
    return copy, count


def _document_copy(patch: Patch) -> tuple[Patch, int]:
    """``MergePatch({}, patch)``: a copy of ``patch`` without its ``None`` members; also the key count."""
    copy: Patch = {}
    count = 0
    for key, value in patch.items():
        if type(value) is dict:
            copy[key], sub_count = _document_copy(value)
            count += sub_count + 1
        elif value is not None:
            copy[key] = value
            count += 1
    return copy, count
