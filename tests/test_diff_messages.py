"""DIFF client messages decode as TqSdk and tqsdk-js send them; bad frames give readable errors."""

from __future__ import annotations

import json
import math
from typing import Any

import msgspec
import pytest

from qaex.core.orders import InsertOrder
from qaex.protocol.diff import (
    NOTIFY_BAD_MESSAGE,
    NOTIFY_UNKNOWN_AID,
    RTN_BROKERS,
    CancelOrder,
    ChangePassword,
    ConfirmSettlement,
    DiffProtocolError,
    InsertOrderMessage,
    InsQuery,
    PeekMessage,
    ReqLogin,
    ReqTransfer,
    SetChart,
    SubscribeQuote,
    decode_client_message,
    encode_rtn_data,
)

# As TqSdk 3.10.4 builds them (tqsdk/api.py, tqsdk/tradeable/otg/tqaccount.py), extra fields included.
TQSDK_LIMIT_ORDER = {
    "aid": "insert_order", "account_key": "140000000", "user_id": "u1", "order_id": "PYSDK_insert_1",
    "exchange_id": "SHFE", "instrument_id": "cu2601", "direction": "BUY", "offset": "OPEN", "volume": 2,
    "price_type": "LIMIT", "limit_price": 70000.0, "time_condition": "GFD", "volume_condition": "ANY",
}  # fmt: skip
TQSDK_MARKET_ORDER = {
    "aid": "insert_order", "user_id": "u1", "order_id": "o2", "exchange_id": "DCE", "instrument_id": "m2601",
    "direction": "SELL", "offset": "CLOSETODAY", "volume": 1, "price_type": "ANY", "time_condition": "IOC",
    "volume_condition": "ANY",
}  # fmt: skip
TQSDK_LOGIN = {
    "aid": "req_login", "bid": "qaex", "user_name": "u1", "password": "p", "client_mac_address": "00-11",
    "client_app_id": "SHINNY_TQ_1.0", "client_system_info": "abc", "backend": "x",
}  # fmt: skip


def frame(message: dict[str, Any]) -> bytes:
    return json.dumps(message).encode()


def error_of(data: bytes | str) -> DiffProtocolError:
    with pytest.raises(DiffProtocolError) as info:
        decode_client_message(data)
    return info.value


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        ({"aid": "peek_message"}, PeekMessage()),
        (TQSDK_LOGIN, ReqLogin(bid="qaex", user_name="u1", password="p")),
        ({"aid": "confirm_settlement"}, ConfirmSettlement()),
        (
            {"aid": "subscribe_quote", "ins_list": "SHFE.cu2601,DCE.m2601"},
            SubscribeQuote(ins_list="SHFE.cu2601,DCE.m2601"),
        ),
        (
            {
                "aid": "set_chart",
                "chart_id": "c1",
                "ins_list": "SHFE.cu2601",
                "duration": 60_000_000_000,
                "view_width": 200,
            },
            SetChart(chart_id="c1", ins_list="SHFE.cu2601", duration=60_000_000_000, view_width=200),
        ),
        (
            {"aid": "cancel_order", "account_key": "k", "user_id": "u1", "order_id": "o1"},
            CancelOrder(user_id="u1", order_id="o1"),
        ),
        (
            {
                "aid": "req_transfer",
                "bank_id": "1",
                "bank_password": "b",
                "future_account": "u1",
                "future_password": "p",
                "currency": "CNY",
                "amount": 1000,
            },
            ReqTransfer(
                bank_id="1", bank_password="b", future_account="u1", future_password="p", amount=1000.0
            ),
        ),
        (
            {"aid": "change_password", "old_password": "a", "new_password": "b"},
            ChangePassword(old_password="a", new_password="b"),
        ),
        (
            {"aid": "ins_query", "query_id": "q1", "query": "{...}", "variables": {"instrument_id": ["cu"]}},
            InsQuery(query_id="q1", query="{...}", variables={"instrument_id": ["cu"]}),
        ),
    ],
)
def test_every_aid_decodes(message: dict[str, Any], expected: object) -> None:
    assert decode_client_message(frame(message)) == expected


def test_text_frames_decode_like_bytes() -> None:
    assert decode_client_message('{"aid":"peek_message"}') == PeekMessage()


