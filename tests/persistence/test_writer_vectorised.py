"""The writer's vectorised dedupe and candles against the rules written out one tick at a time.

`reference` is the module doc of persistence/writer.py as a plain per-tick loop (what the writer did
before numpy did it): a tick older than its series' mark is late, one at the mark identical to a
tick already there is a duplicate, anything else is stored and folded into its minute's candle.
Hypothesis draws streams full of what makes this hard (ticks sharing a millisecond, exact repeats,
stragglers, several instruments, an IST midnight) and cuts them into batches anywhere; the store
must hold exactly what the reference keeps, and the same candles, whichever way the ticks came in.
"""

from __future__ import annotations

import tempfile
from datetime import date
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feeds.ticks import Tick, tick_fields
from persistence import readers, records
from persistence.store import DAY_MS, IST_OFFSET_MS, session_day_of
from persistence.writer import HistoryWriter

MIDNIGHT_MS = 1_710_268_200_000 - 5 * 60_000  # 2024-03-13 00:00 IST, less five minutes
KEYS = ("NSE_FO|1", "NSE_FO|2", "NSE_INDEX|Nifty 50")


def reference(ticks: list[Tick]) -> tuple[list[Tick], dict[tuple[str, int], tuple], int, int]:
    """(stored ticks in arrival order, candles by (key, minute), duplicates, late)."""
    marks: dict[tuple[str, int], tuple[int, set]] = {}
    state: dict[tuple[str, int], dict] = {}
    stored, candles, duplicates, late = [], {}, 0, 0
    for t in ticks:
        series = (t.instrument_key, (t.ts_ms + IST_OFFSET_MS) // DAY_MS)
        mark, seen = marks.get(series, (-1, set()))
        ident = (t.ltp, t.ltq, t.volume, t.oi, t.bid, t.bid_qty, t.ask, t.ask_qty)
        if t.ts_ms < mark:
            late += 1
            continue
        if t.ts_ms == mark and ident in seen:
            duplicates += 1
            continue
        marks[series] = (t.ts_ms, (seen | {ident}) if t.ts_ms == mark else {ident})
        stored.append(t)
        s = state.setdefault(series, {"minute": -1, "last_volume": 0, "base": None})
        minute = t.ts_ms - t.ts_ms % 60_000
        if minute != s["minute"]:
            if s["minute"] >= 0:
                s["base"] = s["last_volume"]
            elif s["base"] is None:
                s["base"] = max(t.volume - t.ltq, 0) if t.volume else 0
            s.update(minute=minute, open=t.ltp, high=t.ltp, low=t.ltp, sum_ltq=0)
        s["high"], s["low"], s["close"] = max(s["high"], t.ltp), min(s["low"], t.ltp), t.ltp
        s["sum_ltq"] += t.ltq
        if t.volume:
            s["last_volume"] = t.volume
        s["oi"] = t.oi
        if s["last_volume"] > 0:
            volume = max(s["last_volume"] - (s["base"] or 0), 0)
        else:
            volume = s["sum_ltq"] or None
        candles[(t.instrument_key, minute)] = (s["open"], s["high"], s["low"], s["close"], volume, s["oi"])
    return stored, candles, duplicates, late


@st.composite
def streams(draw) -> list[Tick]:
    out: list[Tick] = []
    ts = MIDNIGHT_MS
    volume = dict.fromkeys(KEYS, 0)
    for key, gap, price, lots, quote, kind in draw(
        st.lists(
            st.tuples(
                st.sampled_from(KEYS),
                st.sampled_from([0, 0, 0, 1, 400, 20_000, 70_000]),
                st.integers(1, 6),
                st.integers(0, 3),
                st.integers(0, 2),
                st.sampled_from(["new", "new", "new", "repeat", "straggler"]),
            ),
            min_size=1,
            max_size=150,
        )
    ):
        mine = [t for t in out if t.instrument_key == key]
        if kind == "repeat" and mine:
            out.append(mine[-1])  # the same tick again: a duplicate
            continue
        if kind == "straggler" and mine:
            old = mine[len(mine) // 2]  # older than the mark unless it is the last one
            out.append(Tick(key, old.ts_ms, old.ltp + 0.05, 1, old.volume, old.oi))
            continue
        ts += gap
        index = key.startswith("NSE_INDEX")
        volume[key] += 0 if index else lots * 25
        price_ = 100 + price * 0.05
        depth = (
            ()
            if index or quote == 0
            else tuple((price_ - k * 0.05, 25 * k, price_ + k * 0.05, 50) for k in range(quote + 1))
        )
        best = depth[0] if depth else (0.0, 0, 0.0, 0)
        out.append(
            Tick(
                key,
                ts,
                price_,
                0 if index else lots * 25,
                volume[key],
                0.0 if index else 500.0 + lots,
                *best,
                99.0,
                depth,
            )
        )
    return out


def _write(writer: HistoryWriter, ticks: list[Tick], how: str) -> None:
    if how == "ticks":
        writer.write_ticks(ticks)
    else:
        writer.write_records(*records.encode_rows([tick_fields(t) for t in ticks]))


def _days(ticks: list[Tick]) -> tuple[date, date]:
    days = [session_day_of(t.ts_ms) for t in ticks]
    return min(days), max(days)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    stream=streams(),
    cuts=st.lists(st.integers(0, 150), max_size=6),
    how=st.sampled_from(["ticks", "records"]),
)
def test_store_holds_what_the_per_tick_rules_keep(stream, cuts, how):
    stored, candles, duplicates, late = reference(stream)
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    with tempfile.TemporaryDirectory() as tmp:
        writer = HistoryWriter(Path(tmp), flush_interval=None)
        for start, stop in zip(bounds, bounds[1:], strict=False):
            _write(writer, stream[start:stop], how)
            if stop % 3 == 0:
                writer.flush()
        assert (writer.stats["duplicates"], writer.stats["late"]) == (duplicates, late)
        writer.close()
        first, last = _days(stream)
        for key in KEYS:
            # Read back in time order (a day's series never goes back in time; two days might).
            want = sorted((t for t in stored if t.instrument_key == key), key=lambda t: t.ts_ms)
            got = readers.read_ticks(key, first, last, root=tmp).to_pylist()
            assert [(r["ts_ms"], r["ltp"], r["ltq"], r["volume"], r["bid"], r["bid_qty"]) for r in got] == [
                (t.ts_ms, t.ltp, t.ltq, t.volume, t.bid, t.bid_qty) for t in want
            ]
            depth = readers.read_depth(key, first, last, root=tmp).to_pylist()
            assert [[tuple(level.values()) for level in r["levels"]] for r in depth] == [
                [tuple(level) for level in t.depth] for t in want if t.depth
            ]
            got_candles = {
                (key, round(r["ts"].timestamp() * 1000)): (
                    r["open"],
                    r["high"],
                    r["low"],
                    r["close"],
                    r["volume"],
                    r["oi"],
                )
                for r in readers.read_candles_1m(key, first, last, root=tmp).to_pylist()
            }
            assert got_candles == {k: v for k, v in candles.items() if k[0] == key}


def test_records_that_do_not_fit_are_refused_and_nothing_is_buffered(tmp_path):
    ticks = [Tick("NSE_FO|1", MIDNIGHT_MS + i, 100.0 + i, 25, 25 * (i + 1), 10.0) for i in range(3)]
    keys, heads, counts, levels = records.encode_rows([tick_fields(t) for t in ticks])
    with HistoryWriter(tmp_path, flush_interval=None) as writer:
        for bad in (
            (keys[:2], heads, counts, levels),
            (keys, heads[:-8], counts, levels),
            (keys, heads, counts, levels + b"\0" * 32),
        ):
            try:
                writer.write_records(*bad)
            except records.RecordError:
                pass
            else:
                raise AssertionError("mismatched records were accepted")
        assert writer.stats["written"] == 0
        assert writer.write_records(keys, heads, counts, levels) == 3
