"""Commands: every input that changes exchange state, as journalable records.

The router assigns each command its timestamp before it is applied (and, later, journaled), so that
replaying the same commands gives exactly the same state: the engine never reads a clock itself.
"""

from __future__ import annotations

from typing import Any

import msgspec

from qaex.core.orders import InsertOrder


class Command(msgspec.Struct, tag_field="cmd", kw_only=True, frozen=True):
    ts: int  # epoch ns, assigned by the router


class OpenAccount(Command, frozen=True, tag="open_account"):
    user_id: str
    password_hash: str
    init_cash: float


class ChangePassword(Command, frozen=True, tag="change_password"):
    user_id: str
    password_hash: str


class Deposit(Command, frozen=True, tag="deposit"):
    user_id: str
    amount: float


class Withdraw(Command, frozen=True, tag="withdraw"):
    user_id: str
    amount: float


class Insert(Command, frozen=True, tag="insert"):
    order: InsertOrder


class Cancel(Command, frozen=True, tag="cancel"):
    user_id: str
    order_id: str


class Settle(Command, frozen=True, tag="settle"):
    """Daily settlement: prices missing from `prices` settle at the last price (or pre_settlement)."""

    prices: dict[str, float] = msgspec.field(default_factory=dict)
    trading_day: str = ""


class UpsertInstrument(Command, frozen=True, tag="upsert_instrument"):
    spec: dict[str, Any]


class SetSuspended(Command, frozen=True, tag="set_suspended"):
    symbol: str
    suspended: bool


class MarkToMarket(Command, frozen=True, tag="mark"):
    """Mark every holder of a moved instrument to market (the exchange sends it on a short timer)."""


AnyCommand = (
    MarkToMarket
    | OpenAccount
    | ChangePassword
    | Deposit
    | Withdraw
    | Insert
    | Cancel
    | Settle
    | UpsertInstrument
    | SetSuspended
)
