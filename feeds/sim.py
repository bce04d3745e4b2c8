"""A seeded, simulated NSE session that looks like an auction, not a random walk.

The date picks the session and the seed: the same date always gives the same ticks, in every
process, whatever the speed or the instruments asked for (each instrument draws from its own
random stream). What it simulates, for Nifty 50 and Nifty Bank:

* A day plan (`day_plan`), drawn from the seed: the previous close (chained from earlier simulated
  days, so yesterday's close is today's `close_prev`), an opening gap, an opening type (open drive,
  open test drive, open rejection reverse, open auction), an initial balance (09:15-10:15) and a day
  type (normal, non-trend, normal variation, trend, neutral) that decides whether and how far the
  range extends beyond the IB and where the day closes.
* The index path (`index_path`), one value a second on the 09:15-15:30 clock, built through the
  plan's waypoints: drives are bridges with little noise, balance phases are rotations between
  the bracket's edges (targets drawn towards the middle, so value forms there), reflected at the
  bracket so a normal day stays inside its IB. The index ticks about once a second.
* The near-month futures: index + cost of carry (time to the real expiry from `feeds.contracts`)
  + a small mean-reverting basis noise; a few trades a second (more at the open and the close and
  when price moves), in lot multiples, with cumulative volume, open interest and a best bid/ask.
* Options around the money (`option_strikes` each side of the at-the-money strike at the previous
  close, nearest expiry; CE and PE): Black-Scholes premiums on the simulated spot with a
  smile-and-skew implied volatility that rises when the market falls, the real time to expiry,
  a bid/ask around the premium, trades at the bid or the ask.

`SimSource` paces the session onto the wall clock (`speed` N = N x real time; speed >= 1000 runs
flat out). It starts at 09:15 of the given date whatever the wall clock says (a demo started at
11:00 on a trading day replays that day's session from its open), or at `start` when given.

Pure Python apart from asyncio: no Django, Redis or Channels; the pipeline owns all I/O.
"""

from __future__ import annotations

import asyncio
import itertools
import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from datetime import time as dtime
from functools import cache

from feeds import contracts, universe
from feeds.sources import CLOSED, OPEN, PRE_OPEN, TickSink
from feeds.ticks import IST, Tick

SESSION_SECONDS = 22_500  # 09:15:00 .. 15:30:00
IB_SECONDS = 3_600  # periods A and B
RISK_FREE = 0.065  # used for both the futures' carry and Black-Scholes
DIVIDEND_YIELD = 0.012
FLAT_OUT_SPEED = 1000.0
OPTION_STRIKES = 5
UNDERLYINGS = ("NIFTY", "BANKNIFTY")
# Simulated closes are chained from here; earlier dates start from the anchor level.
CHAIN_START = date(2023, 1, 2)

DAY_TYPES = ("normal", "non_trend", "normal_variation", "trend", "neutral")
DAY_TYPE_WEIGHTS = (0.1, 0.05, 0.4, 0.25, 0.2)
OPEN_TYPES = ("open_drive", "open_test_drive", "open_rejection_reverse", "open_auction")
# Opening type odds by day type: trend days mostly open with conviction, balance days rotate.
OPEN_TYPE_WEIGHTS = {
    "trend": (0.55, 0.3, 0.15, 0.0),
    "normal_variation": (0.2, 0.3, 0.2, 0.3),
    "normal": (0.05, 0.15, 0.2, 0.6),
    "non_trend": (0.0, 0.1, 0.1, 0.8),
    "neutral": (0.05, 0.15, 0.25, 0.55),
}
TICK = 0.05


@dataclass(frozen=True, slots=True)
class UnderlyingModel:
    """How one index behaves in the simulation (levels and rates, not contract facts)."""

    anchor: float  # long-run level the chained closes wander around
    adr_pct: float  # average daily range as a fraction of price
    noise_pct: float  # one-second noise as a fraction of price
    iv_low: float
    iv_high: float
    future_rate: float  # trades per second in the near-month future, on average
    option_rate: float  # trades per second in an at-the-money option
    fut_oi_lots: int


