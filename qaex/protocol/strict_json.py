"""Decoding client JSON strictly: one typed decode, in bounded time, with duplicate keys refused.

Every HTTP body and DIFF frame is decoded by msgspec straight into its type (linear in the input,
numbers range-checked, nesting bounded by the type). Two things msgspec lets through are refused
here, in one place for both transports:

- **deep nesting** inside a value the type does not constrain (an unknown field, which DIFF skips):
  msgspec stops at the interpreter's recursion limit with ``RecursionError``; that becomes an ordinary
  decode error instead of escaping as an internal one;
- **duplicate keys** (``{"direction": "BUY", "direction": "SELL"}``): msgspec keeps the last, another
  parser might keep the first, so the sender's intent is ambiguous and the message is refused. The
  check runs only on a message that already decoded (so it sees a bounded, typed document) and uses the
  standard library's C scanner (linear; a number too long for ``int`` ends the check, not the server).
"""

from __future__ import annotations

import json
from typing import Any, Final, TypeVar

import msgspec

T = TypeVar("T")

MAX_DEPTH_MESSAGE: Final = "JSON nested too deeply"


class StrictJsonError(ValueError):
    """The document is not acceptable; the message says why (safe to show the sender)."""


class _Duplicate(Exception):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> None:
    if len(pairs) != len(dict(pairs)):  # the common case costs one C-level dict
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _Duplicate(key)
            seen.add(key)


_scanner: Final = json.JSONDecoder(object_pairs_hook=_pairs, parse_int=len)
UNCHECKABLE: Final = "\0"
"""What :func:`duplicate_key` returns for a document it cannot read (never a JSON key: it is escaped)."""


def duplicate_key(data: bytes | str) -> str | None:
    """The first key that appears twice in one object of `data`, or None.

    ``UNCHECKABLE`` when the standard library cannot read a document msgspec accepted: invalid UTF-8
    or nesting deeper than it follows, inside a field msgspec skipped. Such a document could hide a
    repeated key, so the caller refuses it. Integers are not converted (``parse_int=len``: linear, and
    no int-string limit). About 1 µs per 100 bytes of a flat object.
    """
    try:
        _scanner.decode(data.decode() if isinstance(data, bytes) else data)
    except _Duplicate as exc:
        return exc.key
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return UNCHECKABLE
    return None


def key_problem(data: bytes | str) -> str | None:
    """Why `data` (accepted by msgspec) must still be refused: a duplicate key, or None."""
    key = duplicate_key(data)
    if key is None:
        return None
    if key == UNCHECKABLE:
        return "cannot check the document for duplicate keys (invalid UTF-8 or nested too deeply)"
    return f"duplicate key {error_text(key, 64)!r}"


MAX_ERROR_TEXT: Final = 300
"""Characters of a decoder's message shown to a client: msgspec quotes the offending value."""


def error_text(value: object, limit: int = MAX_ERROR_TEXT) -> str:
    """``str(value)``, cut to `limit` characters (a refusal must not echo a megabyte back)."""
    text = str(value)
    return text if len(text) <= limit else f"{text[: limit - 1]}…"


def decode(data: bytes | str, decoder: msgspec.json.Decoder[T]) -> T:
    """``decoder.decode(data)``, refusing duplicate keys; every refusal is a StrictJsonError whose
    message (msgspec's, cut to MAX_ERROR_TEXT) says what is wrong and where."""
    try:
        value = decoder.decode(data)
    except (msgspec.ValidationError, msgspec.DecodeError) as exc:
        raise StrictJsonError(error_text(exc)) from None
    except RecursionError:
        raise StrictJsonError(MAX_DEPTH_MESSAGE) from None
    problem = key_problem(data)
    if problem is not None:
        raise StrictJsonError(problem)
    return value
