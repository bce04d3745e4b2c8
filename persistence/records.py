"""Ticks as fixed-width binary records: how the feed hands its ticks to the history writer.

The writer works on columns (numpy, then Arrow). Ticks as msgpack rows or `Tick` objects cost it a
Python step per value to become columns; these records become columns by `numpy.frombuffer`, with
no Python step per tick at all. The Upstox decoder process builds them next to each frame's packed
ticks (`encode_rows`, a few C-level calls per frame); the feed joins them and sends them on.

A batch of n ticks is three byte strings:

* `heads`: per tick ten little-endian float64: ts_ms, ltp, ltq, volume, oi, bid, bid_qty, ask,
  ask_qty, close_prev (`HEAD_FIELDS`). Integers are exact as float64 up to 2**53 (a timestamp in
  ms, a day's volume and quantities are far below it); the writer turns them back into int64;
* `counts`: per tick the number of depth levels it carries, uint16;
* `levels`: the depth levels of all ticks back to back, each four float64: bid price, bid
  quantity, ask price, ask quantity (best level first).

with the instrument keys in a separate list. Pure: numpy and the standard library only.
"""

from __future__ import annotations

import operator
import sys
from array import array
from itertools import chain

import numpy as np

HEAD_FIELDS = ("ts_ms", "ltp", "ltq", "volume", "oi", "bid", "bid_qty", "ask", "ask_qty", "close_prev")
INT_FIELDS = frozenset({"ts_ms", "ltq", "volume", "bid_qty", "ask_qty"})
HEAD_WIDTH = len(HEAD_FIELDS)
LEVEL_WIDTH = 4
# On a `feeds.ticks.tick_fields` tuple (Tick.to_row order): key, the ten head fields, depth.
_key_of = operator.itemgetter(0)
_head_of = operator.itemgetter(*range(1, 1 + HEAD_WIDTH))
_depth_of = operator.itemgetter(1 + HEAD_WIDTH)
_flatten = chain.from_iterable
_LITTLE = sys.byteorder == "little"


class RecordError(ValueError):
    """Records whose parts do not fit together (a truncated or mixed-up batch)."""


def encode_rows(rows: list[tuple]) -> tuple[list[str], bytes, bytes, bytes]:
    """Keys, heads, counts and levels of ticks given as `tick_fields` tuples (or Tick rows)."""
    # array() from a list, not an iterator: it sizes the array once (measured ~30% cheaper).
    heads = array("d", list(_flatten(map(_head_of, rows))))
    depths = list(map(_depth_of, rows))
    counts = array("H", list(map(len, depths)))
    levels = array("d", list(_flatten(_flatten(depths))))
    if not _LITTLE:
        for part in (heads, counts, levels):
            part.byteswap()
    return list(map(_key_of, rows)), heads.tobytes(), counts.tobytes(), levels.tobytes()


def decode(
    n: int, heads: bytes, counts: bytes, levels: bytes
) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, np.ndarray] | None]:
    """The columns of n ticks' records (int64 or float64 arrays, by HEAD_FIELDS name) and their
    depth as (levels per tick, an (L, 4) float64 array), or None when no tick has depth."""
    head = np.frombuffer(heads, dtype="<f8")
    count = np.frombuffer(counts, dtype="<u2")
    if head.size != n * HEAD_WIDTH or count.size != n:
        raise RecordError(f"records do not match {n} keys ({head.size} head values, {count.size} counts)")
    head = head.reshape(n, HEAD_WIDTH)
    columns = {
        name: head[:, i].astype(np.int64 if name in INT_FIELDS else np.float64)
        for i, name in enumerate(HEAD_FIELDS)
    }
    flat = np.frombuffer(levels, dtype="<f8")
    if flat.size % LEVEL_WIDTH or flat.size // LEVEL_WIDTH != int(count.sum(dtype=np.int64)):
        raise RecordError(f"depth levels ({flat.size} values) do not match their counts")
    if not flat.size:
        return columns, None
    return columns, (count.astype(np.int64), flat.reshape(-1, LEVEL_WIDTH))
