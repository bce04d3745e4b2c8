"""The fake's simulated market and the protobuf frames it sends, built with the SDK's own
generated classes (`MarketDataFeedV3_pb2`), so the SDK decodes exactly what the real feed sends.

Prices: each index follows a seeded random walk on its 0.05 tick; futures ride their index with a
small premium; options are priced as intrinsic value plus a time value that shrinks away from the
money. Unknown keys get a walk of their own around 100. No Django imports.
"""

from __future__ import annotations

import math
import random
import threading
import time

from upstox_client.feeder.proto import MarketDataFeedV3_pb2 as pb

from feeds.universe import DEFAULT_SPOT

INDEX_BASE_PRICES = {
    "NSE_INDEX|Nifty 50": DEFAULT_SPOT["NIFTY"],
    "NSE_INDEX|Nifty Bank": DEFAULT_SPOT["BANKNIFTY"],
}
MODES = ("ltpc", "full", "option_greeks", "full_d30")
_REQUEST_MODE = {
    "ltpc": pb.ltpc,
    "full": pb.full_d5,
    "option_greeks": pb.option_greeks,
    "full_d30": pb.full_d30,
}
SEGMENT_STATUSES = tuple(pb.MarketStatus.keys())


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def _on_tick(price: float, tick: float = 0.05) -> float:
    return round(round(price / tick) * tick, 2)


class SimulatedMarket:
    """Prices for every instrument the fake is asked about. Thread-safe (REST threads read it)."""

    def __init__(self, instruments: dict[str, dict] | None = None, seed: int = 7, volatility: float = 0.0002):
        self.instruments = instruments or {}
        self.volatility = volatility  # relative size of one random-walk step
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._walks: dict[str, float] = dict(INDEX_BASE_PRICES)
        self._volume: dict[str, int] = {}
        self.day_open: dict[str, float] = {}

    def set_price(self, key: str, price: float) -> None:
        """Test hook: move an index (or any walked instrument) to `price`."""
        with self._lock:
            self._walks[key] = price

    def step(self) -> None:
        """Advance every walk by one random tick-sized move."""
        with self._lock:
            for key, price in self._walks.items():
                self._walks[key] = max(0.05, price + self._rng.choice((-1, 0, 1)) * price * self.volatility)

    def price(self, key: str) -> float:
        with self._lock:
            return self._price(key)

    def _price(self, key: str) -> float:
        if key in self._walks:
            return _on_tick(self._walks[key])
        row = self.instruments.get(key)
        if row is not None and row.get("underlying_key") in self._walks | INDEX_BASE_PRICES:
            spot = self._price(row["underlying_key"])
            kind = row.get("instrument_type")
            if kind == "FUT":
                return _on_tick(spot * 1.003)
            strike = float(row.get("strike_price") or 0.0)
            if kind in ("CE", "PE"):
                intrinsic = max(0.0, spot - strike) if kind == "CE" else max(0.0, strike - spot)
                time_value = 0.006 * spot * math.exp(-abs(spot - strike) / (0.015 * spot))
                return _on_tick(max(0.05, intrinsic + time_value))
        self._walks[key] = 100.0 + self._rng.random() * 50
        return _on_tick(self._walks[key])

    def is_index(self, key: str) -> bool:
        return key.startswith("NSE_INDEX|") or key.startswith("BSE_INDEX|")

    def fill_feed(self, feed: pb.Feed, key: str, mode: str, ts_ms: int) -> None:
        """Fill one `Feed` message for `key` in subscription `mode`, as the real feed would."""
        with self._lock:
            ltp = self._price(key)
            volume = self._volume[key] = self._volume.get(key, 0) + (0 if self.is_index(key) else 75)
            self.day_open.setdefault(key, ltp)
        cp = self.day_open[key]
        feed.requestMode = _REQUEST_MODE[mode]
        if mode == "ltpc":
            _fill_ltpc(feed.ltpc, ltp, ts_ms, cp, 0 if self.is_index(key) else 75)
            return
        if self.is_index(key):
            if mode == "option_greeks":
                _fill_ltpc(feed.firstLevelWithGreeks.ltpc, ltp, ts_ms, cp, 0)
                return
            index = feed.fullFeed.indexFF
            _fill_ltpc(index.ltpc, ltp, ts_ms, cp, 0)
            _fill_ohlc(index.marketOHLC, cp, ltp, ts_ms, 0)
            return
        spread = 0.05 if ltp < 500 else 0.10
        if mode == "option_greeks":
            greeks = feed.firstLevelWithGreeks
            _fill_ltpc(greeks.ltpc, ltp, ts_ms, cp, 75)
            q = greeks.firstDepth
            q.bidP, q.bidQ, q.askP, q.askQ = ltp - spread, 750, ltp + spread, 600
            _fill_greeks(greeks.optionGreeks)
            greeks.vtt = volume
            greeks.oi = 125_000.0
            greeks.iv = 0.14
            return
        market = feed.fullFeed.marketFF
        _fill_ltpc(market.ltpc, ltp, ts_ms, cp, 75)
        levels = 30 if mode == "full_d30" else 5
        for level in range(levels):
            q = market.marketLevel.bidAskQuote.add()
            q.bidP = _on_tick(ltp - spread * (level + 1))
            q.bidQ = 75 * (level + 2)
            q.askP = _on_tick(ltp + spread * (level + 1))
            q.askQ = 75 * (level + 1)
        _fill_greeks(market.optionGreeks)
        _fill_ohlc(market.marketOHLC, cp, ltp, ts_ms, volume)
        market.atp = ltp
        market.vtt = volume
        market.oi = 125_000.0
        market.iv = 0.14
        market.tbq = 150_000.0
        market.tsq = 140_000.0


