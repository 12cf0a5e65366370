"""Answers to DIFF ``ins_query``: the contract-service query TqSdk's ``api.query_quotes`` sends.

TqSdk builds a GraphQL query with sgqlc, its arguments written into the query text::

    query {
      multi_symbol_info(class: [FUTURE], exchange_id: ["SHFE"], product_id: ["au", "cu"],
                        expired: false, has_night: true) {
        __typename
        ... on basic { instrument_id }
      }
    }

and waits for ``symbols/{query_id}`` in an rtn_data, ``{"query", "variables", "result":
{"multi_symbol_info": [{"instrument_id": ...}, ...]}}``. qaex lists futures and, for each product
with a main contract, its main-contract series ``KQ.m@SHFE.rb`` (class ``CONT``), so it understands
this one query: ``multi_symbol_info`` filtered by ``class``, ``exchange_id``, ``product_id``,
``instrument_id``, ``expired`` and ``has_night``. Each result entry carries the basic fields TqSdk's
query functions read; a ``CONT`` entry also carries ``underlying {count edges {underlying_multiple
node}}`` with its main contract's entry as the node, which is what ``query_cont_quotes`` (the node's
``instrument_id``, ``exchange_id``, ``product_id``) and ``query_symbol_info``/``get_quote``
(``underlying_symbol``) read. Anything else is refused with a clear message (see
:class:`UnsupportedQuery`), not answered wrongly.

Any client may send an ``ins_query`` before it logs in, so the query is read by a scanner that takes
time linear in its length, and a query longer than :data:`MAX_QUERY_LENGTH` is refused unread. An
argument value is a string (JSON escapes, as sgqlc writes them), an integer of at most
:data:`MAX_INT_DIGITS` digits within signed 64-bit, ``true``/``false``, a list of strings, bare enum
words and integers (at most :data:`MAX_LIST_ITEMS` items in all the lists of a query), or a
``$variable`` whose value in ``variables`` is a string, a boolean, such an integer or a list of at
most MAX_LIST_ITEMS strings and such integers. Each argument appears at most once, so a call has at
most one per filter.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping
from typing import Any, NoReturn

from qaex.core.calendar import MarketHours, published_trading_time
from qaex.core.instruments import Instrument
from qaex.core.main_contracts import CONT_CLASS, CONT_EXCHANGE, cont_name, cont_symbol

# TqSdk's largest query is get_quote/query_symbol_info's: 2,567 characters of fragments plus ~15 per
# contract asked for, all unknown contracts in one query (62,539 for 4,000 contracts), more than every
# future listed in China; query_quotes, query_options and query_cont_quotes send < 600 characters.
MAX_QUERY_LENGTH = 64 * 1024
MAX_LIST_ITEMS = 4096  # in all the lists of a query: the contracts that fit in MAX_QUERY_LENGTH
MAX_INT_DIGITS = 19  # len(str(2**63)); TqSdk's largest integer, a backtest timestamp in ns, has 19
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

_FILTERS = frozenset(
    {
        "class",
        "class_",
        "exchange_id",
        "product_id",
        "instrument_id",
        "expired",
        "has_night",
        "has_derivatives",
        "timestamp",
    }
)

_CALL = "multi_symbol_info"
_NAME_CHARACTERS = frozenset("_0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")
_BLANKS = re.compile(r"[\s,]*+")  # GraphQL's ignored tokens, comments aside
_OPENS_CALL = re.compile(r"[\s,]*+[({]")
# One token after blanks. Every repeat is possessive (*+, ++): a match never gives back what it read,
# so a failed match costs one pass over the characters it tried, however the text is made.
_TOKEN = re.compile(
    r"""[\s,]*+(?:
        (?P<name>[_A-Za-z][_0-9A-Za-z]*+)
      | \$(?P<variable>[_A-Za-z][_0-9A-Za-z]*+)
      | (?P<int>-?[0-9]++)(?![_A-Za-z.])
      | (?P<string>"[^"\\\n]*+(?:\\.[^"\\\n]*+)*+")
      | (?P<punctuator>[:()\[\]{}])
      | (?P<end>\Z)
    )""",
    re.VERBOSE,
)
_EXCERPT = 32  # characters of the query a refusal quotes


class UnsupportedQuery(ValueError):
    """A query qaex cannot answer (not ``multi_symbol_info``, an unknown argument, beyond a cap)."""


def parse(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arguments of the query's ``multi_symbol_info`` call: lists, booleans, strings, integers.

    An argument may be a GraphQL variable (``instrument_id: $instrument_id``), whose value is taken
    from `variables` (TqSdk sends one that way for a few old contracts). The call is the first
    ``multi_symbol_info`` followed by its arguments or its selection set.
    """
    if len(query) > MAX_QUERY_LENGTH:
        raise UnsupportedQuery(f"ins_query: the query is longer than {MAX_QUERY_LENGTH} characters")
    start = _find_call(query)
    if start is None:
        raise UnsupportedQuery("ins_query: only multi_symbol_info queries are supported (query_quotes)")
    return _Parser(query, start, variables).arguments()


def _find_call(query: str) -> int | None:
    """Where the name of the first ``multi_symbol_info`` followed by ``(`` or ``{`` ends, or None."""
    at = query.find(_CALL)
    while at >= 0:
        end = at + len(_CALL)
        whole_word = (at == 0 or query[at - 1] not in _NAME_CHARACTERS) and (
            end == len(query) or query[end] not in _NAME_CHARACTERS
        )
        if whole_word and _OPENS_CALL.match(query, end):
            return end
        at = query.find(_CALL, end)
    return None


class _Parser:
    """Reads the arguments of a call from the text after its name, each character once."""

    def __init__(self, text: str, pos: int, variables: dict[str, Any] | None) -> None:
        self.text = text
        self.pos = pos
        self.start = pos  # where the last token read begins
        self.variables = variables
        self.items = 0  # list items read, all lists together

    def arguments(self) -> dict[str, Any]:
        """The call's arguments by name, up to the ``{`` of its selection set."""
        arguments: dict[str, Any] = {}
        if self.next()[0] == "{":
            return arguments
        kind, name = self.next()  # after "("
        while kind != ")":
            if kind != "name":
                self.unreadable()
            if name not in _FILTERS:
                raise UnsupportedQuery(
                    f"ins_query: unsupported argument {_excerpt(name)!r} of multi_symbol_info"
                )
            if name in arguments:
                raise UnsupportedQuery(
                    f"ins_query: multi_symbol_info has the argument {name!r} more than once"
                )
            if self.next()[0] != ":":
                self.unreadable()
            arguments[name] = self.value()
            kind, name = self.next()
        if self.next()[0] != "{":
            self.unreadable()
        return arguments

    def next(self) -> tuple[str, str]:
        """The next token's kind and text; the kind of a punctuator is the punctuator itself, and
        the end of the text is a token of kind ``end``."""
        match = _TOKEN.match(self.text, self.pos)
        if match is None:
            blanks = _BLANKS.match(self.text, self.pos)
            self.start = blanks.end() if blanks else self.pos
            self.unreadable()
        kind = match.lastgroup
        assert kind is not None
        text = match.group(kind)
        self.start, self.pos = match.span(kind)[0], match.end()
        return (text, text) if kind == "punctuator" else (kind, text)

    def unreadable(self) -> NoReturn:
        """Refuse the query at the last token read, quoting the start of it."""
        if self.start >= len(self.text):
            raise UnsupportedQuery(
                "ins_query: cannot read the arguments of multi_symbol_info: the query ends in them"
            )
        excerpt = _excerpt(self.text[self.start : self.start + _EXCERPT + 1])
        raise UnsupportedQuery(f"ins_query: cannot read the arguments of multi_symbol_info at {excerpt!r}")

    def value(self) -> Any:
        """The argument value whose first token comes next."""
        kind, text = self.next()
        if kind == "[":
            return self.list_items()
        if kind == "string":
            return self.string(text)
        if kind == "int":
            return _integer(text)
        if kind == "name" and text in ("true", "false"):
            return text == "true"
        if kind == "variable":
            return _variable(text, self.variables)
        self.unreadable()

    def list_items(self) -> list[str | int]:
        """The items of a list whose ``[`` was read: strings, bare (enum) words and integers."""
        items: list[str | int] = []
        while True:
            kind, text = self.next()
            if kind == "]":
                return items
            self.items += 1
            if self.items > MAX_LIST_ITEMS:
                raise UnsupportedQuery(f"ins_query: the query's lists have more than {MAX_LIST_ITEMS} items")
            if kind == "string":
                items.append(self.string(text))
            elif kind == "name":
                items.append(text)
            elif kind == "int":
                items.append(_integer(text))
            else:
                self.unreadable()

    def string(self, text: str) -> str:
        """A string token's value: sgqlc writes strings with json.dumps, so JSON reads them."""
        if "\\" not in text:
            return text[1:-1]
        try:
            value: str = json.loads(text)
        except ValueError:
            self.unreadable()
        return value


def _integer(text: str) -> int:
    """An integer token's value, refused outside signed 64-bit before it is converted."""
    if len(text.lstrip("-")) <= MAX_INT_DIGITS:
        value = int(text)
        if INT64_MIN <= value <= INT64_MAX:
            return value
    raise UnsupportedQuery(f"ins_query: the integer {_excerpt(text)} is outside signed 64-bit")


def _variable(name: str, variables: dict[str, Any] | None) -> Any:
    """The value of ``$name`` in `variables`: a string, a boolean, a 64-bit integer, or a list of at
    most MAX_LIST_ITEMS strings and 64-bit integers."""
    shown = _excerpt(name)
    if variables is None or name not in variables:
        raise UnsupportedQuery(f"ins_query: variable ${shown} has no value in `variables`")
    value = variables[name]
    if isinstance(value, (str, bool)) or _is_int64(value):
        return value
    if isinstance(value, list):
        if len(value) > MAX_LIST_ITEMS:
            raise UnsupportedQuery(
                f"ins_query: variable ${shown} is a list of more than {MAX_LIST_ITEMS} items"
            )
        if all(isinstance(item, str) or _is_int64(item) for item in value):
            return value
    raise UnsupportedQuery(
        f"ins_query: variable ${shown} is neither a string, a boolean, a signed 64-bit integer "
        "nor a list of strings and such integers"
    )


def _is_int64(value: object) -> bool:
    return type(value) is int and INT64_MIN <= value <= INT64_MAX


def _excerpt(text: str) -> str:
    """`text` cut to _EXCERPT characters, for a message."""
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def answer(
    query: str,
    instruments: Iterable[Instrument],
    variables: dict[str, Any] | None = None,
    main_contracts: Mapping[str, str] | None = None,
    *,
    market_hours: MarketHours = "always",
) -> dict[str, Any]:
    """The ``result`` of a ``multi_symbol_info`` query over the listed contracts: the futures, then
    the main-contract series of ``main_contracts`` (product -> its main's symbol, as
    ``Engine.main_contracts`` keeps it), by product.

    qaex lists no options, so a future here never has derivatives, and a query for derivatives
    (TqSdk's ``query_options``) finds the future without any. A series is never expired; it has
    its main's product and trading hours. ``trading_time`` (and the ``has_night`` filter) is what
    the market-hours policy publishes (qaex.core.calendar.sessions.published_trading_time), as in
    the DIFF quotes.
    """
    arguments = parse(query, variables)
    classes = _as_set(arguments.get("class", arguments.get("class_")))
    exchanges = _as_set(arguments.get("exchange_id"))
    products = _as_set(arguments.get("product_id"))
    symbols = _as_set(arguments.get("instrument_id"))
    expired = arguments.get("expired")
    has_night = arguments.get("has_night")
    found: list[dict[str, Any]] = []
    if arguments.get("has_derivatives") is True:
        return {"multi_symbol_info": found}  # no contract has options listed on it

    def published(instrument: Instrument) -> dict[str, Any]:
        return published_trading_time(instrument.trading_time, market_hours)

    def wanted(exchange_id: str, instrument: Instrument, symbol: str, is_expired: bool) -> bool:
        return not (
            (exchanges is not None and exchange_id not in exchanges)
            or (products is not None and instrument.product_id not in products)
            or (symbols is not None and symbol not in symbols)
            or (expired is not None and is_expired != expired)
            or (has_night is not None and bool(published(instrument)["night"]) != has_night)
        )

    listed: dict[str, Instrument] = {}
    futures = classes is None or "FUTURE" in classes
    for instrument in instruments:
        symbol = f"{instrument.exchange_id}.{instrument.instrument_id}"
        listed[symbol] = instrument
        if futures and wanted(instrument.exchange_id, instrument, symbol, instrument.expired):
            found.append(_future_entry(instrument, symbol, market_hours))
    if main_contracts and (classes is None or CONT_CLASS in classes):
        for product, main in sorted(main_contracts.items()):
            underlying = listed.get(main)
            series = cont_symbol(product)
            if underlying is not None and wanted(CONT_EXCHANGE, underlying, series, False):
                found.append(_cont_entry(series, underlying, main, market_hours))
    return {"multi_symbol_info": found}


def _future_entry(instrument: Instrument, symbol: str, market_hours: MarketHours) -> dict[str, Any]:
    return {
        "__typename": "future",
        "instrument_id": symbol,
        "instrument_name": instrument.instrument_name,
        "class": "FUTURE",
        "exchange_id": instrument.exchange_id,
        "product_id": instrument.product_id,
        "price_tick": instrument.price_tick,
        "volume_multiple": instrument.volume_multiple,
        "expired": instrument.expired,
        # Nanoseconds here: TqSdk's GraphQL schema has them so (utils_symbols divides by 1e9),
        # while a quote's expire_datetime is in seconds.
        "expire_datetime": int(instrument.expire_datetime * 1_000_000_000),
        "trading_time": published_trading_time(instrument.trading_time, market_hours),
    }


def _cont_entry(series: str, underlying: Instrument, main: str, market_hours: MarketHours) -> dict[str, Any]:
    """A ``cont`` entry: its main's figures under the series' name, and the main as its underlying."""
    entry = _future_entry(underlying, series, market_hours)
    entry.update(
        {
            "__typename": "cont",
            "instrument_name": cont_name(underlying.instrument_name),
            "class": CONT_CLASS,
            "exchange_id": CONT_EXCHANGE,
            "expired": False,
            "underlying": {
                "count": 1,
                "edges": [
                    {"underlying_multiple": 1.0, "node": _future_entry(underlying, main, market_hours)}
                ],
            },
        }
    )
    return entry


def _as_set(value: Any) -> frozenset[str] | None:
    """A filter's values as strings, for lookups in constant time; None when it is not given."""
    if value is None:
        return None
    return frozenset(str(item) for item in value) if isinstance(value, list) else frozenset((str(value),))
