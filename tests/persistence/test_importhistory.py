"""`manage.py importhistory`: the three file shapes, all-or-nothing validation, idempotent re-import."""

from __future__ import annotations

import io
import json
from datetime import date, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.core.management import CommandError, call_command

from feeds.ticks import IST
from persistence import readers
from persistence.writer import HistoryWriter

DAY = date(2024, 1, 2)
NIFTY = "NSE_INDEX|Nifty 50"

CANDLES_CSV = """instrument_key,ts,open,high,low,close,volume
NSE_INDEX|Nifty 50,2024-01-02 09:15:00+05:30,21751.35,21755.6,21700.1,21720.3,
NSE_INDEX|Nifty 50,2024-01-02T09:16:00+05:30,21720.3,21731.0,21712.45,21728.9,
NSE_INDEX|Nifty 50,2024-01-02 09:17:00,21728.9,21740.0,21725.0,21739.5,
"""

TICKS_CSV = """instrument_key,ts,ltp
NSE_INDEX|Nifty 50,2024-01-02 09:15:00+05:30,21751.35
NSE_INDEX|Nifty 50,2024-01-02 09:15:01+05:30,21752.10

NSE_INDEX|Nifty 50,2024-01-02 09:16:02+05:30,21740.00
"""


@pytest.fixture
def history(settings, tmp_path) -> Path:
    settings.HISTORY_DIR = tmp_path / "history"
    return settings.HISTORY_DIR


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def _trades_parquet(path: Path, prices: list[float] | None = None) -> Path:
    ts = [
        datetime(2024, 1, 2, 9, 15, 0, 120_000, tzinfo=IST),
        datetime(2024, 1, 2, 9, 15, 0, 120_000, tzinfo=IST),  # two trades in one millisecond
        datetime(2024, 1, 2, 9, 15, 30, tzinfo=IST),
        datetime(2024, 1, 2, 9, 16, 5, tzinfo=IST),
    ]
    table = pa.table(
        {
            "symbol": ["NIFTY24JAN21800CE"] * 4,
            "underlying": ["NIFTY"] * 4,
            "instrument_type": ["CE"] * 4,
            "strike": [21800.0] * 4,
            "expiry": [date(2024, 1, 4)] * 4,
            "ts": pa.array(ts, pa.timestamp("us", tz="Asia/Kolkata")),
            "price": prices or [120.5, 120.5, 121.0, 119.95],
            "qty": [50, 100, 50, 250],
            "oi": [1000.0, 1000.0, 1050.0, 1100.0],
        }
    )
    pq.write_table(table, path)
    return path


def _import(*paths: Path) -> str:
    out = io.StringIO()
    call_command("importhistory", *[str(p) for p in paths], stdout=out)
    return out.getvalue()


def _snapshot(history: Path) -> str:
    return (history / "manifest.json").read_text() if (history / "manifest.json").exists() else ""


def test_imports_candles_ticks_and_trades_from_csv_and_parquet(history, tmp_path):
    out = _import(
        _write(tmp_path / "nifty_1m.csv", CANDLES_CSV),
        _write(tmp_path / "nifty_ticks.csv", TICKS_CSV),
        _trades_parquet(tmp_path / "trades.parquet"),
    )
    assert "7 new ticks of 7 read" in out and "3 candles" in out

    candles = readers.read_candles_1m(NIFTY, DAY, DAY).to_pylist()
    assert [(c["ts"].strftime("%H:%M"), c["open"], c["close"], c["volume"]) for c in candles] == [
        ("09:15", 21751.35, 21720.3, None),
        ("09:16", 21720.3, 21728.9, None),
        ("09:17", 21728.9, 21739.5, None),  # no offset: read as IST
    ]
    ticks = readers.read_ticks(NIFTY, DAY, DAY)
    assert ticks["ltp"].to_pylist() == [21751.35, 21752.10, 21740.00]

    option = "NSE_FO|NIFTY24JAN21800CE"
    trades = readers.read_ticks(option, DAY, DAY).to_pylist()
    assert [(t["ltp"], t["ltq"], t["volume"], t["oi"]) for t in trades] == [
        (120.5, 50, 50, 1000.0),
        (120.5, 100, 150, 1000.0),
        (121.0, 50, 200, 1050.0),
        (119.95, 250, 450, 1100.0),
    ]
    # The writer built candles from the trades as it would from the feed.
    built = readers.read_candles_1m(option, DAY, DAY).to_pylist()
    assert [(c["open"], c["high"], c["low"], c["close"], c["volume"]) for c in built] == [
        (120.5, 121.0, 120.5, 121.0, 200),
        (119.95, 119.95, 119.95, 119.95, 250),
    ]
    assert readers.session_days(option) == [DAY]
    assert readers.instruments() == [option, NIFTY]


