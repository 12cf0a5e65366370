"""`qaex gateway` and `qaex serve --broker` on the command line; QAEX_BROKER / QAEX_EXCHANGE_ID checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import msgspec
import pytest
import trio
from conftest import NatsServer, free_port

from qaex.config import Config, ConfigError
from qaex.exchange.nats_client import NatsClient
from qaex.protocol.broker import Heartbeat


def run_qaex(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("QAEX_")}
    environ.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "qaex", *args], capture_output=True, text=True, timeout=60, env=environ
    )


def test_gateway_needs_a_broker_url() -> None:
    done = run_qaex("gateway", "--diff-port", str(free_port()))
    assert done.returncode == 78 and "--broker" in done.stderr
    done = run_qaex("gateway", "--broker", "http://127.0.0.1:4222")
    assert done.returncode == 78 and "--broker: expected a nats://host:port URL" in done.stderr
    done = run_qaex("--help")
    assert "gateway" in done.stdout


@pytest.mark.parametrize(
    ("name", "value", "text"),
    [("QAEX_BROKER", "redis://x", "nats://"), ("QAEX_EXCHANGE_ID", "a.b", "letters, digits")],
)
def test_broker_settings_are_checked(name: str, value: str, text: str) -> None:
    with pytest.raises(ConfigError, match=text):
        Config.load({name: value})


def test_broker_settings_load() -> None:
    config = Config.load({"QAEX_BROKER": "nats://127.0.0.1:4222", "QAEX_EXCHANGE_ID": "paper-1"})
    assert (config.broker, config.exchange_id) == ("nats://127.0.0.1:4222", "paper-1")
    assert Config.load({}).broker == ""  # no broker: one process, the default


async def test_serve_with_broker_publishes_its_heartbeat(nats_server: NatsServer, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("QAEX_")}
    env.update(
        QAEX_DATA_DIR=str(tmp_path / "data"), QAEX_DIFF_PORT=str(free_port()), QAEX_MARKET_MAKER="0",
        QAEX_ADMIN_TOKEN="cli-test-admin-token-123", QAEX_SETTLEMENT_TIME="", QAEX_EXCHANGE_ID="cli",
    )  # fmt: skip
    async with trio.open_nursery() as nursery:
        client = NatsClient(nats_server.url)
        await nursery.start(client.run)
        beats = client.subscribe("qaex.cli.core.hb")
        await client.flush()
        command = [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{free_port()}"]
        log = (tmp_path / "serve.log").open("wb")
        process = await trio.lowlevel.open_process(
            [*command, "--broker", nats_server.url],
            env=env,
            cwd=tmp_path,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            with trio.fail_after(30):
                beat = msgspec.msgpack.decode((await beats.receive()).payload, type=Heartbeat)
            assert len(beat.epoch) == 16 and abs(beat.time_ns - time.time_ns()) < 10e9
            # the first heartbeat goes out as soon as the core is connected, before the HTTP
            # listener (and its SIGTERM handling) is up: stop it once it is
            with trio.fail_after(30):
                # hypercorn's own line, "[INFO] Running on http://..." (qaex.app's log line that
                # points to it says "Running on" too, before the signal handler is installed)
                while "] Running on http" not in (tmp_path / "serve.log").read_text():
                    await beats.receive()  # a heartbeat a second: a bounded wait between looks
        finally:
            process.send_signal(signal.SIGTERM)
            with trio.fail_after(20):
                assert await process.wait() == 0, (tmp_path / "serve.log").read_text()
        nursery.cancel_scope.cancel()
