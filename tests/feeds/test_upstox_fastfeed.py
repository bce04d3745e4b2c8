"""The C frame decoder (feeds/upstox/_fastfeed.c) against the protobuf path it replaces in the
decoder process: the same rows, value for value and type for type (their msgpack bytes are
compared), for every kind of feed, with and without depth snapshots; anything it cannot decode
exactly as protobuf would gives None (the decoder process then takes the protobuf path)."""

from __future__ import annotations

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from feeds.upstox.fake.market import SimulatedMarket, current_ts_suffix, feed_frame
from feeds.upstox.normalise import rows_from_response

try:
    from feeds.upstox import _fastfeed
except ImportError:  # pragma: no cover - the build is part of `make install-dev`
    pytest.fail("feeds/upstox/_fastfeed.c is not built: run `python -m feeds.upstox.build_fastfeed`")

KEYS = ["NSE_INDEX|Nifty 50", "NSE_FO|1", "NSE_FO|2", "NSE_FO|3", "BSE_FO|9", "NSE_FO|ünïcode"]


def protobuf_rows(frame: bytes, every: int = 0, due: dict | None = None) -> list[tuple]:
    return rows_from_response(pb.FeedResponse.FromString(frame), every, due)


def same(c_rows: list[tuple] | None, py_rows: list[tuple]) -> None:
    """Equal as msgpack bytes (so 1 and 1.0 differ), in any order of instruments."""
    assert c_rows is not None

    def packed(rows):
        return sorted(msgpack.packb(r, use_bin_type=True) for r in rows)

    assert packed(c_rows) == packed(py_rows)


@settings(max_examples=150, deadline=None)
@given(
    keys=st.lists(st.sampled_from(KEYS), min_size=1, unique=True),
    modes=st.lists(st.sampled_from(["ltpc", "full", "option_greeks", "full_d30"]), min_size=6, max_size=6),
    frame_type=st.sampled_from([0, 1]),
    ts=st.integers(min_value=0, max_value=2**41),
    seed=st.integers(0, 1000),
)
def test_rows_equal_the_protobuf_paths_on_simulated_frames(keys, modes, frame_type, ts, seed):
    frame = feed_frame(SimulatedMarket(seed=seed), list(zip(keys, modes, strict=False)), frame_type, ts)
    same(_fastfeed.rows(frame), protobuf_rows(frame))
    # The fake's bench frames: a prebuilt frame with its send time appended (protobuf merges).
    stamped = frame + current_ts_suffix(ts + 5)
    same(_fastfeed.rows(stamped, 0, None), protobuf_rows(stamped))


@settings(max_examples=40, deadline=None)
@given(steps=st.lists(st.integers(0, 1500), min_size=1, max_size=12), every=st.sampled_from([1, 250, 1000]))
def test_depth_snapshots_follow_the_same_clock(steps, every):
    market = SimulatedMarket(seed=1)
    instruments = [("NSE_FO|1", "full"), ("NSE_FO|2", "full_d30"), ("NSE_FO|3", "option_greeks")]
    due_c: dict[str, int] = {}
    due_py: dict[str, int] = {}
    now = 1_764_000_000_000
    for step in steps:
        now += step
        frame = feed_frame(market, instruments, 1, now)
        same(_fastfeed.rows(frame, every, due_c), protobuf_rows(frame, every, due_py))
        assert due_c == due_py


def _frame(build) -> bytes:
    response = pb.FeedResponse(type=pb.live_feed, currentTs=1_764_000_000_500)
    build(response)
    return response.SerializeToString()


def test_edge_cases_decode_as_protobuf_does():
    def no_union(r):
        r.feeds["NSE_FO|1"].requestMode = 1  # a feed with none of ltpc / fullFeed / greeks

    def empty_full(r):
        r.feeds["NSE_FO|1"].fullFeed.SetInParent()

    def zero_price(r):
        r.feeds["NSE_FO|1"].ltpc.ltq = 5

    def negative_and_big(r):
        ltpc = r.feeds["NSE_FO|1"].ltpc
        ltpc.ltp, ltpc.ltt, ltpc.ltq, ltpc.cp = -1.5, -7, 2**62, 1e300

    def greeks_empty_depth(r):
        greeks = r.feeds["NSE_FO|1"].firstLevelWithGreeks
        greeks.ltpc.ltp = 10.0
        greeks.firstDepth.SetInParent()

    def market_without_levels(r):
        market = r.feeds["NSE_FO|1"].fullFeed.marketFF
        market.ltpc.ltp, market.vtt, market.oi = 10.0, 7, 3.5

    for build in (
        no_union,
        empty_full,
        zero_price,
        negative_and_big,
        greeks_empty_depth,
        market_without_levels,
    ):
        frame = _frame(build)
        for every, due in ((0, None), (1000, {}), (1000, {"NSE_FO|1": 2**62})):
            c_due = dict(due) if due is not None else None
            same(_fastfeed.rows(frame, every, c_due), protobuf_rows(frame, every, due))
            assert c_due == due


def test_a_oneof_member_replaces_another_and_a_repeated_message_merges():
    ltpc_only = _frame(lambda r: setattr(r.feeds["NSE_FO|1"].ltpc, "ltp", 5.0))
    full = feed_frame(SimulatedMarket(seed=2), [("NSE_FO|1", "full")], 1, 1_764_000_000_000)
    # Concatenated messages merge: the same key twice is a map entry replaced, which the C
    # decoder leaves to protobuf; a feed's fields sent in two parts are merged.
    assert _fastfeed.rows(ltpc_only + full) is None
    market_a = _frame(lambda r: setattr(r.feeds["NSE_FO|1"].fullFeed.marketFF, "vtt", 9))
    response = pb.FeedResponse.FromString(market_a)
    response.feeds["NSE_FO|1"].fullFeed.marketFF.ltpc.ltp = 12.5
    same(_fastfeed.rows(response.SerializeToString()), protobuf_rows(response.SerializeToString()))


def test_frames_it_cannot_decode_exactly_give_none():
    good = feed_frame(SimulatedMarket(seed=4), [("NSE_FO|1", "full"), ("NSE_FO|2", "ltpc")], 1, 5)
    for bad in (good[:-3], b"\x08\xff\xff garbage", b"\x12\x05\x0a\x03\xff\xfe\xfd", b"\x0b\x00"):
        assert _fastfeed.rows(bad) is None
    due: dict[str, int] = {}
    assert _fastfeed.rows(good[:-3], 1000, due) is None and due == {}  # nothing changed on the way
    # A sound full feed (its depth falls due) followed by an entry whose key is not UTF-8.
    assert _fastfeed.rows(good + b"\x12\x05\x0a\x03\xff\xfe\xfd", 1000, due) is None and due == {}
    assert _fastfeed.rows(good, 1000, due) is not None and due == {"NSE_FO|1": 5 + 1000}
    assert _fastfeed.rows(b"") == [] and _fastfeed.rows(b"", 1000, {}) == []
    with pytest.raises(TypeError):
        _fastfeed.rows(good, 1000, [])
