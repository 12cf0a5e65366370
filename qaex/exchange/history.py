"""The kept market history: synthetic (or imported) bars under ``<data dir>/history/``, never journaled.

One pair of TqSdk DataDownloader CSV files per contract, ``{symbol}.60.csv`` (1-minute bars) and
``{symbol}.86400.csv`` (daily bars), written once, the first time the contract's history is needed (the
market-data service builds every listed contract's in the background after a start, and any contract a
client asks for at once), and loaded from there afterwards. Imports (``qaex import-history``,
``POST /api/admin/history/import``) may add ``{symbol}.0.csv`` (recorded ticks, a DataDownloader tick
file; the two bar files are then built from them) and ``{symbol}.{S}.csv`` (bars of any other duration
``S``, served as they are). ``meta.json`` keeps the seed the synthetic
history was drawn with (``QAEX_SEED``, else :data:`DEFAULT_SEED`), so that contracts built after a restart
agree with those built before. The generator is :mod:`qaex.core.history` (pure); this module only does the
file IO and picks each contract's figures to end on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path

from qaex.atomic_write import write_atomic
from qaex.core.calendar import HolidayCalendar, parse_day, previous_trading_date
from qaex.core.history import (
    BAR_FIELDS,
    MAIN_MINUTE_BARS,
    OTHER_MINUTE_BARS,
    BarColumns,
    ContractHistory,
    HistoryFileError,
    HistorySpec,
    generate,
    parse_csv,
    to_csv,
)
from qaex.core.instruments import Instrument
from qaex.core.kline import KlineSeries
from qaex.core.replay import ReplayTrack, track_from_bars, track_from_ticks
from qaex.core.tick_file import (
    MAX_LINE,
    TickColumns,
    bars_from_ticks,
    is_tick_header,
    parse_ticks,
    tick_levels,
    ticks_to_csv,
)

log = logging.getLogger(__name__)

DEFAULT_SEED = 16
"""The history seed when ``QAEX_SEED`` is not set: fixed, so that every data directory agrees."""
FORMAT = 1
TICKS = 0
"""The duration of ticks, as TqSdk's DataDownloader (``dur_sec=0``) and the kept file (``SYM.0.csv``) say."""
MINUTE = 60
DAY = 86400


