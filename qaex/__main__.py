"""Command line: ``qaex serve``, ``qaex journal inspect|verify|checkpoint|truncate`` and
``qaex import-history FILE...``.

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
from typing import Any

import trio

Handler = Callable[[argparse.Namespace], int]


def add_serve(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("serve", help="run the exchange (HTTP API and DIFF WebSocket)")
    parser.add_argument("--bind", "-b", default="127.0.0.1:8000", help="HTTP address (default %(default)s)")
    parser.add_argument("--access-log", action="store_true", help="log every HTTP request to stderr")
    parser.add_argument("--broker", help="publish to DIFF gateways through this NATS URL (QAEX_BROKER)")
    parser.add_argument(
        "--replay",
        metavar="FILES",
        help="the market maker follows these recorded DataDownloader K-line or tick CSVs (comma-separated "
        "files or directories) instead of its random walk, then walks on (QAEX_MARKET_REPLAY)",
    )
    parser.add_argument(
        "--replay-speed",
        type=float,
        metavar="N",
        help="replay speed, 1 = real time (QAEX_MARKET_REPLAY_SPEED, default 1)",
    )
    parser.set_defaults(handler=serve)


def serve(args: argparse.Namespace) -> int:
    from hypercorn.config import Config as HypercornConfig
    from hypercorn.trio import serve as hypercorn_serve

    from qaex.app import EXIT_CANNOT_START, create_app
    from qaex.config import Config, ConfigError

    try:
        changes = {
            name: value
            for name, value in (
                ("broker", args.broker),
                ("market_replay", args.replay),
                ("market_replay_speed", args.replay_speed),
            )
            if value is not None
        }
        config = _with(Config.load(), **changes) if changes else Config.load()
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


def add_journal(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser("journal", help="inspect, verify, compact or cut the journal")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    for name, handler, text in (
        ("inspect", journal_inspect, "print journal records (seq, time, command and its key fields)"),
        ("verify", journal_verify, "check every CRC and sequence number, replay, print the state digest"),
        ("checkpoint", journal_checkpoint, "recover and write a checkpoint now (server must be stopped)"),
        (
            "truncate",
            journal_truncate,
            "cut a damaged journal before seq N, keeping the cut bytes aside (server must be stopped)",
        ),
    ):
        action = actions.add_parser(name, help=text, description=text)
        action.add_argument("--data-dir", help="data directory (default: QAEX_DATA_DIR or ./qaex-data)")
        if name == "inspect":
            action.add_argument("--limit", type=int, default=0, help="print at most N records (0: all)")
            action.add_argument("--from-seq", type=int, default=0, help="start at this sequence number")
        if name == "truncate":
            action.add_argument(
                "--at-seq",
                type=int,
                required=True,
                metavar="N",
                help="the first record to remove: the start of a batch, at or before the damage "
                "(the start-up error and `qaex journal verify` name it)",
            )
            action.add_argument(
                "--dry-run", action="store_true", help="print what would be done, change nothing"
            )
        action.set_defaults(handler=handler)


def _lock(data_dir: Any, command: str) -> bool:
    """Take the data directory's lock (qaex.datadir), or say on stderr why not: a server or another
    command holds it."""
    from qaex.datadir import DataDirLocked

    try:
        data_dir.lock()
    except DataDirLocked as exc:
        print(f"qaex {command}: {exc}", file=sys.stderr)
        return False
    return True


def _journal_setup(args: argparse.Namespace) -> tuple[str, Callable[[], Any]] | None:
    """(data directory, fresh-engine factory) from the arguments and the usual configuration."""
    from qaex.config import Config, ConfigError, load_instruments
    from qaex.core.engine import Engine

    try:
        config = Config.load()
        instruments = load_instruments(config)
    except ConfigError as exc:
        print(f"qaex journal: {exc}", file=sys.stderr)
        return None
    data_dir = args.data_dir or config.data_dir
    return data_dir, lambda: Engine(instruments, max_orders_per_second=config.max_orders_per_second)


def journal_inspect(args: argparse.Namespace) -> int:
    """Read-only, so it works while a server runs (its newest batch may show as an unfinished tail)."""
    from pathlib import Path

    from qaex.core.journal_format import scan_segment
    from qaex.exchange.journal import SEGMENT_SUFFIX, numbered_files
    from qaex.exchange.recovery import describe

    setup = _journal_setup(args)
    if setup is None:
        return 2
    segments = numbered_files(Path(setup[0]) / "journal", SEGMENT_SUFFIX)
    if not segments:
        print(f"no journal in {setup[0]}", file=sys.stderr)
        return 1
    printed, problems = 0, 0
    for first_seq, path in segments:
        scan = scan_segment(path.read_bytes(), first_seq)
        for record in scan.records:
            if record.seq < args.from_seq:
                continue
            if args.limit and printed >= args.limit:
                return 1 if problems else 0
            print(f"{record.seq:>10} {describe(record.command())}{' ;' if record.batch_end else ''}")
            printed += 1
        damage = scan.damage
        if damage is not None:
            problems += 1
            kind = "torn tail" if damage.torn else "DAMAGED"
            print(
                f"!! {path} offset {damage.offset} (record seq {damage.seq}): {damage.reason}: {kind}: "
                f"{damage.verdict}",
                file=sys.stderr,
            )
    return 1 if problems else 0


def journal_verify(args: argparse.Namespace) -> int:
    from qaex.core.journal_format import JournalCorrupt
    from qaex.exchange.recovery import recover

    setup = _journal_setup(args)
    if setup is None:
        return 2
    data_dir, fresh_engine = setup
    try:
        newest = recover(data_dir, fresh_engine, repair=False)
        oldest = recover(data_dir, fresh_engine, repair=False, oldest_checkpoint=True)
    except JournalCorrupt as exc:
        print(f"CORRUPT: {exc}", file=sys.stderr)
        return 1
    digest = newest.engine.state_digest()
    for warning in newest.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"journal ends at seq {newest.last_seq} (checkpoint {newest.checkpoint_seq} + {newest.replayed})")
    print(f"longest replay: from checkpoint {oldest.checkpoint_seq}, {oldest.replayed} records")
    print(f"state digest: {digest}")
    if oldest.engine.state_digest() != digest:
        print("MISMATCH: replaying from the oldest checkpoint gives another state", file=sys.stderr)
        return 1
    return 0


def journal_checkpoint(args: argparse.Namespace) -> int:
    """Writes, so it takes the data directory lock: never while a server runs on the directory."""
    from qaex.core.journal_format import JournalCorrupt
    from qaex.datadir import DataDir
    from qaex.exchange.recovery import open_journal

    setup = _journal_setup(args)
    if setup is None:
        return 2
    data_dir = DataDir(setup[0])
    if not _lock(data_dir, "journal"):
        return 1
    try:
        journal, recovered = open_journal(data_dir.path, setup[1])
        path = journal.checkpoint_now()
        journal.close()
    except JournalCorrupt as exc:
        print(f"CORRUPT: {exc}", file=sys.stderr)
        return 1
    finally:
        data_dir.unlock()
    print(f"checkpoint {path} at seq {recovered.last_seq}; state digest {recovered.engine.state_digest()}")
    return 0


def journal_truncate(args: argparse.Namespace) -> int:
    """Cut the journal so it ends before seq N: the way past damage recovery refuses to guess about.

    Writes, so it takes the data directory lock (`--dry-run` only reads, and does not).
    """
    from qaex.core.journal_format import JournalCorrupt
    from qaex.datadir import DataDir
    from qaex.exchange.recovery import CannotCut, cut_journal, plan_cut, recover

    setup = _journal_setup(args)
    if setup is None:
        return 2
    data_dir = DataDir(setup[0])
    if not args.dry_run and not _lock(data_dir, "journal"):
        return 1
    try:
        try:
            plan = plan_cut(data_dir.path, args.at_seq)
        except CannotCut as exc:
            print(f"qaex journal truncate: {exc}", file=sys.stderr)
            return 1
        for line in plan.describe():
            print(line)
        if args.dry_run:
            print("dry run: nothing changed")
            return 0
        for path in cut_journal(plan):
            print(f"saved {path}")
        try:
            recovered = recover(data_dir.path, setup[1], repair=False)
        except JournalCorrupt as exc:
            print(f"CORRUPT: {exc}", file=sys.stderr)
            return 1
    finally:
        data_dir.unlock()
    for warning in recovered.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(f"journal ends at seq {recovered.last_seq}; state digest {recovered.engine.state_digest()}")
    return 0


def add_import_history(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    text = (
        "replace contracts' kept history with TqSdk DataDownloader K-line or tick CSVs (server must be "
        "stopped; a running one imports with POST /api/admin/history/import). A tick file replaces its "
        "contract's history wholesale: its ticks, and 1-minute and daily bars built from them"
    )
    parser = subparsers.add_parser("import-history", help=text, description=text)
    parser.add_argument("files", nargs="+", metavar="FILE", help="DataDownloader K-line or tick CSV files")
    parser.add_argument("--symbol", help="the contract of header-less (appended) files")
    parser.add_argument(
        "--duration",
        type=int,
        metavar="S",
        help="K-line seconds, any K-line duration (60 and 86400 replace the kept bars, others are kept "
        "as their own file and served for that duration; default: from the rows)",
    )
    parser.add_argument("--data-dir", help="data directory (default: QAEX_DATA_DIR or ./qaex-data)")
    parser.set_defaults(handler=import_history)


def import_history(args: argparse.Namespace) -> int:
    """All or nothing: every file is checked (header, order, high/low, tick grid, listed symbol) before
    any is written. Reads the listing by recovering the journal, so it takes the data directory lock."""
    from pathlib import Path

    from qaex.config import Config, ConfigError
    from qaex.core.history import HistoryFileError
    from qaex.core.journal_format import JournalCorrupt
    from qaex.datadir import DataDir
    from qaex.exchange.history import HistoryStore, ImportRefused
    from qaex.exchange.history import import_history as run_import
    from qaex.exchange.recovery import recover

    setup = _journal_setup(args)
    if setup is None:
        return 2
    try:
        config = Config.load()
    except ConfigError as exc:
        print(f"qaex import-history: {exc}", file=sys.stderr)
        return 2
    data_dir = DataDir(setup[0])
    if not _lock(data_dir, "import-history"):
        return 1
    try:
        try:
            engine = recover(data_dir.path, setup[1], repair=False).engine
        except JournalCorrupt as exc:
            print(f"CORRUPT: {exc}", file=sys.stderr)
            return 1
        ticks = {symbol: i.price_tick for symbol, i in engine.instruments.items()}
        decs = {symbol: i.price_decs for symbol, i in engine.instruments.items()}
        store = HistoryStore(data_dir.path / "history", seed=config.seed)
        try:
            done = run_import(store, [Path(f) for f in args.files], symbol=args.symbol,
                              duration=args.duration, ticks=ticks, price_decs=decs)  # fmt: skip
        except (HistoryFileError, ImportRefused) as exc:
            print(f"qaex import-history: {exc}; nothing imported", file=sys.stderr)
            return 1
    finally:
        data_dir.unlock()
    for symbol, seconds, rows in done:
        print(f"imported {symbol}: {rows} {f'bars of {seconds} s' if seconds else 'ticks'}")
    return 0


FLAGS = {"market_replay": "--replay", "market_replay_speed": "--replay-speed"}
"""Command-line options not named like their setting (the others are ``--`` + the setting's name)."""


def _with(config: Any, **changes: Any) -> Any:
    """The configuration with command-line overrides, checked like the environment's."""
    import msgspec

    changed = msgspec.structs.replace(config, **changes)
    changed.check(lambda name: FLAGS.get(name, f"--{name.replace('_', '-')}"))
    return changed


def add_gateway(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "gateway", help="run a DIFF gateway in front of a core that has a broker (qaex serve --broker)"
    )
    parser.add_argument("--broker", help="the core's NATS URL (default: QAEX_BROKER)")
    parser.add_argument("--diff-host", help="DIFF address (default: QAEX_DIFF_HOST)")
    parser.add_argument("--diff-port", type=int, help="DIFF port (default: QAEX_DIFF_PORT)")
    parser.add_argument(
        "--reuse-port", action="store_true", default=None, help="SO_REUSEPORT: gateways share the DIFF port"
    )
    parser.set_defaults(handler=gateway)


def gateway(args: argparse.Namespace) -> int:
    from qaex import logconfig
    from qaex.app import EXIT_CANNOT_START
    from qaex.config import Config, ConfigError
    from qaex.gateway import run_gateway

    try:
        changes = {
            name: value
            for name, value in (
                ("broker", args.broker),
                ("diff_host", args.diff_host),
                ("diff_port", args.diff_port),
                ("diff_reuse_port", args.reuse_port),
            )
            if value is not None
        }
        config = _with(Config.load(), **changes)
        if not config.broker:
            raise ConfigError("--broker (or QAEX_BROKER): a gateway needs the core's NATS URL")
    except ConfigError as exc:
        print(f"qaex cannot start: {exc}", file=sys.stderr)
        return EXIT_CANNOT_START
    logconfig.configure(config.log)

    async def run() -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(run_gateway, config)
            with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    logging.getLogger("qaex.gateway").info(
                        "%s received: shutting down", signal.Signals(signum).name
                    )
                    break
            nursery.cancel_scope.cancel()

    try:
        trio.run(run)
    except KeyboardInterrupt:
        pass
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qaex", description="qaex: a simulated futures exchange")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in (add_serve, add_gateway, add_journal, add_import_history):
        add(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Handler = args.handler
    return handler(args)


if __name__ == "__main__":
    sys.exit(main())
