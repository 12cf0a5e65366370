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
{"multi_symbol_info": [{"instrument_id": ...}, ...]}}``. qaex lists futures only, so it understands
this one query: ``multi_symbol_info`` filtered by ``class``, ``exchange_id``, ``product_id``,
``instrument_id``, ``expired`` and ``has_night``. Every listed contract is a ``FUTURE``; each result
entry carries the basic fields TqSdk's query functions read. Anything else is refused with a clear
message (see :class:`UnsupportedQuery`), not answered wrongly.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from qaex.core.instruments import Instrument

_CALL = re.compile(r"\bmulti_symbol_info\b\s*(?:\((?P<args>[^)]*)\))?\s*\{", re.DOTALL)
_ARGUMENT = re.compile(r'(?P<name>\w+)\s*:\s*(?P<value>\[[^\]]*\]|"(?:[^"\\]|\\.)*"|true|false|-?\d+|\$\w+)')
_LIST_ITEM = re.compile(r'"((?:[^"\\]|\\.)*)"|(\w+)')
_FILTERS = {
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


class UnsupportedQuery(ValueError):
    """A query qaex cannot answer (not ``multi_symbol_info``, or an unknown argument)."""


def parse(query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """The arguments of the query's ``multi_symbol_info`` call: lists, booleans, strings, integers.

    An argument may be a GraphQL variable (``instrument_id: $instrument_id``), whose value is taken
    from `variables` (TqSdk sends one that way for a few old contracts).
    """
    call = _CALL.search(query)
    if call is None:
        raise UnsupportedQuery("ins_query: only multi_symbol_info queries are supported (query_quotes)")
    arguments: dict[str, Any] = {}
    text = call.group("args") or ""
    for match in _ARGUMENT.finditer(text):
        name, value = match.group("name"), match.group("value")
        if name not in _FILTERS:
            raise UnsupportedQuery(f"ins_query: unsupported argument {name!r} of multi_symbol_info")
        if value.startswith("$"):
            if variables is None or value[1:] not in variables:
                raise UnsupportedQuery(f"ins_query: variable {value} has no value in `variables`")
            arguments[name] = variables[value[1:]]
        elif value.startswith("["):
            arguments[name] = [quoted or bare for quoted, bare in _LIST_ITEM.findall(value[1:-1])]
        elif value.startswith('"'):
            arguments[name] = value[1:-1]
        elif value in ("true", "false"):
            arguments[name] = value == "true"
        else:
            arguments[name] = int(value)
    leftover = _ARGUMENT.sub("", text).strip(" \t\r\n,")
    if leftover:
        raise UnsupportedQuery(f"ins_query: cannot read the arguments {leftover!r}")
    return arguments


def answer(
    query: str, instruments: Iterable[Instrument], variables: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The ``result`` of a ``multi_symbol_info`` query over the listed contracts.

    qaex lists no options or continuous contracts, so a future here never has derivatives, and a
    query for derivatives (TqSdk's ``query_options``) finds the future without any.
    """
    arguments = parse(query, variables)
    classes = _as_list(arguments.get("class", arguments.get("class_")))
    exchanges = _as_list(arguments.get("exchange_id"))
    products = _as_list(arguments.get("product_id"))
    symbols = _as_list(arguments.get("instrument_id"))
    expired = arguments.get("expired")
    has_night = arguments.get("has_night")
    found: list[dict[str, Any]] = []
    if classes is not None and "FUTURE" not in classes:
        return {"multi_symbol_info": found}  # every listed contract is a future
    if arguments.get("has_derivatives") is True:
        return {"multi_symbol_info": found}  # ... and none has options listed on it
    for instrument in instruments:
        symbol = f"{instrument.exchange_id}.{instrument.instrument_id}"
        if exchanges is not None and instrument.exchange_id not in exchanges:
            continue
        if products is not None and instrument.product_id not in products:
            continue
        if symbols is not None and symbol not in symbols:
            continue
        if expired is not None and instrument.expired != expired:
            continue
        if has_night is not None and bool(instrument.trading_time.night) != has_night:
            continue
        found.append(
            {
                "__typename": "future",
                "instrument_id": symbol,
                "instrument_name": instrument.instrument_name,
                "class": "FUTURE",
                "exchange_id": instrument.exchange_id,
                "product_id": instrument.product_id,
                "price_tick": instrument.price_tick,
                "volume_multiple": instrument.volume_multiple,
                "expired": instrument.expired,
                "expire_datetime": instrument.expire_datetime,
            }
        )
    return {"multi_symbol_info": found}


def _as_list(value: Any) -> list[str] | None:
    if value is None:
        return None
    return [str(item) for item in value] if isinstance(value, list) else [str(value)]
