"""AuctionState as a JSON-safe dict (for the CLI, Channels snapshots, Celery results).

Prices stay numbers; a row is named by its lower bound as a string key ("22045", "100.5").
No Django, Celery or Redis imports here.
"""

from __future__ import annotations

from .state import AuctionState


def price_key(price: float) -> str:
    """A row's name as a JSON key: its lower bound without float noise."""
    return f"{price:.2f}".rstrip("0").rstrip(".")


def state_to_dict(state: AuctionState) -> dict:
    prior = state.prior
    return {
        "date": state.session_date.isoformat() if state.session_date else None,
        "period_index": state.period_index,
        "period_letter": state.period_letter,
        "row_size": state.row_size,
        "open": state.open,
        "high": state.high,
        "low": state.low,
        "close": state.last,
        "poc": state.poc,
        "vah": state.vah,
        "val": state.val,
        "volume_poc": state.volume_poc,
        "volume_vah": state.volume_vah,
        "volume_val": state.volume_val,
        "ibh": state.ibh,
        "ibl": state.ibl,
        "ibr": state.ibr,
        "ib_complete": state.ib_complete,
        "extension_up": state.extension_up,
        "extension_down": state.extension_down,
        "extension_up_multiple": state.extension_up_multiple,
        "extension_down_multiple": state.extension_down_multiple,
        "extension_levels": {
            side: {price_key(k): v for k, v in levels.items()}
            for side, levels in state.extension_levels.items()
        },
        "tpo_counts": {price_key(row): n for row, n in state.tpo_counts.items()},
        "volume_by_row": {price_key(row): n for row, n in state.volume_by_row.items()},
        "open_location": state.open_location,
        "open_type": state.open_type,
        "day_type": state.day_type,
        "day_type_final": state.day_type_final,
        "single_prints": [[lo, hi] for lo, hi in state.single_prints],
        "poor_high": state.poor_high,
        "poor_low": state.poor_low,
        "weak_high": state.weak_high,
        "weak_low": state.weak_low,
        "excess_high": state.excess_high,
        "excess_low": state.excess_low,
        "hvn": state.hvn,
        "lvn": state.lvn,
        "rotation_factor": state.rotation_factor,
        "value_relation": state.value_relation,
        "balance": state.balance,
        "shape": state.shape,
        "naked_pocs": state.naked_pocs,
        "periods": [[letter, lo, hi] for letter, lo, hi in state.periods],
        "now_ms": state.now_ms,
        "prior": None
        if prior is None
        else {
            "date": prior.date.isoformat(),
            "high": prior.high,
            "low": prior.low,
            "close": prior.close,
            "poc": prior.poc,
            "vah": prior.vah,
            "val": prior.val,
        },
    }