MODELS = {
    "NIFTY": UnderlyingModel(25_000.0, 0.0095, 4.0e-5, 0.10, 0.16, 3.0, 0.8, 180_000),
    "BANKNIFTY": UnderlyingModel(56_000.0, 0.0120, 5.0e-5, 0.12, 0.19, 2.5, 0.6, 70_000),
}


@dataclass(frozen=True, slots=True)
class Waypoint:
    t: int  # session second the path reaches `x`
    x: float  # offset from the open, in the day's direction
    lo: float  # bracket the path is reflected into on the way here
    hi: float
    noise: float = 1.0  # drives are calmer than rotations


@dataclass(frozen=True, slots=True)
class DayPlan:
    symbol: str
    day: date
    prev_close: float
    open: float
    close: float
    day_type: str
    open_type: str
    direction: int  # +1 up, -1 down: the side the day's initiative is on
    ib_range: float  # planned IBR (points)
    extension: float  # planned one-sided extension beyond the IB (points; neutral: the larger side)
    iv: float  # at-the-money implied volatility at the open
    waypoints: tuple[Waypoint, ...]

    def price(self, x: float) -> float:
        return self.open + self.direction * x


def _seeded(*parts: object) -> random.Random:
    # String seeds hash with SHA-512 inside `random`: stable across processes and PYTHONHASHSEED.
    return random.Random(":".join(str(p) for p in parts))


def _anchor(symbol: str, d: date) -> float:
    days = (d - CHAIN_START).days
    wave = 0.12 * math.sin(2 * math.pi * days / 900) + 0.05 * math.sin(2 * math.pi * days / 173)
    return MODELS[symbol].anchor * (1 + wave)


def round_tick(p: float) -> float:
    return round(round(p / TICK) * TICK, 2)


def _prev_close(symbol: str, d: date) -> float:
    if d <= CHAIN_START:
        return round_tick(_anchor(symbol, d))
    # Walk forward from the chain start, caching every day, so no recursion depth is involved.
    prev = contracts.previous_trading_day(d)
    missing = []
    while prev >= CHAIN_START and (symbol, prev) not in _PLAN_CACHE:
        missing.append(prev)
        prev = contracts.previous_trading_day(prev)
    for day in reversed(missing):
        day_plan(symbol, day)
    return day_plan(symbol, contracts.previous_trading_day(d)).close


_PLAN_CACHE: dict[tuple[str, date], DayPlan] = {}


def day_plan(symbol: str, d: date) -> DayPlan:
    """The day's auction plan for an underlying (deterministic for the date)."""
    symbol = contracts.symbol_of(symbol)
    cached = _PLAN_CACHE.get((symbol, d))
    if cached is not None:
        return cached
    plan = _make_plan(symbol, d, _prev_close(symbol, d))
    _PLAN_CACHE[(symbol, d)] = plan
    return plan


