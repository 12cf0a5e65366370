"""A DIFF gateway process (``qaex gateway --broker nats://... --diff-port N``).

Today's DIFF server (qaex.api.diff_server) against a remote exchange facade
(qaex.exchange.remote.RemoteExchange) that reaches the core over the broker. No journal, no data
directory, no HTTP API: a gateway holds nothing that is not in the core, so it can be killed and
restarted anywhere; its clients reconnect and get a snapshot.

```
run_gateway
├── RemoteExchange.run        NATS client (reconnect, keepalive), heartbeats, per-user feeds, the
│                             quote and chart mirrors, the /ws NotificationHub
└── serve_diff                the DIFF listener (qaex/api/ws_server.py), one task per connection
```
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from qaex.api.diff_server import serve_diff
from qaex.config import Config, access_guard, load_instruments
from qaex.core.engine import Engine
from qaex.exchange.nats_client import NatsClient
from qaex.exchange.notifications import NotificationHub
from qaex.exchange.remote import RemoteExchange

log = logging.getLogger("qaex.gateway")


def build_gateway(config: Config) -> RemoteExchange:
    if not config.broker:
        raise ValueError("a gateway needs a broker (--broker nats://host:port or QAEX_BROKER)")
    client = NatsClient(config.broker, name="qaex-gateway")
    remote = RemoteExchange(
        client,
        config.exchange_id,
        engine=Engine(load_instruments(config)),
        guard=access_guard(config),
        max_sessions_per_user=config.max_sessions_per_user,
    )
    remote.notify_with(NotificationHub.for_config(remote.snapshots, config))
    return remote


async def run_gateway(
    config: Config, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
) -> None:
    """Connect to the broker, then serve DIFF; started once the listener is up (with its port)."""
    remote = build_gateway(config)
    async with trio.open_nursery() as nursery:
        await nursery.start(remote.run)
        listener = await nursery.start(serve_diff, remote, config, None)
        log.info(
            "gateway for exchange %s: DIFF on ws://%s:%d/ws/diff",
            config.exchange_id,
            config.diff_host,
            config.diff_port,
        )
        task_status.started(listener)
