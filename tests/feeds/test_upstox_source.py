"""The real SDK's MarketDataStreamerV3, under UpstoxSource, against the local fake Upstox."""

from __future__ import annotations

import asyncio
import os
import signal
from datetime import date

import pytest

from feeds.sources import CLOSED, OPEN
from feeds.upstox.fake import FakeUpstox
from feeds.upstox.fake.testing import RecordingSink, point_settings_at, run_with, wait_until
from feeds.upstox.source import (
    ALERT_401,
    OptionContract,
    StrikeLadder,
    SubscriptionPlan,
    UpstoxSource,
    backoff_delay,
)

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


@pytest.fixture
def fake(settings):
    with FakeUpstox(ticks_per_second=400, frame_size=10, accepted_tokens={"good-token"}) as server:
        point_settings_at(settings, server)
        yield server
    point_settings_at(settings, None)


def make_source(token_box: dict, plan: SubscriptionPlan | None = None, **options) -> UpstoxSource:
    options.setdefault("backoff_initial_s", 0.05)
    options.setdefault("backoff_max_s", 0.3)
    options.setdefault("token_poll_s", 0.1)
    options.setdefault("open_timeout_s", 5)
    return UpstoxSource(
        [NIFTY, BANK],
        token_provider=lambda: token_box.get("token"),
        plan=plan or SubscriptionPlan(fixed={NIFTY: "full", BANK: "full"}),
        seed=1,
        **options,
    )


@pytest.mark.parametrize("decode", ["process", "proto", "dict"])
def test_connects_subscribes_in_full_mode_and_delivers_normalised_ticks(fake, decode):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, decode=decode)

    async def scenario():
        await wait_until(lambda: {NIFTY, BANK} <= sink.keys(), what="ticks of both indices")
        await wait_until(lambda: sink.status.get("session_state") == OPEN, what="session state")

    run_with(source, sink, scenario)
    subs = [f for f in fake.client_frames if f["method"] == "sub"]
    assert subs and subs[0]["data"]["mode"] == "full"
    assert set(subs[0]["data"]["instrumentKeys"]) == {NIFTY, BANK}
    assert sink.status["connected"] is True and sink.status["alert"] == ""
    tick = next(t for t in sink.ticks if t.instrument_key == NIFTY)
    assert 20_000 < tick.ltp < 30_000 and tick.ts_ms > 1_700_000_000_000


@pytest.mark.parametrize("decode", ["process", "proto"])
def test_reconnects_after_a_drop_and_resubscribes(fake, decode):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, decode=decode)

    async def scenario():
        await wait_until(lambda: sink.count > 0, what="first ticks")
        await asyncio.to_thread(fake.drop_connections)  # abrupt: no close frame
        await wait_until(lambda: fake.feed_connections >= 2, what="a second connection")
        before = sink.count
        await wait_until(lambda: sink.count > before + 5, what="ticks after reconnect")
        await asyncio.to_thread(fake.drop_connections, 1011)  # a close frame with an error code
        await wait_until(lambda: fake.feed_connections >= 3, what="a third connection")
        before = sink.count
        await wait_until(lambda: sink.count > before + 5, what="ticks after the second reconnect")

    run_with(source, sink, scenario)
    subs = [f for f in fake.client_frames if f["method"] == "sub"]
    assert len(subs) >= 3  # one per open
    assert all(set(s["data"]["instrumentKeys"]) == {NIFTY, BANK} for s in subs)
    assert source.reconnects >= 2 and sink.status["reconnects"] >= 2
    assert sink.status["connected"] is True


def test_watchdog_forces_a_reconnect_when_an_open_market_goes_silent(fake):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, watchdog_s=0.6)

    async def scenario():
        await wait_until(lambda: sink.count > 0 and source.session_state == OPEN, what="data")
        fake.pause_stream(True)  # the socket stays open, nothing arrives: a half-open feed
        await wait_until(lambda: source.watchdog_trips >= 1, what="the watchdog")
        fake.pause_stream(False)
        await wait_until(lambda: fake.feed_connections >= 2, what="a new connection")
        before = sink.count
        await wait_until(lambda: sink.count > before, what="ticks after the watchdog")

    run_with(source, sink, scenario)