def _make_plan(symbol: str, d: date, prev_close: float) -> DayPlan:
    model = MODELS[symbol]
    rng = _seeded("plan", d.isoformat(), symbol)
    # The two indices share the day's mood most of the time.
    mood = _seeded("mood", d.isoformat())
    direction = 1 if mood.random() < 0.5 else -1
    if rng.random() < 0.2:
        direction = -direction
    day_type = rng.choices(DAY_TYPES, DAY_TYPE_WEIGHTS)[0]
    open_type = rng.choices(OPEN_TYPES, OPEN_TYPE_WEIGHTS[day_type])[0]
    adr = prev_close * model.adr_pct * math.exp(rng.gauss(0, 0.3))
    gap = prev_close * rng.gauss(0, 0.0035) + 0.03 * (_anchor(symbol, d) - prev_close)
    open_ = round_tick(prev_close + gap)
    ibr_frac = {
        "non_trend": (0.25, 0.4),
        "normal": (0.7, 1.0),
        "normal_variation": (0.45, 0.7),
        "trend": (0.3, 0.5),
        "neutral": (0.5, 0.75),
    }[day_type]
    ibr = adr * rng.uniform(*ibr_frac)
    ext = {
        "non_trend": 0.0,
        "normal": 0.0,
        "normal_variation": ibr * rng.uniform(0.4, 1.5),
        "trend": ibr * rng.uniform(1.6, 3.2),
        "neutral": ibr * rng.uniform(0.15, 0.5),
    }[day_type]
    waypoints, close_x = _waypoints(rng, day_type, open_type, ibr, ext)
    iv = rng.uniform(model.iv_low, model.iv_high)
    plan = DayPlan(
        symbol=symbol,
        day=d,
        prev_close=prev_close,
        open=open_,
        close=0.0,
        day_type=day_type,
        open_type=open_type,
        direction=direction,
        ib_range=ibr,
        extension=ext,
        iv=iv,
        waypoints=tuple(waypoints),
    )
    # The close is where the path ends: the last waypoint.
    return replace(plan, close=round_tick(plan.price(close_x)))


def _rotate(
    rng: random.Random, out: list[Waypoint], t0: int, t1: int, lo: float, hi: float, edge_p: float = 0.2
) -> None:
    """Rotations inside [lo, hi] from t0 to just before t1: legs of 10-40 minutes, each heading to
    a level drawn towards the middle (value forms there) or, now and then, to probe an edge."""
    t = t0
    while t1 - t > 1500:
        t += int(rng.uniform(600, 2400))
        if t > t1 - 600:
            break
        frac = rng.choice((0.04, 0.96)) if rng.random() < edge_p else rng.triangular(0.15, 0.85, 0.5)
        out.append(Waypoint(t, lo + frac * (hi - lo), lo, hi))


