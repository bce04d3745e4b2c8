"""Indian index-option charges per executed order, from effective-dated data in configs/charges.json.

The one place where charges are computed. Never hard-code a rate here: rates change, and a backtest
of 2024 must use 2024's rates.

Rounding convention (it reproduces india_fo.md's worked example to the paisa): every component is
computed exactly in Decimal on the order's premium turnover (price x quantity), never rounded
while it is summed; GST is 18% of the exact brokerage + exchange transaction + SEBI + IPFT; each
component is shown rounded half-up to the paisa, and the total is the exact sum rounded half-up to
the paisa — so the total can differ by a paisa from the sum of the shown components. One Nifty lot of
65, bought at 100 and sold at 110 on or after 1 Apr 2026: brokerage 40.00, STT 10.73 (10.725),
exchange 4.78 (4.781595), IPFT 0.07 (0.06825), SEBI 0.01 (0.01365), stamp 0.20 (0.195), GST 8.08
(8.0754291) -> total 63.86 (63.8589241); 60.28 with STT at 0.1%. (Rounding each component first
would give GST 8.07 and a total of 63.87; rounding SEBI per order would give 0.02.)
Contract notes round STT and stamp duty to the rupee per day; that per-day rounding is not modelled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from datetime import date
from decimal import ROUND_HALF_UP, Decimal
from functools import lru_cache
from pathlib import Path

CHARGES_FILE = Path(__file__).resolve().parents[2] / "configs" / "charges.json"
PAISA = Decimal("0.01")
BUY = "buy"
SELL = "sell"


def to_paisa(amount: Decimal) -> Decimal:
    return amount.quantize(PAISA, rounding=ROUND_HALF_UP)


@dataclass(frozen=True, slots=True)
class ChargeSchedule:
    effective_from: date
    brokerage_per_order: Decimal
    stt_sell_pct: Decimal
    exchange_txn_pct: Decimal
    ipft_pct: Decimal
    sebi_pct: Decimal
    stamp_buy_pct: Decimal
    gst_pct: Decimal


@dataclass(frozen=True, slots=True)
class Charges:
    """Exact (unrounded) charges of one or more orders, in rupees. Add them with +."""

    brokerage: Decimal = Decimal(0)
    stt: Decimal = Decimal(0)
    exchange: Decimal = Decimal(0)
    ipft: Decimal = Decimal(0)
    sebi: Decimal = Decimal(0)
    stamp: Decimal = Decimal(0)
    gst: Decimal = Decimal(0)

    def __add__(self, other: Charges) -> Charges:
        return Charges(*(getattr(self, f.name) + getattr(other, f.name) for f in fields(self)))

    @property
    def total(self) -> Decimal:
        """The exact sum (round with `to_paisa` to show or book it)."""
        return self.brokerage + self.stt + self.exchange + self.ipft + self.sebi + self.stamp + self.gst

    def rounded(self) -> dict[str, Decimal]:
        """Each component and the total, rounded half-up to the paisa (see the module docstring)."""
        out = {f.name: to_paisa(getattr(self, f.name)) for f in fields(self)}
        out["total"] = to_paisa(self.total)
        return out


def load_schedules(path: Path = CHARGES_FILE, segment: str = "index_options") -> list[ChargeSchedule]:
    raw = json.loads(Path(path).read_text())[segment]
    schedules = [
        ChargeSchedule(
            effective_from=date.fromisoformat(item["effective_from"]),
            **{k: Decimal(v) for k, v in item.items() if k not in ("effective_from", "note")},
        )
        for item in raw
    ]
    return sorted(schedules, key=lambda s: s.effective_from)


@lru_cache(maxsize=4)
def _default_schedules() -> tuple[ChargeSchedule, ...]:
    return tuple(load_schedules())


def schedule_on(
    on: date, schedules: list[ChargeSchedule] | tuple[ChargeSchedule, ...] | None = None
) -> ChargeSchedule:
    """The schedule in force on `on`; ValueError before the first one (no silent zero charges)."""
    schedules = _default_schedules() if schedules is None else schedules
    current = None
    for schedule in schedules:
        if schedule.effective_from <= on:
            current = schedule
    if current is None:
        raise ValueError(f"no charge schedule in force on {on.isoformat()}")
    return current


def order_charges(
    side: str,
    price: Decimal,
    quantity: int,
    on: date,
    schedules: list[ChargeSchedule] | tuple[ChargeSchedule, ...] | None = None,
) -> Charges:
    """Charges of one executed option order of `quantity` units at premium `price`, on day `on`."""
    if side not in (BUY, SELL):
        raise ValueError(f"side must be {BUY!r} or {SELL!r}")
    s = schedule_on(on, schedules)
    turnover = Decimal(price) * quantity
    pct = Decimal(100)
    exchange = turnover * s.exchange_txn_pct / pct
    ipft = turnover * s.ipft_pct / pct
    sebi = turnover * s.sebi_pct / pct
    brokerage = s.brokerage_per_order
    return Charges(
        brokerage=brokerage,
        stt=turnover * s.stt_sell_pct / pct if side == SELL else Decimal(0),
        exchange=exchange,
        ipft=ipft,
        sebi=sebi,
        stamp=turnover * s.stamp_buy_pct / pct if side == BUY else Decimal(0),
        gst=(brokerage + exchange + sebi + ipft) * s.gst_pct / pct,
    )


def round_trip_charges(
    buy_price: Decimal, sell_price: Decimal, quantity: int, on: date, schedules=None
) -> Charges:
    return order_charges(BUY, buy_price, quantity, on, schedules) + order_charges(
        SELL, sell_price, quantity, on, schedules
    )
