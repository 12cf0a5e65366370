"""Fuzzing every decoder of client input (issue #13): a clear error or a valid value, fast, never a crash.

Hypothesis drives each entry point a client reaches with bytes of its choosing:

- every DIFF frame, through ``DiffSession(1).receive(frame)`` (``diff.decode_client_message``), on a
  session not logged in and on one logged in as ``alice``;
- every HTTP request body type, through ``strict_json.decode(data, msgspec.json.Decoder(Type))`` as
  ``qaex.api.http.decode`` calls it;
- ``ins_query.answer(query, instruments, variables)``, directly and with what an accepted ``ins_query``
  frame carries;
- the HTTP query integers (``?count=``, ``?levels=``, ``?duration=``): ``qaex.api.http.query_int`` and
  the routes that read them, in a real Quart request context (market data stubbed out).

Inputs are random JSON trees (huge integers, extreme floats, -0.0, unicode), raw bytes and text,
truncated frames, and *structured* messages: one valid-ish message of every type, built from the type's
own msgspec description, with fields swapped for hostile values (5,000-digit numbers, 1e400, strings up
to 1 MiB, nesting 100,000 deep, invalid UTF-8, a trailing newline), fields dropped, unknown fields
added and keys repeated.

The properties:

- DIFF: ``receive`` never raises; it returns one event of the message types whose every field is
  inside the bounds its type declares (patterns match the *whole* string, floats are finite), or
  nothing with exactly one ERROR notify (490/491 for a frame that is not a valid message; 400/408/418
  for a valid message this session refuses), or nothing at all for a peek / confirm_settlement. A frame
  repeating a key is never accepted (peek_message aside, by design). An error text stays short.
- HTTP: decoding raises only ``ValidationError`` / ``DecodeError`` / ``StrictJsonError``, or returns a
  value inside the declared bounds (``InstrumentSpec``: inside ``Instrument``'s bounds).
- ins_query: raises only ``UnsupportedQuery`` or answers with listed contracts only.
- HTTP query integers: a 400 naming the parameter, or a value in its range; never another exception.
- Every call takes less than ``BUDGET_SECONDS``, generous so that it cannot flake (see :func:`timed`).
  The slowest call of each entry point is printed at the end of the module.

``QAEX_FUZZ_SCALE=10 pytest tests/test_fuzz_decoders.py`` runs ten times as many examples.
"""

from __future__ import annotations

import contextlib
import gc
import json
import math
import os
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar
from unittest import mock

import msgspec
import msgspec.inspect as mi
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from quart_trio import QuartTrio

from qaex.api import http as api
from qaex.core import ins_query, limits
from qaex.core.chart import MAX_VIEW_WIDTH
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.protocol import diff, strict_json
from qaex.protocol import http as proto
from qaex.protocol.diff import ClientEvent
from qaex.protocol.session import DiffSession

T = TypeVar("T")

BUDGET_SECONDS = 0.050
"""Longest any one call may take. Observed on the shared 2-core machine, under load: at most ~20 ms
wall-clock, ~3 ms CPU (1 MiB frames, ins_query lists of 4,096 items)."""

MAX_ERROR_TEXT = 1024
"""Longest error text a client may get back: a clear error quotes at most an excerpt of the input."""

SCALE = float(os.environ.get("QAEX_FUZZ_SCALE", "1"))


def fuzz(examples: int) -> settings:
    return settings(
        max_examples=max(1, int(examples * SCALE)),
        deadline=None,  # timing is a property here, measured around the call itself
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.large_base_example,
        ],
    )


USER = "alice"
PEEK = b'{"aid":"peek_message"}'
EVENT_TYPES: tuple[type, ...] = ClientEvent.__args__
DIFF_TYPES: tuple[type, ...] = diff.ClientMessage.__args__
BODY_TYPES: tuple[type, ...] = (
    proto.OpenAccountRequest,
    proto.LoginRequest,
    proto.AmountRequest,
    proto.SubmitOrderRequest,
    proto.CancelOrderRequest,
    proto.SettleRequest,
    proto.AdminDepositRequest,
    proto.InstrumentSpec,
    proto.HistoryImportRequest,
    proto.HistoryFile,  # a part of HistoryImportRequest
)
"""Every request body of qaex.protocol.http (test_every_request_body_type_is_fuzzed keeps it complete)."""
BODY_DECODERS = {body_type: msgspec.json.Decoder(body_type) for body_type in BODY_TYPES}
INSTRUMENTS = InstrumentRegistry()
SYMBOLS = sorted(INSTRUMENTS)


# -- timing ----------------------------------------------------------------------------------------------------
@dataclass
class Worst:
    """The slowest calls seen for one entry point.

    ``seconds``: wall-clock time (perf_counter) of the slowest call, after re-measuring it if its first
    run was over the budget (this is what is asserted); ``first``: the slowest first run, re-measured or
    not (a collection of the test's garbage, another process on the CPU); ``cpu``: the most CPU time
    any call took."""

    seconds: float = 0.0
    what: str = ""
    first: float = 0.0
    cpu: float = 0.0
    calls: int = 0
    remeasured: int = 0

    def record(self, first: float, wall: float, cpu: float, what: Callable[[], str]) -> None:
        self.calls += 1
        self.first = max(self.first, first)
        self.cpu = max(self.cpu, cpu)
        if wall > self.seconds:
            self.seconds, self.what = wall, what()


WORST: dict[str, Worst] = {}
RETRIES = 4


