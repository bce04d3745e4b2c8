"""The dashboard in a real Chromium against a real Daphne, prices arriving over the real WebSocket
and Redis pub/sub channel layer. Screenshots go to var/test-artifacts/."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pytest
import redis
from channels_redis.pubsub import RedisPubSubChannelLayer
from playwright.sync_api import expect

from feeds.groups import MARKET_GROUP, tick_stream_key
from feeds.ticks import Tick, pack_tick
from tests.conftest import ARTIFACTS_DIR, BASE_DIR

pytestmark = [pytest.mark.browser, pytest.mark.slow]

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"
FUTURE = "NSE_FO|52910"


class SnapshotPublisher(threading.Thread):
    """Publishes market snapshots to the server's channel layer a few times a second, as the feed
    does, with the Nifty walking up and down, until stopped."""

    def __init__(self, server, interval_s: float = 0.3):
        super().__init__(daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.stopped = threading.Event()
        self.sent = 0
        self.error: BaseException | None = None

    def snapshot(self, n: int) -> dict:
        now_ms = int(time.time() * 1000)
        nifty = 26_000.0 + (n % 7) * 5.25 - (n % 3) * 2.1
        bank = 59_100.0 - (n % 5) * 12.4
        future = nifty + 85.5
        return {
            "type": "market.snapshot",
            "ts_ms": now_ms,
            "instruments": {
                NIFTY: _instrument("Nifty 50", nifty, 25_950.15, now_ms),
                BANK: _instrument("Nifty Bank", bank, 59_210.8, now_ms),
                FUTURE: {
                    **_instrument("NIFTY 25DEC FUT", future, 26_010.0, now_ms),
                    "volume": 12_345_675 + n * 75,
                    "oi": 1_52_34_500,
                },
            },
            "feed": {
                "source": "sim",
                "connected": True,
                "session_state": "open",
                "ticks_per_s": 42.0,
                "last_tick_ms": now_ms,
                "alert": "",
            },
        }

    async def publish(self) -> None:
        layer = RedisPubSubChannelLayer(hosts=[self.server.redis_url], prefix=self.server.channel_prefix)
        try:
            n = 0
            while not self.stopped.is_set():
                await layer.group_send(MARKET_GROUP, self.snapshot(n))
                self.sent += 1
                n += 1
                await asyncio.sleep(self.interval_s)
        finally:
            await layer.flush()

    def run(self) -> None:
        try:
            asyncio.run(self.publish())
        except BaseException as exc:  # reported by the test, not lost in the thread
            self.error = exc

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=10)


def _instrument(name: str, ltp: float, prev_close: float, ts_ms: int) -> dict:
    change = round(ltp - prev_close, 2)
    return {
        "name": name,
        "ltp": round(ltp, 2),
        "prev_close": prev_close,
        "change": change,
        "change_pct": round(change / prev_close * 100, 2),
        "open": prev_close + 10,
        "high": max(ltp, prev_close + 60),
        "low": min(ltp, prev_close - 40),
        "volume": 0,
        "oi": 0,
        "ts_ms": ts_ms,
    }


def log_in(page, server, user) -> None:
    username, password = user
    page.goto(server.url + "/")
    expect(page).to_have_url(re.compile(r"/accounts/login/\?next=/$"))
    if not (ARTIFACTS_DIR / "login.png").exists():
        page.screenshot(path=str(ARTIFACTS_DIR / "login.png"))
    page.get_by_label("Username").fill(username)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(server.url + "/")


def wait_for_price_changes(page, key: str, changes: int, timeout_s: float = 30) -> list[str]:
    """The LTP texts seen on one card until it changed `changes` times; fails on timeout."""
    ltp = page.locator(f'[data-instrument="{key}"] [data-field="ltp"]')
    seen: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        text = ltp.inner_text()
        if text != "—" and (not seen or seen[-1] != text):
            seen.append(text)
            if len(seen) > changes:
                return seen
        page.wait_for_timeout(100)
    pytest.fail(f"{key}: saw {seen} within {timeout_s} s, wanted {changes} changes")


def test_login_and_see_live_prices(daphne_server, daphne_user, page):
    log_in(page, daphne_server, daphne_user)
    expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
    publisher = SnapshotPublisher(daphne_server)
    publisher.start()
    try:
        seen = wait_for_price_changes(page, NIFTY, changes=2)
        wait_for_price_changes(page, BANK, changes=2)
    finally:
        publisher.stop()
    assert publisher.error is None, publisher.error
    assert all(re.fullmatch(r"2\d,\d{3}\.\d{2}", text) for text in seen), seen  # 26,005.25

    # The future the feed added gets its own card, with Indian digit grouping.
    future = page.locator(f'[data-instrument="{FUTURE}"]')
    expect(future.locator('[data-field="name"]')).to_have_text("NIFTY 25DEC FUT")
    expect(future.locator('[data-field="oi"]')).to_have_text("1,52,34,500")
    expect(future.locator('[data-field="volume"]')).to_have_text(re.compile(r"^1,23,\d\d,\d{3}$"))
    change = page.locator(f'[data-instrument="{NIFTY}"] [data-field="change"]').inner_text()
    assert re.fullmatch(r"\+\d+\.\d{2} \(\+0\.\d{2}%\)", change), change
    expect(page.locator("#feed-source")).to_have_text("sim")
    expect(page.locator("#feed-connected")).to_have_text("connected")
    expect(page.locator("#feed-rate")).to_have_text("42")
    expect(page.locator("#banner")).to_be_hidden()
    # The chart canvas has been drawn (not blank).
    drawn = page.locator(f'[data-instrument="{NIFTY}"] canvas').evaluate(
        "c => c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v !== 0)"
    )
    assert drawn
    page.screenshot(path=str(ARTIFACTS_DIR / "dashboard.png"), full_page=True)
    page.emulate_media(color_scheme="dark")
    page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-dark.png"), full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-mobile.png"), full_page=True)


def test_chart_starts_with_the_session_so_far(daphne_server, daphne_user, page):
    client = redis.Redis.from_url(daphne_server.redis_url)
    stream = tick_stream_key(BANK)
    client.delete(stream)
    start_ms = int(time.time() * 1000) - 3_600_000
    try:
        pipe = client.pipeline(transaction=False)
        for i in range(3_600):  # the last hour, one tick a second, a slow climb
            ts = start_ms + i * 1000
            pipe.xadd(stream, {"t": pack_tick(Tick(BANK, ts, 59_000 + i * 0.05))}, id=f"{ts}-0")
        pipe.execute()
        log_in(page, daphne_server, daphne_user)
        canvas = page.locator(f'[data-instrument="{BANK}"] canvas')
        expect(canvas).to_have_attribute("data-points", re.compile(r"^([5-9]\d|[1-9]\d\d+)$"))  # >= 50
    finally:
        client.delete(stream)
        client.close()
    page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-history.png"), full_page=True)


def test_a_full_session_chart_is_thinned_not_cut(daphne_server, daphne_user, page):
    log_in(page, daphne_server, daphne_user)
    # Six hours of snapshots ten a second, into the page's own chart class.
    first, last, count, max_points, gaps = page.evaluate(
        """async () => {
            const { LineChart, MAX_POINTS } = await import("/static/js/dashboard.js");
            const chart = new LineChart(document.createElement("canvas"));
            for (let i = 0; i < 216000; i++) chart.add(1_000_000 + i * 100, 22000 + (i % 977) * 0.05);
            const gaps = chart.times.slice(1).map((t, i) => t - chart.times[i]).sort((a, b) => a - b);
            return [chart.times[0], chart.times.at(-1), chart.times.length, MAX_POINTS,
                    [gaps[0], gaps.at(-1)]];
        }"""
    )
    assert first == 1_000_000 and last == 1_000_000 + 215_999 * 100  # the morning and now
    assert max_points // 2 <= count <= max_points
    assert gaps[1] <= 2.5 * gaps[0]  # one resolution over the session, within a factor


def test_feed_alert_and_stale_show_a_banner(daphne_server, daphne_user, page):
    log_in(page, daphne_server, daphne_user)
    expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
    publisher = SnapshotPublisher(daphne_server)
    publisher.snapshot = lambda n, base=publisher.snapshot: {  # the feed raises its no-data alert
        **base(n),
        "feed": {**base(n)["feed"], "alert": "no ticks from upstox for 40 s"},
    }
    publisher.start()
    try:
        expect(page.locator("#banner")).to_have_text(re.compile("Feed alert: no ticks from upstox for 40 s"))
    finally:
        publisher.stop()
    page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-alert.png"), full_page=True)


def test_silent_feed_shows_stale_banner(daphne_server, daphne_user, page):
    page.clock.install()  # the page's timers and Date.now, moved forward below instead of waiting
    log_in(page, daphne_server, daphne_user)
    expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
    publisher = SnapshotPublisher(daphne_server)
    publisher.start()
    try:
        wait_for_price_changes(page, NIFTY, changes=1)
    finally:
        publisher.stop()
    expect(page.locator("#banner")).to_be_hidden()
    page.clock.fast_forward(15_000)
    expect(page.locator("#banner")).to_contain_text("Feed stale: no update from the feed for")
    expect(page.locator("#feed-age")).to_contain_text(re.compile(r"1\d\.\d s ago"))


def test_socket_drop_shows_disconnected_then_reconnects(daphne_server, daphne_user, page):
    server = daphne_server.sibling()  # one this test may kill, over the same database
    server.start()
    try:
        log_in(page, server, daphne_user)
        expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
        server.stop()
        expect(page.locator("#socket-state")).to_have_attribute("data-state", "disconnected")
        expect(page.locator("#banner")).to_contain_text("Disconnected from the server")
        page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-disconnected.png"), full_page=True)
        server.start()
        expect(page.locator("#socket-state")).to_have_attribute("data-state", "live", timeout=30_000)
        publisher = SnapshotPublisher(server)
        publisher.start()
        try:
            wait_for_price_changes(page, NIFTY, changes=2)
        finally:
            publisher.stop()
    finally:
        server.stop()


def test_session_ended_elsewhere_shows_log_in_banner(daphne_server, daphne_user, page):
    server = daphne_server.sibling()
    server.start()
    try:
        log_in(page, server, daphne_user)
        expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
        other_tab = page.context.new_page()  # same cookies: log out there
        other_tab.goto(server.url + "/")
        other_tab.get_by_role("button", name="Logout").click()
        expect(other_tab).to_have_url(re.compile("/accounts/login/"))
        server.stop()  # the open socket drops; its reconnect is refused
        server.start()
        expect(page.locator("#banner")).to_contain_text("Your session has ended", timeout=30_000)
        expect(page.locator("#banner a")).to_have_attribute("href", "/accounts/login/?next=%2F")
    finally:
        server.stop()


RUNFEED = BASE_DIR / "feeds" / "management" / "commands" / "runfeed.py"


@pytest.mark.skipif(not RUNFEED.exists(), reason="manage.py runfeed does not exist yet")
def test_live_prices_from_runfeed_sim(daphne_server, daphne_user, page):
    log_in(page, daphne_server, daphne_user)
    expect(page.locator("#socket-state")).to_have_attribute("data-state", "live")
    feed = daphne_server.spawn_manage("runfeed", "--source", "sim", "--speed", "50", log_name="runfeed.log")
    try:
        wait_for_price_changes(page, NIFTY, changes=2, timeout_s=60)
        page.screenshot(path=str(ARTIFACTS_DIR / "dashboard-runfeed.png"), full_page=True)
    finally:
        daphne_server.children.remove(feed)
        from tests.conftest import stop_process

        stop_process(feed)
    log = Path(daphne_server.var_dir / "runfeed.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
