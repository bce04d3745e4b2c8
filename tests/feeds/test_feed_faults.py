"""Feed fault check (issue 4): SIGKILL `runfeed --source sim` mid-session, restart it for the same
date, let it finish the slice (`--end`), and compare with an uninterrupted run of the slice.

The measurement is `bench/fault_feed_kill.py` (`measure`), run here on the test Redis database with
private key prefixes and temporary history stores.

What happens (and what the assertions hold the feed to):
- The SIGKILL loses only the tail: ticks the feed had received (they were on its Redis streams) but
  not yet flushed to the store, all newer than the newest stored tick (no holes). That is at most
  one store flush interval (FEED_FLUSH_MS, 500 ms wall) plus the batch in flight; the bench reports
  the window. A source that cannot re-send (Upstox) loses exactly these.
- runfeed has no resume point of its own: the restarted simulator starts again at 09:15 and, being
  deterministic per date, re-sends every tick. The restarted writer reloads each instrument's
  high-water mark from the store and drops what it already has, so after the restart the store
  equals the uninterrupted run's: nothing lost, nothing duplicated.
- The Redis streams are not written twice either: on its first tick of each instrument the
  restarted pipeline reads the last entry of that instrument's stream and skips re-sent ticks up
  to it (`FeedPipeline.resume_streams`; same session day only, off for a replay). So the streams
  after the restart equal the uninterrupted run's, and the candles a strategy builds from them too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "fault_feed_kill.py"

pytestmark = pytest.mark.slow


def load_bench():
    spec = importlib.util.spec_from_file_location("fault_feed_kill", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_killed_and_restarted_feed_stores_the_slice_once_and_loses_only_its_unflushed_tail(
    tmp_path, test_redis_url
):
    report = load_bench().measure(test_redis_url, tmp_path, end="09:25", speed=100, kill_at_fraction=0.4)
    at_kill = report["at_kill"]

    # The kill happened mid-session: some ticks were stored, some streamed but not yet flushed.
    assert 0 < at_kill["rows_stored"] < report["reference_rows"], report
    assert at_kill["rows_streamed"] < report["reference_rows"], report
    # What the kill lost is the unflushed tail only: nothing older than the newest stored tick.
    assert at_kill["holes"] == 0, report
    assert at_kill["rows_duplicated"] == 0, report
    if at_kill["rows_unflushed"]:
        assert at_kill["first_missing_ts_ms"] > at_kill["newest_stored_ts_ms"], report

    # After the restart the store is the uninterrupted run's, row for row.
    assert report["rows_lost"] == 0, report
    assert report["rows_duplicated"] == 0, report
    assert report["rows_after_restart"] == report["reference_rows"], report

    # The streams: nothing lost, nothing streamed twice...
    stream = report["stream"]
    assert stream["entries_lost"] == 0, report
    assert stream["entries_duplicated"] == 0, report
    assert stream["entries_after_restart"] == stream["entries_reference"], report
    # ...so the candles a strategy builds from them are the uninterrupted run's.
    assert stream["instruments_with_candles_differing"] == 0, report
    assert stream["index_candles_differing"] == 0, report
