"""The one place where Upstox market feed V3 messages become the project's `Tick`s.

Two entry points over the same rules: `ticks_from_message` for what the SDK's `message` event hands
over (`json_format.MessageToDict` output: camelCase keys, int64 as strings, zero fields omitted),
and `ticks_from_response` for a decoded `FeedResponse` protobuf (the fast path, same results).
Handles ltpc, full (marketFF / indexFF) and option_greeks (firstLevelWithGreeks) feeds, and maps
market status frames to session states.

Pure functions: no Django, no I/O, never raises on a missing field (absent means zero on the wire).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import fields
from itertools import starmap

from feeds.sources import CLOSED, OPEN, PRE_OPEN
from feeds.ticks import Tick

# Upstox segment statuses → the project's session states.
_SESSION_STATES = {
    "PRE_OPEN_START": PRE_OPEN,
    "PRE_OPEN_END": PRE_OPEN,
    "NORMAL_OPEN": OPEN,
    "NORMAL_CLOSE": CLOSED,
    "CLOSING_START": CLOSED,
    "CLOSING_END": CLOSED,
}
# Protobuf enum numbers of MarketStatus, for the protobuf path.
_SESSION_STATES_BY_NUMBER = dict(
    enumerate(
        ["PRE_OPEN_START", "PRE_OPEN_END", "NORMAL_OPEN", "NORMAL_CLOSE", "CLOSING_START", "CLOSING_END"]
    )
)
MARKET_INFO = "market_info"
_EMPTY: dict = {}


def session_state(segment_status: dict[str, str], segment: str = "NSE_FO") -> str | None:
    """The session state of `segment` (F&O by default, the bot's market) from a market_info frame;
    falls back to NSE_INDEX, then to any segment. None when the frame names none."""
    status = segment_status.get(segment) or segment_status.get("NSE_INDEX")
    if status is None and segment_status:
        status = next(iter(segment_status.values()))
    return _SESSION_STATES.get(status) if status else None


def market_status(message: dict) -> str | None:
    """The session state a `market_info` message announces, or None for any other message."""
    if message.get("type") != MARKET_INFO:
        return None
    return session_state(message.get("marketInfo", _EMPTY).get("segmentStatus", _EMPTY))


def ticks_from_message(message: dict, depth_every_ms: int = 0, depth_due: dict | None = None) -> list[Tick]:
    """Ticks in one MessageToDict'ed FeedResponse (initial_feed or live_feed; none for market_info).
    `depth_every_ms`/`depth_due`: see `rows_from_response`."""
    feeds = message.get("feeds")
    if not feeds:
        return []
    current_ts = int(message.get("currentTs", 0))
    ticks = []
    due = depth_due if depth_every_ms > 0 else None
    for key, feed in feeds.items():
        tick = _tick_from_feed(key, feed, current_ts, depth_every_ms, due)
        if tick is not None:
            ticks.append(tick)
    return ticks


def _depth_is_due(depth_due: dict, key: str, now_ms: int, every_ms: int) -> bool:
    if now_ms < depth_due.get(key, 0):
        return False
    depth_due[key] = now_ms + every_ms
    return True


def _tick_from_feed(
    key: str, feed: dict, current_ts: int, depth_every_ms: int, depth_due: dict | None
) -> Tick | None:
    full = feed.get("fullFeed")
    volume = 0
    oi = 0.0
    depth: tuple = ()
    if full is not None:
        market = full.get("marketFF")
        if market is not None:
            ltpc = market.get("ltpc", _EMPTY)
            volume = int(market.get("vtt", 0))
            oi = float(market.get("oi", 0.0))
            quotes = market.get("marketLevel", _EMPTY).get("bidAskQuote", ())
            if depth_due is not None and not _depth_is_due(depth_due, key, current_ts, depth_every_ms):
                quotes = quotes[:1]
            depth = tuple(
                (
                    float(q.get("bidP", 0.0)),
                    int(q.get("bidQ", 0)),
                    float(q.get("askP", 0.0)),
                    int(q.get("askQ", 0)),
                )
                for q in quotes
            )
        else:
            ltpc = full.get("indexFF", _EMPTY).get("ltpc", _EMPTY)
    elif "firstLevelWithGreeks" in feed:
        greeks = feed["firstLevelWithGreeks"]
        ltpc = greeks.get("ltpc", _EMPTY)
        volume = int(greeks.get("vtt", 0))
        oi = float(greeks.get("oi", 0.0))
        first = greeks.get("firstDepth")
        if first is not None:
            depth = (
                (
                    float(first.get("bidP", 0.0)),
                    int(first.get("bidQ", 0)),
                    float(first.get("askP", 0.0)),
                    int(first.get("askQ", 0)),
                ),
            )
    elif "ltpc" in feed:
        ltpc = feed["ltpc"]
    else:
        return None
    if "ltp" not in ltpc:
        return None  # a feed with no price (e.g. an untraded contract's empty snapshot)
    best = depth[0] if depth else (0.0, 0, 0.0, 0)
    return Tick(
        instrument_key=key,
        ts_ms=int(ltpc.get("ltt", 0)) or current_ts,
        ltp=float(ltpc["ltp"]),
        ltq=int(ltpc.get("ltq", 0)),
        volume=volume,
        oi=oi,
        bid=best[0],
        bid_qty=best[1],
        ask=best[2],
        ask_qty=best[3],
        close_prev=float(ltpc.get("cp", 0.0)),
        depth=depth if len(depth) > 1 else (),
    )


def market_status_from_response(response) -> str | None:
    """`market_status` for a decoded FeedResponse protobuf."""
    if response.type != 2:  # market_info
        return None
    statuses = {
        segment: _SESSION_STATES_BY_NUMBER.get(number, "")
        for segment, number in response.marketInfo.segmentStatus.items()
    }
    return session_state(statuses)


def ticks_from_response(response, depth_every_ms: int = 0, depth_due: dict | None = None) -> list[Tick]:
    """`ticks_from_message` for a decoded FeedResponse protobuf, without the MessageToDict detour."""
    return list(starmap(_new_tick, rows_from_response(response, depth_every_ms, depth_due)))


def rows_from_response(response, depth_every_ms: int = 0, depth_due: dict | None = None) -> list[tuple]:
    """The ticks of a decoded FeedResponse as tuples of their fields in `Tick` order (what
    `feeds.ticks.tick_fields` gives): the decoder process packs these without building Ticks.

    Depth snapshots: with `depth_every_ms` > 0 and a `depth_due` dict (kept by the caller across
    frames), an instrument's full depth is read at most once per `depth_every_ms` of feed time
    (the frames' currentTs); its other ticks carry the best bid and ask only. Nothing downstream
    needs every tick's five levels (the store keeps depth as snapshots), and reading them is most
    of this function's cost: each level is a protobuf message object to create.

    The feed's hottest code: fields are read with `attrgetter`s (several protobuf reads per C call)."""
    current_ts = response.currentTs
    sampled = depth_every_ms > 0 and depth_due is not None
    rows: list[tuple] = []
    append = rows.append
    feeds = response.feeds
    for key in feeds:  # the map's own iterator and lookup: C, unlike its items() view
        feed = feeds[key]
        kind = feed.WhichOneof("FeedUnion")
        volume = 0
        oi = 0.0
        levels: tuple = ()
        if kind == "fullFeed":
            full = feed.fullFeed
            if full.WhichOneof("FullFeedUnion") == "marketFF":
                ltpc, volume, oi, quotes = _market_fields(full.marketFF)
                if not sampled or _depth_is_due(depth_due, key, current_ts, depth_every_ms):
                    levels = tuple(map(_quote_fields, quotes))
                elif quotes:
                    levels = (_quote_fields(quotes[0]),)
            else:
                ltpc = full.indexFF.ltpc
        elif kind == "firstLevelWithGreeks":
            greeks = feed.firstLevelWithGreeks
            ltpc = greeks.ltpc
            volume = greeks.vtt
            oi = greeks.oi
            if greeks.HasField("firstDepth"):
                levels = (_quote_fields(greeks.firstDepth),)
        elif kind == "ltpc":
            ltpc = feed.ltpc
        else:
            continue
        ltp, ltt, ltq, close_prev = _ltpc_fields(ltpc)
        if ltp == 0.0:
            continue  # proto3 cannot tell an absent price from zero; MessageToDict omits it too
        bid, bid_qty, ask, ask_qty = levels[0] if levels else _NO_LEVEL
        append(
            (
                key,
                ltt or current_ts,
                ltp,
                ltq,
                volume,
                oi,
                bid,
                bid_qty,
                ask,
                ask_qty,
                close_prev,
                levels if len(levels) > 1 else (),
            )
        )
    return rows


_ltpc_fields = operator.attrgetter("ltp", "ltt", "ltq", "cp")
_quote_fields = operator.attrgetter("bidP", "bidQ", "askP", "askQ")  # a depth level, Tick's order
_market_fields = operator.attrgetter("ltpc", "vtt", "oi", "marketLevel.bidAskQuote")
_NO_LEVEL = (0.0, 0, 0.0, 0)


def _tick_constructor() -> Callable[..., Tick]:
    """`Tick(*fields)` at about half the cost: a frozen dataclass's `__init__` pays one
    `object.__setattr__` lookup and call per field, ~1.2 µs a tick here. This fills the slots
    through their descriptors instead, which is what that `__init__` does, minus the overhead.
    Falls back to `Tick` itself should the dataclass ever gain a `__post_init__` or lose its
    slots, so nothing it checks can be skipped (the equality is tested)."""
    names = [f.name for f in fields(Tick)]
    slots = getattr(Tick, "__slots__", ())
    if hasattr(Tick, "__post_init__") or tuple(slots) != tuple(names):
        return Tick
    s0, s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11 = (Tick.__dict__[n].__set__ for n in names)
    new = object.__new__

    def make(a, b, c, d, e, f, g, h, i, j, k, l):  # noqa: E741 (positional, Tick's field order)
        t = new(Tick)
        s0(t, a)
        s1(t, b)
        s2(t, c)
        s3(t, d)
        s4(t, e)
        s5(t, f)
        s6(t, g)
        s7(t, h)
        s8(t, i)
        s9(t, j)
        s10(t, k)
        s11(t, l)
        return t

    return make


_new_tick = _tick_constructor()