def _waypoints(
    rng: random.Random, day_type: str, open_type: str, ibr: float, ext: float
) -> tuple[list[Waypoint], float]:
    """The day's path in x-space (points from the open, positive in the day's direction)."""
    wps: list[Waypoint] = []
    u = rng.uniform
    # --- Initial balance: periods A (0-1800 s) and B (1800-3600 s) ---------------------------
    if open_type == "open_drive":
        xl = -u(0.0, 0.06) * ibr
        xh = xl + ibr
        wps += [
            Waypoint(int(u(20, 90)), xl, xl, xh, 0.5),
            Waypoint(1800, xl + u(0.55, 0.75) * ibr, xl, xh, 0.6),
        ]
    elif open_type == "open_test_drive":
        xl = -u(0.12, 0.25) * ibr
        xh = xl + ibr
        wps += [
            Waypoint(int(u(180, 600)), xl, xl, xh, 0.7),
            Waypoint(1800, xl + u(0.45, 0.65) * ibr, xl, xh, 0.6),
        ]
    elif open_type == "open_rejection_reverse":
        xl = -u(0.3, 0.5) * ibr
        xh = xl + ibr
        wps += [
            Waypoint(int(u(400, 1000)), xl, xl, xh, 0.8),
            Waypoint(1800, u(0.1, 0.3) * ibr, xl, xh, 0.7),
        ]
    else:  # open auction: two-sided rotation around the open
        xl = -u(0.35, 0.65) * ibr
        xh = xl + ibr
        first, second = (xh, xl) if rng.random() < 0.5 else (xl, xh)
        wps += [
            Waypoint(int(u(200, 600)), u(0.3, 0.6) * first, xl, xh),
            Waypoint(int(u(700, 1300)), u(0.3, 0.6) * second, xl, xh),
            Waypoint(int(u(1400, 2200)), first, xl, xh),
        ]
    mid = (xl + xh) / 2
    if open_type == "open_auction":
        wps.append(Waypoint(int(u(2400, 3200)), second, xl, xh))
        wps.append(Waypoint(IB_SECONDS, mid + rng.gauss(0, 0.15 * ibr), xl, xh))
    else:
        wps.append(Waypoint(int(u(2300, 3300)), xh, xl, xh, 0.8))
        wps.append(Waypoint(IB_SECONDS, xh - u(0.1, 0.4) * ibr, xl, xh))
    end = SESSION_SECONDS - 1
    # --- After the IB, by day type ------------------------------------------------------------
    if day_type in ("normal", "non_trend"):
        _rotate(rng, wps, IB_SECONDS, end, xl, xh)
        close_x = min(max(mid + rng.gauss(0, 0.2 * ibr), xl + 0.1 * ibr), xh - 0.1 * ibr)
        wps.append(Waypoint(end, close_x, xl, xh))
    elif day_type == "normal_variation":
        t_ext = int(u(5400, 14400))
        _rotate(rng, wps, IB_SECONDS, t_ext - 900, xl, xh)
        wps.append(Waypoint(t_ext - 300, xh - u(0.0, 0.1) * ibr, xl, xh))
        top = xh + ext
        t_top = t_ext + int(u(900, 2700))
        wps.append(Waypoint(t_top, top, mid, top, 0.6))
        lo2 = max(xl, top - u(0.6, 1.0) * max(ext, 0.5 * ibr))
        _rotate(rng, wps, t_top, end, lo2, top, edge_p=0.1)
        close_x = lo2 + u(0.3, 0.8) * (top - lo2)
        wps.append(Waypoint(end, close_x, lo2, top))
    elif day_type == "trend":
        t_start = int(u(3900, 5400))
        wps.append(Waypoint(t_start, xh - u(0.0, 0.15) * ibr, xl, xh, 0.7))
        legs = rng.randint(3, 5)
        t_top = int(u(19_800, 22_000))
        step = ext / legs
        span = (t_top - t_start) / legs
        floor = xl
        for k in range(1, legs + 1):
            high = xh + k * step
            t_high = int(t_start + k * span)
            wps.append(Waypoint(t_high, high, floor, high, 0.6))
            if k < legs:
                # One-timeframing: each pullback holds above the previous leg's high.
                floor = high - step - 0.05 * ibr
                pullback = high - u(0.2, 0.45) * step
                wps.append(Waypoint(int(t_high + span * u(0.3, 0.5)), pullback, floor, high))
        top = xh + ext
        close_x = top - u(0.03, 0.15) * (top - xl)
        wps.append(Waypoint(end, close_x, xl, top, 0.7))
    else:  # neutral: extension on both sides, then the close decides centre or extreme
        up_first = rng.random() < 0.5
        e1, e2 = ext, ext * u(0.4, 1.0)
        ext1, ext2 = (xh + e1, xl - e2) if up_first else (xl - e1, xh + e2)
        t1 = int(u(5400, 9000))
        t2 = t1 + int(u(3600, 7200))
        lo, hi = min(ext1, xl), max(ext1, xh)
        _rotate(rng, wps, IB_SECONDS, t1 - 1200, xl, xh)
        wps.append(Waypoint(t1, ext1, lo, hi, 0.7))
        wps.append(Waypoint(int((t1 + t2) / 2), mid + rng.gauss(0, 0.1 * ibr), lo, hi))
        lo, hi = min(ext1, ext2), max(ext1, ext2)
        wps.append(Waypoint(t2, ext2, lo, hi, 0.7))
        if rng.random() < 0.6:  # neutral-centre
            _rotate(rng, wps, t2, end, xl, xh)
            close_x = mid + rng.gauss(0, 0.12 * ibr)
        else:  # neutral-extreme, on the second extension's side
            close_x = ext2 - (ext2 - mid) * u(0.03, 0.2)
        wps.append(Waypoint(end, close_x, lo, hi))
    wps.sort(key=lambda w: w.t)
    return wps, close_x


