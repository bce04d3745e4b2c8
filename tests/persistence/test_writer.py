"""HistoryWriter and the readers in one process: dedupe, candles, partitions, compaction, the lock."""

from __future__ import annotations

import json
import time
from datetime import date, datetime

import pyarrow as pa
import pytest

from feeds.ticks import IST, Tick
from persistence import readers, store
from persistence.store import StoreLocked, session_day_of
from persistence.writer import HistoryWriter

DAY = date(2024, 3, 12)
OPEN_MS = int(datetime(2024, 3, 12, 9, 15, tzinfo=IST).timestamp() * 1000)
KEY = "NSE_FO|43919"


def fut(seconds: float, ltp: float, ltq: int, volume: int, oi: float = 0.0, **kw) -> Tick:
    return Tick(KEY, OPEN_MS + int(seconds * 1000), ltp, ltq, volume, oi, **kw)


def test_duplicates_and_stragglers_are_dropped_but_new_ticks_at_the_same_millisecond_are_kept(tmp_path):
    with HistoryWriter(tmp_path) as w:
        assert w.write_ticks([fut(0, 100, 10, 10), fut(1, 101, 5, 15)]) == 2
        # same tick again, a straggler older than what is written, and a new trade at the same ms
        assert w.write_ticks([fut(1, 101, 5, 15), fut(0.5, 99, 1, 11), fut(1, 101.5, 5, 20)]) == 1
        assert w.stats == {**w.stats, "written": 3, "duplicates": 1, "late": 1}
    ticks = readers.read_ticks(KEY, DAY, DAY, root=tmp_path)
    assert ticks["volume"].to_pylist() == [10, 15, 20]
    assert ticks["ts"][0].as_py() == datetime(2024, 3, 12, 9, 15, tzinfo=IST)
    assert ticks.column_names == [
        "instrument_key",
        "ts",
        "ts_ms",
        "ltp",
        "ltq",
        "volume",
        "oi",
        "bid",
        "bid_qty",
        "ask",
        "ask_qty",
    ]


def test_candles_are_built_from_ticks_as_minutes_complete(tmp_path):
    w = HistoryWriter(tmp_path, flush_interval=None)
    w.write_ticks(
        [
            fut(0, 100.0, 10, 510, oi=7),  # feed started mid-day: 500 traded before this tick
            fut(20, 102.5, 5, 515, oi=8),
            fut(40, 99.0, 20, 535, oi=9),
            fut(59.9, 101.0, 5, 540, oi=9),
            fut(61, 101.5, 60, 600, oi=10),
        ]
    )
    w.flush()
    # 09:15 is complete (09:16 started); 09:16 is not published until it completes.
    candles = readers.read_candles_1m(KEY, DAY, DAY, root=tmp_path).to_pylist()
    assert [(c["open"], c["high"], c["low"], c["close"], c["volume"], c["oi"]) for c in candles] == [
        (100.0, 102.5, 99.0, 101.0, 40, 9.0)
    ]
    assert candles[0]["ts"] == datetime(2024, 3, 12, 9, 15, tzinfo=IST)
    # Another instrument's tick 2 s past 09:17 proves 09:16 is over for everyone.
    w.write_ticks([Tick("NSE_INDEX|Nifty 50", OPEN_MS + 122_000, 22000.0)])
    w.flush()
    candles = readers.read_candles_1m(KEY, DAY, DAY, root=tmp_path).to_pylist()
    assert [(c["open"], c["close"], c["volume"], c["oi"]) for c in candles][1] == (101.5, 101.5, 60, 10.0)
    w.close()
    # An index has no volume (NULL, like imported index candles). Sealed at close.
    index = readers.read_candles_1m("NSE_INDEX|Nifty 50", DAY, DAY, root=tmp_path).to_pylist()
    assert [(c["open"], c["volume"]) for c in index] == [(22000.0, None)]


