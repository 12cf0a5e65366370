"""Commands: every input that changes exchange state, as journalable records.

The router assigns each command its timestamp before it is applied (and, later, journaled), so that
replaying the same commands gives exactly the same state: the engine never reads a clock itself.
"""

from __future__ import annotations

from typing import Annotated, Any

import msgspec

from qaex.core.limits import Amount, Cash, IdText, PositivePrice, SymbolText, TradingDay, UserId
from qaex.core.orders import InsertOrder

PasswordHash = Annotated[str, msgspec.Meta(max_length=512)]


class Command(msgspec.Struct, tag_field="cmd", kw_only=True, frozen=True):
    """Base of the commands. Fields carry the bounds of :mod:`qaex.core.limits` that the engine checks
    when it applies a command, so a journal record out of them is refused when it is decoded (damage),
    and every command the engine applied decodes again on replay."""

    ts: int  # epoch ns, assigned by the router


class OpenAccount(Command, frozen=True, tag="open_account"):
    user_id: UserId
    password_hash: PasswordHash
    init_cash: Cash


class ChangePassword(Command, frozen=True, tag="change_password"):
    user_id: UserId
    password_hash: PasswordHash


class Deposit(Command, frozen=True, tag="deposit"):
    user_id: UserId
    amount: Amount


class Withdraw(Command, frozen=True, tag="withdraw"):
    user_id: UserId
    amount: Amount


class Insert(Command, frozen=True, tag="insert"):
    order: InsertOrder


class Cancel(Command, frozen=True, tag="cancel"):
    user_id: UserId
    order_id: IdText


class Settle(Command, frozen=True, tag="settle"):
    """Daily settlement: prices missing from `prices` settle at the last price (or pre_settlement)."""

    prices: dict[SymbolText, PositivePrice] = msgspec.field(default_factory=dict)
    trading_day: TradingDay = ""


class UpsertInstrument(Command, frozen=True, tag="upsert_instrument"):
    spec: dict[str, Any]


class SetSuspended(Command, frozen=True, tag="set_suspended"):
    symbol: SymbolText
    suspended: bool


class Delist(Command, frozen=True, tag="delist"):
    """Take an expired contract out of the listing (its positions were closed out at its expiry)."""

    symbol: SymbolText


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
    | Delist
)