@cache
def index_path(symbol: str, d: date) -> tuple[float, ...]:
    """The simulated index, one value a second from 09:15:00 (SESSION_SECONDS values)."""
    plan = day_plan(symbol, d)
    rng = _seeded("path", d.isoformat(), plan.symbol)
    sigma = plan.prev_close * MODELS[plan.symbol].noise_pct
    slack = 0.02 * plan.ib_range
    xs = [0.0] * SESSION_SECONDS
    t0, x0 = 0, 0.0
    gauss = rng.gauss
    for wp in plan.waypoints:
        n = wp.t - t0
        if n <= 0:
            continue
        s = sigma * wp.noise
        walk = [0.0] * (n + 1)
        acc = 0.0
        for k in range(1, n + 1):
            acc += gauss(0.0, s)
            walk[k] = acc
        lo, hi = wp.lo - slack, wp.hi + slack
        drift = (wp.x - x0) / n
        end_walk = walk[n]
        for k in range(1, n + 1):
            # A Brownian bridge: noise that returns to zero at the waypoint.
            x = x0 + drift * k + walk[k] - end_walk * k / n
            if x > hi:
                x = max(2 * hi - x, lo)
            elif x < lo:
                x = min(2 * lo - x, hi)
            xs[t0 + k] = x
        t0, x0 = wp.t, wp.x
    return tuple(round_tick(plan.price(x)) for x in xs)


# --- Options -------------------------------------------------------------------------------------
def _norm_cdf(x: float) -> float:
    return 0.5 * (1.0 + math.erf(x / math.sqrt(2.0)))


def black_scholes(
    spot: float,
    strike: float,
    years: float,
    iv: float,
    option_type: str,
    r: float = RISK_FREE,
    q: float = DIVIDEND_YIELD,
) -> float:
    """European option value (continuous dividend yield); intrinsic value at or past expiry."""
    if years <= 0 or iv <= 0:
        return max(spot - strike, 0.0) if option_type == "CE" else max(strike - spot, 0.0)
    sqrt_t = math.sqrt(years)
    d1 = (math.log(spot / strike) + (r - q + 0.5 * iv * iv) * years) / (iv * sqrt_t)
    d2 = d1 - iv * sqrt_t
    disc_q, disc_r = math.exp(-q * years), math.exp(-r * years)
    if option_type == "CE":
        return spot * disc_q * _norm_cdf(d1) - strike * disc_r * _norm_cdf(d2)
    return strike * disc_r * _norm_cdf(-d2) - spot * disc_q * _norm_cdf(-d1)


def implied_vol(atm_iv: float, open_: float, spot: float, strike: float) -> float:
    """Smile with a put skew, lifted when the market has fallen since the open."""
    x = math.log(strike / spot)
    level = atm_iv * (1.0 - 2.5 * (spot / open_ - 1.0))
    return max(level * (1.0 - 1.5 * x + 25.0 * x * x), 0.03)


def option_premium(
    plan: DayPlan, spot: float, strike: float, expiry: date, option_type: str, ts_ms: int
) -> float:
    years = contracts.time_to_expiry_years(ts_ms, expiry)
    iv = implied_vol(plan.iv, plan.open, spot, strike)
    return max(round_tick(black_scholes(spot, strike, years, iv, option_type)), TICK)


def carry_basis(spot: float, future_expiry: date, ts_ms: int) -> float:
    return spot * (RISK_FREE - DIVIDEND_YIELD) * contracts.time_to_expiry_years(ts_ms, future_expiry)


# --- Tick emitters ------------------------------------------------------------------------------
def _activity(s: int) -> float:
    """Intraday U-shape of trading activity: busy after the open and into the close."""
    return 0.6 + 1.2 * math.exp(-s / 1800.0) + 0.8 * math.exp(-(SESSION_SECONDS - s) / 1800.0)


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, p = math.exp(-lam), 0, rng.random()
    while p > threshold:
        k += 1
        p *= rng.random()
    return k