def _fill_ltpc(ltpc: pb.LTPC, ltp: float, ts_ms: int, cp: float, ltq: int) -> None:
    ltpc.ltp = ltp
    ltpc.ltt = ts_ms
    ltpc.ltq = ltq
    ltpc.cp = cp


def _fill_greeks(greeks: pb.OptionGreeks) -> None:
    greeks.delta, greeks.theta, greeks.gamma, greeks.vega, greeks.rho = 0.5, -12.0, 0.0012, 9.5, 2.1


def _fill_ohlc(ohlc: pb.MarketOHLC, open_: float, ltp: float, ts_ms: int, volume: int) -> None:
    day = ohlc.ohlc.add()
    day.interval = "1d"
    day.open, day.high, day.low, day.close = open_, max(open_, ltp), min(open_, ltp), ltp
    day.vol = volume
    day.ts = ts_ms - ts_ms % 86_400_000
    minute = ohlc.ohlc.add()
    minute.interval = "I1"
    minute.open = minute.high = minute.low = minute.close = ltp
    minute.ts = ts_ms - ts_ms % 60_000


def feed_frame(
    market: SimulatedMarket, keys_modes: list[tuple[str, str]], frame_type: int, ts_ms: int
) -> bytes:
    """A serialised FeedResponse (initial_feed or live_feed) carrying one feed per key."""
    response = pb.FeedResponse(type=frame_type, currentTs=ts_ms)
    for key, mode in keys_modes:
        market.fill_feed(response.feeds[key], key, mode, ts_ms)
    return response.SerializeToString()


def market_info_frame(segment_status: dict[str, str], ts_ms: int) -> bytes:
    """A serialised `market_info` FeedResponse: one Upstox MarketStatus name per segment."""
    response = pb.FeedResponse(type=pb.market_info, currentTs=ts_ms)
    for segment, status in segment_status.items():
        response.marketInfo.segmentStatus[segment] = pb.MarketStatus.Value(status)
    return response.SerializeToString()


def current_ts_suffix(ts_ms: int) -> bytes:
    """The wire bytes of FeedResponse.currentTs (field 3, varint). Appending them to a serialised
    frame sets its send time without re-serialising (protobuf merges concatenated messages)."""
    out = bytearray(b"\x18")
    value = ts_ms
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)