def test_watchdog_stays_quiet_when_the_market_is_closed(fake):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, watchdog_s=0.3)

    async def scenario():
        await wait_until(lambda: sink.count > 0, what="data")
        await asyncio.to_thread(fake.set_session_status, "NORMAL_CLOSE")
        await wait_until(lambda: source.session_state == CLOSED, what="closed session")
        fake.pause_stream(True)
        await asyncio.sleep(1.2)

    run_with(source, sink, scenario)
    assert source.watchdog_trips == 0 and fake.feed_connections == 1
    assert sink.status["session_state"] == CLOSED


def test_401_stops_reconnecting_alerts_and_resumes_with_a_new_token(fake):
    sink = RecordingSink()
    box = {"token": "stale-token"}
    source = make_source(box)

    async def scenario():
        await wait_until(lambda: sink.status.get("alert") == ALERT_401, what="the 401 alert")
        refused = fake.refused_handshakes
        await asyncio.sleep(0.8)  # many backoff periods: no retry with the rejected token
        assert fake.refused_handshakes == refused == 1
        assert sink.status["connected"] is False
        box["token"] = "good-token"  # e.g. stored by Connect Upstox
        await wait_until(lambda: sink.count > 0, what="ticks with the new token")
        await wait_until(lambda: sink.status.get("alert") == "", what="alert cleared")

    run_with(source, sink, scenario)


def test_no_token_raises_an_alert_and_never_connects(fake):
    sink = RecordingSink()
    source = make_source({})

    async def scenario():
        await wait_until(lambda: "No valid Upstox token" in str(sink.status.get("alert")), what="alert")
        await asyncio.sleep(0.3)

    run_with(source, sink, scenario)
    assert fake.feed_connections == 0 and fake.refused_handshakes == 0


@pytest.mark.parametrize("decode", ["process", "proto", "dict"])
def test_garbage_frames_are_counted_and_the_feed_goes_on(fake, decode):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, decode=decode)

    async def scenario():
        await wait_until(lambda: sink.count > 0, what="data")
        await asyncio.to_thread(fake.send_garbage, 3)
        await wait_until(lambda: source.decode_errors == 3, what="three decode errors")
        before = sink.count
        await wait_until(lambda: sink.count > before + 5, what="ticks after garbage")

    run_with(source, sink, scenario)
    assert sink.status["decode_errors"] == 3
    assert fake.feed_connections == 1  # no reconnect for a bad frame


def test_a_killed_decoder_is_restarted_and_the_feed_goes_on(fake):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, decode="process")

    async def scenario():
        await wait_until(lambda: sink.count > 0, what="first ticks")
        first = source.decoder_pid
        os.kill(first, signal.SIGKILL)
        await wait_until(lambda: source._decoder.restarts == 1, what="a new decoder")
        assert source.decoder_pid != first
        before = sink.count
        await wait_until(lambda: sink.count > before + 20, what="ticks through the new decoder")

    run_with(source, sink, scenario)
    assert fake.feed_connections == 1  # the socket never noticed


def _ladder(underlying: str, centre: float, step: float, width: int) -> StrikeLadder:
    options = []
    for i in range(-10, 11):
        strike = centre + i * step
        for kind in ("CE", "PE"):
            options.append(OptionContract(f"NSE_FO|fty{int(strike)}{kind}", strike, kind, date(2026, 12, 1)))
    return StrikeLadder(underlying, options, width)


@pytest.mark.parametrize("decode", ["process", "proto"])
def test_options_around_the_money_are_recentred_as_the_index_moves(fake, decode):
    fake.market.volatility = 0.0  # the index moves only when the test moves it
    fake.set_price(NIFTY, 25_000.0)
    plan = SubscriptionPlan(fixed={NIFTY: "full"}, ladders={NIFTY: _ladder(NIFTY, 25_000, 50, 2)})
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, plan=plan, decode=decode)

    def subscribed() -> set[str]:
        return set(fake.subscriptions())

    async def scenario():
        expected = {
            f"NSE_FO|fty{s}{k}" for s in (24_900, 24_950, 25_000, 25_050, 25_100) for k in ("CE", "PE")
        }
        await wait_until(lambda: expected <= subscribed(), what="the initial option window")
        fake.set_price(NIFTY, 25_210.0)
        moved = {f"NSE_FO|fty{s}{k}" for s in (25_100, 25_150, 25_200, 25_250, 25_300) for k in ("CE", "PE")}
        await wait_until(lambda: subscribed() == moved | {NIFTY}, what="the re-centred window")
        await wait_until(lambda: moved <= sink.keys(), what="ticks of the new options")
        # A reconnect subscribes the current window, not the first one.
        await asyncio.to_thread(fake.drop_connections)
        await wait_until(lambda: fake.feed_connections >= 2, what="reconnect")
        await wait_until(lambda: subscribed() == moved | {NIFTY}, what="the window after reconnect")

    run_with(source, sink, scenario)
    unsubs = [f for f in fake.client_frames if f["method"] == "unsub"]
    assert unsubs and set(unsubs[0]["data"]["instrumentKeys"]) == {
        f"NSE_FO|fty{s}{k}" for s in (24_900, 24_950, 25_000, 25_050) for k in ("CE", "PE")
    }