def _interp(path: tuple[float, ...], s: int, frac: float) -> float:
    nxt = path[s + 1] if s + 1 < len(path) else path[s]
    return path[s] + (nxt - path[s]) * frac


class _Emitter:
    """Produces one instrument's ticks second by second, from its own seeded random stream."""

    def __init__(self, key: str, day: date, plan: DayPlan, path: tuple[float, ...], open_ms: int) -> None:
        self.key = key
        self.plan = plan
        self.path = path
        self.open_ms = open_ms
        self.rng = _seeded("ticks", day.isoformat(), key)

    def emit(self, s: int, out: list[Tick]) -> None:
        raise NotImplementedError


class _IndexEmitter(_Emitter):
    def emit(self, s: int, out: list[Tick]) -> None:
        ts = self.open_ms + s * 1000 + int(self.rng.random() * 250)
        out.append(Tick(self.key, ts, self.path[s], close_prev=self.plan.prev_close))


class _TradedEmitter(_Emitter):
    """Shared by futures and options: trade arrivals, lots, volume, OI, book."""

    rate = 1.0
    spread_ticks = 2

    def __init__(self, key: str, day: date, plan: DayPlan, path: tuple[float, ...], open_ms: int, row: dict):
        super().__init__(key, day, plan, path, open_ms)
        self.row = row
        self.lot = int(row["lot_size"])
        self.expiry = universe.expiry_date(row)
        self.volume = 0
        self.oi = 0.0
        self.close_prev = 0.0
        self.sigma = plan.prev_close * MODELS[plan.symbol].noise_pct

    def price(self, spot: float, ts: int) -> float:
        raise NotImplementedError

    def intensity(self, spot: float) -> float:
        return 1.0

    def emit(self, s: int, out: list[Tick]) -> None:
        rng = self.rng
        move = abs(self.path[min(s + 1, len(self.path) - 1)] - self.path[s]) / self.sigma
        lam = self.rate * _activity(s) * (0.6 + 0.4 * move) * self.intensity(self.path[s])
        n = _poisson(rng, lam)
        if not n:
            return
        offsets = sorted(rng.randrange(1000) for _ in range(n))
        for ms in offsets:
            ts = self.open_ms + s * 1000 + ms
            fair = self.price(_interp(self.path, s, ms / 1000.0), ts)
            spread = TICK * (1 + rng.randrange(self.spread_ticks))
            bid = max(round_tick(fair - spread / 2), TICK)
            ask = round_tick(bid + spread)
            ltp = ask if rng.random() < 0.5 else bid
            lots = 1 + int(rng.expovariate(0.35))
            if rng.random() < 0.02:
                lots *= rng.randint(10, 40)  # an occasional block
            qty = lots * self.lot
            self.volume += qty
            # Open interest moves by a share of each trade and drifts up as positions build.
            self.oi = max(self.oi + qty * (rng.random() - 0.45), 0.0)
            out.append(
                Tick(
                    self.key,
                    ts,
                    ltp,
                    ltq=qty,
                    volume=self.volume,
                    oi=float(round(self.oi / self.lot) * self.lot),
                    bid=bid,
                    bid_qty=self.lot * (1 + rng.randrange(40)),
                    ask=ask,
                    ask_qty=self.lot * (1 + rng.randrange(40)),
                    close_prev=self.close_prev,
                )
            )


class _FutureEmitter(_TradedEmitter):
    spread_ticks = 4

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        model = MODELS[self.plan.symbol]
        self.rate = model.future_rate
        self.oi = float(model.fut_oi_lots * self.lot) * self.rng.uniform(0.8, 1.2)
        self.noise = 0.0
        self.noise_s = -1
        prev_ms = self.open_ms - 86_400_000 + SESSION_SECONDS * 1000
        self.close_prev = round_tick(
            self.plan.prev_close + carry_basis(self.plan.prev_close, self.expiry, prev_ms)
        )

    def price(self, spot: float, ts: int) -> float:
        s = (ts - self.open_ms) // 1000
        if s != self.noise_s:
            # Mean-reverting basis noise, stepped once per simulated second.
            self.noise += -self.noise / 300.0 + self.rng.gauss(0, 0.02 * self.sigma)
            self.noise_s = s
        return spot + carry_basis(spot, self.expiry, ts) + self.noise


