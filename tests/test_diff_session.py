"""DiffSession: flow control, authorisation, subscriptions and the pending bound, with no IO."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from qaex.core import notify_codes
from qaex.core.errors import QaexError
from qaex.core.instruments import InstrumentRegistry
from qaex.core.notify_codes import (
    NOTIFY_BAD_MESSAGE,
    NOTIFY_CANCEL_WRONG_USER,
    NOTIFY_DUPLICATE_LOGIN,
    NOTIFY_LOGIN_FAILED,
    NOTIFY_LOGIN_OK,
    NOTIFY_PASSWORD_CHANGED,
    NOTIFY_RATE_LIMITED,
    NOTIFY_REFUSED,
    NOTIFY_TRANSFER_FAILED,
    NOTIFY_UNKNOWN_AID,
    NOTIFY_WRONG_USER,
)
from qaex.core.patch import merge_patch, tree_size
from qaex.protocol import diff
from qaex.protocol.diff import (
    CancelOrder,
    InsertOrderMessage,
    InsQuery,
    ReqLogin,
    ReqTransfer,
    SetChart,
    SubscribeQuote,
)
from qaex.protocol.session import (
    CLOSE_RATE_LIMITED,
    MAX_PENDING_NOTIFIES,
    CloseConnection,
    Deposit,
    DiffSession,
    Withdraw,
)

PEEK = b'{"aid":"peek_message"}'


def order_frame(user_id: str = "u1", order_id: str = "o1") -> bytes:
    return json.dumps(
        {"aid": "insert_order", "user_id": user_id, "order_id": order_id, "exchange_id": "SHFE",
         "instrument_id": "cu2601", "direction": "BUY", "offset": "OPEN", "volume": 1,
         "price_type": "LIMIT", "limit_price": 70000.0}
    ).encode()  # fmt: skip


def data_of(session: DiffSession) -> list[dict[str, Any]]:
    frame = session.data_to_send()
    assert frame is not None
    message = json.loads(frame)
    assert message["aid"] == "rtn_data"
    data: list[dict[str, Any]] = message["data"]
    return data


def started() -> DiffSession:
    """A session whose first rtn_data (mdhis_more_data) has been sent and that has no peek outstanding."""
    session = DiffSession(1)
    session.receive(PEEK)
    data_of(session)
    return session


def logged_in(user_id: str = "u1") -> DiffSession:
    session = started()
    session.receive(json.dumps({"aid": "req_login", "bid": "qaex", "user_name": user_id, "password": "p"}))
    session.logged_in(user_id)
    return session


def notifies(data: list[dict[str, Any]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for patch in data:
        found.update(patch.get("notify", {}))
    return found


def sent_notifies(session: DiffSession) -> list[tuple[str, int, str]]:
    """(level, code, content) of the notifies the session sends next (after a peek)."""
    session.receive(PEEK)
    if not session.wants_data():
        return []
    return [(n["level"], n["code"], n["content"]) for n in notifies(data_of(session)).values()]


def client_tree(data: list[dict[str, Any]]) -> dict[str, Any]:
    tree: dict[str, Any] = {}
    for patch in data:
        merge_patch(tree, patch)
    return tree


# -- flow control ---------------------------------------------------------------------------------------


def test_first_peek_is_answered_at_once_with_mdhis_more_data_false() -> None:
    session = DiffSession(1)
    session.receive(PEEK)
    assert session.wants_data()
    assert client_tree(data_of(session)) == {"mdhis_more_data": False}


def test_no_data_without_peek() -> None:
    session = started()
    session.push({"quotes": {"A.b": {"last_price": 1.0}}})
    assert not session.wants_data()
    assert session.data_to_send() is None


def test_peek_is_held_until_something_is_pushed() -> None:
    session = started()
    assert session.receive(PEEK) == []
    assert not session.wants_data()
    session.push({"quotes": {"A.b": {"last_price": 1.0}}})
    assert session.wants_data()
    assert data_of(session) == [{"quotes": {"A.b": {"last_price": 1.0}}}]


def test_two_peeks_give_one_rtn_data() -> None:
    session = started()
    session.receive(PEEK)
    session.receive(PEEK)
    session.push({"a": 1})
    data_of(session)
    session.push({"a": 2})
    assert not session.wants_data()
    assert session.data_to_send() is None


def test_changes_between_peeks_are_coalesced() -> None:
    session = started()
    for price in (1.0, 2.0, 3.0):
        session.push({"quotes": {"A.b": {"last_price": price}}})
    session.receive(PEEK)
    assert data_of(session) == [{"quotes": {"A.b": {"last_price": 3.0}}}]


def test_pushed_patch_is_not_mutated() -> None:
    session = started()
    patch = {"trade": {"u1": {"orders": {"o1": {"status": "ALIVE"}}}}, "notify": {"k": {"content": "x"}}}
    session.push(patch)
    session.push({"trade": {"u1": {"orders": {"o1": {"status": "FINISHED"}}}}})
    assert patch == {
        "trade": {"u1": {"orders": {"o1": {"status": "ALIVE"}}}},
        "notify": {"k": {"content": "x"}},
    }


# -- bad frames -----------------------------------------------------------------------------------------


def test_bad_frame_gives_error_notify_and_session_continues() -> None:
    session = started()
    assert session.receive(b"{not json") == []
    assert session.receive(b'{"aid":"no_such_thing"}') == []
    session.receive(PEEK)
    found = list(notifies(data_of(session)).values())
    assert [(n["level"], n["code"]) for n in found] == [
        ("ERROR", NOTIFY_BAD_MESSAGE),
        ("ERROR", NOTIFY_UNKNOWN_AID),
    ]
    assert "unknown aid 'no_such_thing'" in found[1]["content"]
    assert session.receive(json.dumps({"aid": "subscribe_quote", "ins_list": "A.b"}))


def test_notify_keys_are_unique_across_sessions_and_deliveries() -> None:
    keys: list[str] = []
    for session_id in (1, 2):
        session = DiffSession(session_id)
        for _ in range(2):
            session.receive(b"[]")
            session.receive(PEEK)
            keys += notifies(data_of(session))
    assert len(keys) == len(set(keys)) == 4


def test_notifies_survive_a_resync() -> None:
    session = DiffSession(1, max_pending=10)
    session.login_succeeded()
    for n in range(20):
        session.push({"trades": {f"t{n}": {"volume": 1}}})
    assert session.resync_needed
    session.reset([{"trades": {}}])
    session.receive(PEEK)
    assert [n["content"] for n in notifies(data_of(session)).values()] == ["登录成功"]


def test_pending_notifies_are_bounded() -> None:
    session = started()
    for _ in range(MAX_PENDING_NOTIFIES + 50):
        session.receive(b"[]")
    session.receive(PEEK)
    assert len(notifies(data_of(session))) == MAX_PENDING_NOTIFIES


# -- subscriptions --------------------------------------------------------------------------------------


def test_subscribe_quote_updates_ins_list_and_echoes_it() -> None:
    session = started()
    events = session.receive(json.dumps({"aid": "subscribe_quote", "ins_list": "SHFE.cu2601,DCE.m2601,"}))
    assert events == [SubscribeQuote(ins_list="SHFE.cu2601,DCE.m2601,")]
    assert session.ins_list == ["SHFE.cu2601", "DCE.m2601"]
    session.receive(PEEK)
    assert client_tree(data_of(session)) == {"ins_list": "SHFE.cu2601,DCE.m2601,"}


def test_set_chart_is_recorded_and_returned() -> None:
    session = started()
    request = {
        "aid": "set_chart",
        "chart_id": "c1",
        "ins_list": "A.b",
        "duration": 60_000_000_000,
        "view_width": 10,
    }
    [event] = session.receive(json.dumps(request))
    assert isinstance(event, SetChart)
    assert session.charts == {"c1": event}


def test_set_chart_with_empty_ins_list_deletes_the_chart() -> None:
    session = started()
    session.receive(
        json.dumps({"aid": "set_chart", "chart_id": "c1", "ins_list": "A.b", "duration": 0, "view_width": 10})
    )
    [event] = session.receive(
        json.dumps({"aid": "set_chart", "chart_id": "c1", "ins_list": "", "duration": 0, "view_width": 10})
    )
    assert isinstance(event, SetChart)
    assert session.charts == {}
    session.receive(PEEK)
    assert data_of(session) == [{"charts": {"c1": None}}]


# -- login and authorisation -----------------------------------------------------------------------------


def test_req_login_is_returned_for_the_exchange_to_check() -> None:
    session = started()
    [event] = session.receive(
        json.dumps({"aid": "req_login", "bid": "qaex", "user_name": "u1", "password": "p"})
    )
    assert event == ReqLogin(bid="qaex", user_name="u1", password="p")
    assert session.user_id is None


def test_second_login_on_a_connection_is_refused() -> None:
    session = logged_in()
    assert (
        session.receive(json.dumps({"aid": "req_login", "bid": "qaex", "user_name": "u2", "password": "p"}))
        == []
    )
    session.receive(PEEK)
    assert [n["code"] for n in notifies(data_of(session)).values()] == [NOTIFY_DUPLICATE_LOGIN]


def test_login_may_be_retried_after_failure() -> None:
    session = started()
    login = json.dumps({"aid": "req_login", "bid": "qaex", "user_name": "u1", "password": "bad"})
    session.receive(login)
    session.login_failed()
    assert len(session.receive(login)) == 1


def test_confirm_settlement_is_accepted_silently_even_before_login() -> None:
    session = started()
    assert session.receive(b'{"aid":"confirm_settlement"}') == []
    session.receive(PEEK)
    assert not session.wants_data()


def test_trade_message_before_login_gives_error_notify() -> None:
    session = started()
    assert session.receive(order_frame()) == []
    assert session.receive(b'{"aid":"req_transfer","amount":100}') == []
    session.receive(PEEK)
    found = list(notifies(data_of(session)).values())
    assert [(n["level"], n["code"]) for n in found] == [("ERROR", NOTIFY_WRONG_USER)] * 2
    assert "not logged in" in found[0]["content"]


def test_insert_order_for_own_user_is_returned() -> None:
    session = logged_in("u1")
    [event] = session.receive(order_frame("u1"))
    assert isinstance(event, InsertOrderMessage)
    assert event.order_id == "o1"


def test_an_insert_refused_as_a_whole_finishes_the_clients_order_with_the_reason() -> None:
    session = logged_in("u1")
    [event] = session.receive(order_frame("u1", "o7"))
    assert isinstance(event, InsertOrderMessage)
    closed = QaexError("下单失败, 合约 SHFE.cu2601 不在交易时间", code="market_closed", diff_code=425)
    session.order_refused(event, closed)
    session.receive(PEEK)
    data = data_of(session)
    order = client_tree(data)["trade"]["u1"]["orders"]["o7"]
    assert order["status"] == "FINISHED" and order["exchange_order_id"] == ""
    assert order["volume_left"] == order["volume_orign"] == 1 and order["last_msg"] == closed.message
    assert [n["code"] for n in notifies(data).values()] == [425]


def test_a_duplicate_order_id_is_refused_without_touching_the_existing_order() -> None:
    session = logged_in("u1")
    [event] = session.receive(order_frame("u1", "o7"))
    assert isinstance(event, InsertOrderMessage)
    session.order_refused(event, QaexError("委托单号重复: o7", code="duplicate_order_id", diff_code=407))
    session.receive(PEEK)
    data = data_of(session)
    assert "trade" not in client_tree(data) and [n["code"] for n in notifies(data).values()] == [407]


def test_insert_order_for_another_user_is_refused_with_408() -> None:
    session = logged_in("u1")
    assert session.receive(order_frame("u2")) == []
    session.receive(PEEK)
    assert [n["code"] for n in notifies(data_of(session)).values()] == [NOTIFY_WRONG_USER]


def test_cancel_order_for_another_user_is_refused_with_418() -> None:
    session = logged_in("u1")
    assert session.receive(b'{"aid":"cancel_order","user_id":"u2","order_id":"o1"}') == []
    assert session.receive(b'{"aid":"cancel_order","user_id":"u1","order_id":"o1"}') == [
        CancelOrder(user_id="u1", order_id="o1")
    ]
    session.receive(PEEK)
    assert [n["code"] for n in notifies(data_of(session)).values()] == [NOTIFY_CANCEL_WRONG_USER]


# -- memory bound and resync ----------------------------------------------------------------------------


def trade_patches(user_id: str, count: int) -> Iterator[dict[str, Any]]:
    """What the gateway pushes for a busy user: order, trade (new id each time), position and account."""
    for n in range(count):
        order = {"status": "FINISHED", "volume_left": 0, "last_msg": "全部成交", "exchange_order_id": f"x{n}"}
        trade = {
            "order_id": f"o{n}",
            "trade_id": f"t{n}",
            "volume": 1,
            "price": 70000.0 + n % 7,
            "commission": 3.0,
        }
        position = {"pos_long_today": n, "volume_long": n, "float_profit": n * 5.0}
        account = {"balance": 1e6 + n, "available": 9e5 - n, "margin": n * 10.0}
        yield {
            "trade": {
                user_id: {
                    "orders": {f"o{n}": order},
                    "trades": {f"t{n}": trade},
                    "positions": {"SHFE.cu2601": position},
                    "accounts": {"CNY": account},
                }
            }
        }


def test_session_that_never_peeks_stays_bounded() -> None:
    session = DiffSession(1, max_pending=5_000)
    largest = 0
    for patch in trade_patches("u1", 100_000):
        session.push(patch)
        largest = max(largest, session.pending_size)
    assert session.resync_needed
    assert largest <= 5_000
    assert session.pending_size == 0  # dropped: the owner's reset() will send the full view instead


def test_owner_resyncs_keep_pending_within_twice_the_view() -> None:
    session = DiffSession(1, max_pending=1_000)
    snapshot: dict[str, Any] = {}
    resyncs = 0
    for patch in trade_patches("u1", 20_000):
        merge_patch(snapshot, patch)
        session.push(patch)
        if session.resync_needed:
            resyncs += 1
            session.reset([snapshot])
            assert session.view_size <= tree_size(snapshot) + 2  # + mdhis_more_data, trade
        assert session.pending_size <= session.pending_limit
    assert session.pending_limit <= 2 * (tree_size(snapshot) + 2)
    assert 0 < resyncs < 20  # the limit doubles with the view: resyncs are logarithmic in its growth


def test_resync_needed_blocks_data_until_reset() -> None:
    session = DiffSession(1, max_pending=10)
    session.receive(PEEK)
    for n in range(20):
        session.push({"trades": {f"t{n}": {"volume": 1}}})
    assert session.resync_needed
    assert session.wants_data()
    assert session.data_to_send() is None


def test_reset_sends_the_full_view_with_the_session_state() -> None:
    session = started()
    session.receive(json.dumps({"aid": "subscribe_quote", "ins_list": "A.b"}))
    session.view_size = 0
    for n in range(DiffSession(0).pending_limit + 1):
        session.push({"quotes": {f"X.{n}": {"last_price": 1.0}}})
    assert session.resync_needed
    session.push({"quotes": {"A.b": {"last_price": 2.0}}})  # ignored: the full view will include it
    session.reset([{"quotes": {"A.b": {"last_price": 2.0, "volume": 3}}}])
    assert not session.resync_needed
    session.receive(PEEK)
    assert client_tree(data_of(session)) == {
        "mdhis_more_data": False,
        "ins_list": "A.b",
        "quotes": {"A.b": {"last_price": 2.0, "volume": 3}},
    }


def test_reset_records_the_view_size_as_the_new_bound() -> None:
    session = DiffSession(1, max_pending=10)
    session.reset([{"trades": {f"t{n}": {"volume": 1} for n in range(100)}}])
    assert session.pending_limit >= 2 * 201


# -- the message rate limit (the owner's clock passed as `now`) -----------------------------------------


def test_no_message_limit_unless_the_owner_sets_one() -> None:
    session = started()
    for _ in range(1_000):
        assert session.receive(PEEK, 5.0) == []
    assert sent_notifies(session) == []


def test_frames_past_the_rate_are_dropped_with_one_429_notify() -> None:
    session = DiffSession(1, max_messages_per_second=3)
    subscribe = json.dumps({"aid": "subscribe_quote", "ins_list": "A.b"})
    assert [len(session.receive(subscribe, 10.0)) for _ in range(3)] == [1, 1, 1]
    assert session.receive(subscribe, 10.5) == []  # the 4th in second 10: dropped
    assert session.receive(b"{not json", 10.9) == []  # dropped before decoding: no 490 either
    [(level, code, content)] = sent_notifies(session)
    assert (level, code) == ("ERROR", NOTIFY_RATE_LIMITED)
    assert content == "too many messages: at most 3 per second"


def test_a_new_second_starts_a_new_window() -> None:
    session = DiffSession(1, max_messages_per_second=2)
    subscribe = json.dumps({"aid": "subscribe_quote", "ins_list": "A.b"})
    counts = [len(session.receive(subscribe, now)) for now in (7.0, 7.2, 7.9, 8.0, 8.99, 9.5)]
    assert counts == [1, 1, 0, 1, 1, 1]
    # One notify per second that went over, not one per dropped frame.
    session.receive(subscribe, 9.6)
    session.receive(subscribe, 9.7)
    codes = [code for _, code, _ in sent_notifies(session)]
    assert codes.count(NOTIFY_RATE_LIMITED) == 2


def test_past_four_times_the_rate_the_session_must_close() -> None:
    session = DiffSession(1, max_messages_per_second=5)
    answers = [session.receive(PEEK, 3.0) for _ in range(21)]
    assert all(answer == [] for answer in answers[:20])
    assert answers[20] == [CLOSE_RATE_LIMITED]
    assert CLOSE_RATE_LIMITED == CloseConnection(1008, "message rate limit exceeded")
    assert session.receive(PEEK, 3.5) == [CLOSE_RATE_LIMITED]  # still the same second
    assert session.receive(PEEK, 4.0) == []  # a later second counts afresh


# -- transfers --------------------------------------------------------------------------------------------


def transfer_of(amount: float, password: str = "") -> ReqTransfer:
    [event] = logged_in().receive(
        json.dumps({"aid": "req_transfer", "amount": amount, "future_password": password, "currency": "CNY"})
    )
    assert isinstance(event, ReqTransfer)
    return event


def test_a_positive_transfer_is_a_deposit_and_a_negative_one_a_withdrawal() -> None:
    session = logged_in()
    assert session.transfer(transfer_of(100.5, "pw")) == Deposit(100.5, "pw")
    assert session.transfer(transfer_of(-20.0)) == Withdraw(20.0, "")
    assert sent_notifies(session) == []


@pytest.mark.parametrize("amount", [0.0, -0.0])
def test_a_transfer_of_zero_is_refused_with_422(amount: float) -> None:
    session = logged_in()
    assert session.transfer(transfer_of(amount)) is None
    assert sent_notifies(session) == [("ERROR", NOTIFY_TRANSFER_FAILED, "转账失败: 转账金额不能为 0")]


def test_a_wrong_future_password_is_a_422() -> None:
    session = logged_in()
    session.transfer_password_wrong()
    assert sent_notifies(session) == [("ERROR", NOTIFY_TRANSFER_FAILED, "转账失败: 期货账户密码错误")]


# -- what the owner reports: notify texts and codes -------------------------------------------------------


def test_login_outcomes_are_notified() -> None:
    login = json.dumps({"aid": "req_login", "bid": "qaex", "user_name": "u1", "password": "p"})
    session = started()
    session.receive(login)
    session.login_refused()
    assert len(session.receive(login)) == 1  # refused: the client may try again
    session.login_refused(retry_after_seconds=8)
    assert len(session.receive(login)) == 1
    session.logged_in("u1")
    session.login_succeeded()
    assert sent_notifies(session) == [
        ("ERROR", NOTIFY_LOGIN_FAILED, "登录失败: 用户名或密码错误"),
        ("ERROR", NOTIFY_RATE_LIMITED, "登录失败: 失败次数过多, 请 8 秒后再试"),
        ("INFO", NOTIFY_LOGIN_OK, "登录成功"),
    ]
    assert session.user_id == "u1"


def test_refusals_carry_the_errors_code_or_the_generic_one() -> None:
    session = logged_in()
    session.refused(QaexError("撤单失败, 委托单不存在: o9", diff_code=420))
    session.refused(QaexError("weak password"))  # no DIFF code of its own
    session.password_changed()
    assert sent_notifies(session) == [
        ("ERROR", 420, "撤单失败, 委托单不存在: o9"),
        ("ERROR", NOTIFY_REFUSED, "weak password"),
        ("INFO", NOTIFY_PASSWORD_CHANGED, "修改密码成功"),
    ]


def test_ins_query_answers_drops_and_refusals() -> None:
    instruments = InstrumentRegistry().values()
    session = started()
    query = 'query {\n  multi_symbol_info(class: [FUTURE], exchange_id: ["DCE"]) {\n    instrument_id\n  }\n}'
    session.answer_query(InsQuery(query_id="q1", query=query, variables={}), instruments)
    session.answer_query(InsQuery(query_id="q2", query="query { options { x } }"), instruments)
    session.receive(PEEK)
    data = data_of(session)
    symbols = client_tree(data)["symbols"]
    assert symbols["q1"]["query"] == query and symbols["q1"]["variables"] == {}
    assert [e["instrument_id"] for e in symbols["q1"]["result"]["multi_symbol_info"]] == [
        "DCE.m2601",
        "DCE.i2601",
    ]
    assert symbols["q2"] == {"query": "", "variables": {}, "result": {}}  # answered, not echoed
    [note] = notifies(data).values()
    assert note["code"] == NOTIFY_BAD_MESSAGE and "multi_symbol_info" in note["content"]
    session.answer_query(InsQuery(query_id="q1", query=""), instruments)
    session.receive(PEEK)
    assert data_of(session) == [{"symbols": {"q1": None}}]


# -- notify codes -----------------------------------------------------------------------------------------

PROTOCOL_DOC = Path(__file__).resolve().parent.parent / "docs" / "diff-protocol.md"


def documented_codes() -> dict[int, str]:
    """The rows of the notify table of docs/diff-protocol.md: code -> meaning (``| 404 / 405 | ... |``)."""
    text = PROTOCOL_DOC.read_text()
    table = text[text.index("### Notify") :]
    rows: dict[int, str] = {}
    for codes, meaning in re.findall(r"^\| ([0-9][0-9 /]*?) \| (.+?) \|$", table, re.MULTILINE):
        for code in codes.split("/"):
            rows[int(code)] = meaning
    return rows


def test_every_notify_code_is_documented_with_its_meaning() -> None:
    constants = {name: value for name, value in vars(notify_codes).items() if name.startswith("NOTIFY_")}
    documented = documented_codes()
    assert len(constants) >= 20
    assert {name: code for name, code in constants.items() if code not in documented} == {}
    assert all(meaning.strip() for meaning in documented.values())
    assert set(documented) == set(constants.values())  # and the table lists no code qaex does not have


def test_the_protocol_re_exports_the_cores_codes() -> None:
    for name in ("NOTIFY_BAD_MESSAGE", "NOTIFY_UNKNOWN_AID", "NOTIFY_DUPLICATE_LOGIN", "NOTIFY_WRONG_USER"):
        assert getattr(diff, name) == getattr(notify_codes, name)