class HistoryStore:
    """The history directory of one data directory (see the module docstring)."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        *,
        seed: int | None = None,
        calendar: HolidayCalendar | None = None,
    ) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.calendar = calendar
        meta_path = self.directory / "meta.json"
        stored: int | None = None
        if meta_path.exists():
            stored = int(json.loads(meta_path.read_text())["seed"])
        if stored is not None and seed is not None and seed != stored:
            log.warning(
                "history was drawn with seed %d; QAEX_SEED=%d applies to new data directories only",
                stored,
                seed,
            )
        self.seed = stored if stored is not None else (seed if seed is not None else DEFAULT_SEED)
        if stored is None:
            write_atomic(meta_path, json.dumps({"format": FORMAT, "seed": self.seed}) + "\n")
        self.built = 0
        self.loaded = 0

    def path(self, symbol: str, duration: int) -> Path:
        return self.directory / f"{symbol}.{duration}.csv"

    def has(self, symbol: str) -> bool:
        return self.path(symbol, MINUTE).exists() and self.path(symbol, DAY).exists()

    def kept(self, symbol: str) -> dict[int, Path]:
        """Every kept file of ``symbol``, by duration in seconds (0: its imported ticks)."""
        found: dict[int, Path] = {}
        for path in self.directory.glob(f"{symbol}.*.csv"):
            middle = path.name[len(symbol) + 1 : -len(".csv")]
            if middle.isdigit():
                found[int(middle)] = path
        return found

    def load(self, symbol: str, keep_ticks: int | None = None) -> ContractHistory | None:
        """The kept history of ``symbol`` (with its imported ticks and bars of other durations), or
        None if there is none yet. ``keep_ticks``: read only the last that many of its kept ticks (the
        tick series holds no more), from the end of the file: a load takes the same time for a tick
        file of two million rows as for one of ``keep_ticks``."""
        if not self.has(symbol):
            return None
        history = ContractHistory(symbol, self._read(symbol, MINUTE), self._read(symbol, DAY), [], [])
        self._load_extras(history, keep_ticks)
        self.loaded += 1
        return history

    def _load_extras(self, history: ContractHistory, keep_ticks: int | None) -> None:
        for seconds, path in sorted(self.kept(history.symbol).items()):
            if seconds == TICKS:
                text = path.read_text() if keep_ticks is None else tail_text(path, keep_ticks)
                history.ticks = parse_ticks(text, str(path), symbol=history.symbol)[1]
            elif seconds not in (MINUTE, DAY):
                history.others[seconds] = self._read(history.symbol, seconds)

    def _read(self, symbol: str, duration: int) -> BarColumns:
        path = self.path(symbol, duration)
        _, bars = parse_csv(path.read_text(), str(path), symbol=symbol)
        return bars

    def save(self, history: ContractHistory, price_decs: int) -> None:
        """Write a contract's history (each file atomically: a crash leaves the old file or the new)."""
        write_atomic(self.path(history.symbol, MINUTE), to_csv(history.symbol, history.minutes, price_decs))
        write_atomic(self.path(history.symbol, DAY), to_csv(history.symbol, history.days, price_decs))

    def spec(
        self, instrument: Instrument, instruments: Mapping[str, Instrument], *, trading_day: str, main: bool
    ) -> HistorySpec:
        """What ``instrument``'s synthetic history ends on: its figures now, the trading day before
        ``trading_day`` (``YYYYMMDD``), 10,000 minutes for a main contract, 1,200 for other months."""
        symbol = f"{instrument.exchange_id}.{instrument.instrument_id}"
        months = sorted(
            (other.expire_datetime, key)
            for key, other in instruments.items()
            if other.exchange_id == instrument.exchange_id and other.product_id == instrument.product_id
        )
        months_out = next((i for i, (_, key) in enumerate(months) if key == symbol), 0)
        close = (
            instrument.pre_close
            if instrument.pre_close == instrument.pre_close
            else instrument.pre_settlement
        )
        return HistorySpec(
            symbol=symbol,
            product=f"{instrument.exchange_id}.{instrument.product_id}",
            price_tick=instrument.price_tick,
            limit_ratio=instrument.limit_ratio,
            day_sessions=tuple((str(s), str(e)) for s, e in instrument.trading_time.day),
            night_sessions=tuple((str(s), str(e)) for s, e in instrument.trading_time.night),
            settlement=instrument.pre_settlement,
            close=close,
            open_interest=instrument.pre_open_interest,
            last_day=previous_trading_date(parse_day(trading_day), self.calendar),
            minute_bars=MAIN_MINUTE_BARS if main else OTHER_MINUTE_BARS,
            months_out=months_out,
        )

    def build(self, spec: HistorySpec, price_decs: int) -> ContractHistory:
        """Generate and keep a contract's synthetic history (pure CPU then two file writes: safe in a
        worker thread)."""
        history = generate(spec, self.seed, self.calendar)
        self.save(history, price_decs)
        self.built += 1
        return history

    def load_or_build(
        self, spec: HistorySpec, price_decs: int, keep_ticks: int | None = None
    ) -> ContractHistory:
        """The kept history, else a new one (kept). A contract with only one of its two files (an
        import of one duration) keeps it and gets the other generated. File IO and CPU only: run it in
        a worker thread."""
        history = self.load(spec.symbol, keep_ticks)
        if history is not None:
            return history
        minute_path, day_path = self.path(spec.symbol, MINUTE), self.path(spec.symbol, DAY)
        if not minute_path.exists() and not day_path.exists():
            return self.build(spec, price_decs)
        built = generate(spec, self.seed, self.calendar)
        self.built += 1
        self._load_extras(built, keep_ticks)
        if minute_path.exists():
            built.minutes = self._read(spec.symbol, MINUTE)
        else:
            write_atomic(minute_path, to_csv(spec.symbol, built.minutes, price_decs))
        if day_path.exists():
            built.days = self._read(spec.symbol, DAY)
        else:
            write_atomic(day_path, to_csv(spec.symbol, built.days, price_decs))
        return built


TAIL_CHUNK = 1 << 16


