"""ins_query: the contract queries TqSdk's query_quotes sends, answered from the listed contracts."""

from __future__ import annotations

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
    """qaex lists futures only: query_options and query_cont_quotes get an answer with nothing in it."""
    registry = InstrumentRegistry().values()
    futures = ins_query.answer(OPTIONS_OF_CU, registry)["multi_symbol_info"]
    assert [entry["instrument_id"] for entry in futures] == ["SHFE.cu2601"]
    assert not any(entry.get("derivatives") for entry in futures)  # TqSdk then lists no option
    assert symbols(CONTINUOUS) == []
    with_options = SHFE_FUTURES.replace('exchange_id: ["SHFE"]', "has_derivatives: true")
    assert symbols(with_options) == []
    assert symbols(with_options.replace("true", "false")) != []