def test_a_late_tick_amends_a_published_candle_without_duplicating_it(tmp_path):
    with HistoryWriter(tmp_path, flush_interval=None) as w:
        w.write_ticks([fut(0, 100, 1, 1), fut(30, 100, 1, 2)])
        w.write_ticks([Tick("NSE_INDEX|Nifty 50", OPEN_MS + 63_000, 1.0)])  # seals 09:15
        w.flush()
        w.write_ticks([fut(45, 104, 1, 3)])  # still 09:15, newer than the mark for KEY
        w.flush()
        w.write_ticks([Tick("NSE_INDEX|Nifty 50", OPEN_MS + 64_000, 1.0)])
        w.flush()
        candles = readers.read_candles_1m(KEY, DAY, DAY, root=tmp_path).to_pylist()
        assert [(c["high"], c["close"], c["volume"]) for c in candles] == [(104, 104, 3)]


def test_ticks_are_partitioned_by_ist_session_day(tmp_path):
    late_evening = OPEN_MS + 14 * 3600 * 1000  # 23:15 IST, 17:45 UTC: still 12 March in IST
    next_day = OPEN_MS + 24 * 3600 * 1000
    assert session_day_of(OPEN_MS + 14 * 3600 * 1000 + 45 * 60 * 1000) == date(2024, 3, 13)  # 00:00 IST
    with HistoryWriter(tmp_path) as w:
        w.write_ticks([Tick(KEY, OPEN_MS, 1.0), Tick(KEY, late_evening, 2.0), Tick(KEY, next_day, 3.0)])
    assert readers.session_days(root=tmp_path) == [DAY, date(2024, 3, 13)]
    assert readers.session_days("NSE_INDEX|Nifty 50", root=tmp_path) == []
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path)["ltp"].to_pylist() == [1.0, 2.0]
    assert readers.read_ticks(KEY, DAY, date(2024, 3, 13), root=tmp_path).num_rows == 3
    assert readers.instruments(root=tmp_path) == [KEY]


def test_imported_candles_replace_the_same_minute_and_reimport_is_idempotent(tmp_path):
    rows = [
        {"instrument_key": "NSE_INDEX|Nifty 50", "ts": datetime(2024, 3, 12, 9, 15 + i, tzinfo=IST), "open": 1.0 + i,
         "high": 2.0 + i, "low": 0.5 + i, "close": 1.5 + i}
        for i in range(3)
    ]  # fmt: skip
    for _ in range(2):
        with HistoryWriter(tmp_path) as w:
            assert w.write_candles(rows) == 3
            w.write_candles(rows)
    candles = readers.read_candles_1m("NSE_INDEX|Nifty 50", DAY, DAY, root=tmp_path)
    assert candles["open"].to_pylist() == [1.0, 2.0, 3.0]
    assert candles["volume"].to_pylist() == [None, None, None]
    assert candles.schema.field("ts").type == pa.timestamp("ms", tz="Asia/Kolkata")


def test_depth_and_profile_summaries_round_trip(tmp_path):
    depth = ((100.0, 50, 100.05, 75), (99.95, 10, 100.1, 20))
    with HistoryWriter(tmp_path) as w:
        w.write_ticks([fut(0, 100, 1, 1, depth=depth), fut(1, 100, 1, 2)])
        w.write_profile_summary(KEY, DAY, {"poc": 100.0, "vah": 101.0, "val": 99.0, "day_type": "normal"})
        w.write_profile_summary(KEY, DAY, {"poc": 100.5, "vah": 101.0, "val": 99.0, "day_type": "trend"})
    snapshot = readers.read_depth(KEY, DAY, DAY, root=tmp_path).to_pylist()
    assert len(snapshot) == 1
    assert [tuple(level.values()) for level in snapshot[0]["levels"]] == list(depth)
    assert readers.read_profile_summaries(KEY, DAY, DAY, root=tmp_path) == [
        {"session_day": DAY, "poc": 100.5, "vah": 101.0, "val": 99.0, "day_type": "trend"}
    ]