def test_reimporting_the_same_files_adds_nothing(history, tmp_path):
    files = (
        _write(tmp_path / "nifty_1m.csv", CANDLES_CSV),
        _write(tmp_path / "nifty_ticks.csv", TICKS_CSV),
        _trades_parquet(tmp_path / "trades.parquet"),
    )
    _import(*files)
    before = (readers.read_ticks(NIFTY, DAY, DAY), readers.read_candles_1m(NIFTY, DAY, DAY))
    out = _import(*files)
    assert "0 new ticks of 7 read (7 already stored)" in out
    # even the same file twice in one run
    _import(files[2], files[2])
    assert readers.read_ticks(NIFTY, DAY, DAY).equals(before[0])
    assert readers.read_candles_1m(NIFTY, DAY, DAY).equals(before[1])
    assert readers.read_ticks("NSE_FO|NIFTY24JAN21800CE", DAY, DAY).num_rows == 4
    manifest = json.loads((history / "manifest.json").read_text())
    assert all(len(parts) == 1 for days in manifest["files"].values() for parts in days.values())


def test_bad_rows_are_reported_by_line_and_nothing_is_imported(history, tmp_path):
    _import(_write(tmp_path / "first.csv", TICKS_CSV))
    before = _snapshot(history)
    candles_before = readers.read_candles_1m(NIFTY, DAY, DAY)  # built from first.csv's ticks
    bad_csv = _write(
        tmp_path / "bad.csv",
        "instrument_key,ts,ltp\n"
        "NSE_INDEX|Nifty 50,2024-01-02 10:00:00+05:30,21751.35\n"
        "NSE_INDEX|Nifty 50,2024-01-02 10:00:01+05:30,abc\n"  # line 3
        "NSE_INDEX|Nifty 50,2024-01-02 10:00:02+05:30,-5\n"  # line 4
        "NSE_INDEX|Nifty 50,02/01/2024 10:00,21751.35\n"  # line 5
        ",2024-01-02 10:00:04+05:30,21751.35\n"  # line 6
        "NSE_INDEX|Nifty 50,2024-01-02 10:00:05+05:30,21,751.35\n"  # line 7: unquoted comma
        "NSE_INDEX|Nifty 50,1704170100,21751.35\n",  # line 8: seconds, not ms
    )
    good = _write(tmp_path / "good.csv", CANDLES_CSV)
    with pytest.raises(CommandError) as excinfo:
        _import(good, bad_csv)
    message = str(excinfo.value)
    assert message.startswith("6 bad rows, nothing imported")
    assert "bad.csv line 3: bad ltp 'abc'" in message
    assert "bad.csv line 4: bad ltp '-5'" in message
    assert "bad.csv line 5: bad timestamp '02/01/2024 10:00'" in message
    assert "bad.csv line 6: missing instrument_key" in message
    assert "bad.csv line 7: 4 fields, the header has 3" in message
    assert "bad.csv line 8: timestamp '1704170100' is not between 2000 and 2100" in message
    assert _snapshot(history) == before
    assert readers.read_candles_1m(NIFTY, DAY, DAY).equals(candles_before)
    assert readers.read_ticks(NIFTY, DAY, DAY).num_rows == 3

    with pytest.raises(CommandError, match=r"trades.parquet row 2: bad price nan"):
        _import(_trades_parquet(tmp_path / "trades.parquet", prices=[120.5, 120.5, float("nan"), 1.0]))
    ohlc = CANDLES_CSV.replace("21755.6,21700.1", "21700.0,21760.0")
    with pytest.raises(CommandError, match=r"line 2: inconsistent OHLC"):
        _import(_write(tmp_path / "ohlc.csv", ohlc))
    assert _snapshot(history) == before


def test_missing_files_wrong_columns_and_a_running_feed_are_one_line_errors(history, tmp_path):
    with pytest.raises(CommandError, match=r"^\S*nope.csv: no such file$"):
        _import(tmp_path / "nope.csv")
    wrong = _write(tmp_path / "wrong.csv", "instrument_key,ts,price_ltp\nX,2024-01-02 09:15:00,1\n")
    with pytest.raises(
        CommandError, match=r"wrong.csv: wrong columns \['instrument_key', 'price_ltp', 'ts'\]"
    ):
        _import(wrong)
    feed = HistoryWriter(history)
    try:
        with pytest.raises(CommandError, match="held by another writer"):
            _import(_write(tmp_path / "ticks.csv", TICKS_CSV))
    finally:
        feed.close()
    assert readers.session_days() == []