class _OptionEmitter(_TradedEmitter):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.strike = float(self.row["strike_price"])
        self.option_type = self.row["instrument_type"]
        self.step = contracts.strike_step(self.plan.symbol)
        self.rate = MODELS[self.plan.symbol].option_rate
        self.oi = float(self.lot * self.rng.randint(20_000, 120_000))
        prev_ms = self.open_ms - 86_400_000 + SESSION_SECONDS * 1000
        self.close_prev = option_premium(
            self.plan, self.plan.prev_close, self.strike, self.expiry, self.option_type, prev_ms
        )

    def intensity(self, spot: float) -> float:
        away = (self.strike - spot) / (3 * self.step)
        return 0.15 + 1.0 / (1.0 + away * away)

    def price(self, spot: float, ts: int) -> float:
        return option_premium(self.plan, spot, self.strike, self.expiry, self.option_type, ts)


class SimSession:
    """One simulated trading day: its plans, paths, instrument master and tick batches."""

    def __init__(
        self, day: date, instruments: list[str] | None = None, option_strikes: int = OPTION_STRIKES
    ) -> None:
        if not contracts.is_trading_day(day):
            raise ValueError(f"{day.isoformat()} is not an NSE trading day (weekend or holiday)")
        self.day = day
        self.plans = {symbol: day_plan(symbol, day) for symbol in UNDERLYINGS}
        self.master = universe.generate_master(day, spot={s: p.prev_close for s, p in self.plans.items()})
        self.rows = universe.by_key(self.master)
        self.open_ms = int(contracts.session_bounds(day)[0].timestamp() * 1000)
        self.default_keys = self._default_keys(option_strikes)
        if instruments:
            unknown = [k for k in instruments if k not in self.rows]
            if unknown:
                raise ValueError(f"unknown instrument(s) for the simulated {day}: {', '.join(unknown)}")
            self.keys = list(dict.fromkeys(instruments))
        else:
            self.keys = self.default_keys

    def _default_keys(self, option_strikes: int) -> list[str]:
        keys: list[str] = []
        for symbol in UNDERLYINGS:
            info = contracts.underlying_info(symbol)
            keys.append(info.index_key)
            keys.append(universe.near_future(self.master, symbol)["instrument_key"])
        for symbol in UNDERLYINGS:
            expiry = contracts.nearest_expiry(symbol, self.day)
            atm = universe.atm_strike(symbol, self.plans[symbol].prev_close)
            step = contracts.strike_step(symbol)
            wanted = {atm + i * step for i in range(-option_strikes, option_strikes + 1)}
            for row in self.master:
                if (
                    row["underlying_symbol"] == symbol
                    and row["instrument_type"] in ("CE", "PE")
                    and row["strike_price"] in wanted
                    and universe.expiry_date(row) == expiry
                ):
                    keys.append(row["instrument_key"])
        return keys

    def snapshot_keys(self) -> list[str]:
        """The indices and their near-month futures (what the dashboard shows)."""
        out = []
        for symbol in UNDERLYINGS:
            out.append(contracts.underlying_info(symbol).index_key)
            out.append(universe.near_future(self.master, symbol)["instrument_key"])
        return out

    def names(self) -> dict[str, str]:
        return {
            key: row["name"] if row["instrument_type"] == "INDEX" else row["trading_symbol"]
            for key, row in self.rows.items()
        }

    def _emitter(self, key: str) -> _Emitter:
        row = self.rows[key]
        symbol = row["underlying_symbol"]
        plan = self.plans[symbol]
        path = index_path(symbol, self.day)
        kind = row["instrument_type"]
        if kind == "INDEX":
            return _IndexEmitter(key, self.day, plan, path, self.open_ms)
        if kind == "FUT":
            return _FutureEmitter(key, self.day, plan, path, self.open_ms, row)
        return _OptionEmitter(key, self.day, plan, path, self.open_ms, row)

    def batches(self, start_s: int = 0, end_s: int = SESSION_SECONDS) -> Iterator[tuple[int, list[Tick]]]:
        """(session second, ticks in that second in time order) from `start_s` to `end_s`.

        Seconds before `start_s` are still simulated (and discarded) so cumulative volume and open
        interest are what they would have been."""
        emitters = [self._emitter(k) for k in self.keys]
        for s in range(0, min(end_s, SESSION_SECONDS)):
            out: list[Tick] = []
            for e in emitters:
                e.emit(s, out)
            if s < start_s:
                continue
            out.sort(key=lambda t: t.ts_ms)
            yield s, out

    def ticks(self, start_s: int = 0, end_s: int = SESSION_SECONDS) -> Iterator[Tick]:
        for _, batch in self.batches(start_s, end_s):
            yield from batch


