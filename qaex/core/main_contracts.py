"""Main contracts (主力合约) and their continuous symbols, ``KQ.m@SHFE.rb``: the rule, nothing else.

A product is ``EXCHANGE.product_id`` (``SHFE.rb``). Its main contract is the live contract (neither
``expired`` nor ``suspended``) with the most open interest, chosen at each daily settlement, and it
never rolls back: a contract that delivers before the current main (compared by ``expire_datetime``,
then ``instrument_id``) is never chosen, however much open interest it has. On a tie the current main
stays; otherwise the nearer delivery wins (then the smaller instrument id), so the choice never depends
on the order of the candidates. With no live candidate the current main stays (a quote cannot be taken
back from a DIFF client), and a product that never had one has none.

Pure functions: the engine keeps the state (``Engine.main_contracts``, product -> symbol) and calls
:func:`choose_main` at settlement and when a contract of a product without a main is listed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from qaex.core.instruments import Instrument

CONT_EXCHANGE = "KQ"
"""The exchange id of continuous symbols, as TqSdk spells them: ``KQ.m@SHFE.rb``."""
CONT_PREFIX = "KQ.m@"
CONT_CLASS = "CONT"


def product_key(instrument: Instrument) -> str:
    """``SHFE.rb`` for every rb contract of SHFE."""
    return f"{instrument.exchange_id}.{instrument.product_id}"


def cont_symbol(product: str) -> str:
    """``KQ.m@SHFE.rb`` for ``SHFE.rb``."""
    return CONT_PREFIX + product


def product_of(symbol: str) -> str | None:
    """``SHFE.rb`` for ``KQ.m@SHFE.rb``; None for a symbol that is not a main-contract symbol."""
    return symbol[len(CONT_PREFIX) :] if symbol.startswith(CONT_PREFIX) else None


def is_kq(symbol: str) -> bool:
    """A symbol of the ``KQ`` exchange (main and index series): quoted, never traded."""
    return symbol.startswith(CONT_EXCHANGE + ".")


def _delivery(instrument: Instrument) -> tuple[float, str]:
    return (instrument.expire_datetime, instrument.instrument_id)


def choose_main(
    current: str | None, candidates: Iterable[Instrument], open_interest: Mapping[str, int]
) -> str | None:
    """The main contract among one product's ``candidates`` (see the module docstring).

    ``current``: the product's main so far (a symbol), or None. ``open_interest``: by symbol; a
    contract missing from it counts 0.
    """
    listed = list(candidates)
    floor = next((_delivery(i) for i in listed if i.symbol == current), None)
    best: Instrument | None = None
    best_rank: tuple[int, int, float, str] | None = None
    for instrument in listed:
        if instrument.expired or instrument.suspended:
            continue
        delivery = _delivery(instrument)
        if floor is not None and delivery < floor:
            continue  # never back to an earlier delivery than the current main
        symbol = instrument.symbol
        # Most open interest; then the current main; then the nearer delivery, the smaller id.
        rank = (-open_interest.get(symbol, 0), 0 if symbol == current else 1, *delivery)
        if best_rank is None or rank < best_rank:
            best, best_rank = instrument, rank
    return best.symbol if best is not None else current


def cont_name(instrument_name: str) -> str:
    """The display name of a main-contract series from one contract's: ``螺纹钢2601`` -> ``螺纹钢主连``."""
    return instrument_name.rstrip("0123456789") + "主连"