def tail_text(path: Path, lines: int) -> str:
    """A CSV's first line (its header) and its last ``lines`` lines, read from the end of the file in
    chunks: at most ``lines`` × :data:`qaex.core.tick_file.MAX_LINE` bytes whatever the file's size."""
    with open(path, "rb") as file:
        header = file.readline()
        start = file.tell()
        end = file.seek(0, os.SEEK_END)
        bound = max(lines, 1) * (MAX_LINE + 1)
        at, chunks, newlines = end, [], 0
        while at > start and newlines <= lines and end - at < bound:
            step = min(TAIL_CHUNK, at - start)
            at -= step
            file.seek(at)
            chunk = file.read(step)
            chunks.append(chunk)
            newlines += chunk.count(b"\n")
    rows = b"".join(reversed(chunks)).splitlines()
    if at > start:  # the first row may be cut: drop it (and keep the last ``lines``)
        rows = rows[1:]
    kept = rows[-lines:] if lines else []
    return (header + b"".join(row + b"\n" for row in kept)).decode()


class ImportRefused(ValueError):
    """``qaex import-history`` refused its files: nothing was imported."""


Imported = tuple[str, int, "BarColumns | TickColumns"]
"""One checked import: (symbol, duration in seconds (0: ticks), its bars or ticks)."""


