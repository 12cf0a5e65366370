"""Instrument specs: built-in contracts, tick conversion, limits, fees, TOML loading."""

from __future__ import annotations

from pathlib import Path

import pytest

from qaex.core.instruments import InstrumentRegistry


def test_built_in_contracts_cover_the_five_exchanges() -> None:
    registry = InstrumentRegistry()
    assert {i.exchange_id for i in registry.values()} == {"SHFE", "INE", "DCE", "CZCE", "CFFEX"}
    for symbol in (
        "SHFE.cu2601",
        "SHFE.au2602",
        "SHFE.rb2601",
        "INE.sc2601",
        "DCE.m2601",
        "CZCE.SR601",
        "CFFEX.IF2512",
    ):
        assert symbol in registry


def test_prices_convert_to_ticks_and_off_tick_prices_are_refused() -> None:
    au = InstrumentRegistry()["SHFE.au2602"]
    assert au.to_ticks(950.04) == 47502
    assert au.to_ticks(950.03) is None
    assert au.from_ticks(47502) == 950.04
    assert au.price_decs == 2


def test_daily_limits_are_on_the_tick_grid_around_pre_settlement() -> None:
    cu = InstrumentRegistry()["SHFE.cu2601"]
    assert cu.upper_limit == 92020.0 and cu.lower_limit == 79980.0  # ±7 % of 86,000, floored/ceiled to 10
    assert cu.to_ticks(cu.upper_limit) is not None and cu.to_ticks(cu.lower_limit) is not None


def test_commission_per_lot_and_per_turnover_by_offset() -> None:
    registry = InstrumentRegistry()
    assert registry["SHFE.au2602"].commission(950.0, 2, "OPEN") == pytest.approx(20.0)
    assert registry["SHFE.au2602"].commission(950.0, 2, "CLOSETODAY") == 0.0
    index = registry["CFFEX.IF2512"]
    assert index.commission(4500.0, 1, "CLOSETODAY") == pytest.approx(
        10 * index.commission(4500.0, 1, "CLOSE")
    )
    assert registry["SHFE.cu2601"].margin_per_lot(86000.0, long=True) == pytest.approx(43000.0)


def test_toml_file_replaces_or_extends_the_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "instruments.toml"
    spec.write_text(
        """
[[instrument]]
exchange_id = "DCE"
instrument_id = "y2601"
product_id = "y"
instrument_name = "豆油2601"
price_tick = 2.0
volume_multiple = 10
margin_ratio_long = 0.08
margin_ratio_short = 0.08
pre_settlement = 8000.0
trading_time = {day = [["09:00:00", "15:00:00"]], night = []}
"""
    )
    only = InstrumentRegistry.from_toml(spec)
    assert list(only) == ["DCE.y2601"]
    assert only["DCE.y2601"].upper_limit == 8480.0
    extended = InstrumentRegistry.from_toml(spec, include_defaults=True)
    assert "DCE.y2601" in extended and "SHFE.cu2601" in extended


def test_a_bad_spec_is_refused_with_its_symbol(tmp_path: Path) -> None:
    spec = tmp_path / "bad.toml"
    spec.write_text(
        '[[instrument]]\nexchange_id = "X"\ninstrument_id = "y"\nproduct_id = "y"\ninstrument_name = "y"\n'
        "price_tick = 0.0\nvolume_multiple = 1\nmargin_ratio_long = 0.1\nmargin_ratio_short = 0.1\npre_settlement = 1.0\n"
    )
    with pytest.raises(ValueError, match=r"X\.y"):
        InstrumentRegistry.from_toml(spec)