def timed(label: str, what: Callable[[], str], setup: Callable[[], Callable[[], T]]) -> T:
    """``setup()()`` timed around the call alone; fails if it is slower than BUDGET_SECONDS.

    Wall-clock time (perf_counter) is what counts, but on a shared 2-core machine it also counts the
    time other processes held the CPU. So a run above the budget is repeated on fresh state, with the
    garbage collector off, up to RETRIES times; the call fails only if no run is within the budget in
    wall-clock time *and* none is within it in CPU time (``thread_time``: this thread's own work).
    """
    call = setup()
    wall, cpu = time.perf_counter(), time.thread_time()
    result = call()
    wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
    first = wall
    worst = WORST.setdefault(label, Worst())
    if wall > BUDGET_SECONDS:
        worst.remeasured += 1
        enabled = gc.isenabled()
        gc.disable()
        try:
            for _ in range(RETRIES):
                time.sleep(0.01)
                call = setup()
                again, again_cpu = time.perf_counter(), time.thread_time()
                call()
                wall = min(wall, time.perf_counter() - again)
                cpu = min(cpu, time.thread_time() - again_cpu)
                if wall <= BUDGET_SECONDS:
                    break
        finally:
            if enabled:
                gc.enable()
    worst.record(first, wall, cpu, what)
    assert wall <= BUDGET_SECONDS or cpu <= BUDGET_SECONDS, (
        f"{label} took {wall * 1e3:.1f} ms ({cpu * 1e3:.1f} ms of CPU) at best of {RETRIES + 1} on {what()}"
    )
    return result


@pytest.fixture(scope="module", autouse=True)
def _report_worst_times(request: pytest.FixtureRequest) -> Iterator[None]:
    """Print the slowest call of each entry point once the module is done (past pytest's capture)."""
    yield
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if reporter is None or not WORST:
        return
    lines = [f"fuzz: slowest call per entry point (budget {BUDGET_SECONDS * 1e3:.0f} ms)"]
    for label, worst in sorted(WORST.items()):
        lines.append(
            f"  {label:<26} {worst.seconds * 1e3:6.2f} ms ({worst.cpu * 1e3:6.2f} ms CPU; first runs up to"
            f" {worst.first * 1e3:6.2f} ms, {worst.remeasured} re-measured) over {worst.calls} calls;"
            f" slowest: {worst.what[:70]}"
        )
    with capture.global_and_fixture_disabled() if capture is not None else contextlib.nullcontext():
        reporter.write_line("")
        for line in lines:
            reporter.write_line(line)


# -- bounds, from the types' own description --------------------------------------------------------------------
def _intended_pattern(pattern: str) -> re.Pattern[str]:
    """``^X$`` means the whole string matches X (Python's ``$`` also matches before a final newline)."""
    if pattern.startswith("^") and pattern.endswith("$"):
        return re.compile(r"(?:" + pattern[1:-1] + r")\Z")
    return re.compile(pattern)


_PATTERNS: dict[str, re.Pattern[str]] = {}


def check_bounds(value: Any, kind: mi.Type, where: str = "$") -> None:
    """Assert `value` is inside what `kind` declares, checked independently of msgspec's decoder."""
    if isinstance(kind, mi.Metadata):
        check_bounds(value, kind.type, where)
    elif isinstance(kind, mi.UnionType):
        problems = []
        for member in kind.types:
            try:
                check_bounds(value, member, where)
                return
            except AssertionError as exc:
                problems.append(str(exc))
        raise AssertionError(" / ".join(problems))
    elif isinstance(kind, mi.NoneType):
        assert value is None, f"{where}: {value!r} is not None"
    elif isinstance(kind, mi.AnyType):
        pass
    elif isinstance(kind, mi.BoolType):
        assert type(value) is bool, f"{where}: {value!r} is not a bool"
    elif isinstance(kind, mi.IntType | mi.FloatType):
        expected = int if isinstance(kind, mi.IntType) else float
        assert type(value) is expected, f"{where}: {_short(value)} is not {expected.__name__}"
        assert not isinstance(value, float) or math.isfinite(value), f"{where}: {value!r} is not finite"
        assert kind.ge is None or value >= kind.ge, f"{where}: {_short(value)} < {kind.ge}"
        assert kind.gt is None or value > kind.gt, f"{where}: {_short(value)} <= {kind.gt}"
        assert kind.le is None or value <= kind.le, f"{where}: {_short(value)} > {kind.le}"
        assert kind.lt is None or value < kind.lt, f"{where}: {_short(value)} >= {kind.lt}"
    elif isinstance(kind, mi.StrType):
        assert type(value) is str, f"{where}: {_short(value)} is not a str"
        value.encode()  # no lone surrogate
        assert kind.min_length is None or len(value) >= kind.min_length, f"{where}: {value!r} too short"
        assert kind.max_length is None or len(value) <= kind.max_length, f"{where}: {_short(value)} too long"
        if kind.pattern is not None:
            pattern = _PATTERNS.get(kind.pattern) or _PATTERNS.setdefault(
                kind.pattern, _intended_pattern(kind.pattern)
            )
            assert pattern.match(value), (
                f"{where}: {_short(value)} does not match {kind.pattern!r} as a whole"
            )
    elif isinstance(kind, mi.LiteralType):
        assert value in kind.values, f"{where}: {_short(value)} is not one of {kind.values}"
    elif isinstance(kind, mi.ListType):
        assert type(value) is list, f"{where}: {_short(value)} is not a list"
        _check_length(value, kind, where)
        for index, item in enumerate(value):
            check_bounds(item, kind.item_type, f"{where}[{index}]")
    elif isinstance(kind, mi.DictType):
        assert type(value) is dict, f"{where}: {_short(value)} is not a dict"
        _check_length(value, kind, where)
        for key, item in value.items():
            check_bounds(key, kind.key_type, f"{where} key {_short(key)}")
            check_bounds(item, kind.value_type, f"{where}[{_short(key)}]")
    elif isinstance(kind, mi.StructType):
        assert isinstance(value, kind.cls), f"{where}: {_short(value)} is not a {kind.cls.__name__}"
        for struct_field in kind.fields:
            check_bounds(getattr(value, struct_field.name), struct_field.type, f"{where}.{struct_field.name}")
    else:  # pragma: no cover - a type this file does not know yet
        raise AssertionError(f"{where}: no bound check for {kind!r}")


def _check_length(value: list[Any] | dict[Any, Any], kind: mi.ListType | mi.DictType, where: str) -> None:
    assert kind.min_length is None or len(value) >= kind.min_length, f"{where}: {len(value)} items, too few"
    assert kind.max_length is None or len(value) <= kind.max_length, f"{where}: {len(value)} items, too many"


def _short(value: Any) -> str:
    text = (
        repr(value)
        if not isinstance(value, int) or abs(value) < 10**40
        else f"<int of {len(str(value))} digits>"
    )
    return text if len(text) <= 80 else text[:60] + f"...({len(text)} chars)"


