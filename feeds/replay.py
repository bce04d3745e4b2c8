"""Replay of a stored session from the history store, through the same pipeline as a live feed.

`ReplaySource(date, speed, instruments)` reads the day's ticks with `persistence.readers.read_ticks`
(falling back to 1-minute candles turned into four synthetic ticks each, open-low-high-close or
open-high-low-close, when an instrument has only candles), merges all instruments in exchange-time
order and re-emits them with their original timestamps, paced by `speed` like the simulator
(speed >= 1000 runs flat out).

It reads only: never writes to the store it replays (the pipeline's writer drops re-fed ticks as
duplicates, so replaying into the same store is harmless). No Django, Redis or Channels here.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from datetime import date, datetime
from datetime import time as dtime
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc

from feeds import contracts
from feeds.sim import FLAT_OUT_SPEED
from feeds.sources import CLOSED, OPEN, PRE_OPEN, TickSink
from feeds.ticks import IST, Tick

BATCH_ROWS = 50_000
# Where in a candle minute each synthetic tick sits (ms): open, first extreme, second extreme, close.
CANDLE_OFFSETS_MS = (0, 15_000, 35_000, 59_000)


class NoStoredData(LookupError):
    """Nothing stored for the requested day (or instruments)."""


def stored_instruments(day: date, root: Path | str | None = None) -> list[str]:
    """Instruments with any stored data (ticks or candles) on `day`."""
    from persistence.store import default_root, read_manifest

    manifest = read_manifest(Path(root) if root is not None else default_root())
    return sorted(manifest.instruments.get(day.isoformat(), []))


def candles_as_ticks(candles: pa.Table, close_prev: float = 0.0) -> pa.Table:
    """Four synthetic ticks per 1-minute candle, in the order the bar most likely traded."""
    rows: dict[str, list] = {k: [] for k in ("instrument_key", "ts_ms", "ltp", "ltq", "volume", "oi")}
    cumulative = 0
    keys = candles["instrument_key"].to_pylist()
    starts = [int(ts.timestamp() * 1000) for ts in candles["ts"].to_pylist()]
    cols = [candles[c].to_pylist() for c in ("open", "high", "low", "close", "volume", "oi")]
    for key, start, o, h, low, c, v, oi in zip(keys, starts, *cols, strict=True):
        path = (o, low, h, c) if c >= o else (o, h, low, c)
        v = int(v or 0)
        shares = (v // 4, v // 4, v // 4, v - 3 * (v // 4))
        for offset, price, share in zip(CANDLE_OFFSETS_MS, path, shares, strict=True):
            cumulative += share
            rows["instrument_key"].append(key)
            rows["ts_ms"].append(start + offset)
            rows["ltp"].append(float(price))
            rows["ltq"].append(share)
            rows["volume"].append(cumulative if v else 0)
            rows["oi"].append(float(oi or 0.0))
    table = pa.table(
        {
            "instrument_key": pa.array(rows["instrument_key"], pa.string()),
            "ts_ms": pa.array(rows["ts_ms"], pa.int64()),
            "ltp": pa.array(rows["ltp"], pa.float64()),
            "ltq": pa.array(rows["ltq"], pa.int64()),
            "volume": pa.array(rows["volume"], pa.int64()),
            "oi": pa.array(rows["oi"], pa.float64()),
        }
    )
    n = table.num_rows
    for name, typ in (
        ("bid", pa.float64()),
        ("bid_qty", pa.int64()),
        ("ask", pa.float64()),
        ("ask_qty", pa.int64()),
    ):
        table = table.append_column(name, pa.array([0] * n, typ))
    return table.append_column("close_prev", pa.array([close_prev] * n, pa.float64()))


TICK_COLUMNS = ("instrument_key", "ts_ms", "ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty")


class ReplaySource:
    """`feeds.sources.TickSource` replaying one stored session day."""

    name = "replay"

    def __init__(
        self,
        date: date,
        speed: float = 1.0,
        instruments: list[str] | None = None,
        *,
        root: Path | str | None = None,
        start: dtime | None = None,
        end: dtime | None = None,
    ) -> None:
        self.day = date
        self.speed = float(speed)
        self.root = root
        stored = stored_instruments(date, root)
        if not stored:
            raise NoStoredData(f"no stored data for {date.isoformat()} in the history store")
        if instruments:
            missing = [k for k in instruments if k not in stored]
            if missing:
                raise NoStoredData(f"no stored data for {', '.join(missing)} on {date.isoformat()}")
            self.instruments = list(dict.fromkeys(instruments))
        else:
            self.instruments = stored
        self.start_ms = self._at(start) if start else None
        self.end_ms = self._at(end) if end else None
        self.ticks_emitted = 0
        self.synthetic: list[str] = []  # instruments replayed from candles

    def _at(self, at: dtime) -> int:
        return int(datetime.combine(self.day, at, IST).timestamp() * 1000)

    def _prev_close(self, key: str) -> float:
        from persistence.readers import read_candles_1m, read_ticks

        prev = contracts.previous_trading_day(self.day)
        ticks = read_ticks(key, prev, prev, self.root)
        if ticks.num_rows:
            return float(ticks["ltp"][-1].as_py())
        candles = read_candles_1m(key, prev, prev, self.root)
        return float(candles["close"][-1].as_py()) if candles.num_rows else 0.0

    def load(self) -> pa.Table:
        """Every tick of the day for the chosen instruments, sorted by time (stable per instrument)."""
        from persistence.readers import read_candles_1m, read_ticks

        parts = []
        for key in self.instruments:
            close_prev = self._prev_close(key)
            ticks = read_ticks(key, self.day, self.day, self.root)
            if ticks.num_rows:
                table = ticks.select(list(TICK_COLUMNS))
                table = table.append_column(
                    "close_prev", pa.array([close_prev] * table.num_rows, pa.float64())
                )
            else:
                candles = read_candles_1m(key, self.day, self.day, self.root)
                if not candles.num_rows:
                    continue
                table = candles_as_ticks(candles, close_prev)
                self.synthetic.append(key)
            parts.append(table.select([*TICK_COLUMNS, "close_prev"]))
        if not parts:
            raise NoStoredData(f"no stored ticks or candles for {self.day.isoformat()}")
        table = pa.concat_tables(parts)
        if self.start_ms is not None or self.end_ms is not None:
            lo = self.start_ms if self.start_ms is not None else 0
            hi = self.end_ms if self.end_ms is not None else 2**62
            ts = table["ts_ms"]
            table = table.filter(pc.and_(pc.greater_equal(ts, lo), pc.less(ts, hi)))
        # Arrow's sort is stable: ticks of one instrument at the same millisecond keep their order.
        return table.sort_by([("ts_ms", "ascending")])

    def ticks(self) -> Iterator[Tick]:
        for batch in self._seconds(self.load()):
            yield from batch

    @staticmethod
    def _seconds(table: pa.Table) -> Iterator[list[Tick]]:
        """The ticks grouped by exchange second, in order."""
        current: list[Tick] = []
        second = None
        for rb in table.to_batches(max_chunksize=BATCH_ROWS):
            cols = [rb.column(i).to_pylist() for i in range(rb.num_columns)]
            for row in zip(*cols, strict=True):
                tick = Tick(*row)
                s = tick.ts_ms // 1000
                if s != second and current:
                    yield current
                    current = []
                second = s
                current.append(tick)
        if current:
            yield current

    async def run(self, sink: TickSink) -> None:
        sink.set_status(connected=True, session_state=PRE_OPEN, alert="")
        table = await asyncio.to_thread(self.load)
        paced = 0 < self.speed < FLAT_OUT_SPEED
        drain = getattr(sink, "drain", None)
        wall0 = time.monotonic()
        first_ms = None
        opened = False
        for batch in self._seconds(table):
            if first_ms is None:
                first_ms = batch[0].ts_ms
            if paced:
                delay = wall0 + (batch[0].ts_ms - first_ms) / 1000.0 / self.speed - time.monotonic()
                await asyncio.sleep(max(delay, 0))
            else:
                await asyncio.sleep(0)
            if not opened:
                sink.set_status(session_state=OPEN)
                opened = True
            sink.put(batch)
            self.ticks_emitted += len(batch)
            if drain is not None:
                await drain()
        sink.set_status(session_state=CLOSED)
