"""ins_query: the contract queries TqSdk's query_quotes sends, answered from the listed contracts."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from qaex.core import ins_query
from qaex.core.instruments import InstrumentRegistry

# Exactly what TqSdk 3.10.4 (sgqlc) sends for query_quotes(...), copied from its output.
SHFE_FUTURES = (
    'query {\n  multi_symbol_info(class: [FUTURE], exchange_id: ["SHFE"]) {\n    __typename\n'
    "    ... on basic {\n      instrument_id\n    }\n  }\n}"
)
AU_CU_NIGHT = (
    'query {\n  multi_symbol_info(\n      class: [FUTURE]\n      product_id: ["au", "cu"]\n      expired: false\n'
    "      has_night: true\n    ) {\n    __typename\n    ... on basic {\n      instrument_id\n    }\n  }\n}"
)
EVERYTHING = (
    "query {\n  multi_symbol_info {\n    __typename\n    ... on basic {\n      instrument_id\n    }\n  }\n}"
)


def symbols(query: str) -> list[str]:
    return [
        entry["instrument_id"]
        for entry in ins_query.answer(query, InstrumentRegistry().values())["multi_symbol_info"]
    ]


def test_arguments_are_read_from_the_query_text() -> None:
    assert ins_query.parse(SHFE_FUTURES) == {"class": ["FUTURE"], "exchange_id": ["SHFE"]}
    assert ins_query.parse(AU_CU_NIGHT) == {
        "class": ["FUTURE"], "product_id": ["au", "cu"], "expired": False, "has_night": True,
    }  # fmt: skip
    assert ins_query.parse(EVERYTHING) == {}


def test_filters_select_the_listed_contracts() -> None:
    assert symbols(SHFE_FUTURES) == ["SHFE.cu2601", "SHFE.au2602", "SHFE.rb2601"]
    assert symbols(AU_CU_NIGHT) == ["SHFE.cu2601", "SHFE.au2602"]
    assert len(symbols(EVERYTHING)) == len(InstrumentRegistry())
    assert symbols(SHFE_FUTURES.replace("FUTURE", "OPTION")) == []  # qaex lists futures only
    assert symbols(AU_CU_NIGHT.replace("has_night: true", "has_night: false")) == []
    entry = ins_query.answer(SHFE_FUTURES, InstrumentRegistry().values())["multi_symbol_info"][0]
    assert entry["class"] == "FUTURE" and entry["product_id"] == "cu" and entry["price_tick"] == 10.0


@pytest.mark.parametrize(
    "query",
    [
        'query { symbol_info(instrument_id: ["SHFE.cu2601"]) { instrument_id } }',
        'query { multi_symbol_info(underlying_symbol: ["SHFE.cu2601"]) { instrument_id } }',
        "query { multi_symbol_info(class: [FUTURE] junk) { instrument_id } }",
    ],
)
def test_what_qaex_cannot_answer_is_refused_with_a_reason(query: str) -> None:
    with pytest.raises(ins_query.UnsupportedQuery, match="ins_query"):
        ins_query.answer(query, InstrumentRegistry().values())


# TqSdk's get_quote/query_symbol_info for a few old contracts: the list comes in `variables`.
BY_VARIABLE = (
    "query rootQuery($instrument_id: [String]) {\n  multi_symbol_info(instrument_id: $instrument_id) {\n"
    "    __typename\n    ...basic\n    ...future\n  }\n}\nfragment basic on basic {\n  instrument_id\n}\n"
    "fragment future on future {\n  product_id\n}"
)
# TqSdk's query_options("SHFE.cu2601") and query_cont_quotes(), as sgqlc writes them.
OPTIONS_OF_CU = (
    'query {\n  multi_symbol_info(instrument_id: ["SHFE.cu2601"]) {\n    __typename\n    ... on basic {\n'
    "      instrument_id\n      derivatives(class: [OPTION]) {\n        edges {\n          node {\n"
    "            __typename\n            ... on basic {\n              class\n              instrument_id\n"
    "            }\n          }\n        }\n      }\n    }\n  }\n}"
)
CONTINUOUS = (
    "query {\n  multi_symbol_info(class: [CONT]) {\n    __typename\n    ... on basic {\n      instrument_id\n"
    "    }\n    ... on derivative {\n      underlying {\n        edges {\n          node {\n"
    "            __typename\n            ... on basic {\n              instrument_id\n            }\n"
    "          }\n        }\n      }\n    }\n  }\n}"
)


def test_a_variable_argument_takes_its_value_from_variables() -> None:
    registry = InstrumentRegistry().values()
    found = ins_query.answer(BY_VARIABLE, registry, {"instrument_id": ["DCE.m2601"]})["multi_symbol_info"]
    assert [entry["instrument_id"] for entry in found] == ["DCE.m2601"]
    with pytest.raises(ins_query.UnsupportedQuery, match=r"\$instrument_id"):
        ins_query.answer(BY_VARIABLE, registry, None)


def test_options_and_continuous_contracts_are_found_empty() -> None:
    """No options listed, and without main contracts (``answer``'s last argument; see
    tests/test_main_contracts.py) no continuous series: query_options and query_cont_quotes get an
    answer with nothing in it."""
    registry = InstrumentRegistry().values()
    futures = ins_query.answer(OPTIONS_OF_CU, registry)["multi_symbol_info"]
    assert [entry["instrument_id"] for entry in futures] == ["SHFE.cu2601"]
    assert not any(entry.get("derivatives") for entry in futures)  # TqSdk then lists no option
    assert symbols(CONTINUOUS) == []
    with_options = SHFE_FUTURES.replace('exchange_id: ["SHFE"]', "has_derivatives: true")
    assert symbols(with_options) == []
    assert symbols(with_options.replace("true", "false")) != []


# -- hostile input (issue #13): every query is answered in time linear in its length ---------------
def query_with(arguments: str) -> str:
    """A ``multi_symbol_info`` query whose argument text is `arguments`."""
    return f"query {{\n  multi_symbol_info({arguments}) {{\n    __typename\n  }}\n}}"


def sized(head: str, unit: str, tail: str, length: int) -> str:
    """`head`, then `unit` repeated, then `tail`: a text of exactly `length` characters."""
    room = length - len(head) - len(tail)
    return head + (unit * (room // len(unit) + 1))[:room] + tail


def seconds_to_parse(query: str, variables: dict[str, Any] | None = None) -> float:
    """How long parse() takes to answer `query`: with its arguments, or an UnsupportedQuery."""
    start = time.perf_counter()
    try:
        ins_query.parse(query, variables)
    except ins_query.UnsupportedQuery:
        pass
    return time.perf_counter() - start


HOSTILE_SHAPES = {
    "long argument run": ("query { multi_symbol_info(", "a", ") { x } }"),
    "unterminated string": ('query { multi_symbol_info(instrument_id: ["', "a", ""),
    "unterminated string of escapes": ('query { multi_symbol_info(instrument_id: ["', "\\a", ""),
    "list without ]": ("query { multi_symbol_info(instrument_id: [", '"a", ', ") { x } }"),
    "list of bare words without ]": ("query { multi_symbol_info(class: [", "a ", ") { x } }"),
    "list of escaped strings": ("query { multi_symbol_info(instrument_id: [", '"\\n",', ") { x } }"),
    "many name: pairs": ("query { multi_symbol_info(", "class: ", ") { x } }"),
    "many arguments": ("query { multi_symbol_info(", "expired: true, ", ") { x } }"),
    "nested parentheses": ("query { multi_symbol_info(", "(", ""),
    "nested brackets": ("query { multi_symbol_info(class: ", "[", ""),
    "long integer": ("query { multi_symbol_info(timestamp: ", "1", ") { x } }"),
    "long variable name": ("query { multi_symbol_info(instrument_id: $", "a", ") { x } }"),
    "calls without )": ("query { ", "multi_symbol_info(", ""),
    "calls without {": ("query { ", "multi_symbol_info ", ""),
    "no call at all": ("query { ", "multi_symbol_inf ", ""),
}


@pytest.mark.parametrize("size", ["32000", "at the cap", "1 MiB"])
@pytest.mark.parametrize("shape", HOSTILE_SHAPES)
def test_a_hostile_query_is_answered_at_once(shape: str, size: str) -> None:
    """A single frame cannot hold the event loop: the old argument regex took 15 s on 32,000 chars."""
    length = ins_query.MAX_QUERY_LENGTH if size == "at the cap" else {"32000": 32_000, "1 MiB": 1 << 20}[size]
    query = sized(*HOSTILE_SHAPES[shape], length)
    assert len(query) == length
    assert seconds_to_parse(query) < 0.2  # generous: the worst case measured at the cap takes ~6 ms


@pytest.mark.parametrize(
    "value",
    [
        "1" * 5000,
        "-" + "1" * 5000,
        "9" * 20,
        str(2**63),
        str(-(2**63) - 1),
    ],
)
def test_an_integer_outside_64_bits_is_refused(value: str) -> None:
    with pytest.raises(ins_query.UnsupportedQuery, match="64-bit"):
        ins_query.parse(query_with(f"timestamp: {value}"))
    with pytest.raises(ins_query.UnsupportedQuery, match="64-bit"):
        ins_query.parse(query_with(f"instrument_id: [{value}]"))


def test_integers_within_64_bits_are_read() -> None:
    nanoseconds = 1_767_225_600_000_000_000  # TqSdk's backtest timestamp, nanoseconds since 1970
    assert ins_query.parse(query_with(f"timestamp: {nanoseconds}")) == {"timestamp": nanoseconds}
    assert ins_query.parse(query_with(f"timestamp: {2**63 - 1}")) == {"timestamp": 2**63 - 1}
    assert ins_query.parse(query_with(f"timestamp: {-(2**63)}")) == {"timestamp": -(2**63)}


def test_a_query_longer_than_the_cap_is_refused_before_it_is_read() -> None:
    cap = ins_query.MAX_QUERY_LENGTH
    padded = sized(SHFE_FUTURES[:-1], " ", "}", cap)  # blanks inside the selection set
    assert ins_query.parse(padded) == {"class": ["FUTURE"], "exchange_id": ["SHFE"]}
    with pytest.raises(ins_query.UnsupportedQuery, match=f"longer than {cap} characters"):
        ins_query.parse(padded[:-1] + " }")


def test_query_symbol_info_for_thousands_of_contracts_fits_the_caps() -> None:
    """TqSdk asks for every unknown contract in one query: ~2,600 chars of fragments + ~15 per symbol."""
    listed = [f"SHFE.cu{2600 + month}" for month in range(3000)]
    query = query_with("instrument_id: " + json.dumps(listed)) + " " * 2600
    assert len(query) < ins_query.MAX_QUERY_LENGTH
    assert ins_query.parse(query) == {"instrument_id": listed}


def test_a_list_longer_than_the_cap_is_refused() -> None:
    cap = ins_query.MAX_LIST_ITEMS
    assert ins_query.parse(query_with("class: [" + "A " * cap + "]")) == {"class": ["A"] * cap}
    with pytest.raises(ins_query.UnsupportedQuery, match=f"more than {cap} items"):
        ins_query.parse(query_with("class: [" + "A " * (cap + 1) + "]"))
    by_variable = {"instrument_id": ["SHFE.cu2601"] * (cap + 1)}
    with pytest.raises(ins_query.UnsupportedQuery, match=rf"\$instrument_id.*more than {cap} items"):
        ins_query.parse(BY_VARIABLE, by_variable)


def test_an_argument_given_twice_is_refused() -> None:
    with pytest.raises(ins_query.UnsupportedQuery, match="'expired' more than once"):
        ins_query.parse(query_with("expired: true, expired: false"))


@pytest.mark.parametrize(
    "arguments",
    [
        'instrument_id: ["SHFE.cu2601"',  # the text ends inside a list
        'instrument_id: ["SHFE.cu2601',  # ... inside a string
        "instrument_id: [[FUTURE]]",  # lists hold strings, words and integers only
        "class: (FUTURE)",
        "expired: null",
        'instrument_id: ["bad \\q escape"]',
        "class: [FUTURE] # a comment",
        "instrument_id: [$instrument_id]",
    ],
)
def test_malformed_arguments_are_refused(arguments: str) -> None:
    with pytest.raises(ins_query.UnsupportedQuery, match="ins_query: cannot read the arguments"):
        ins_query.parse(query_with(arguments))


def test_a_refusal_quotes_a_bounded_excerpt_of_the_query() -> None:
    with pytest.raises(ins_query.UnsupportedQuery) as refused:
        ins_query.parse(query_with("a" * 30_000))
    assert len(str(refused.value)) < 200


def test_strings_are_read_with_their_escapes() -> None:
    """sgqlc writes a string as json.dumps does: quotes, backslashes and non-ASCII come escaped."""
    query = query_with(r'product_id: ["a\"b", "c\\d", "\u4e2d", "x)y"], exchange_id: "SHFE"')
    assert ins_query.parse(query) == {"product_id": ['a"b', "c\\d", "中", "x)y"], "exchange_id": "SHFE"}


@pytest.mark.parametrize(
    "value",
    [
        None,
        1.5,
        {"a": 1},
        [["SHFE.cu2601"]],
        ["SHFE.cu2601", None],
        [True],
        pytest.param(10**5000, id="10**5000"),  # str() of it raises: the id is given
        2**63,
        [2**63],
    ],
)
def test_a_variable_of_another_kind_is_refused_naming_it(value: object) -> None:
    with pytest.raises(ins_query.UnsupportedQuery, match=r"\$instrument_id"):
        ins_query.parse(BY_VARIABLE, {"instrument_id": value})


@pytest.mark.parametrize("value", ["SHFE.cu2601", ["SHFE.cu2601", 2601], [], True, 2**63 - 1])
def test_a_variable_of_a_known_kind_is_taken(value: object) -> None:
    assert ins_query.parse(BY_VARIABLE, {"instrument_id": value}) == {"instrument_id": value}


def test_expire_datetime_is_in_nanoseconds_as_tqsdk_reads_it() -> None:
    # TqSdk's utils_symbols turns the GraphQL field into a quote's seconds by dividing by 1e9: a value in
    # seconds there made every contract looked up by query_symbol_info expire in 1970.
    from tqsdk.utils_symbols import _symbols_to_quotes  # the function TqSdk applies to the answer

    instruments = list(InstrumentRegistry().values())
    answer = ins_query.answer('query { multi_symbol_info(instrument_id: ["SHFE.cu2601"]) { ... } }', instruments)
    (entry,) = answer["multi_symbol_info"]
    cu = next(i for i in instruments if i.symbol == "SHFE.cu2601")
    assert entry["expire_datetime"] == int(cu.expire_datetime * 1e9)
    quotes = _symbols_to_quotes({"result": answer})
    assert quotes["SHFE.cu2601"]["expire_datetime"] == pytest.approx(cu.expire_datetime)
