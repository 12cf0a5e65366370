"""The web terminal's pure JS modules (qaex/web/js: merge, formatting, order mapping, chart math, the
DIFF client's reconnect logic) under ``node --test`` (qaex/web/tests/*.test.mjs), so that
``python -m pytest`` runs them too. Node is needed only for these tests, never to serve the pages."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

WEB_TESTS = Path(__file__).resolve().parent.parent / "qaex" / "web" / "tests"


def test_js_modules() -> None:
    node = shutil.which("node")
    if node is None:
        if os.environ.get("CI"):
            pytest.fail("node is not installed (needed for the web terminal's JS unit tests)")
        pytest.skip("node is not installed")
    files = sorted(str(p) for p in WEB_TESTS.glob("*.test.mjs"))
    assert files, f"no JS tests in {WEB_TESTS}"
    done = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    assert "# fail 0" in done.stdout
