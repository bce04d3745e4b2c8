"""The decoder process (feeds.upstox.decoder): the same ticks as decoding in the feed process,
byte for byte, and a feed that survives its decoder dying."""

from __future__ import annotations

import io

import msgpack
import pytest
from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from feeds.pipeline import FeedPipeline
from feeds.ticks import pack_tick, tick_fields, unpack_tick
from feeds.upstox.decoder import _HEADER, ERROR, SESSION, TICKS, _fast_rows, serve
from feeds.upstox.fake.market import SimulatedMarket, feed_frame, market_info_frame
from feeds.upstox.normalise import ticks_from_response
from persistence.records import encode_rows

NIFTY = "NSE_INDEX|Nifty 50"
BANK = "NSE_INDEX|Nifty Bank"


def _serve_frames(frames: list[tuple[int, bytes]]) -> list[list]:
    inp = io.BytesIO(b"".join(_HEADER.pack(g, len(f)) + f for g, f in frames))
    out = io.BytesIO()
    assert serve(inp, out) == 0  # returns at EOF
    return list(msgpack.Unpacker(io.BytesIO(out.getvalue()), raw=False))


@pytest.fixture(params=["c", "protobuf"])
def decoding(request, monkeypatch):
    """The decoder process's two paths: the C decoder (built by `make install-dev`) and the SDK's
    protobuf objects (UPSTOX_FAST_DECODE=0, or the C decoder not built)."""
    if request.param == "protobuf":
        monkeypatch.setenv("UPSTOX_FAST_DECODE", "0")
    else:
        monkeypatch.delenv("UPSTOX_FAST_DECODE", raising=False)
        assert _fast_rows() is not None, "feeds/upstox/_fastfeed.c is not built"
    return request.param


def _by_key(ticks):
    return sorted(ticks, key=lambda t: t.instrument_key)


def test_decoded_records_equal_in_process_normalising_byte_for_byte(decoding):
    market = SimulatedMarket()
    instruments = [(NIFTY, "full"), (BANK, "full")] + [(f"NSE_FO|{40_000 + i}", "full") for i in range(30)]
    instruments += [(f"NSE_FO|{50_000 + i}", "option_greeks") for i in range(5)]
    instruments += [(f"NSE_FO|{60_000 + i}", "ltpc") for i in range(5)]
    frames = [feed_frame(market, instruments, i, 1_764_000_000_000 + i) for i in range(20)]
    records = _serve_frames([(7, f) for f in frames] + [(8, b"\x08\xff\xff garbage")])
    ticks = [r for r in records if r[0] == TICKS]
    assert len(ticks) == len(frames)
    for (_kind, generation, keys, ts, payloads, *parts), frame in zip(ticks, frames, strict=True):
        # The same ticks; the C decoder gives them in the frame's order, protobuf in its map's.
        by_key = {t.instrument_key: t for t in ticks_from_response(pb.FeedResponse.FromString(frame))}
        assert sorted(keys) == sorted(by_key)
        expected = [by_key[k] for k in keys]
        assert generation == 7
        assert payloads == [pack_tick(t) for t in expected]
        assert (keys, *parts) == tuple(encode_rows([tick_fields(t) for t in expected]))
        assert ts == [t.ts_ms for t in expected]
        assert [unpack_tick(p) for p in payloads] == expected
    assert records[-1][0] == ERROR and records[-1][1] == 8


def test_market_info_frames_become_session_records(decoding):
    frame = market_info_frame({"NSE_FO": "NORMAL_OPEN", "NSE_INDEX": "NORMAL_OPEN"}, 1_764_000_000_000)
    (record,) = _serve_frames([(3, frame)])
    assert record[0] == SESSION and record[1] == 3 and record[2] == "open"


def test_the_pipeline_takes_packed_ticks_as_it_takes_ticks(tmp_path):
    """put_packed (the decoder's path) and put (every other source) leave the same buffers,
    dashboard state and counters."""
    market = SimulatedMarket()
    frame = feed_frame(market, [(NIFTY, "full")] + [(f"NSE_FO|{i}", "full") for i in range(20)], 1, 5)
    ticks = ticks_from_response(pb.FeedResponse.FromString(frame))
    watched = [NIFTY, "NSE_FO|3"]

    def pipeline() -> FeedPipeline:
        p = FeedPipeline(source_name="t", writer=None, redis=None, snapshot_keys=watched)
        p.writer = object()  # only buffers are compared: never flushed
        p.redis = object()
        return p

    keys, ts, payloads = (
        [t.instrument_key for t in ticks],
        [t.ts_ms for t in ticks],
        [pack_tick(t) for t in ticks],
    )
    a, b = pipeline(), pipeline()
    a.put(ticks)
    b.put_packed(keys, ts, payloads, encode_rows([tick_fields(t) for t in ticks])[1:])  # as the decoder sends
    assert any(t.depth for t in ticks)
    assert a._pending.joined() == b._pending.joined()
    assert (a._stream_pending.keys, a._stream_pending.ts, a._stream_pending.payloads) == (
        b._stream_pending.keys,
        b._stream_pending.ts,
        b._stream_pending.payloads,
    )
    assert a.snapshot_message(full=True)["instruments"] == b.snapshot_message(full=True)["instruments"]
    assert (a.last_tick_ms, a.stats.ticks_in) == (b.last_tick_ms, b.stats.ticks_in)


def test_the_decoder_samples_depth_as_the_in_process_normaliser_does(decoding):
    market = SimulatedMarket()
    instruments = [(NIFTY, "full")] + [(f"NSE_FO|{40_000 + i}", "full") for i in range(10)]
    frames = [feed_frame(market, instruments, 1, 1_764_000_000_000 + 300 * i) for i in range(9)]
    inp = io.BytesIO(b"".join(_HEADER.pack(1, len(f)) + f for f in frames))
    out = io.BytesIO()
    assert serve(inp, out, 1000) == 0
    records = list(msgpack.Unpacker(io.BytesIO(out.getvalue()), raw=False))
    due: dict[str, int] = {}
    expected = [ticks_from_response(pb.FeedResponse.FromString(f), 1000, due) for f in frames]
    assert [_by_key(unpack_tick(p) for p in r[4]) for r in records] == [_by_key(ticks) for ticks in expected]
    assert [sum(bool(t.depth) for t in ticks) for ticks in expected] == [10, 0, 0, 0, 10, 0, 0, 0, 10]
