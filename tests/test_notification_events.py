"""qaex.protocol.notifications without a server: patches in, events out; the log's ids and resume."""

from __future__ import annotations

from typing import Any

from qaex.protocol.notifications import EventLog, Gap, UserEvents, UserFeed, order_status

U = "alice"


def order(**fields: Any) -> dict[str, Any]:
    base = {
        "order_id": "o1", "exchange_id": "SHFE", "instrument_id": "cu2601", "volume_orign": 3, "volume_left": 3,
        "status": "ALIVE", "exchange_order_id": "x1", "insert_date_time": 5, "last_msg": "",
    }  # fmt: skip
    return base | fields


def trade(trade_id: str, volume: int) -> dict[str, Any]:
    return {
        "trade_id": trade_id, "order_id": "o1", "exchange_id": "SHFE", "instrument_id": "cu2601",
        "direction": "BUY", "offset": "OPEN", "price": 86000.0, "volume": volume, "commission": 1.5,
        "trade_date_time": 7,
    }  # fmt: skip


def patch(**kinds: Any) -> dict[str, Any]:
    return {"trade": {U: kinds}}


def kinds(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["type"], e.get("status"), e.get("filled_volume")) for e in events]


def test_order_statuses() -> None:
    assert order_status(order()) == "ACCEPTED"
    assert order_status(order(volume_left=1)) == "PARTIAL_FILLED"
    assert order_status(order(status="FINISHED", volume_left=0)) == "FILLED"
    assert order_status(order(status="FINISHED", volume_left=1)) == "CANCELLED"
    assert order_status(order(status="FINISHED", exchange_order_id="")) == "REJECTED"


def test_accept_partial_fill_fill_in_order_with_one_account_update_per_cause() -> None:
    state = UserEvents(U)
    events, cause = state.events(patch(orders={"o1": order()}, accounts={"CNY": {"available": 1.0}}), 100)
    assert kinds(events) == [("order_status", "ACCEPTED", 0)] and cause == "order"
    events, cause = state.events(
        patch(orders={"o1": {"volume_left": 1}}, trades={"t1": trade("t1", 2)}, accounts={"CNY": {"margin": 2.0}}),
        200,
    )
    assert kinds(events) == [("trade", None, None), ("order_status", "PARTIAL_FILLED", 2)] and cause == "trade"
    assert events[1]["remaining_volume"] == 1 and events[1]["timestamp"] == 7
    events, _ = state.events(patch(orders={"o1": {"volume_left": 0, "status": "FINISHED"}}, trades={"t2": trade("t2", 1)}), 300)
    assert kinds(events) == [("trade", None, None), ("order_status", "FILLED", 3)]
    # the same patch again (a tree ahead of the channel): nothing twice
    events, _ = state.events(patch(orders={"o1": {"volume_left": 0}}, trades={"t2": trade("t2", 1)}), 400)
    assert events == []


def test_an_order_filled_at_once_is_accepted_then_traded_then_filled() -> None:
    state = UserEvents(U)
    events, cause = state.events(
        patch(orders={"o1": order(status="FINISHED", volume_left=0)}, trades={"t1": trade("t1", 3)}), 1
    )
    assert kinds(events) == [("order_status", "ACCEPTED", 0), ("trade", None, None), ("order_status", "FILLED", 3)]
    assert cause == "trade"


def test_reject_and_cancel_carry_the_reason_and_settlement_deletions_are_silent() -> None:
    state = UserEvents(U)
    (rejected,), _ = state.events(patch(orders={"o1": order(status="FINISHED", exchange_order_id="", last_msg="资金不足")}), 1)
    assert rejected["status"] == "REJECTED" and rejected["reason"] == "资金不足" and rejected["filled_volume"] == 0
    state.events(patch(orders={"o2": order(order_id="o2")}), 2)
    (cancelled,), _ = state.events(patch(orders={"o2": {"status": "FINISHED", "last_msg": "已撤单"}}), 3)
    assert cancelled["status"] == "CANCELLED" and cancelled["reason"] == "已撤单"
    events, cause = state.events(patch(orders={"o1": None, "o2": None}, trading_day="20260102"), 4)
    assert events == [] and cause == "settlement" and state.orders == {}


def test_marks_are_coalesced_to_one_per_interval() -> None:
    feed = UserFeed(U, {"accounts": {"CNY": {"balance": 1.0}}}, capacity=10, mark_interval=1.0, now=0.0)
    assert feed.push(patch(accounts={"CNY": {"position_profit": 1.0}}), 5.0, 1) == 1  # the first: at once
    assert feed.push(patch(accounts={"CNY": {"position_profit": 2.0}}), 5.2, 2) == 0
    assert feed.push(patch(accounts={"CNY": {"position_profit": 3.0}}), 5.4, 3) == 0
    assert feed.due_mark() == 6.0 and not feed.flush_mark(5.9, 4)
    assert feed.flush_mark(6.0, 5)
    (_, last), = feed.log.read(2, 10)
    assert b'"position_profit":3.0' in last and b'"cause":"mark"' in last
    # a transfer is never held back, and takes the pending mark with it
    feed.push(patch(accounts={"CNY": {"position_profit": 4.0}}), 6.1, 6)
    assert feed.push(patch(transfers={"d1": {"amount": 1}}, accounts={"CNY": {"balance": 2.0}}), 6.2, 7) == 1
    assert feed.due_mark() is None


def test_log_ids_resume_and_gaps() -> None:
    log = EventLog(3, epoch="abcd0123")
    assert log.seq_after(None) == 1
    for n in range(5):
        log.append({"n": n})
    assert (log.first_seq, log.last_seq) == (3, 5)
    assert log.seq_after("abcd0123-2") == 3  # the next one is still held
    assert log.seq_after("abcd0123-5") == 6
    assert log.seq_after("abcd0123-1") == Gap("abcd0123-3")
    assert log.seq_after("ffff0000-4") == Gap("abcd0123-3")  # another feed's id
    assert log.seq_after("abcd0123-9") == Gap("abcd0123-3")  # from the future
    assert log.seq_after("garbage") == Gap("abcd0123-3")
    assert [seq for seq, _ in log.read(4, 10)] == [4, 5]
