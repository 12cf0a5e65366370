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
