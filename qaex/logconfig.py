"""Logging set-up: named loggers, levels per logger from ``QAEX_LOG``.

``QAEX_LOG=info`` sets the root qaex level; ``QAEX_LOG=qaex.snapshot=debug,qaex.gateway=info`` sets
levels per logger (a bare level in the list applies to ``qaex``). Loggers used across the code base:
``qaex.exchange``, ``qaex.router``, ``qaex.gateway``, ``qaex.snapshot``, ``qaex.market``, ``qaex.journal``,
``qaex.diff`` (WebSocket sessions) and ``qaex.http``.
"""

from __future__ import annotations

import logging
import os

FORMAT = "%(asctime)s %(levelname)-5s %(name)s: %(message)s"


def parse_levels(spec: str) -> dict[str, int]:
    """``"qaex.snapshot=debug,info"`` -> ``{"qaex.snapshot": DEBUG, "qaex": INFO}``; raises ValueError."""
    levels: dict[str, int] = {}
    for item in filter(None, (part.strip() for part in spec.split(","))):
        name, _, level = item.rpartition("=")
        value = logging.getLevelName(level.strip().upper())
        if not isinstance(value, int):
            raise ValueError(f"QAEX_LOG: unknown level {level!r} in {item!r}")
        levels[name.strip() or "qaex"] = value
    return levels


def configure(spec: str | None = None) -> None:
    """Install a stderr handler on the ``qaex`` logger and apply the levels of QAEX_LOG (default info)."""
    spec = os.environ.get("QAEX_LOG", "info") if spec is None else spec
    root = logging.getLogger("qaex")
    if not any(getattr(h, "_qaex", False) for h in root.handlers):
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter(FORMAT))
        handler._qaex = True  # type: ignore[attr-defined]
        root.addHandler(handler)
        root.propagate = False
    root.setLevel(logging.INFO)
    for name, level in parse_levels(spec).items():
        logging.getLogger(name).setLevel(level)
