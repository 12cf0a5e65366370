"""Command line: ``qaex serve`` (and later ``qaex journal ...``).

Each subcommand is one ``add_<name>(subparsers)`` function that registers its parser and sets
``handler``; ``main`` dispatches. ``qaex serve`` runs the same app as
``hypercorn qaex.app:app --worker-class trio``, in this process, and exits 0 on SIGTERM or Ctrl-C.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
from collections.abc import Callable, Sequence

import trio

Handler = Callable[[argparse.Namespace], int]


def add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the exchange (HTTP API and DIFF WebSocket)")
    parser.add_argument("--bind", "-b", default="127.0.0.1:8000", help="HTTP address (default %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request to stderr")
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve

    from qaex.app import EXIT_CANNOT_START, create_app
    from qaex.config import Config, ConfigError

    try:
        config = Config.load()
    except ConfigError as exc:
        print(f"qaex cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    hypercorn_config = HypercornConfig()
    hypercorn_config.bind = [args.bind]
    hypercorn_config.worker_class = "trio"
    hypercorn_config.accesslog = "-" if args.access_log else None
    hypercorn_config.errorlog = "-"

    async def until_signal() -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
            async for signum in signals:
                logging.getLogger("qaex.app").info("%s received: shutting down", signal.Signals(signum).name)
                return

    async def run() -> None:
        await hypercorn_serve(create_app(config), hypercorn_config, shutdown_trigger=until_signal)

    try:
        trio.run(run)
    except KeyboardInterrupt:  # a Ctrl-C that arrived before the signal receiver was installed
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qaex", description="qaex: a simulated futures exchange")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_serve,):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
