"""Names shared by the feed, the workers and the web: Channels groups and Redis keys.

One place, so a producer and its consumers cannot drift apart.
"""

from __future__ import annotations

# Channels group receiving conflated market snapshots, as
# {"type": "market.snapshot", "instruments": {key: {...}}, "feed": {...}}.
MARKET_GROUP = "market"

# Channels group receiving the live strategies' updates (signals, orders, positions, PnL) from
# their workers, one message per evaluated batch: {"type": "strategy.update", "slug": ..., ...};
# the full shape is documented in `strategies.live.worker.strategy_update_message`.
STRATEGY_GROUP = "strategies"

# Redis hash the feed refreshes every second: source, state, connected, ticks_per_s,
# last_tick_ms, heartbeat_ms, alert (empty when all is well).
FEED_STATUS_KEY = "feed:status"

# Redis string holding the last full market snapshot (the MARKET_GROUP message with every
# instrument), as UTF-8 JSON, rewritten by the feed with each snapshot it publishes. The dashboard
# consumer sends it to a page as soon as the page connects, so the page is never blank.
LAST_SNAPSHOT_KEY = "market:last_snapshot"

# Redis hash of worker name -> last heartbeat (ms since epoch).
WORKER_HEARTBEATS_KEY = "workers:heartbeat"


def tick_stream_key(instrument_key: str) -> str:
    """The Redis Stream holding one instrument's ticks for the session (bounded, replayable)."""
    return f"ticks:{instrument_key}"
