"""The history store across processes: one writer, readers in other processes, a SIGKILLed writer."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from persistence import readers
from persistence.store import StoreLocked
from persistence.writer import HistoryWriter
from tests.persistence.procs import INSTRUMENTS, SESSION_DAY, batch, ticks_up_to

BASE_DIR = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.slow


def _start(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(BASE_DIR)}
    return subprocess.Popen(
        [sys.executable, "-m", "tests.persistence.procs", *args],
        cwd=BASE_DIR,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _json_lines(text: str) -> list[dict]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_readers_in_other_processes_see_no_lock_errors_no_duplicates_and_every_row(tmp_path):
    root = tmp_path / "history"
    root.mkdir()
    reader_procs = [
        _start("reader", str(root), "--instrument", key) for key in (INSTRUMENTS[0], INSTRUMENTS[2])
    ]
    writer = _start("writer", str(root), "--seconds", "6", "--flush-every", "0.5", "--compact-after", "4")
    try:
        out, err = writer.communicate(timeout=180)
    finally:
        (tmp_path / "writer-done").touch()
    assert writer.returncode == 0, err
    lines = _json_lines(out)
    closed = lines[-1]
    assert "closed" in closed
    assert closed["stats"]["compactions"] > 0, "the test must exercise compaction while readers read"
    # Several published flushes while the readers read (how many fit in 6 s depends on the load).
    assert len([line for line in lines if "flushed" in line]) >= 3
    expected = ticks_up_to(closed["closed"])

    for proc in reader_procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err
        report = _json_lines(out)[-1]
        assert report["errors"] == []
        assert report["duplicates"] == 0
        assert report["candle_duplicates"] == 0
        assert report["backwards"] == 0
        assert report["reads"] >= 5
        assert report["final_ticks"] == expected
        assert report["final_candles"] > 0

    # After close each table-day is one file, and the data are exactly the ticks fed.
    manifest = json.loads((root / "manifest.json").read_text())
    assert all(len(parts) == 1 for days in manifest["files"].values() for parts in days.values())
    ticks = readers.read_ticks(INSTRUMENTS[1], SESSION_DAY, SESSION_DAY, root=root)
    fed = [t for b in range(closed["closed"] + 1) for t in batch(b) if t.instrument_key == INSTRUMENTS[1]]
    assert ticks["ts_ms"].to_pylist() == [t.ts_ms for t in fed]
    assert ticks["volume"].to_pylist() == [t.volume for t in fed]
    parquet_files = {p.relative_to(root).as_posix() for p in root.glob("*/*/*.parquet")}
    assert parquet_files == {parts[0][0] for days in manifest["files"].values() for parts in days.values()}


def _candles(root: Path, key: str) -> list[dict]:
    return readers.read_candles_1m(key, SESSION_DAY, SESSION_DAY, root=root).to_pylist()


def test_sigkilled_writer_loses_at_most_the_unflushed_second_and_a_restart_does_not_duplicate(tmp_path):
    root = tmp_path / "history"
    writer = _start(
        "writer",
        str(root),
        "--seconds",
        "60",
        "--flush-every",
        "0.3",
        "--pause",
        "0.02",
        "--compact-after",
        "3",
    )
    last_flushed = -1
    try:
        flushes = 0
        for line in writer.stdout:
            event = json.loads(line)
            if "flushed" in event:
                last_flushed = event["flushed"]
                flushes += 1
                if flushes == 8:
                    # While it runs, nobody else can take the store.
                    with pytest.raises(StoreLocked, match="held by another writer"):
                        HistoryWriter(root)
                    break
        os.kill(writer.pid, signal.SIGKILL)
    finally:
        writer.kill()
        writer.wait(timeout=30)
    assert writer.returncode == -signal.SIGKILL
    assert last_flushed >= 0

    # Everything published before the kill is readable; at most the batches after it are missing.
    for key in INSTRUMENTS:
        seen = readers.read_ticks(key, SESSION_DAY, SESSION_DAY, root=root).num_rows
        assert seen >= ticks_up_to(last_flushed)
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["files"]["ticks"], "nothing was published before the kill"

    # The source restarts from the beginning and sends past where the dead writer stopped.
    total_batches = last_flushed + 40
    with HistoryWriter(root, flush_interval=None) as restarted:
        assert not list((root / "tmp").iterdir())
        written = sum(restarted.write_ticks(batch(b)) for b in range(total_batches))
        restarted.flush()
        assert restarted.stats["written"] == written
        assert restarted.stats["late"] + restarted.stats["duplicates"] >= ticks_up_to(last_flushed) * len(
            INSTRUMENTS
        )
    parquet_files = {p.relative_to(root).as_posix() for p in root.glob("*/*/*.parquet")}
    manifest = json.loads((root / "manifest.json").read_text())
    assert parquet_files == {
        p[0] for days in manifest["files"].values() for parts in days.values() for p in parts
    }

    # Same store as one clean run over the same ticks: no duplicates, nothing lost, same candles.
    clean = tmp_path / "clean"
    with HistoryWriter(clean, flush_interval=None) as writer_once:
        for b in range(total_batches):
            writer_once.write_ticks(batch(b))
    for key in INSTRUMENTS:
        got = readers.read_ticks(key, SESSION_DAY, SESSION_DAY, root=root)
        want = readers.read_ticks(key, SESSION_DAY, SESSION_DAY, root=clean)
        assert got.num_rows == ticks_up_to(total_batches - 1)
        assert got.equals(want)
        assert _candles(root, key) == _candles(clean, key)