def test_one_writer_at_a_time_and_readers_of_an_empty_store(tmp_path):
    w = HistoryWriter(tmp_path)
    with pytest.raises(StoreLocked, match="held by another writer"):
        HistoryWriter(tmp_path)
    w.close()
    HistoryWriter(tmp_path).close()
    empty = readers.read_ticks(KEY, DAY, DAY, root=tmp_path)
    assert empty.num_rows == 0 and "ts" in empty.column_names
    assert readers.read_candles_1m(KEY, DAY, DAY, root=tmp_path).num_rows == 0
    assert readers.session_days(root=tmp_path) == [] and readers.instruments(root=tmp_path) == []


def test_small_flush_files_are_compacted_without_changing_what_readers_see(tmp_path):
    w = HistoryWriter(tmp_path, flush_interval=None, compact_after=3, merge_levels_after=2, grace_s=0)

    def files() -> list:
        return json.loads((tmp_path / "manifest.json").read_text())["files"]["ticks"]["2024-03-12"]

    for i in range(10):
        w.write_ticks([fut(i, 100 + i, 1, i + 1)])
        w.flush()
        assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path).num_rows == i + 1
    # Merges run in the background and are swapped in by a later flush.
    deadline = time.monotonic() + 30
    while not {f[1] for f in files()} - {0} and time.monotonic() < deadline:
        time.sleep(0.05)
        w.flush()
    assert {f[1] for f in files()} - {0}, "no merge was published"
    assert len(files()) < 10
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path).num_rows == 10
    w.close()
    assert len(files()) == 1
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path)["ltp"].to_pylist() == [
        100.0 + i for i in range(10)
    ]
    assert len(list(tmp_path.glob("ticks/*/*.parquet"))) == 1


def test_write_ticks_flushes_on_its_own_when_the_interval_has_passed(tmp_path):
    w = HistoryWriter(tmp_path, flush_interval=0)
    w.write_ticks([fut(0, 100, 1, 1)])
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path).num_rows == 1
    w.close()


def test_a_reader_whose_files_were_compacted_away_retries_with_the_new_manifest(tmp_path, monkeypatch):
    w = HistoryWriter(tmp_path, flush_interval=None, grace_s=0)
    for i in range(3):
        w.write_ticks([fut(i, 100 + i, 1, i + 1)])
        w.flush()
    stale = store.read_manifest(tmp_path)
    w.close()  # merges the three files into one and deletes them
    assert not (tmp_path / stale.paths("ticks")[0]).exists()
    calls = []

    def manifest_as_first_read(root):
        calls.append(root)
        return stale if len(calls) == 1 else store.read_manifest(root)

    monkeypatch.setattr(readers, "read_manifest", manifest_as_first_read)
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path)["ltp"].to_pylist() == [100.0, 101.0, 102.0]
    assert len(calls) == 2


def test_live_merges_are_tiered_and_never_rewrite_the_whole_day_again_and_again(tmp_path):
    """A long live day: each row is rewritten about once per level (log of the day's size), not
    once per merge of everything (which grew with the square of the day)."""
    w = HistoryWriter(tmp_path, flush_interval=None, compact_after=2, merge_levels_after=2, grace_s=0)
    merged: list[int] = []
    start_merge = w._start_merge

    def recording(table, day, inputs, level):
        if table == "ticks":
            merged.append(sum(p.rows for p in inputs))
        start_merge(table, day, inputs, level)

    w._start_merge = recording
    rows = 128
    for i in range(rows):
        w.write_ticks([fut(i, 100 + i % 50, 1, i + 1)])
        w.flush()
        while w._merging is not None:  # let each merge finish before the next flush
            time.sleep(0.01)
            w.flush()
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path).num_rows == rows
    levels = {
        f[1] for f in json.loads((tmp_path / "manifest.json").read_text())["files"]["ticks"]["2024-03-12"]
    }
    assert max(levels) >= 3
    assert sum(merged) <= rows * 8  # log2(128) + 1 rewrites a row at most
    w.close()
    assert readers.read_ticks(KEY, DAY, DAY, root=tmp_path)["ltp"].to_pylist() == [
        100.0 + i % 50 for i in range(rows)
    ]