_INSTRUMENT_FIELDS = {f.name: f.type for f in mi.type_info(Instrument).fields}


def check_body_bounds(value: Any) -> None:
    """A decoded HTTP body is inside its type's bounds; an InstrumentSpec inside Instrument's own bounds
    (it is the same contract, every field optional but the symbol's two parts)."""
    if type(value) is proto.InstrumentSpec:
        for name in value.__struct_fields__:
            item = getattr(value, name)
            if item is not msgspec.UNSET:
                check_bounds(item, _INSTRUMENT_FIELDS[name], f"$.{name}")
        return
    check_bounds(value, mi.type_info(type(value)))
    # The constants themselves, not only what the types say (a type could lose its Meta).
    if type(value) is proto.SubmitOrderRequest:
        assert 1 <= value.volume <= limits.MAX_ORDER_VOLUME
        for price in (value.price, value.limit_price):
            assert price is None or 0 <= price <= limits.MAX_PRICE
    elif type(value) in (proto.AmountRequest, proto.AdminDepositRequest):
        assert 0 < value.amount <= limits.MAX_AMOUNT
    elif type(value) is proto.OpenAccountRequest:
        assert value.init_cash is None or 0 <= value.init_cash <= limits.MAX_AMOUNT


def check_event_bounds(message: Any) -> None:
    check_bounds(message, mi.type_info(type(message)))
    if isinstance(message, diff.InsertOrderMessage):
        assert 1 <= message.volume <= limits.MAX_ORDER_VOLUME
        assert 0 <= message.limit_price <= limits.MAX_PRICE
        assert re.fullmatch(r"[A-Za-z0-9_.:|@#+=-]{1,64}", message.order_id), _short(message.order_id)
        assert re.fullmatch(r"[A-Za-z0-9_-]{1,64}", message.user_id), _short(message.user_id)
    elif isinstance(message, diff.ReqTransfer):
        assert abs(message.amount) <= limits.MAX_AMOUNT


# -- hostile values --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Raw:
    """A piece of JSON text (maybe invalid), with a short name for reports."""

    data: bytes
    name: str = ""
    repeats_a_key: bool = False  # an object inside repeats a key

    def __repr__(self) -> str:
        if self.name:
            return f"<{self.name}>"
        text = self.data.decode(errors="backslashreplace")
        return text if len(text) <= 80 else f"{text[:60]}...({len(self.data)} bytes)"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def raw(text: str | bytes, name: str = "", repeats_a_key: bool = False) -> Raw:
    return Raw(text.encode() if isinstance(text, str) else text, name, repeats_a_key)


MIB = 1 << 20
HUGE_INTS = [2**63 - 1, 2**63, -(2**63), -(2**63) - 1, 2**64 - 1, 2**64, 10**400, -(10**400), 10**4000]
EXTREME_FLOATS = [1e308, -1e308, 1.7976931348623157e308, -0.0, 5e-324, 1e-300, 1e9, 1e12, 1e15]

# Smallest first: Hypothesis shrinks a sampled value towards the start of a list.
# fmt: off
HOSTILE_NUMBERS: list[Raw] = [
    raw("0"), raw("-0"), raw("-0.0"), raw("-1"), raw("0.5"), raw("1.0"), raw("100000"), raw("100001"),
    *(raw(str(number)) for number in HUGE_INTS[:-1]), raw(str(10**4000), "10**4000"),
    raw("1" * 5000, "'1'*5000"), raw("-" + "9" * 5000, "'-'+'9'*5000"),
    raw("0." + "0" * 4998 + "1", "0.(4998 zeros)1"), raw("1" + "0" * 5000 + "e-5000", "1(5000 zeros)e-5000"),
    *(raw(repr(number)) for number in EXTREME_FLOATS),
    raw("1e400"), raw("-1e400"), raw("1e-400"), raw("1000000000.0000002"), raw("1000000000000.0002"),
    raw("18446744073709551616.0"), raw("1E5"), raw("-1e-7"),
]
HOSTILE_STRINGS: list[Raw] = [
    raw('""'), raw('"0"'), raw('"alice\\n"'), raw('"\\n"'), raw('"a\\u0000b"'), raw('"\\u0430lice"'),
    raw('"a b"'), raw('"a/b?c%d&e"'), raw('"\\u0661\\u0662"'), raw('"\\ud835\\udfd9"'), raw('"é"'),
    raw('"\\ud800"'), raw('"\\udc00\\ud800"'), raw('"\\x41"'),
    raw(b'"\xff"'), raw(b'"\xed\xa0\x80"'), raw(b'"\xc0\xaf"'), raw(b'"a\x00b"'), raw(b'"a\nb"'),
    raw('"' + "x" * 17 + '"', "'x'*17"), raw('"' + "x" * 33 + '"', "'x'*33"), raw('"' + "x" * 65 + '"', "'x'*65"),
    raw('"' + "x" * 257 + '"', "'x'*257"), raw('"' + "x" * 65_537 + '"', "'x'*65537"),
    raw('"' + "x" * MIB + '"', "'x'*1MiB"), raw('"' + "é" * (MIB // 2) + '"', "'é'*512Ki"),
    raw('"' + "\\u0041" * (MIB // 6) + '"', "'\\u0041'*174762"),
]
HOSTILE: list[Raw] = [
    raw("null"), raw("true"), *HOSTILE_NUMBERS[:6], *HOSTILE_STRINGS[:6],
    raw("[]"), raw("{}"), raw("[1]"), raw('{"k":1,"k":2}', repeats_a_key=True),
    raw('[{"a":1,"a":1}]', repeats_a_key=True), *HOSTILE_NUMBERS[6:], *HOSTILE_STRINGS[6:],
    raw("NaN"), raw("Infinity"), raw("-Infinity"), raw("01"), raw("1."), raw(".5"), raw("+1"), raw("0x10"),
    raw("'a'"), raw('"abc'), raw('"\\"'),
    raw("[" + ",".join(["1"] * 100_000) + "]", "[1]*100000"),
    raw("[" * 100_000 + "]" * 100_000, "[]*100000 deep"), raw("[" * 100_000, "[*100000 unclosed"),
    raw('{"a":' * 50_000 + "1" + "}" * 50_000, "{a:}*50000 deep"), raw("[" * 990 + "]" * 990, "[]*990 deep"),
    raw("[1,2,"), raw('{"a":}'), raw('{"a" 1}'), raw("[1]]"),
]
# fmt: on
SKIPPABLE: list[Raw] = [
    raw("1" * 5000, "'1'*5000"),
    raw(b'"\xff"'),
    raw(str(10**4000), "10**4000"),
    raw("1e400"),
    raw('"' + "x" * MIB + '"', "'x'*1MiB"),
    raw("[" * 900 + "]" * 900, "[]*900 deep"),
]  # fmt: skip
"""Valid enough JSON for msgspec to skip in an unknown field, odd enough to trouble another parser."""
HOSTILE_KEYS: list[Raw] = [
    raw('""'),
    raw('"aid"'),
    raw('"AID"'),
    raw('"aid "'),
    raw('"\\u0061id"'),
    raw('"é"'),
    raw(b'"\xff"'),
    raw('"' + "k" * 300 + '"', "'k'*300"),
    raw('"' + "k" * MIB + '"', "'k'*1MiB"),
    raw("1"),
    raw("null"),
]

json_scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(HUGE_INTS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from(EXTREME_FLOATS),
    st.text(max_size=20),  # Hypothesis' text has no lone surrogates
)
json_trees = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=8), children, max_size=5)
    ),
    max_leaves=30,
)