def test_tqsdk_limit_order_decodes_to_a_core_insert_order() -> None:
    message = decode_client_message(frame(TQSDK_LIMIT_ORDER))
    assert isinstance(message, InsertOrderMessage)
    assert isinstance(message, InsertOrder)
    assert (message.symbol, message.volume, message.limit_price) == ("SHFE.cu2601", 2, 70000.0)


def test_market_order_without_limit_price_defaults_to_zero() -> None:
    message = decode_client_message(frame(TQSDK_MARKET_ORDER))
    assert isinstance(message, InsertOrderMessage)
    assert (message.price_type, message.limit_price, message.time_condition) == ("ANY", 0.0, "IOC")


def test_set_chart_tqsdk_historical_fields_decode() -> None:
    message = decode_client_message(
        frame({"aid": "set_chart", "chart_id": "c", "ins_list": "SHFE.cu2601", "duration": 0,
               "view_width": 2000, "focus_datetime": 1_700_000_000_000_000_000, "focus_position": 0})
    )  # fmt: skip
    assert isinstance(message, SetChart)
    assert (message.focus_datetime, message.focus_position, message.left_kline_id) == (
        1_700_000_000_000_000_000,
        0,
        None,
    )


def test_set_chart_without_view_width_uses_tqsdk_js_default() -> None:
    message = decode_client_message(
        frame({"aid": "set_chart", "chart_id": "c", "ins_list": "A.b", "duration": 0, "trading_day_count": 2})
    )
    assert isinstance(message, SetChart)
    assert message.view_width == 500


def test_ins_query_without_variables_decodes() -> None:
    assert decode_client_message(frame({"aid": "ins_query", "query_id": "q", "query": "x"})) == InsQuery(
        query_id="q", query="x"
    )


def test_wrong_field_type_names_the_field() -> None:
    error = error_of(frame({**TQSDK_LIMIT_ORDER, "volume": "2"}))
    assert error.code == NOTIFY_BAD_MESSAGE
    assert error.message == "invalid insert_order: Expected `int`, got `str` - at `$.volume`"


def test_non_positive_volume_is_refused() -> None:
    assert "$.volume" in error_of(frame({**TQSDK_LIMIT_ORDER, "volume": 0})).message


def test_unknown_direction_is_refused() -> None:
    assert "$.direction" in error_of(frame({**TQSDK_LIMIT_ORDER, "direction": "UP"})).message


def test_missing_required_field_is_named() -> None:
    error = error_of(frame({"aid": "cancel_order", "user_id": "u1"}))
    assert error.message == "invalid cancel_order: Object missing required field `order_id`"


def test_malformed_json_is_refused() -> None:
    error = error_of(b'{"aid": "peek_message"')
    assert error.code == NOTIFY_BAD_MESSAGE
    assert error.message.startswith("malformed JSON")


def test_non_object_is_refused() -> None:
    assert error_of(b"[1, 2]").message == "a DIFF message must be a JSON object, got array"


def test_missing_aid_is_refused() -> None:
    assert error_of(b'{"ins_list": "A.b"}').message == "message has no `aid`"


def test_unknown_aid_is_refused() -> None:
    error = error_of(b'{"aid": "set_risk_management_rule"}')
    assert (error.code, error.message) == (NOTIFY_UNKNOWN_AID, "unknown aid 'set_risk_management_rule'")


def test_non_string_aid_is_refused() -> None:
    assert error_of(b'{"aid": [1]}').code == NOTIFY_UNKNOWN_AID


def test_rtn_data_encoding() -> None:
    encoded = encode_rtn_data([{"quotes": {"A.b": {"last_price": 1.5}}}, {"x": None}])
    assert msgspec.json.decode(encoded) == {
        "aid": "rtn_data",
        "data": [{"quotes": {"A.b": {"last_price": 1.5}}}, {"x": None}],
    }


def test_rtn_data_encodes_nan_as_null() -> None:
    assert encode_rtn_data([{"q": {"p": math.nan}}]) == b'{"aid":"rtn_data","data":[{"q":{"p":null}}]}'


def test_rtn_brokers_frame() -> None:
    assert msgspec.json.decode(RTN_BROKERS) == {"aid": "rtn_brokers", "brokers": ["qaex"]}
