"""The command line: `qaex serve` runs the same app through hypercorn and stops cleanly."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
from conftest import free_port


def test_help_lists_the_subcommands() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "qaex", "--help"], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0
    assert "serve" in done.stdout and "journal" in done.stdout


def test_serve_answers_http_and_exits_0_on_sigterm(tmp_path: Path) -> None:
    port, diff_port = free_port(), free_port()
    env = dict(os.environ)
    env.update(
        QAEX_DATA_DIR=str(tmp_path / "data"), QAEX_DIFF_PORT=str(diff_port), QAEX_MARKET_MAKER="0",
        QAEX_ADMIN_TOKEN="cli-test-admin-token-123", QAEX_SETTLEMENT_TIME="",
    )  # fmt: skip
    log = (tmp_path / "serve.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "qaex", "serve", "--bind", f"127.0.0.1:{port}"],
        env=env, cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
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