@st.composite
def json_text(draw: st.DrawFn, values: st.SearchStrategy[Any] = json_trees) -> Raw:
    value = draw(values)
    if draw(st.booleans()):
        return Raw(json.dumps(value, ensure_ascii=draw(st.booleans())).encode())
    return Raw(msgspec.json.encode(value))


hostile_values = st.one_of(st.sampled_from(HOSTILE), json_text())


# -- valid-ish values, from a type's msgspec description -----------------------------------------------------
SYMBOL_LISTS = st.lists(st.sampled_from([*SYMBOLS, "SHFE.nope", "cu2601", ""]), max_size=4).map(",".join)
TQSDK_QUERY = (
    'query {\n  multi_symbol_info(class: [FUTURE], exchange_id: ["SHFE"], product_id: ["au", "cu"], '
    "expired: false, has_night: true) {\n    __typename\n    ... on basic {\n      instrument_id\n    }\n  }\n}"
)


def valid(kind: mi.Type, name: str = "") -> st.SearchStrategy[Any]:
    """Python values inside `kind` (bounds and patterns honoured), for a field called `name`."""
    if name in ("user_id", "user_name"):
        return st.sampled_from([USER, "bob"]) | valid(kind)
    if name in ("instrument_id",) and isinstance(kind, mi.StrType) and kind.pattern and "." in kind.pattern:
        return st.sampled_from([*SYMBOLS, "cu2601"]) | _valid(kind)
    if name == "ins_list":
        return SYMBOL_LISTS
    if name == "query":
        return st.just(TQSDK_QUERY) | query_texts
    return _valid(kind)


def _valid(kind: mi.Type) -> st.SearchStrategy[Any]:
    if isinstance(kind, mi.Metadata):
        return _valid(kind.type)
    if isinstance(kind, mi.UnionType):
        return st.one_of([_valid(member) for member in kind.types])
    if isinstance(kind, mi.NoneType):
        return st.none()
    if isinstance(kind, mi.AnyType):
        return json_trees
    if isinstance(kind, mi.BoolType):
        return st.booleans()
    if isinstance(kind, mi.IntType):
        low = kind.ge if kind.ge is not None else None if kind.gt is None else kind.gt + 1
        high = kind.le if kind.le is not None else None if kind.lt is None else kind.lt - 1
        if low is None and high is None:
            return st.integers(-(2**63), 2**63 - 1) | st.sampled_from(HUGE_INTS[:-1])
        return st.integers(low, high)
    if isinstance(kind, mi.FloatType):
        return st.floats(
            min_value=kind.ge if kind.ge is not None else kind.gt,
            max_value=kind.le if kind.le is not None else kind.lt,
            exclude_min=kind.gt is not None,
            exclude_max=kind.lt is not None,
            allow_nan=False,
            allow_infinity=False,
        )
    if isinstance(kind, mi.StrType):
        if kind.pattern is not None:
            inner = (
                kind.pattern[1:-1]
                if kind.pattern.startswith("^") and kind.pattern.endswith("$")
                else kind.pattern
            )
            return st.from_regex(inner, fullmatch=True)
        return st.text(min_size=kind.min_length or 0, max_size=min(kind.max_length or 30, 30))
    if isinstance(kind, mi.LiteralType):
        return st.sampled_from(kind.values)
    if isinstance(kind, mi.ListType):
        return st.lists(
            _valid(kind.item_type), min_size=kind.min_length or 0, max_size=min(kind.max_length or 4, 4)
        )
    if isinstance(kind, mi.DictType):
        return st.dictionaries(
            _valid(kind.key_type), _valid(kind.value_type), max_size=min(kind.max_length or 4, 4)
        )
    if isinstance(kind, mi.StructType):
        return st.fixed_dictionaries(
            {f.name: _valid(f.type) for f in kind.fields if f.required},
            optional={f.name: _valid(f.type) for f in kind.fields if not f.required},
        )
    raise AssertionError(f"no strategy for {kind!r}")  # pragma: no cover


# -- frames ------------------------------------------------------------------------------------------------------
class Frame:
    """A JSON object built pair by pair (so keys can repeat), or raw bytes; ``duplicate``: a key repeats.

    Its repr is what Hypothesis prints for a failing example: short pieces verbatim, long ones named."""

    __slots__ = ("data", "duplicate", "notes", "shown")

    def __init__(
        self, data: bytes | str, shown: str, duplicate: bool = False, notes: tuple[str, ...] = ()
    ) -> None:
        self.data = data
        self.shown = shown
        self.duplicate = duplicate
        self.notes = notes

    def __repr__(self) -> str:
        kind = "str" if isinstance(self.data, str) else "bytes"
        notes = f" [{', '.join(self.notes)}]" if self.notes else ""
        return f"Frame({kind} of {len(self.data)}: {self.shown}{notes})"

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(repr(self))


