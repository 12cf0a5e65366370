"""Configuration from the environment and a TOML file, and the data directory's lock and secret."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
from conftest import Server, launch, wait_ready

from qaex.config import Config, ConfigError, load_instruments
from qaex.datadir import DataDir, DataDirLocked


def test_defaults_need_no_environment() -> None:
    config = Config.load({})
    assert (config.diff_host, config.diff_port, config.data_dir) == ("127.0.0.1", 8001, "./qaex-data")
    assert config.market_maker is True
    assert config.admin_token == ""  # the app generates one at start
    assert (config.max_sessions, config.max_message_size) == (20_000, 1 << 20)
    assert (config.max_messages_per_second, config.max_orders_per_second) == (200, 500)
    assert (config.init_cash, config.fsync, config.seed) == (1e6, "batch", None)


def test_environment_values_are_parsed() -> None:
    config = Config.load(
        {
            "QAEX_DIFF_PORT": "9001",
            "QAEX_MARKET_MAKER": "0",
            "QAEX_FSYNC": "off",
            "QAEX_INIT_CASH": "2.5e5",
            "QAEX_SEED": "42",
            "QAEX_MAX_MESSAGE_SIZE": "65_536",
            "QAEX_LOG": "qaex.diff=debug,info",
            "QAEX_ADMIN_TOKEN": "a" * 32,
        }
    )
    assert (config.diff_port, config.market_maker, config.fsync) == (9001, False, "off")
    assert (config.init_cash, config.seed, config.max_message_size) == (2.5e5, 42, 65536)
    assert config.admin_token == "a" * 32


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("QAEX_DIFF_PORT", "abc", "expected an integer"),
        ("QAEX_DIFF_PORT", "70000", "port number"),
        ("QAEX_MARKET_MAKER", "maybe", "expected 0 or 1"),
        ("QAEX_FSYNC", "always", "batch"),
        ("QAEX_LOG", "verbose", "unknown level"),
        ("QAEX_INIT_CASH", "lots", "expected a number"),
        ("QAEX_INIT_CASH", "-1", "a number 0-1000000000000"),
        ("QAEX_INIT_CASH", "1e13", "a number 0-1000000000000"),
        ("QAEX_MAX_ORDERS_PER_SECOND", "-1", ">= 0"),
        ("QAEX_MAX_MESSAGE_SIZE", "10", "1024-67108864"),
        ("QAEX_MAX_MESSAGE_SIZE", "1e9", "expected an integer"),
        ("QAEX_MAX_MESSAGE_SIZE", "1000000000", "1024-67108864"),
        ("QAEX_ADMIN_TOKEN", "short", "16 characters"),
    ],
)
def test_bad_values_name_the_variable(variable: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as raised:
        Config.load({variable: value})
    assert str(raised.value).startswith(variable + ":")
    assert expected in str(raised.value)


def test_toml_file_is_read_and_environment_wins(tmp_path: Path) -> None:
    path = tmp_path / "qaex.toml"
    path.write_text('diff_port = 9100\ndata_dir = "/srv/qaex"\nmarket_maker = false\n')
    config = Config.load({"QAEX_CONFIG": str(path), "QAEX_DIFF_PORT": "9200"})
    assert (config.diff_port, config.data_dir, config.market_maker) == (9200, "/srv/qaex", False)


def test_toml_errors_name_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "qaex.toml"
    path.write_text('diff_port = "high"\n')
    with pytest.raises(ConfigError, match=r"qaex\.toml: diff_port: expected `int`"):
        Config.load({"QAEX_CONFIG": str(path)})
    path.write_text("dif_port = 1\n")
    with pytest.raises(ConfigError, match=r"unknown setting.*dif_port"):
        Config.load({"QAEX_CONFIG": str(path)})
    path.write_text("diff_port = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        Config.load({"QAEX_CONFIG": str(path)})
    with pytest.raises(ConfigError, match="cannot read"):
        Config.load({"QAEX_CONFIG": str(tmp_path / "missing.toml")})


def test_instrument_file(tmp_path: Path) -> None:
    path = tmp_path / "instruments.toml"
    path.write_text(
        '[[instrument]]\nexchange_id = "SHFE"\ninstrument_id = "zn2601"\nproduct_id = "zn"\n'
        'instrument_name = "zinc"\nprice_tick = 5.0\nvolume_multiple = 5\nmargin_ratio_long = 0.1\n'
        "margin_ratio_short = 0.1\npre_settlement = 22000.0\n"
    )
    registry = load_instruments(Config.load({"QAEX_INSTRUMENTS": str(path)}))
    assert list(registry) == ["SHFE.zn2601"]
    with pytest.raises(ConfigError, match="QAEX_INSTRUMENTS"):
        load_instruments(Config.load({"QAEX_INSTRUMENTS": str(tmp_path / "none.toml")}))


def worker_pid(server: Server) -> int:
    """The pid of hypercorn's worker process, which holds the lock (hypercorn's CLI spawns it)."""
    return int((server.data_dir / "LOCK").read_text())


# -- data directory --------------------------------------------------------------------------------------
def test_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    first, second = DataDir(tmp_path / "data"), DataDir(tmp_path / "data")
    first.lock()
    with pytest.raises(DataDirLocked, match=r"another qaex server \(pid \d+\) is using data directory"):
        second.lock()
    first.unlock()
    second.lock()
    second.unlock()


def test_secret_is_created_once_and_private(tmp_path: Path) -> None:
    data_dir = DataDir(tmp_path / "data")
    secret = data_dir.secret()
    assert len(secret) == 32
    assert DataDir(tmp_path / "data").secret() == secret
    assert stat.S_IMODE((tmp_path / "data" / "secret").stat().st_mode) == 0o600


def test_second_server_on_the_same_data_dir_exits_with_a_clear_message(tmp_path: Path) -> None:
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    first = launch(tmp_path / "one")
    try:
        wait_ready(first)
        second = launch(tmp_path / "two", data_dir=first.data_dir)
        try:
            second.process.wait(20)
        except subprocess.TimeoutExpired:
            second.stop()
            pytest.fail(f"second server did not exit:\n{second.log()}")
        # hypercorn 0.18's CLI exits 0 even when its worker fails (see docs/deployment.md).
        assert f"another qaex server (pid {worker_pid(first)}) is using data directory" in second.log()
        assert "Traceback" not in second.log()
    finally:
        assert first.stop() == 0, first.log()


def test_gc_threshold_is_checked_and_applied() -> None:
    import gc

    from qaex import gc_policy

    assert Config.load({}).gc_threshold == gc_policy.DEFAULT_THRESHOLD
    with pytest.raises(ConfigError, match="QAEX_GC_THRESHOLD"):
        Config.load({"QAEX_GC_THRESHOLD": "-1"})
    before = gc.get_threshold()
    try:
        gc_policy.tune(0)  # 0: CPython's default stays
        assert gc.get_threshold() == before
        gc_policy.tune(12_345)
        assert gc.get_threshold() == (12_345, 10, gc_policy.FULL_EVERY)
        with pytest.raises(ValueError):
            gc_policy.tune(-5)
        with pytest.raises(ConfigError, match="QAEX_GC_INTERVAL"):
            Config.load({"QAEX_GC_INTERVAL": "-0.1"})
        assert Config.load({}).gc_interval == gc_policy.DEFAULT_INTERVAL
        with pytest.raises(ConfigError, match="QAEX_STALL_MS"):
            Config.load({"QAEX_STALL_MS": "-1"})
        assert Config.load({"QAEX_STALL_MS": "2.5"}).stall_ms == 2.5
    finally:
        gc.set_threshold(*before)
