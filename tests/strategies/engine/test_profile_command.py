"""`manage.py profile` on generated files (Parquet and CSV, candles and ticks) and on a real history
store written by persistence.writer; errors are one line and a non-zero exit."""

import csv
import json
import subprocess
import sys
from datetime import datetime, timedelta
from io import StringIO
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from django.conf import settings
from django.core.management import CommandError, call_command

from .sessions import DAY, IST, period_start

KEY = "NSE_INDEX|Nifty 50"
PRIOR_DAY = DAY - timedelta(days=1)
# (open, high, low, close) per period: the prior day holds value near 100–120, today trades higher.
PRIOR = [(110, 120, 100, 115), (115, 122, 105, 110), (110, 118, 102, 112), (112, 116, 108, 110)]
TODAY = [(125, 140, 120, 135), (135, 150, 130, 145), (145, 148, 132, 140), (140, 165, 140, 160)]


def candle_rows(day, periods, minutes=3):
    rows = []
    for k, (o, h, lo, c) in enumerate(periods):
        for m in range(minutes):  # a few identical-range candles per period
            ts = period_start(k, day) + m * 60_000
            rows.append(
                {
                    "instrument_key": KEY,
                    "ts": datetime.fromtimestamp(ts / 1000, IST),
                    "open": float(o),
                    "high": float(h),
                    "low": float(lo),
                    "close": float(c),
                    "volume": 100 * (m + 1),
                }
            )
    return rows


@pytest.fixture
def candles_parquet(tmp_path) -> Path:
    path = tmp_path / "candles.parquet"
    pq.write_table(pa.Table.from_pylist(candle_rows(PRIOR_DAY, PRIOR) + candle_rows(DAY, TODAY)), path)
    return path


@pytest.fixture
def candles_csv(tmp_path) -> Path:
    path = tmp_path / "candles.csv"
    rows = candle_rows(PRIOR_DAY, PRIOR) + candle_rows(DAY, TODAY)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "ts": row["ts"].isoformat()})
    return path


def run(*args: str) -> str:
    out = StringIO()
    call_command("profile", *args, stdout=out)
    return out.getvalue()


def test_json_from_parquet_candles(candles_parquet):
    data = json.loads(run("--input", str(candles_parquet), "--instrument", KEY, "--date", str(DAY), "--json"))
    for field in (
        "date open high low close poc vah val ibh ibl tpo_counts open_type day_type single_prints "
        "poor_high poor_low value_relation"
    ).split():
        assert field in data, field
    assert data["date"] == str(DAY)
    assert (data["open"], data["high"], data["low"], data["close"]) == (125, 165, 120, 160)
    assert (data["ibh"], data["ibl"]) == (150, 120)
    assert data["tpo_counts"]["140"] == 4 and data["tpo_counts"]["120"] == 1
    assert all(isinstance(k, str) for k in data["tpo_counts"])
    assert isinstance(data["poc"], float) and data["val"] <= data["poc"] <= data["vah"]
    assert data["value_relation"] == "higher"
    assert data["prior"]["date"] == str(PRIOR_DAY)
    assert data["day_type_final"] is True  # a past date
    assert sum(data["volume_by_row"].values()) == 4 * (100 + 200 + 300)
    assert isinstance(data["single_prints"], list)


def test_chart_from_csv_candles(candles_csv):
    text = run("--input", str(candles_csv), "--instrument", KEY, "--date", str(DAY))
    lines = text.splitlines()
    rows = [line.split()[0] for line in lines[1:] if line[:3].isdigit()]
    assert rows == sorted(rows, key=float, reverse=True)  # highest first
    assert rows[0] == "165" and rows[-1] == "120"
    assert any(line.startswith("140 ") and line.endswith("ABCD") for line in lines)
    assert sum(" P" in line[:8] for line in lines) == 1  # one POC row
    assert "day type" in text and "value vs prior higher" in text


def test_row_size_option(candles_parquet):
    data = json.loads(
        run(
            "--input",
            str(candles_parquet),
            "--instrument",
            KEY,
            "--date",
            str(DAY),
            "--json",
            "--row-size",
            "10",
        )
    )
    assert set(data["tpo_counts"]) == {"120", "130", "140", "150", "160"}


def test_ticks_csv(tmp_path):
    path = tmp_path / "ticks.csv"
    with path.open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["instrument_key", "ts", "ltp", "qty"])
        for k, price, qty in [(0, 100.0, 10), (0, 104.0, 5), (1, 111.0, 7), (2, 99.0, 1), (4, 101.0, 3)]:
            ts = datetime.fromtimestamp(period_start(k) / 1000, IST)
            w.writerow([KEY, ts.isoformat(), price, qty])
    data = json.loads(run("--input", str(path), "--instrument", KEY, "--date", str(DAY), "--json"))
    assert data["volume_by_row"] == {"95": 1, "100": 18, "110": 7}
    assert data["high"] == 111 and data["low"] == 99


def test_history_store_without_input(tmp_path, settings):
    from persistence.writer import HistoryWriter

    settings.HISTORY_DIR = tmp_path / "history"
    rows = [
        {**r, "ts_ms": int(r["ts"].timestamp() * 1000)}
        for r in candle_rows(PRIOR_DAY, PRIOR) + candle_rows(DAY, TODAY)
    ]
    with HistoryWriter(settings.HISTORY_DIR) as writer:
        writer.write_candles([{k: v for k, v in r.items() if k != "ts"} for r in rows])
    data = json.loads(run("--instrument", KEY, "--date", str(DAY), "--json"))
    assert (data["high"], data["low"], data["value_relation"]) == (165, 120, "higher")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--date", "2024-03-13"], "no session on 2024-03-13"),
        (["--date", "12-03-2024"], "--date must be YYYY-MM-DD"),
        (
            ["--date", str(DAY), "--instrument", "NSE_INDEX|Nifty Bank"],
            "no session on 2024-03-12 for NSE_INDEX|Nifty Bank",
        ),
        (["--date", str(DAY), "--row-size", "0.07"], "--row-size 0.07"),
    ],
)
def test_errors_are_one_line(candles_parquet, args, message):
    base = {"--input": str(candles_parquet), "--instrument": KEY}
    for i in range(0, len(args), 2):
        base[args[i]] = args[i + 1]
    with pytest.raises(CommandError, match=message) as err:
        run(*[x for pair in base.items() for x in pair])
    assert "\n" not in str(err.value)


def test_wrong_columns_missing_file_and_empty_session(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("instrument_key,when,price\nx,2024-03-12T09:15:00+05:30,1\n")
    with pytest.raises(CommandError, match="expected instrument_key, ts, open"):
        run("--input", str(bad), "--instrument", KEY, "--date", str(DAY))
    with pytest.raises(CommandError, match="no such file"):
        run("--input", str(tmp_path / "nope.parquet"), "--instrument", KEY, "--date", str(DAY))
    preopen = tmp_path / "preopen.csv"
    preopen.write_text(f"instrument_key,ts,ltp\n{KEY},{DAY}T09:05:00+05:30,100\n")
    with pytest.raises(CommandError, match="no session on"):
        run("--input", str(preopen), "--instrument", KEY, "--date", str(DAY))


def test_command_line_error_exit_without_traceback(candles_parquet):
    proc = subprocess.run(
        [
            sys.executable,
            "manage.py",
            "profile",
            "--input",
            str(candles_parquet),
            "--instrument",
            KEY,
            "--date",
            "2030-01-01",
        ],
        cwd=settings.BASE_DIR,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().count("\n") == 0 and "no session on 2030-01-01" in proc.stderr