def _encode(value: Any) -> Raw:
    return Raw(msgspec.json.encode(value))


OPERATIONS = [
    "hostile",
    "near miss",
    "near miss",
    "drop",
    "unknown",
    "duplicate",
    "hostile key",
    "newline",
    "swap",
]
WRAPPERS = ["none", "none", "none", "none", "truncate", "array", "garbage", "blanks"]


@st.composite
def structured(draw: st.DrawFn, message_type: type, body_of: type | None = None) -> Frame:
    """One message of `message_type` with valid-ish fields, then a few hostile edits to it.

    `body_of`: the type whose bounds the valid values follow (Instrument for InstrumentSpec)."""
    info = mi.type_info(message_type)
    bounds = {f.name: f.type for f in mi.type_info(body_of).fields} if body_of else {}
    pairs: list[tuple[Raw, Raw]] = []
    if info.tag_field is not None:
        pairs.append((_encode(info.tag_field), _encode(info.tag)))
    for struct_field in info.fields:
        if not struct_field.required and not draw(st.booleans()):
            continue  # shrinks towards leaving optional fields out
        kind = bounds.get(struct_field.name, struct_field.type)
        pairs.append((_encode(struct_field.name), _encode(draw(valid(kind, struct_field.name)))))
    notes: list[str] = []
    for operation in draw(st.lists(st.sampled_from(OPERATIONS), max_size=3)):
        at = draw(st.integers(0, max(len(pairs) - 1, 0)))
        if operation == "hostile" and pairs:
            pairs[at] = (pairs[at][0], draw(hostile_values))
        elif operation == "near miss" and pairs:  # a value of the same JSON kind, out of bounds or odd
            same_kind = HOSTILE_STRINGS if pairs[at][1].data.startswith(b'"') else HOSTILE_NUMBERS
            pairs[at] = (pairs[at][0], draw(st.sampled_from(same_kind)))
        elif operation == "drop" and pairs:
            del pairs[at]
        elif operation == "unknown":
            key = draw(st.text(min_size=1, max_size=12).map(_encode) | st.sampled_from(HOSTILE_KEYS[5:]))
            pairs.insert(at, (key, draw(st.sampled_from(SKIPPABLE) | hostile_values)))
        elif operation == "duplicate" and pairs:
            where = draw(st.integers(0, len(pairs)))
            value = draw(st.sampled_from([pairs[at][1], _encode(None)]) | hostile_values)
            pairs.insert(where, (pairs[at][0], value))
        elif operation == "hostile key" and pairs:
            pairs[at] = (draw(st.sampled_from(HOSTILE_KEYS)), pairs[at][1])
        elif operation == "newline" and pairs and pairs[at][1].data.endswith(b'"'):
            pairs[at] = (pairs[at][0], Raw(pairs[at][1].data[:-1] + b'\\n"'))
        elif operation == "swap" and len(pairs) > 1:
            other = draw(st.integers(0, len(pairs) - 1))
            pairs[at], pairs[other] = (pairs[at][0], pairs[other][1]), (pairs[other][0], pairs[at][1])
        else:
            continue
        notes.append(operation)
    keys = [key.data for key, _ in pairs]
    duplicate = len(set(keys)) < len(keys) or any(value.repeats_a_key for _, value in pairs)
    data = b"{" + b",".join(key.data + b":" + value.data for key, value in pairs) + b"}"
    shown = "{" + ",".join(f"{key!r}:{value!r}" for key, value in pairs) + "}"
    wrapper = draw(st.sampled_from(WRAPPERS))
    if wrapper == "truncate":
        cut = draw(st.integers(0, max(len(data) - 1, 0)))
        data, shown = data[:cut], f"({shown})[:{cut}]"
        duplicate = False  # the check of a truncated document is not this test's business
    elif wrapper == "array":
        data, shown = b"[" + data + b"]", f"[{shown}]"
    elif wrapper == "garbage":
        tail = draw(st.sampled_from([b"x", b"{}", b",", b"\x00", b" 1"]))
        data, shown = data + tail, f"{shown}+{tail!r}"
    elif wrapper == "blanks":
        data, shown = b" \t\r\n" + data + b"\n ", f"(blanks){shown}(blanks)"
    if wrapper in ("array", "garbage"):
        duplicate = False
    if wrapper != "none":
        notes.append(wrapper)
    text: bytes | str = data
    if draw(st.booleans()):
        try:
            text = data.decode()
        except UnicodeDecodeError:
            pass
    return Frame(text, shown, duplicate, tuple(notes))


def raw_frame(data: bytes | str) -> Frame:
    text = data.decode(errors="backslashreplace") if isinstance(data, bytes) else data
    return Frame(data, repr(text) if len(text) <= 100 else repr(text[:80]) + f"...({len(text)})")


diff_structured = st.one_of([structured(message_type) for message_type in DIFF_TYPES])
diff_raw = st.one_of(
    st.binary(max_size=200).map(raw_frame),
    st.text(max_size=200).map(raw_frame),
    st.sampled_from(HOSTILE).map(lambda value: Frame(value.data, repr(value))),
    json_text().map(lambda value: Frame(value.data, repr(value))),
    st.builds(  # a random tree under a known aid
        lambda aid, tree: raw_frame(msgspec.json.encode({**tree, "aid": aid})),
        st.sampled_from(sorted(diff.KNOWN_AIDS)),
        st.dictionaries(st.text(max_size=16), json_trees, max_size=6),
    ),
)


# -- DIFF -------------------------------------------------------------------------------------------------------
def fresh_session(logged_in: bool) -> DiffSession:
    session = DiffSession(1)
    if logged_in:
        session.logged_in(USER)
    session.receive(PEEK)
    assert session.data_to_send() is not None  # the first peek's answer: mdhis_more_data
    return session


def notifies_of(session: DiffSession) -> list[dict[str, Any]]:
    """The notifies the session would send next, read through its public API (a peek, then its answer)."""
    session.receive(PEEK)
    if not session.wants_data():
        return []
    data = session.data_to_send()
    assert data is not None
    answer = json.loads(data)
    assert answer["aid"] == "rtn_data"
    return [note for patch in answer["data"] if "notify" in patch for note in patch["notify"].values()]


