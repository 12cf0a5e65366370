"""The command line: `qaex serve` runs the same app through hypercorn and stops cleanly; the way past a
damaged journal (`qaex journal verify`, then `qaex journal truncate`)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio
from conftest import free_port

from qaex.core.commands import AnyCommand, Deposit, OpenAccount
from qaex.core.engine import Engine
from qaex.core.journal_format import HEADER, scan_segment
from qaex.exchange.journal import Journal, numbered_files


def test_help_lists_the_subcommands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qaex", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "serve" in done.stdout and "journal" in done.stdout


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--replay-speed", "-2"], {}, "--replay-speed: expected a number > 0 (1 = real time), got -2.0"),
        (["--replay-speed", "0"], {}, "--replay-speed: expected a number > 0 (1 = real time), got 0.0"),
        (["--replay", "rb.csv"], {"QAEX_MARKET_MAKER": "0"}, "--replay: expected no recording while the"),
        (
            ["--replay", "missing.csv"],
            {"QAEX_MARKET_MAKER": "1"},
            "QAEX_MARKET_REPLAY (--replay): missing.csv: cannot",
        ),
    ],
)
def test_serve_refuses_a_bad_replay_with_one_line(
    tmp_path: Path, args: list[str], env: dict[str, str], message: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{free_port()}", *args],
        env=serve_env(tmp_path / "data") | env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 78, done.stderr[-2000:]
    assert message in done.stderr, done.stderr[-2000:]


def serve_env(data_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        QAEX_DATA_DIR=str(data_dir), QAEX_DIFF_PORT=str(free_port()), QAEX_MARKET_MAKER="0",
        QAEX_ADMIN_TOKEN="cli-test-admin-token-123", QAEX_SETTLEMENT_TIME="",
    )  # fmt: skip
    env.pop("QAEX_CONFIG", None)
    return env


def test_serve_answers_http_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    serve_until_sigterm(tmp_path, tmp_path / "data")


def serve_until_sigterm(tmp_path: Path, data_dir: Path) -> None:
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{port}"],
        env=serve_env(data_dir), cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                answer = httpx.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except httpx.TransportError:
                assert process.poll() is None, (tmp_path / "serve.log").read_text()
                assert time.monotonic() < deadline, "qaex serve did not start"
                time.sleep(0.2)
        assert answer.status_code == 200 and answer.json()["status"] == "ok"
        process.send_signal(signal.SIGTERM)
        assert process.wait(20) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        log.close()


# -- a damaged journal: verify, truncate, start again -----------------------------------------------------
def journal(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qaex", "journal", *args, "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False, env=serve_env(data_dir),
    )  # fmt: skip


BATCHES: list[list[AnyCommand]] = [
    [OpenAccount(ts=1, user_id="alice", password_hash="h", init_cash=100.0)],
    [Deposit(ts=2, user_id="alice", amount=5.0), Deposit(ts=3, user_id="alice", amount=6.0)],
    [Deposit(ts=4, user_id="alice", amount=7.0), Deposit(ts=5, user_id="alice", amount=8.0)],
]


@pytest.fixture
def damaged_dir(tmp_path: Path) -> Path:
    """Three acknowledged batches (seq 1 | 2 3 | 4 5), then one bit of the last record flipped."""

    async def write() -> None:
        engine = Engine()
        log = Journal(tmp_path / "data", engine)
        log.open()
        for batch in BATCHES:
            for command in batch:
                engine.apply(command)
            engine.flush()
            await log.commit(batch)
        log.close()

    trio.run(write)
    (_, path), *_ = numbered_files(tmp_path / "data" / "journal", ".log")
    data = bytearray(path.read_bytes())
    last = scan_segment(bytes(data), 1).records[-1]
    data[last.offset + HEADER.size + 4] ^= 0x01
    path.write_bytes(bytes(data))
    return tmp_path / "data"


def test_verify_names_the_damage_and_the_cut(damaged_dir: Path) -> None:
    segment = damaged_dir / "journal" / "00000000000000000001.log"
    done = journal(damaged_dir, "verify")
    assert done.returncode == 1
    assert f"CORRUPT: journal damaged in {segment} at offset" in done.stderr
    assert "(record seq 5): CRC mismatch" in done.stderr and "a crash does not do that" in done.stderr
    assert f"qaex journal truncate --data-dir {damaged_dir} --at-seq 4" in done.stderr
    inspect = journal(damaged_dir, "inspect")
    assert inspect.returncode == 1 and "(record seq 5)" in inspect.stderr and "DAMAGED" in inspect.stderr
    assert len(inspect.stdout.splitlines()) == 4


def test_serve_refuses_with_one_line_then_starts_after_truncate(tmp_path: Path, damaged_dir: Path) -> None:
    segment = damaged_dir / "journal" / "00000000000000000001.log"
    damaged = segment.read_bytes()
    refused = subprocess.run(
        [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{free_port()}"],
        capture_output=True, text=True, timeout=60, check=False, env=serve_env(damaged_dir), cwd=tmp_path,
    )  # fmt: skip
    assert refused.returncode == 78, refused.stderr
    lines = [line for line in refused.stderr.splitlines() if "cannot start" in line]
    assert len(lines) == 1 and "Traceback" not in refused.stderr, refused.stderr
    assert f"qaex cannot start: journal damaged in {segment} at offset" in lines[0]
    assert "--at-seq 4" in lines[0]

    dry = journal(damaged_dir, "truncate", "--at-seq", "4", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "dry run: nothing changed" in dry.stdout and "commands from seq 4 on are lost" in dry.stdout
    assert segment.read_bytes() == damaged
    inside = journal(damaged_dir, "truncate", "--at-seq", "3")
    assert inside.returncode == 1 and "inside a batch that starts at seq 2" in inside.stderr
    assert segment.read_bytes() == damaged

    done = journal(damaged_dir, "truncate", "--at-seq", "4")
    assert done.returncode == 0, done.stderr
    backup = segment.with_name(f"{segment.name}.cut-at-4")
    assert f"saved {backup}" in done.stdout and "journal ends at seq 3" in done.stdout
    assert segment.read_bytes() + backup.read_bytes() == damaged
    assert journal(damaged_dir, "verify").returncode == 0
    serve_until_sigterm(tmp_path, damaged_dir)


def test_truncate_refuses_while_a_server_holds_the_directory(damaged_dir: Path) -> None:
    from qaex.datadir import DataDir

    holder = DataDir(damaged_dir)
    holder.lock()
    try:
        done = journal(damaged_dir, "truncate", "--at-seq", "4")
        assert done.returncode == 1 and "another qaex server" in done.stderr
    finally:
        holder.unlock()
