"""QAEX_LOG: levels per named logger."""

from __future__ import annotations

import logging

import pytest

from qaex.logconfig import configure, parse_levels


def test_levels_per_logger_and_a_bare_level_for_qaex() -> None:
    assert parse_levels("qaex.snapshot=debug, qaex.gateway=INFO,warning") == {
        "qaex.snapshot": logging.DEBUG,
        "qaex.gateway": logging.INFO,
        "qaex": logging.WARNING,
    }


def test_an_unknown_level_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="loud"):
        parse_levels("qaex.router=loud")


def test_configure_sets_the_named_loggers() -> None:
    configure("qaex.snapshot=debug,qaex.gateway=error")
    try:
        assert logging.getLogger("qaex.snapshot").getEffectiveLevel() == logging.DEBUG
        assert logging.getLogger("qaex.gateway").getEffectiveLevel() == logging.ERROR
        assert logging.getLogger("qaex.router").getEffectiveLevel() == logging.INFO
    finally:
        configure("info,qaex.snapshot=notset,qaex.gateway=notset")