def decoded(frame: bytes | str) -> Any:
    try:
        return diff.decode_client_message(frame)
    except diff.DiffProtocolError as exc:
        return exc


def check_frame(frame: Frame) -> None:
    """The DIFF property for one frame, on a session not logged in and on one logged in as USER."""
    message = decoded(frame.data)
    if not isinstance(message, diff.DiffProtocolError):
        assert isinstance(message, DIFF_TYPES)
        check_event_bounds(message)
        assert not frame.duplicate or isinstance(message, diff.PeekMessage), (
            f"a frame repeating a key was accepted as {message!r}"
        )
    for logged_in in (False, True):
        holder: list[DiffSession] = []

        def setup(logged_in: bool = logged_in, holder: list[DiffSession] = holder) -> Callable[[], Any]:
            session = fresh_session(logged_in)
            holder[:] = [session]
            return lambda: session.receive(frame.data)

        events = timed("DiffSession.receive", lambda: repr(frame), setup)
        session = holder[0]
        assert type(events) is list and len(events) <= 1, events
        errors = [note for note in notifies_of(session) if note.get("level") == "ERROR"]
        for note in errors:
            assert type(note.get("content")) is str and note["content"], note
            assert len(note["content"]) <= MAX_ERROR_TEXT, (
                f"notify of {len(note['content'])} characters: {note['content'][:120]!r}..."
            )
        if events:
            [event] = events
            assert isinstance(event, EVENT_TYPES), event
            assert type(event) is type(message), (event, message)
            check_event_bounds(event)
            assert not errors, errors
            if isinstance(event, diff.InsQuery):
                check_ins_query(event.query, event.variables)
        elif isinstance(message, diff.DiffProtocolError):
            assert [note["code"] for note in errors] == [message.code], errors
            assert message.code in (diff.NOTIFY_BAD_MESSAGE, diff.NOTIFY_UNKNOWN_AID)
        elif isinstance(message, diff.PeekMessage | diff.ConfirmSettlement):
            assert not errors, errors
        else:  # a valid message this session refuses: a second login, a trade before login or for another user
            assert len(errors) == 1, (message, errors)
            assert errors[0]["code"] in (
                diff.NOTIFY_DUPLICATE_LOGIN, diff.NOTIFY_WRONG_USER, diff.NOTIFY_CANCEL_WRONG_USER,
            ), errors  # fmt: skip
        # ... and the session carries on: the next good frame is an event as usual.
        after = session.receive(b'{"aid":"cancel_order","user_id":"alice","order_id":"o1"}')
        assert [type(event) for event in after] == ([diff.CancelOrder] if logged_in else []), after


TQSDK_FRAMES = [
    b'{"aid":"peek_message"}',
    b'{"aid":"req_login","bid":"qaex","user_name":"alice","password":"secret-pw","client_app_id":"SHINNY_TQ_1.0",'
    b'"client_system_info":"","client_mac_address":"00:00:00:00:00:00","backend":"local"}',
    b'{"aid":"confirm_settlement"}',
    b'{"aid":"subscribe_quote","ins_list":"SHFE.cu2601,SHFE.au2602"}',
    b'{"aid":"set_chart","chart_id":"PYSDK_realtime_1","ins_list":"SHFE.cu2601","duration":60000000000,'
    b'"view_width":8000}',
    b'{"aid":"insert_order","user_id":"alice","order_id":"PYSDK_insert_0123456789abcdef0123456789abcdef",'
    b'"exchange_id":"SHFE","instrument_id":"cu2601","direction":"BUY","offset":"OPEN","volume":1,'
    b'"price_type":"LIMIT","limit_price":80000.0,"volume_condition":"ANY","time_condition":"GFD"}',
    b'{"aid":"cancel_order","user_id":"alice","order_id":"PYSDK_insert_0123456789abcdef0123456789abcdef"}',
    b'{"aid":"req_transfer","future_account":"alice","future_password":"x","bank_id":"1","bank_password":"y",'
    b'"currency":"CNY","amount":1000.0}',
    b'{"aid":"change_password","old_password":"secret-pw","new_password":"another-pw"}',
    b'{"aid":"ins_query","query_id":"PYSDK_quote_1","query":'
    + json.dumps(TQSDK_QUERY).encode()
    + b',"variables":{}}',
]


@pytest.mark.parametrize("frame", TQSDK_FRAMES, ids=lambda frame: json.loads(frame)["aid"])
def test_real_client_frames_are_accepted(frame: bytes) -> None:
    message = diff.decode_client_message(frame)
    check_event_bounds(message)
    check_frame(raw_frame(frame))


@fuzz(4000)
@given(diff_structured)
def test_diff_structured_messages(frame: Frame) -> None:
    check_frame(frame)


@fuzz(2500)
@given(diff_raw)
@example(raw_frame(b""))
@example(raw_frame(b"\xff\xfe"))
@example(raw_frame("[" * 100_000))
@example(raw_frame('{"aid":' + "[" * 100_000))
def test_diff_raw_frames(frame: Frame) -> None:
    check_frame(frame)


@fuzz(1000)
@given(st.sampled_from(TQSDK_FRAMES), st.data())
def test_diff_truncated_real_frames(frame: bytes, data: st.DataObject) -> None:
    cut = data.draw(st.integers(0, len(frame) - 1), label="cut")
    check_frame(raw_frame(frame[:cut]))


INSERT_ORDER = (
    '"aid":"insert_order","user_id":"alice","order_id":"o1","exchange_id":"SHFE","instrument_id":"cu2601",'
    '"direction":"BUY","offset":"OPEN","volume":1,"limit_price":80000.0'
)


@pytest.mark.parametrize(
    "unknown",
    [
        pytest.param("1" * 5000, id="a 5000-digit integer"),
        pytest.param(b'"\xff"', id="invalid UTF-8 in a string"),
        pytest.param('"ok"', id="nothing odd (control)"),
    ],
)
def test_a_repeated_key_is_refused_whatever_an_unknown_field_holds(unknown: str | bytes) -> None:
    """The duplicate-key check must not give up on a document msgspec accepted (DIFF skips unknown fields)."""
    tail = unknown if isinstance(unknown, bytes) else unknown.encode()
    frame = b"{" + INSERT_ORDER.encode() + b',"direction":"SELL","client_info":' + tail + b"}"
    check_frame(Frame(frame, "insert_order with direction BUY then SELL", duplicate=True))


