"""The history writer in its own process (persistence.writer_process), as runfeed runs it: the
same rows as writing in-process, the store's lock rules, and nothing lost when either side dies."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from datetime import date

import psutil
import pytest

from feeds.ticks import Tick
from persistence.readers import read_depth, read_ticks
from persistence.store import StoreLocked
from persistence.writer import HistoryWriter
from persistence.writer_process import HistoryWriterProcess

DAY = date(2026, 11, 24)
OPEN_MS = 1_795_491_900_000  # 2026-11-24 09:15 IST


def _ticks(n: int, start: int = 0, keys=("NSE_FO|1", "NSE_FO|2")) -> list[Tick]:
    out = []
    for i in range(start, start + n):
        depth = tuple(
            (100.0 + i % 7 - j * 0.05, 75 * (j + 1), 100.05 + i % 7 + j * 0.05, 50 * (j + 1))
            for j in range(5)
        )
        out.append(
            Tick(
                keys[i % len(keys)],
                OPEN_MS + i * 250,
                100.0 + i % 7,
                75,
                75 * (i + 1),
                1_000.0 + i,
                depth[0][0],
                depth[0][1],
                depth[0][2],
                depth[0][3],
                99.5,
                depth,
            )
        )
    return out


def _rows(root, key="NSE_FO|1"):
    table = read_ticks(key, DAY, DAY, root=root)
    return sorted(
        zip(*(table[c].to_pylist() for c in ("ts_ms", "ltp", "volume", "oi", "bid", "ask_qty")), strict=True)
    )


def test_the_process_stores_what_the_in_process_writer_stores(tmp_path):
    ticks = _ticks(600)
    with HistoryWriter(tmp_path / "a", flush_interval=None) as local:
        local.write_ticks(ticks)
    remote = HistoryWriterProcess(tmp_path / "b")
    try:
        assert remote.write_ticks(ticks[:300]) == 300
        assert remote.write_ticks(ticks) == 300  # the first half again: deduplicated
        remote.flush()
    finally:
        remote.close()
    for key in ("NSE_FO|1", "NSE_FO|2"):
        assert (
            _rows(tmp_path / "a", key) == _rows(tmp_path / "b", key)
            and len(_rows(tmp_path / "b", key)) == 300
        )
        local_depth = read_depth(key, DAY, DAY, root=tmp_path / "a")
        remote_depth = read_depth(key, DAY, DAY, root=tmp_path / "b")
        assert local_depth.num_rows == remote_depth.num_rows == 300
        assert local_depth["levels"].to_pylist() == remote_depth["levels"].to_pylist()


def test_a_second_writer_is_refused_with_the_store_locked_error(tmp_path):
    first = HistoryWriterProcess(tmp_path)
    try:
        with pytest.raises(StoreLocked):
            HistoryWriterProcess(tmp_path, lock_wait_s=0.5)
        with pytest.raises(StoreLocked):
            HistoryWriter(tmp_path)
    finally:
        first.close()
    HistoryWriterProcess(tmp_path, lock_wait_s=0).close()  # free again once closed


def test_a_killed_writer_process_is_restarted_and_the_batch_resent_is_not_duplicated(tmp_path):
    writer = HistoryWriterProcess(tmp_path)
    try:
        assert writer.write_ticks(_ticks(100)) == 100
        writer.flush()
        first = writer.pid
        os.kill(first, signal.SIGKILL)
        with contextlib.suppress(psutil.NoSuchProcess):
            psutil.Process(first).wait(10)
        # The next call finds the child gone and starts another; the pipeline re-sends a batch whose
        # call failed, so the stored ticks come again: recognised, not stored twice.
        assert writer.write_ticks(_ticks(200)) == 100
        assert writer.pid != first and writer.restarts == 1
        writer.flush()
    finally:
        writer.close()
    assert len(_rows(tmp_path)) == 100 and len(_rows(tmp_path, "NSE_FO|2")) == 100


def test_when_the_feed_dies_the_writer_process_publishes_what_it_was_sent_and_lets_go(tmp_path):
    """The feed's buffer dies with it; what it had handed to the writer process does not."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import sys, time
        sys.path.insert(0, {str(os.getcwd())!r})
        from tests.persistence.test_writer_process import _ticks
        from persistence.writer_process import HistoryWriterProcess
        writer = HistoryWriterProcess({str(tmp_path)!r})
        writer.write_ticks(_ticks(400))  # sent, never flushed
        print(writer.pid, flush=True)
        time.sleep(60)
        """
    )
    feed = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        child = int(feed.stdout.readline())
        feed.kill()  # SIGKILL: no close, no flush
        feed.wait(10)
        psutil.Process(child).wait(30)  # it noticed (EOF) and exited
    finally:
        if feed.poll() is None:
            feed.kill()
    assert len(_rows(tmp_path)) == 200 and len(_rows(tmp_path, "NSE_FO|2")) == 200
    HistoryWriterProcess(tmp_path, lock_wait_s=0).close()  # the lock was released


def test_signals_to_the_process_group_do_not_cut_the_writer_off(tmp_path):
    """runfeed is stopped with SIGTERM/SIGINT, often to its whole process group: the writer must
    outlive that to take the final flush."""
    writer = HistoryWriterProcess(tmp_path)
    try:
        writer.write_ticks(_ticks(50))
        os.kill(writer.pid, signal.SIGTERM)
        os.kill(writer.pid, signal.SIGINT)
        time.sleep(0.3)
        assert psutil.Process(writer.pid).status() != psutil.STATUS_ZOMBIE
        writer.flush()
    finally:
        writer.close()
    assert len(_rows(tmp_path)) == 25