def session_second(day: date, at: dtime) -> int:
    """Seconds from 09:15 on `day` to `at`, clamped to the session."""
    delta = datetime.combine(day, at, IST) - contracts.session_bounds(day)[0]
    return min(max(int(delta / timedelta(seconds=1)), 0), SESSION_SECONDS)


def default_session_day(now: datetime | None = None) -> date:
    """Today (IST) when it is a trading day, else the last trading day before it."""
    today = (now or datetime.now(IST)).astimezone(IST).date()
    return contracts.trading_day_on_or_before(today)


class SimSource:
    """`feeds.sources.TickSource` over a `SimSession`, paced by `speed`."""

    name = "sim"

    def __init__(
        self,
        date: date | None = None,
        speed: float = 1.0,
        instruments: list[str] | None = None,
        *,
        start: dtime | None = None,
        end: dtime | None = None,
        option_strikes: int = OPTION_STRIKES,
    ) -> None:
        self.day = date or default_session_day()
        self.speed = float(speed)
        self.session = SimSession(self.day, instruments, option_strikes)
        self.instruments = self.session.keys
        self.start_s = session_second(self.day, start) if start else 0
        self.end_s = session_second(self.day, end) if end else SESSION_SECONDS
        if self.start_s >= SESSION_SECONDS:
            raise ValueError("the start is at or after the 15:30 close: nothing to simulate")
        if self.end_s <= self.start_s:
            raise ValueError("the session slice is empty (end must be after start)")
        self.ticks_emitted = 0

    def snapshot_keys(self) -> list[str]:
        return [k for k in self.session.snapshot_keys() if k in self.instruments]

    def names(self) -> dict[str, str]:
        return self.session.names()

    async def run(self, sink: TickSink) -> None:
        sink.set_status(connected=True, session_state=PRE_OPEN, alert="")
        paced = 0 < self.speed < FLAT_OUT_SPEED
        drain = getattr(sink, "drain", None)
        opened = False
        batches = self.session.batches(self.start_s, self.end_s)
        # Simulating the seconds before a late `start` takes a while: do it off the loop.
        first = await asyncio.to_thread(next, batches, None)
        if first is None:
            sink.set_status(session_state=CLOSED)
            return
        wall0 = time.monotonic()
        for s, batch in itertools.chain([first], batches):
            if paced:
                delay = wall0 + (s - self.start_s) / self.speed - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    await asyncio.sleep(0)
            else:
                await asyncio.sleep(0)  # let the pipeline's flush and snapshot tasks run
            if not opened:
                sink.set_status(session_state=OPEN)
                opened = True
            if batch:
                sink.put(batch)
                self.ticks_emitted += len(batch)
            if drain is not None:
                await drain()
        sink.set_status(session_state=CLOSED)