def test_a_repeated_key_is_refused_at_every_nesting_depth_msgspec_accepts() -> None:
    """Nesting an unknown field just under msgspec's limit must not make the duplicate check give up."""
    for depth in range(1, 1200):
        frame = "{" + INSERT_ORDER + ',"direction":"SELL","client_info":' + "[" * depth + "]" * depth + "}"
        message = decoded(frame)
        assert isinstance(message, diff.DiffProtocolError), (
            f"nesting {depth} deep: a repeated key was accepted as {message!r}"
        )


@pytest.mark.parametrize("name", ["left_kline_id", "focus_datetime", "trading_day_start"])
def test_set_chart_integers_fit_in_64_bits(name: str) -> None:
    frame = f'{{"aid":"set_chart","chart_id":"c","ins_list":"SHFE.cu2601","duration":0,"{name}":{10**4000}}}'
    assert isinstance(decoded(frame), diff.DiffProtocolError)


# -- HTTP bodies -----------------------------------------------------------------------------------------------
def check_body(body_type: type, frame: Frame) -> None:
    data = frame.data.encode() if isinstance(frame.data, str) else frame.data
    decoder = BODY_DECODERS[body_type]

    def setup() -> Callable[[], Any]:
        def call() -> Any:
            try:  # exactly what qaex.api.http.decode does with the body
                return strict_json.decode(data if data.strip() else b"{}", decoder)
            except (msgspec.ValidationError, msgspec.DecodeError, strict_json.StrictJsonError) as exc:
                return exc

        return call

    value = timed(f"http body {body_type.__name__}", lambda: repr(frame), setup)
    if isinstance(value, Exception):
        assert str(value), repr(value)
        assert len(str(value)) <= MAX_ERROR_TEXT, (
            f"error of {len(str(value))} characters: {str(value)[:120]!r}..."
        )
        return
    assert type(value) is body_type, value
    assert not frame.duplicate, f"a body repeating a key was accepted: {value!r}"
    check_body_bounds(value)


http_frames = st.one_of(
    [
        st.tuples(
            st.just(body_type),
            structured(body_type, Instrument if body_type is proto.InstrumentSpec else None),
        )
        for body_type in BODY_TYPES
    ]
)
http_raw = st.tuples(
    st.sampled_from(BODY_TYPES),
    st.one_of(
        st.binary(max_size=200).map(raw_frame),
        st.sampled_from(HOSTILE).map(lambda value: Frame(value.data, repr(value))),
        json_text().map(lambda value: Frame(value.data, repr(value))),
    ),
)


@fuzz(4000)
@given(http_frames)
def test_http_structured_bodies(case: tuple[type, Frame]) -> None:
    check_body(*case)


@fuzz(1500)
@given(http_raw)
def test_http_raw_bodies(case: tuple[type, Frame]) -> None:
    check_body(*case)


def test_every_request_body_type_is_fuzzed() -> None:
    bodies = {
        value for value in vars(proto).values() if isinstance(value, type) and issubclass(value, proto.Body)
    }
    assert bodies - {proto.Body} == set(BODY_TYPES)
    assert {route.body for route in api.ROUTES if route.body is not None} <= set(BODY_TYPES)


@pytest.mark.parametrize("body_type", BODY_TYPES, ids=lambda body_type: body_type.__name__)
def test_http_empty_body_is_an_empty_object(body_type: type) -> None:
    check_body(body_type, raw_frame(b""))
    check_body(body_type, raw_frame(b" \r\n"))


# -- ins_query --------------------------------------------------------------------------------------------------
QUERY_TOKENS = st.sampled_from(
    [
        "query", "{", "}", "(", ")", "[", "]", ":", ",", " ", "\n", "multi_symbol_info", "multi_symbol_infos",
        "class", "class_", "exchange_id", "product_id", "instrument_id", "expired", "has_night",
        "has_derivatives", "timestamp", "volume", "true", "false", "null", "FUTURE", "OPTION", '"SHFE"',
        '"cu"', '"SHFE.cu2601"', "$x", "$instrument_id", "$", "0", "-1", "-", "1.5", "1e3", "12abc",
        "9223372036854775807", "9223372036854775808", "-9223372036854775809", "9" * 5000, '"\\u00e9"',
        '"\\ud800"', '"\\x"', '"\\u12"', '"unterminated', '"a\\"b"', "#comment\n", "...", "on", "basic",
        "__typename", "\u00e9", "\u0661", "\x00", "\t",
    ]
)  # fmt: skip
query_texts = st.one_of(
    st.text(max_size=200),
    st.lists(QUERY_TOKENS, max_size=40).map("".join),
    st.lists(QUERY_TOKENS, max_size=40).map(lambda tokens: "query { multi_symbol_info(" + "".join(tokens)),
    st.builds(
        lambda item, count, close: (
            "query { multi_symbol_info(instrument_id: [" + ",".join([item] * count) + close
        ),
        st.sampled_from(['"SHFE.cu2601"', "1", "FUTURE", "[", "9" * 20]),
        st.sampled_from([1, 4095, 4096, 4097, 20_000]),
        st.sampled_from(["]) { instrument_id } }", "])", "", "]"]),
    ),
    st.sampled_from(
        [
            "x" * (ins_query.MAX_QUERY_LENGTH + 1),
            "multi_symbol_info" * 4000,
            "multi_symbol_info" + " " * 60_000 + "(",
            "multi_symbol_info(" + "[" * 30_000,
            'multi_symbol_info(instrument_id: "' + "\\\\" * 30_000 + '") {',
            "query { multi_symbol_info(" + "exchange_id: $v, " * 3000 + ") { a } }",
        ]
    ),
)
query_variables = st.one_of(
    st.none(),
    st.dictionaries(
        st.sampled_from(["x", "instrument_id", "v", "exchange_id"]) | st.text(max_size=8),
        json_trees
        | st.builds(
            lambda item, count: [item] * count,
            st.sampled_from(["SHFE.cu2601", 1, 2**63, "x", None]),
            st.sampled_from([1, 2, ins_query.MAX_LIST_ITEMS, ins_query.MAX_LIST_ITEMS + 1]),
        )
        | st.sampled_from(HUGE_INTS),
        max_size=4,
    ),
)


