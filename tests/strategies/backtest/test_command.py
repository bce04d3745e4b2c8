"""manage.py backtest: table and JSON output from a candle file; one-line errors for bad input."""

from __future__ import annotations

import json
from datetime import date
from io import StringIO

import pyarrow.parquet as pq
import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from tests.strategies.backtest.test_runner import breakout_day, table_of


@pytest.fixture
def candle_file(tmp_path):
    path = tmp_path / "candles.parquet"
    candles = breakout_day(date(2024, 3, 12)) + breakout_day(date(2024, 3, 13))
    pq.write_table(table_of(candles), path)
    return path


def run(*args):
    out = StringIO()
    call_command("backtest", *args, stdout=out)
    return out.getvalue()


def test_json_output_has_metrics_and_trades(candle_file):
    text = run(
        "ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--input", str(candle_file), "--json"
    )
    out = json.loads(text)
    assert out["metrics"]["trades"] == 2 and out["sessions"] == 2
    t = out["trades"][0]
    for field in ("entry_ts", "exit_ts", "side", "entry_price", "exit_price", "pnl_points"):
        assert field in t
    assert t["pnl_points"] == 10.0 and "option" not in t


def test_params_range_and_modelled_fill(candle_file):
    text = run(
        "ib_breakout",
        "--from",
        "2024-03-13",
        "--to",
        "2024-03-13",
        "--input",
        str(candle_file),
        "--param",
        "exit_time=12:00",
        "--fill",
        "modelled",
        "--lots",
        "2",
        "--json",
    )
    out = json.loads(text)
    (t,) = out["trades"]
    assert out["params"]["exit_time"] == "12:00" and t["exit_ts"].endswith("12:00:00+05:30")
    assert t["option"]["quantity"] == 50 and t["option"]["contract"]["option_type"] == "CE"  # 2 lots of 25
    assert out["pnl_unit"].startswith("INR")


def test_table_output(candle_file):
    text = run("ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--input", str(candle_file))
    assert "2 sessions" in text and "trades=2" in text and "long" in text


@pytest.mark.parametrize(
    "args,message",
    [
        (["nope", "--from", "2024-03-12", "--to", "2024-03-13"], "unknown strategy 'nope'"),
        (["ib_breakout", "--from", "2024-03-13", "--to", "2024-03-12"], "empty range"),
        (["ib_breakout", "--from", "2024-13-01", "--to", "2024-03-12"], "not a date"),
        (
            ["ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--param", "x=1"],
            "x: unknown parameter",
        ),
        (["ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--param", "row_size"], "NAME=VALUE"),
        (
            ["ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--param", "target_ibr=0"],
            "must be ≥",
        ),
        (["ib_breakout", "--from", "2025-01-01", "--to", "2025-01-02"], "no candles"),
    ],
)
def test_bad_input_is_a_one_line_command_error(candle_file, args, message):
    if "--param" in args or "2025-01-01" in args:
        args = [*args, "--input", str(candle_file)]
    with pytest.raises(CommandError, match=message) as info:
        run(*args)
    assert "\n" not in str(info.value)


def test_missing_file_and_history_store_without_data(tmp_path, settings):
    with pytest.raises(CommandError, match="no such file"):
        run("ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--input", str(tmp_path / "x.csv"))
    settings.HISTORY_DIR = str(tmp_path / "history")
    with pytest.raises(CommandError, match="no candles for NSE_INDEX|Nifty 50"):
        run("ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13")


def test_history_store_gives_the_same_result_as_the_file(candle_file, tmp_path, settings):
    from persistence.importing import import_history

    root = tmp_path / "history"
    import_history([candle_file], root=root)
    settings.HISTORY_DIR = str(root)
    args = ["ib_breakout", "--from", "2024-03-12", "--to", "2024-03-13", "--json"]
    from_store = json.loads(run(*args, "--instrument", "NSE_INDEX|Nifty 50"))
    from_file = json.loads(run(*args, "--input", str(candle_file)))
    assert from_store["trades"] == from_file["trades"] and from_store["metrics"]["trades"] == 2
