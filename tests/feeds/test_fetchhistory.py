"""fetchhistory: Upstox 1-minute candles, paged by month through the SDK, into the history store."""

from __future__ import annotations

import io
from datetime import date

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.testing import point_settings_at
from feeds.upstox.history import RateLimiter, candles_table, month_pages

NIFTY = "NSE_INDEX|Nifty 50"


@pytest.fixture
def fake(settings, tmp_path):
    settings.HISTORY_DIR = tmp_path / "history"
    with FakeUpstox() as server:
        point_settings_at(settings, server)
        yield server
    point_settings_at(settings, None)


def test_month_pages_split_at_month_ends_newest_first():
    assert list(month_pages(date(2026, 9, 29), date(2026, 11, 3))) == [
        (date(2026, 11, 1), date(2026, 11, 3)),
        (date(2026, 10, 1), date(2026, 10, 31)),
        (date(2026, 9, 29), date(2026, 9, 30)),
    ]
    assert list(month_pages(date(2026, 2, 1), date(2026, 2, 28))) == [(date(2026, 2, 1), date(2026, 2, 28))]


def test_rate_limiter_waits_for_every_window():
    now = [0.0]
    slept = []

    def sleep(seconds):
        slept.append(seconds)
        now[0] += seconds

    limiter = RateLimiter(((1.0, 2), (10.0, 3)), clock=lambda: now[0], sleep=sleep)
    for _ in range(4):
        limiter.wait()
    # Two at t=0, the third waits for the 1 s window, the fourth for the 10 s window.
    assert slept[0] == pytest.approx(1.0) and now[0] == pytest.approx(10.0)


def test_candles_table_is_oldest_first_and_tz_aware():
    table = candles_table(
        NIFTY,
        [
            ["2026-11-20T09:16:00+05:30", 2, 3, 1, 2.5, 0, 0],
            ["2026-11-20T09:15:00+05:30", 1, 2, 0.5, 2, 0, 0],
        ],
    )
    assert table.column("ts").type.tz == "Asia/Kolkata"
    assert [t.minute for t in table.column("ts").to_pylist()] == [15, 16]


def test_fetchhistory_writes_every_trading_minute_through_the_history_writer(fake, settings):
    from persistence.readers import read_candles_1m

    out = io.StringIO()
    call_command(
        "fetchhistory", "--instrument", NIFTY, "--from", "2026-10-29", "--to", "2026-11-03", stdout=out
    )
    assert "in 2 monthly pages (2 requests)" in out.getvalue()
    history_calls = [p for m, p in fake.rest_requests if p.startswith("/v3/historical-candle/")]
    assert history_calls == [
        "/v3/historical-candle/NSE_INDEX%7CNifty%2050/minutes/1/2026-11-03/2026-11-01",
        "/v3/historical-candle/NSE_INDEX%7CNifty%2050/minutes/1/2026-10-31/2026-10-29",
    ]
    table = read_candles_1m(NIFTY, date(2026, 10, 29), date(2026, 11, 3), root=settings.HISTORY_DIR)
    trading_days = 4  # 29, 30 Oct; 2, 3 Nov (31 Oct and 1 Nov are a weekend)
    assert table.num_rows == trading_days * 375
    first = table.slice(0, 1).to_pylist()[0]
    assert first["high"] >= max(first["open"], first["close"])


def test_fetchhistory_rejects_a_reversed_range(fake):
    with pytest.raises(CommandError):
        call_command("fetchhistory", "--instrument", NIFTY, "--from", "2026-11-03", "--to", "2026-11-01")


def test_fetchhistory_retries_after_rate_limits_and_server_errors(fake):
    from feeds.upstox import history

    fake.fail_next_rest = [429, 503]
    written, slept = [], []
    result = history.fetch_history(
        instrument_key=NIFTY,
        first=date(2026, 11, 2),
        last=date(2026, 11, 3),
        write=written.append,
        sleep=slept.append,
    )
    assert result.candles == 2 * 375 and result.requests == 3 and len(slept) == 2
    assert slept[1] > slept[0]  # backing off


def test_fetchhistory_stops_on_a_refusal(fake):
    from feeds.upstox import history

    fake.fail_next_rest = [401]
    with pytest.raises(history.HistoryError, match="HTTP 401"):
        history.fetch_history(
            instrument_key=NIFTY, first=date(2026, 11, 2), last=date(2026, 11, 3), write=print
        )