def check_ins_query(query: str, variables: dict[str, Any] | None) -> None:
    def setup() -> Callable[[], Any]:
        def call() -> Any:
            try:
                return ins_query.answer(query, INSTRUMENTS.values(), variables)
            except ins_query.UnsupportedQuery as exc:
                return exc

        return call

    result = timed("ins_query.answer", lambda: f"{_short(query)} with {_short(variables)}", setup)
    if isinstance(result, ins_query.UnsupportedQuery):
        assert str(result) and len(str(result)) <= MAX_ERROR_TEXT, str(result)[:200]
        return
    assert list(result) == ["multi_symbol_info"], result
    for entry in result["multi_symbol_info"]:
        assert entry["instrument_id"] in INSTRUMENTS, entry
    arguments = ins_query.parse(query, variables)
    for name, value in arguments.items():
        for item in value if isinstance(value, list) else [value]:
            assert type(item) in (str, int, bool), (name, item)
            assert type(item) is not int or ins_query.INT64_MIN <= item <= ins_query.INT64_MAX, (name, item)


@fuzz(3000)
@given(query_texts, query_variables)
@example(TQSDK_QUERY, None)
@example("query { multi_symbol_info(instrument_id: $x) { a } }", {"x": 2**64})
def test_ins_query_answer(query: str, variables: dict[str, Any] | None) -> None:
    check_ins_query(query, variables)


# -- HTTP query integers ----------------------------------------------------------------------------------------
class _Reached(Exception):
    """Raised by the stand-ins below: the route accepted its parameters and went on with this value."""

    def __init__(self, value: int) -> None:
        super().__init__(value)
        self.value = value


class _Market:
    def kline_history(self, symbol: str, duration_ns: int) -> Any:
        raise _Reached(duration_ns)

    def series(self, symbol: str, duration_ns: int) -> Any:
        raise _Reached(duration_ns)


def _depth(symbol: str, levels: int) -> Any:
    raise _Reached(levels)


APP = QuartTrio(__name__)
MAX_DURATION_SECONDS = diff.MAX_DURATION_NS // 1_000_000_000
QUERY_INT_RANGES = [
    ("count", 200, 1, MAX_VIEW_WIDTH), ("levels", 5, 1, 50), ("duration", 60, 1, MAX_DURATION_SECONDS),
    ("n", 0, 0, 2**63 - 1),
]  # fmt: skip
query_parameters = st.one_of(
    st.sampled_from(
        [
            "5", "", "0", "00", "007", "-1", "+1", " 1", "1 ", "1\n", "1.0", "1e3", "0x10", "²", "①", "٣", "１２",
            "\x00", "9" * 20, "9" * 5000, "1" + "0" * 4300, "0" * 5000, "٣" * 5000, str(MAX_VIEW_WIDTH),
            str(MAX_VIEW_WIDTH + 1), "50", "51", str(2**63), str(2**64), str(MAX_DURATION_SECONDS + 1),
        ]
    ),
    st.integers(-10, 10**20).map(str),
    st.text(max_size=8),
)  # fmt: skip


def check_query_integers(texts: list[str]) -> None:
    """``query_int`` for every range, and the routes that read one, with each text as the parameter."""
    outcomes: list[tuple[str, int, int, str, Any]] = []

    def record(label: str, wall: float, cpu: float, shown: str) -> None:
        wall, cpu = time.perf_counter() - wall, time.thread_time() - cpu
        WORST.setdefault(label, Worst()).record(wall, wall, cpu, lambda: shown)
        assert wall <= BUDGET_SECONDS or cpu <= BUDGET_SECONDS, f"{label} took {wall * 1e3:.1f} ms on {shown}"

    async def run_all() -> None:
        for text in texts:
            for name, default, low, high in QUERY_INT_RANGES:
                async with APP.test_request_context("/", query_string={name: text}):
                    wall, cpu = time.perf_counter(), time.thread_time()
                    try:
                        outcome: Any = api.query_int(name, default, low, high)
                    except api.HttpError as exc:
                        outcome = exc
                    record("http query_int", wall, cpu, f"?{name}={_short(text)}")
                outcomes.append((name, low, high, text, outcome))
            for name, path, route in (
                ("count", "/api/market/ticks/SHFE.cu2601", api.ticks),
                ("count", "/api/market/klines/SHFE.cu2601", api.klines),
                ("duration", "/api/market/klines/SHFE.cu2601", api.klines),
                ("levels", "/api/market/depth/SHFE.cu2601", api.depth),
            ):
                async with APP.test_request_context(path, query_string={name: text}):
                    try:
                        outcome = await route("SHFE.cu2601")
                    except (api.HttpError, _Reached) as exc:
                        outcome = exc
                outcomes.append((name, -1, -1, text, outcome))

    with (
        mock.patch.object(api, "_market_data", lambda symbol: _Market()),
        mock.patch.object(api, "_depth", _depth),
    ):
        trio.run(run_all)
    for name, low, high, text, outcome in outcomes:
        where = (name, text, outcome)
        if isinstance(outcome, api.HttpError):
            assert outcome.http_status == 400 and name in str(outcome), where
            assert len(str(outcome)) <= MAX_ERROR_TEXT, where
        elif low >= 0:  # query_int itself
            assert type(outcome) is int and low <= outcome <= high, where
            assert text.isascii() and outcome == int(text), where
        else:  # a route went on: with a value in range
            assert isinstance(outcome, _Reached), where
            if name == "duration":
                assert (
                    outcome.value % 1_000_000_000 == 0 and 1 <= outcome.value // 10**9 <= MAX_DURATION_SECONDS
                )
            elif name == "levels":
                assert 1 <= outcome.value <= 50, where


@fuzz(300)
@given(st.lists(query_parameters, min_size=1, max_size=6))
@example(["5", "0", "x", "²", "9" * 5000])
def test_http_query_integers(texts: list[str]) -> None:
    """Each answers 400 naming the parameter, or goes on with a value in its range; never a 500."""
    check_query_integers(texts)
