"""Historical 1-minute candles from Upstox (historical candle API v3, through the SDK) into the
history store.

Paged by calendar month (one request covers at most a month of 1–15 minute candles), paced under
Upstox's limits (50/s, 500/min, 2000/30 min; we stay well inside them) and retried with backoff on
429 and 5xx. Candles go to `persistence.writer.HistoryWriter.write_candles` as an Arrow table. Never
logs the token.
"""

from __future__ import annotations

import calendar
import logging
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pyarrow as pa
import upstox_client
from upstox_client.rest import ApiException

from feeds.upstox import client as upstox

log = logging.getLogger(__name__)

UNIT, INTERVAL = "minutes", 1
# (window seconds, most requests allowed) — below Upstox's published limits, leaving room for the
# feed and orders that share the same app.
RATE_LIMITS = ((1.0, 20), (60.0, 400), (1800.0, 1600))
REQUEST_TIMEOUT = (5, 60)
RETRIES = 5
CANDLE_SCHEMA = pa.schema(
    [
        ("instrument_key", pa.string()),
        ("ts", pa.timestamp("ms", tz="Asia/Kolkata")),
        ("open", pa.float64()),
        ("high", pa.float64()),
        ("low", pa.float64()),
        ("close", pa.float64()),
        ("volume", pa.int64()),
        ("oi", pa.float64()),
    ]
)


class HistoryError(Exception):
    """Upstox refused a history request for good (not a rate limit or a server hiccup)."""


class RateLimiter:
    """Sliding windows: waits until one more request fits every (window, limit) pair."""

    def __init__(
        self,
        limits: tuple[tuple[float, int], ...] = RATE_LIMITS,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ):
        self.limits = limits
        self.clock = clock
        self.sleep = sleep
        self._sent: deque[float] = deque()

    def wait(self) -> None:
        longest = max(window for window, _ in self.limits)
        while True:
            now = self.clock()
            while self._sent and now - self._sent[0] > longest:
                self._sent.popleft()
            delay = 0.0
            for window, limit in self.limits:
                recent = [t for t in self._sent if now - t < window]
                if len(recent) >= limit:
                    delay = max(delay, window - (now - recent[-limit]))
            if delay <= 0:
                self._sent.append(now)
                return
            self.sleep(delay)


def month_pages(first: date, last: date) -> Iterator[tuple[date, date]]:
    """[first, last] split at calendar month boundaries, newest page first (as Upstox lists)."""
    pages = []
    start = first
    while start <= last:
        month_end = date(start.year, start.month, calendar.monthrange(start.year, start.month)[1])
        end = min(month_end, last)
        pages.append((start, end))
        start = end + timedelta(days=1)
    return reversed(pages)


def candles_table(instrument_key: str, rows: list[list]) -> pa.Table:
    """Upstox candle rows ([iso ts, o, h, l, c, volume, oi], any order) → an Arrow table, oldest first."""
    parsed = sorted(
        (
            datetime.fromisoformat(r[0]),
            float(r[1]),
            float(r[2]),
            float(r[3]),
            float(r[4]),
            int(r[5] or 0),
            float(r[6] or 0) if len(r) > 6 else 0.0,
        )
        for r in rows
    )
    columns = list(zip(*parsed, strict=True)) if parsed else [[]] * 7
    return pa.Table.from_arrays(
        [pa.array([instrument_key] * len(parsed), pa.string())]
        + [
            pa.array(list(col), type=field.type)
            for col, field in zip(columns, list(CANDLE_SCHEMA)[1:], strict=True)
        ],
        schema=CANDLE_SCHEMA,
    )


@dataclass(frozen=True, slots=True)
class FetchResult:
    instrument_key: str
    pages: int
    candles: int
    requests: int


def fetch_history(
    *,
    instrument_key: str,
    first: date,
    last: date,
    write: Callable[[pa.Table], object],
    limiter: RateLimiter | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> FetchResult:
    """Fetch [first, last] month by month and hand each page's table to `write`."""
    if first > last:
        raise ValueError("--from must not be after --to")
    limiter = limiter or RateLimiter()
    api = upstox.api_client()  # candle calls carry no token (the SDK sends none)
    history = upstox_client.HistoryV3Api(api)
    pages = candles = requests = 0
    try:
        for start, end in month_pages(first, last):
            for attempt in range(1, RETRIES + 1):
                limiter.wait()
                requests += 1
                try:
                    response = history.get_historical_candle_data1(
                        instrument_key,
                        UNIT,
                        INTERVAL,
                        end.isoformat(),
                        start.isoformat(),
                        _request_timeout=REQUEST_TIMEOUT,
                    )
                    break
                except ApiException as e:
                    if e.status == 429 or (e.status or 0) >= 500:
                        delay = min(30.0, 0.5 * 2**attempt)
                        log.warning(
                            "history %s %s..%s: HTTP %s, retry in %.1fs",
                            instrument_key,
                            start,
                            end,
                            e.status,
                            delay,
                        )
                        sleep(delay)
                        continue
                    raise HistoryError(
                        f"Upstox refused {instrument_key} {start}..{end}: HTTP {e.status}"
                    ) from None
            else:
                raise HistoryError(
                    f"Upstox kept refusing {instrument_key} {start}..{end} after {RETRIES} tries"
                )
            rows = (response.data.candles if response.data else None) or []
            pages += 1
            if rows:
                table = candles_table(instrument_key, rows)
                write(table)
                candles += table.num_rows
            log.info("history %s %s..%s: %d candles", instrument_key, start, end, len(rows))
    finally:
        upstox.close_api_client(api)
    return FetchResult(instrument_key, pages, candles, requests)
