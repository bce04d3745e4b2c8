"""Property: whatever a source re-sends and however often the writer dies and restarts, the store ends
up holding each tick exactly once, with the candles of one clean pass."""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.ticks import Tick
from persistence import readers
from persistence.writer import HistoryWriter

OPEN_MS = 1_710_215_100_000  # 2024-03-12 09:15 IST
DAY = date(2024, 3, 12)
KEYS = ("NSE_FO|1", "NSE_FO|2")


@st.composite
def streams(draw) -> list[Tick]:
    """Ticks in exchange-time order over a few minutes; several may share a millisecond."""
    steps = draw(
        st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from([0, 0, 1, 250, 7_000, 45_000]),  # ms since the previous tick
                st.integers(1, 40),  # price in ticks of 0.05 above 100
                st.integers(1, 5),  # lots
            ),
            min_size=1,
            max_size=120,
        )
    )
    ts, volume, out = OPEN_MS, dict.fromkeys(KEYS, 0), []
    for key, gap, price, lots in steps:
        ts += gap
        volume[key] += lots * 25
        out.append(Tick(key, ts, 100 + price * 0.05, lots * 25, volume[key], 1000.0))
    return out


@st.composite
def schedules(draw, length: int) -> list[tuple]:
    """What happens while the stream is fed: batches, flushes, a source rewinding (re-sending from
    an earlier tick) and writer crashes (everything unflushed lost; the source rewinds to some tick
    at or before the last one it knows was stored)."""
    feed = st.tuples(st.just("feed"), st.integers(1, max(1, length // 3)))
    op = st.one_of(
        feed,
        st.tuples(st.just("flush")),
        st.tuples(st.just("rewind"), st.floats(0, 1)),
        st.tuples(st.just("crash"), st.floats(0, 1)),
    )
    # Feed, flush, then anything: so crashes after something was stored are common.
    return [draw(feed), ("flush",), *draw(st.lists(op, min_size=2, max_size=14))]


def _candles(root: Path, key: str) -> list[dict]:
    return readers.read_candles_1m(key, DAY, DAY, root=root).to_pylist()


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_resends_and_crashes_never_duplicate_or_lose_a_tick(data):
    stream = data.draw(streams())
    ops = data.draw(schedules(len(stream)))
    with tempfile.TemporaryDirectory() as tmp:
        root, clean = Path(tmp) / "store", Path(tmp) / "clean"
        writer = HistoryWriter(root, flush_interval=None, compact_after=2, merge_levels_after=2, grace_s=0)
        pos = flushed = 0  # next tick the source sends; ticks before `flushed` are surely stored
        for op in ops:
            if op[0] == "feed":
                writer.write_ticks(stream[pos : pos + op[1]])
                pos = min(len(stream), pos + op[1])
            elif op[0] == "flush":
                writer.flush()
                flushed = pos
            elif op[0] == "rewind":
                pos = int(op[1] * pos)
            else:
                writer.abandon()
                writer = HistoryWriter(root, flush_interval=None, compact_after=2, merge_levels_after=2)
                pos = int(op[1] * flushed)
        writer.write_ticks(stream[pos:])
        writer.close()

        with HistoryWriter(clean) as once:
            once.write_ticks(stream)
        for key in KEYS:
            want = [t for t in stream if t.instrument_key == key]
            got = readers.read_ticks(key, DAY, DAY, root=root)
            assert list(zip(got["ts_ms"].to_pylist(), got["volume"].to_pylist(), strict=True)) == [
                (t.ts_ms, t.volume) for t in want
            ]
            assert _candles(root, key) == _candles(clean, key)