def test_strike_ladder_uses_listed_strikes_with_hysteresis():
    ladder = _ladder(NIFTY, 25_000, 50, 1)
    assert ladder.recentre(25_010) and ladder.centre == 25_000
    assert not ladder.recentre(25_026)  # past the midpoint, not yet 60% of the way
    assert ladder.recentre(25_031) and ladder.centre == 25_050
    assert ladder.keys() == {f"NSE_FO|fty{s}{k}" for s in (25_000, 25_050, 25_100) for k in ("CE", "PE")}
    assert ladder.recentre(99_999) and ladder.centre == 25_500  # the highest listed strike


def test_backoff_grows_exponentially_with_jitter_and_is_capped():
    import random

    rng = random.Random(3)
    delays = [backoff_delay(n, 1.0, 30.0, rng) for n in range(1, 12)]
    assert all(0.5 <= d <= 30.0 for d in delays)
    assert max(delays[:2]) <= 2.0 and delays[-1] > 2.0
    assert len({round(d, 6) for d in delays}) == len(delays)  # jittered


def test_a_recorded_session_plays_back_byte_for_byte(settings, tmp_path):
    path = tmp_path / "session.frames"
    first = RecordingSink()
    with FakeUpstox(ticks_per_second=300, frame_size=2, record_to=path) as recorder:
        point_settings_at(settings, recorder)
        source = make_source({"token": "t"})

        async def record():
            await wait_until(lambda: first.count >= 60, what="ticks to record")

        run_with(source, first, record)
    assert path.stat().st_size > 0

    replayed = RecordingSink()
    with FakeUpstox(recording=path, speed=20.0) as player:
        point_settings_at(settings, player)
        source = make_source({"token": "t"})

        async def replay():
            await wait_until(lambda: replayed.count >= 60, what="replayed ticks")

        run_with(source, replayed, replay)
    point_settings_at(settings, None)
    assert replayed.ticks[:60] == first.ticks[:60]  # same prices, same exchange times, same order
    assert replayed.status["session_state"] == OPEN  # the recorded market_info frame


@pytest.mark.django_db(transaction=True)
def test_from_settings_without_a_master_streams_the_watchlist(fake, settings):
    settings.WATCHLIST = [NIFTY]
    sink = RecordingSink()
    source = UpstoxSource.from_settings(token_provider=lambda: "good-token", backoff_initial_s=0.05)

    async def scenario():
        await wait_until(lambda: NIFTY in sink.keys(), what="index ticks")

    run_with(source, sink, scenario)
    assert [f["data"]["instrumentKeys"] for f in fake.client_frames] == [[NIFTY]]
    assert source.plan.ladders == {}


def test_a_broker_that_stays_away_raises_an_alert_and_the_feed_keeps_trying(fake):
    sink = RecordingSink()
    source = make_source({"token": "good-token"}, backoff_max_s=0.1)

    async def scenario():
        await wait_until(lambda: sink.count > 0, what="data")
        fake.refuse_handshakes = 503  # e.g. the broker's gateway is down
        await asyncio.to_thread(fake.drop_connections)
        await wait_until(lambda: "Upstox feed down" in str(sink.status.get("alert")), what="the alert")
        assert source.reconnects >= 3 and sink.status["connected"] is False
        fake.refuse_handshakes = None
        before = sink.count
        await wait_until(lambda: sink.count > before, what="ticks once the broker is back")
        await wait_until(lambda: sink.status.get("alert") == "", what="the alert cleared")

    run_with(source, sink, scenario)