def read_import(
    path: Path, *, symbol: str | None, duration: int | None, ticks: Mapping[str, float]
) -> Imported:
    """One DataDownloader K-line or tick file, checked (see check_import)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportRefused(f"{path}: cannot read: {exc}") from None
    return check_import(text, str(path), symbol=symbol, duration=duration, ticks=ticks)


def check_import(
    text: str, name: str, *, symbol: str | None, duration: int | None, ticks: Mapping[str, float]
) -> Imported:
    """One DataDownloader file's text, checked: (symbol, duration in seconds, bars), or (symbol, 0,
    ticks) for a tick file (told by its header, or for a header-less file by its number of cells).
    ``ticks``: the listed contracts' price ticks; ``duration``: the bars' seconds (any K-line duration;
    default: from the rows). Raises :class:`HistoryFileError` or :class:`ImportRefused`."""
    first = next((line for line in text.splitlines() if line.strip()), "")
    has_header = first.startswith("datetime")
    cells = len(first.split(","))
    is_ticks = is_tick_header(first) if has_header else cells != len(BAR_FIELDS) + 2
    if not has_header and is_ticks and tick_levels(cells) is None:
        raise HistoryFileError(
            name, 1, "-", f"{cells} cells: neither a K-line row (9 cells) nor a tick row (13 or 29)"
        )
    found = symbol
    if has_header:  # the header's symbol (checked), so that an unknown one is named before the rows
        found = (parse_ticks if is_ticks else parse_csv)(first, name, symbol=symbol)[0]
    if found is None:
        raise HistoryFileError(name, 1, "header", "no header line: give the symbol (--symbol)")
    if found not in ticks:
        raise HistoryFileError(name, 1, "3", f"unknown symbol {found}: not listed in this data directory")
    if is_ticks:
        found, tick_rows = parse_ticks(text, name, symbol=found, price_tick=ticks[found])
        if not len(tick_rows):
            raise ImportRefused(f"{name}: no ticks")
        if duration:
            raise ImportRefused(f"{name}: a tick file: --duration {duration} does not apply")
        return found, TICKS, tick_rows
    found, rows = parse_csv(text, name, symbol=found, price_tick=ticks[found])
    if not len(rows):
        raise ImportRefused(f"{name}: no bars")
    seconds = duration if duration else _guess_duration(rows)
    try:
        KlineSeries(found, seconds * 1_000_000_000, 1)  # the one rule of what a K-line duration is
    except ValueError as exc:
        raise ImportRefused(f"{name}: --duration {seconds}: {exc}") from None
    return found, seconds, rows


def _guess_duration(bars: BarColumns) -> int:
    steps = sorted(b - a for a, b in zip(bars.datetime, bars.datetime[1:], strict=False))
    if not steps:
        return DAY if bars.datetime[0] % 86_400_000_000_000 == 16 * 3600 * 1_000_000_000 else MINUTE
    return (
        int(steps[len(steps) // 2] // 1_000_000_000) if steps[len(steps) // 2] < 86_400_000_000_000 else DAY
    )


def import_history(
    store: HistoryStore,
    files: list[Path],
    *,
    symbol: str | None,
    duration: int | None,
    ticks: Mapping[str, float],
    price_decs: Mapping[str, int],
) -> list[tuple[str, int, int]]:
    """Replace the kept history of the contracts these files hold, all or nothing: every file is read
    and checked before any is replaced. Returns (symbol, duration, bars) per file."""
    read = [(str(path), read_import(path, symbol=symbol, duration=duration, ticks=ticks)) for path in files]
    return store_imported(store, read, price_decs)


def store_imported(
    store: HistoryStore, read: list[tuple[str, Imported]], price_decs: Mapping[str, int]
) -> list[tuple[str, int, int]]:
    """Write checked imports (name, (symbol, duration, rows)), all or nothing; refuse two for one
    contract and duration, and a tick file together with K-line files of its contract. A tick file
    replaces its contract's history wholesale: its ticks, and 1-minute and daily bars built from them;
    kept bars of other durations are removed. Returns (symbol, duration, rows) per file written."""
    seen: dict[tuple[str, int], str] = {}
    for name, (found, seconds, _) in read:
        if (found, seconds) in seen:
            raise ImportRefused(f"{name}: {found} {_what(seconds)} are also in {seen[(found, seconds)]}")
        seen[(found, seconds)] = name
    for (found, seconds), name in seen.items():
        if seconds != TICKS and (found, TICKS) in seen:
            raise ImportRefused(
                f"{name}: {found} K-lines with its tick file {seen[(found, TICKS)]}: a tick file is the "
                "contract's whole history (its bars are built from the ticks)"
            )
    writes: list[tuple[str, int, str, int]] = []  # symbol, duration, text, rows
    removes: list[Path] = []
    for _, (found, seconds, rows) in read:
        decs = price_decs.get(found, 2)
        if isinstance(rows, TickColumns):
            writes.append((found, TICKS, ticks_to_csv(found, rows, decs), len(rows)))
            for built_seconds in (MINUTE, DAY):
                bars = bars_from_ticks(rows, built_seconds)
                writes.append((found, built_seconds, to_csv(found, bars, decs), len(bars)))
            removes.extend(p for s, p in store.kept(found).items() if s not in (TICKS, MINUTE, DAY))
        else:
            writes.append((found, seconds, to_csv(found, rows, decs), len(rows)))
    staged = []
    for found, seconds, text, _ in writes:
        target = store.path(found, seconds)
        temporary = target.with_name(f".{target.name}.{os.urandom(4).hex()}.import.tmp")
        temporary.write_text(text)
        staged.append((temporary, target))
    for temporary, target in staged:
        os.replace(temporary, target)
    for path in removes:
        path.unlink(missing_ok=True)
    return [(found, seconds, count) for found, seconds, _, count in writes]


def _what(seconds: int) -> str:
    return "ticks" if seconds == TICKS else f"{seconds} s bars"


def load_replay(spec: str) -> dict[str, ReplayTrack]:
    """``QAEX_MARKET_REPLAY`` / ``qaex serve --replay``: comma-separated DataDownloader K-line or tick
    files or directories (every ``*.csv`` in them; the header tells a tick file from a K-line file) -> a
    track per symbol (any symbol: the contracts may be listed after the start; a recording of one never
    listed is simply not played). Raises HistoryFileError / ImportRefused naming the file."""
    paths: list[Path] = []
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            continue
        path = Path(part)
        paths.extend(sorted(path.glob("*.csv")) if path.is_dir() else [path])
    tracks: dict[str, ReplayTrack] = {}
    for path in paths:
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            raise ImportRefused(f"{path}: cannot read: {exc}") from None
        if is_tick_header(text.split("\n", 1)[0]):
            symbol, ticks = parse_ticks(text, str(path))
            track = track_from_ticks(ticks)
            if not track.prices:
                raise ImportRefused(f"{path}: no tick with a last price")
        else:
            symbol, bars = parse_csv(text, str(path))
            if not len(bars):
                raise ImportRefused(f"{path}: no bars")
            track = track_from_bars(bars)
        if symbol in tracks:
            raise ImportRefused(f"{path}: a second recording of {symbol}")
        tracks[symbol] = track
    return tracks
