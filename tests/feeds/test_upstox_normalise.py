"""Normalising Upstox feed V3 messages into Ticks: the SDK's dict form and the protobuf fast path
must agree on every feed shape (ltpc, full marketFF / indexFF, option_greeks)."""

from __future__ import annotations

from google.protobuf import json_format
from hypothesis import given, settings
from hypothesis import strategies as st
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from feeds.sources import CLOSED, OPEN, PRE_OPEN
from feeds.ticks import Tick
from feeds.upstox.fake.market import SimulatedMarket, feed_frame, market_info_frame
from feeds.upstox.normalise import (
    market_status,
    market_status_from_response,
    ticks_from_message,
    ticks_from_response,
)


def both(frame: bytes) -> tuple[list[Tick], list[Tick]]:
    response = pb.FeedResponse.FromString(frame)
    return ticks_from_message(json_format.MessageToDict(response)), ticks_from_response(response)


def test_full_market_feed_carries_depth_volume_oi_and_previous_close():
    response = pb.FeedResponse(type=pb.live_feed, currentTs=1_763_600_000_500)
    market = response.feeds["NSE_FO|43919"].fullFeed.marketFF
    market.ltpc.ltp, market.ltpc.ltt, market.ltpc.ltq, market.ltpc.cp = 101.5, 1_763_600_000_000, 75, 99.0
    for i in range(5):
        q = market.marketLevel.bidAskQuote.add()
        q.bidP, q.bidQ = round(101.45 - i * 0.05, 2), 150 + i
        q.askP, q.askQ = round(101.5 + i * 0.05, 2), 0 if i == 0 else 75
    market.vtt, market.oi = 123_456, 1000.0
    from_dict, from_proto = both(response.SerializeToString())
    assert from_dict == from_proto
    (tick,) = from_dict
    assert tick == Tick(
        "NSE_FO|43919", 1_763_600_000_000, 101.5, 75, 123_456, 1000.0, 101.45, 150, 101.5, 0, 99.0,
        tuple((round(101.45 - i * 0.05, 2), 150 + i, round(101.5 + i * 0.05, 2), 0 if i == 0 else 75) for i in range(5)),
    )  # fmt: skip


def test_index_feed_without_trade_time_takes_the_frame_time_and_no_volume():
    response = pb.FeedResponse(type=pb.live_feed, currentTs=1_763_600_000_500)
    response.feeds["NSE_INDEX|Nifty 50"].fullFeed.indexFF.ltpc.ltp = 25_010.35
    from_dict, from_proto = both(response.SerializeToString())
    assert from_dict == from_proto == [Tick("NSE_INDEX|Nifty 50", 1_763_600_000_500, 25_010.35)]


def test_initial_feed_has_no_type_field_and_still_normalises():
    response = pb.FeedResponse(type=pb.initial_feed, currentTs=5)
    response.feeds["X|1"].ltpc.ltp = 3.0
    message = json_format.MessageToDict(response)
    assert "type" not in message
    assert ticks_from_message(message) == [Tick("X|1", 5, 3.0)]


def test_option_greeks_feed_uses_first_level_depth():
    response = pb.FeedResponse(type=pb.live_feed, currentTs=7)
    greeks = response.feeds["NSE_FO|1"].firstLevelWithGreeks
    greeks.ltpc.ltp, greeks.ltpc.ltt = 12.5, 6
    greeks.firstDepth.bidP, greeks.firstDepth.bidQ, greeks.firstDepth.askP, greeks.firstDepth.askQ = (
        12.45,
        650,
        12.55,
        325,
    )
    greeks.vtt, greeks.oi, greeks.optionGreeks.delta = 99, 12.0, 0.4
    from_dict, from_proto = both(response.SerializeToString())
    assert from_dict == from_proto == [Tick("NSE_FO|1", 6, 12.5, 0, 99, 12.0, 12.45, 650, 12.55, 325)]


def test_market_info_maps_to_session_states():
    for status, state in [("PRE_OPEN_START", PRE_OPEN), ("NORMAL_OPEN", OPEN), ("NORMAL_CLOSE", CLOSED)]:
        frame = market_info_frame({"NSE_FO": status, "NSE_INDEX": "NORMAL_OPEN"}, 1)
        response = pb.FeedResponse.FromString(frame)
        assert market_status(json_format.MessageToDict(response)) == state
        assert market_status_from_response(response) == state
        assert ticks_from_response(response) == []


@settings(max_examples=60, deadline=None)
@given(
    keys=st.lists(
        st.sampled_from(["NSE_INDEX|Nifty 50", "NSE_FO|1", "NSE_FO|2", "NSE_FO|3", "X|9"]),
        min_size=1,
        unique=True,
    ),
    modes=st.lists(st.sampled_from(["ltpc", "full", "option_greeks", "full_d30"]), min_size=5, max_size=5),
    frame_type=st.sampled_from([0, 1]),
    ts=st.integers(min_value=0, max_value=2**41),
    seed=st.integers(0, 1000),
)
def test_dict_and_protobuf_paths_agree_on_simulated_frames(keys, modes, frame_type, ts, seed):
    market = SimulatedMarket(seed=seed)
    frame = feed_frame(market, list(zip(keys, modes, strict=False)), frame_type, ts)
    from_dict, from_proto = both(frame)
    assert from_dict == from_proto
    assert {t.instrument_key for t in from_dict} == set(keys)


def test_full_depth_is_read_at_most_once_per_interval_per_instrument_on_both_paths():
    """FEED_DEPTH_EVERY_MS: an instrument's five levels come on its first tick and then once its
    interval of feed time (currentTs) has passed; every tick keeps its best bid and ask."""
    market = SimulatedMarket(seed=3)
    keys = [
        ("NSE_FO|1", "full"),
        ("NSE_FO|2", "full"),
        ("NSE_INDEX|Nifty 50", "full"),
        ("NSE_FO|3", "option_greeks"),
    ]
    due_dict: dict[str, int] = {}
    due_proto: dict[str, int] = {}
    seen = []
    for now in (1_000, 1_400, 1_999, 2_000, 2_500, 3_100):
        response = pb.FeedResponse.FromString(feed_frame(market, keys, pb.live_feed, now))
        from_dict = ticks_from_message(json_format.MessageToDict(response), 1000, due_dict)
        from_proto = ticks_from_response(response, 1000, due_proto)
        assert from_dict == from_proto
        every = {t.instrument_key: t for t in ticks_from_response(response)}  # depth on every tick
        for tick in from_proto:
            full = every[tick.instrument_key]
            assert (tick.bid, tick.bid_qty, tick.ask, tick.ask_qty) == (
                full.bid,
                full.bid_qty,
                full.ask,
                full.ask_qty,
            )
            assert tick.depth in ((), full.depth)
        seen.append({t.instrument_key for t in from_proto if t.depth})
    assert seen == [
        {"NSE_FO|1", "NSE_FO|2"},
        set(),
        set(),
        {"NSE_FO|1", "NSE_FO|2"},
        set(),
        {"NSE_FO|1", "NSE_FO|2"},
    ]
