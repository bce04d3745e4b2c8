"""The auction engine: Auction Market Theory profiles and judgements (see
/work/shared/reference/amt.md), live (`AuctionEngine`, tick by tick) and in batch
(`compute_session(s)`), giving the same answer at every period boundary.

Pure Python: this package must never import Django, Celery or Redis, so the same code runs in a live
worker, a backtest, a benchmark and a notebook.
"""

from .batch import Candles, Ticks, compute_session, compute_sessions, split_sessions
from .classify import balance, day_type, extensions, open_type, shape
from .engine import AuctionEngine, SessionRolled
from .params import (
    NIFTY50,
    NIFTY_BANK,
    ProfileParams,
    params_for,
    period_index_at,
    period_letter,
    price_to_tick,
    row_of,
    session_bounds_ms,
    session_date_of,
)
from .profile import (
    Composite,
    composite_of,
    composite_profile,
    poc_index,
    shift_to_spot,
    spread_candle_volume,
    value_area,
    volume_nodes,
)
from .serialize import state_to_dict
from .state import AuctionState, PriorSession
from .structure import (
    extension_levels,
    extremes,
    open_location,
    rotation_factors,
    single_print_zones,
    value_relation,
)
from .vocabulary import Balance, DayType, OpenLocation, OpenType, Shape, ValueRelation

__all__ = [
    "NIFTY50",
    "NIFTY_BANK",
    "AuctionEngine",
    "AuctionState",
    "Balance",
    "Candles",
    "Composite",
    "DayType",
    "OpenLocation",
    "OpenType",
    "PriorSession",
    "ProfileParams",
    "SessionRolled",
    "Shape",
    "Ticks",
    "ValueRelation",
    "balance",
    "composite_of",
    "composite_profile",
    "compute_session",
    "compute_sessions",
    "day_type",
    "extension_levels",
    "extensions",
    "extremes",
    "open_location",
    "open_type",
    "params_for",
    "period_index_at",
    "period_letter",
    "poc_index",
    "price_to_tick",
    "rotation_factors",
    "row_of",
    "session_bounds_ms",
    "session_date_of",
    "shape",
    "shift_to_spot",
    "single_print_zones",
    "spread_candle_volume",
    "state_to_dict",
    "split_sessions",
    "value_area",
    "value_relation",
    "volume_nodes",
]
