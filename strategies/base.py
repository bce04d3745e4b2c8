"""The strategy interface: typed parameters declared on the class, the candle and signal values, and
the `Strategy` base class every strategy in `strategies.library` derives from.

A strategy receives ticks, 1-minute candles and (when it declares that it needs it) the auction
state, keeps its own state between calls and emits `Signal`s on the underlying. It never places
orders, never knows whether it runs live, in a backtest or in a notebook, and never imports Django,
Celery or Redis: the same class runs in the live worker, the backtest runner and the benchmark.

Parameters are declared once, as `Param` class attributes (freqtrade's IStrategy style); that one
declaration drives validation (`validate_params`), the admin and backtest forms (`param_schema`)
and parameter sweeps.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar, NamedTuple
from zoneinfo import ZoneInfo

IST = ZoneInfo("Asia/Kolkata")
TICKS_PER_POINT = 20  # index and option tick 0.05: prices compare as round(p * 20)

PARAM_TYPES = ("int", "float", "decimal", "bool", "str", "time", "choice")

LONG = "long"
SHORT = "short"
ENTRY = "entry"
EXIT = "exit"


def to_ticks(price: float | Decimal) -> int:
    """A price on the integer tick grid (tick 0.05); every decision compares these, never floats."""
    return round(price * TICKS_PER_POINT)


def from_ticks(ticks: int) -> float:
    return ticks / TICKS_PER_POINT


@dataclass(frozen=True, slots=True)
class Param:
    """One tunable parameter of a strategy: its type, default, bounds (inclusive) or choices, help."""

    type: str
    default: Any
    min: Any = None
    max: Any = None
    choices: tuple = ()
    help: str = ""

    def __post_init__(self) -> None:
        if self.type not in PARAM_TYPES:
            raise ValueError(f"unknown parameter type {self.type!r}; one of {', '.join(PARAM_TYPES)}")
        if self.type == "choice" and not self.choices:
            raise ValueError("a choice parameter needs choices")

    def coerce(self, raw: Any) -> Any:
        """The value of `raw` (a typed value, or a string from a form, the CLI or JSON) in this
        parameter's type, bounds checked. Raises ValueError with a readable message."""
        value = _coerce(self.type, raw)
        if self.type == "choice":
            if value not in self.choices:
                raise ValueError(f"must be one of {', '.join(map(str, self.choices))}")
            return value
        if self.min is not None and value < self.min:
            raise ValueError(f"must be ≥ {_show(self.min)}")
        if self.max is not None and value > self.max:
            raise ValueError(f"must be ≤ {_show(self.max)}")
        return value

    def as_dict(self, name: str) -> dict[str, Any]:
        return {
            "name": name,
            "type": self.type,
            "default": _show(self.default),
            "min": _show(self.min),
            "max": _show(self.max),
            "choices": list(self.choices),
            "help": self.help,
        }


def _show(value: Any) -> Any:
    """A JSON-friendly form of a parameter value (times as HH:MM, Decimals as strings)."""
    if isinstance(value, time):
        return value.strftime("%H:%M")
    if isinstance(value, Decimal):
        return str(value)
    return value


def _coerce(kind: str, raw: Any) -> Any:
    if kind == "bool":
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("1", "true", "yes", "on"):
            return True
        if text in ("0", "false", "no", "off", ""):
            return False
        raise ValueError("must be true or false")
    if kind == "int":
        if isinstance(raw, bool):
            raise ValueError("must be a whole number")
        if isinstance(raw, int):
            return raw
        if isinstance(raw, float) and raw.is_integer():
            return int(raw)
        try:
            return int(str(raw).strip())
        except ValueError:
            raise ValueError("must be a whole number") from None
    if kind == "float":
        if isinstance(raw, bool):
            raise ValueError("must be a number")
        try:
            value = float(str(raw).strip()) if not isinstance(raw, int | float) else float(raw)
        except ValueError:
            raise ValueError("must be a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ValueError("must be a finite number")
        return value
    if kind == "decimal":
        try:
            value = raw if isinstance(raw, Decimal) else Decimal(str(raw).strip())
        except InvalidOperation:
            raise ValueError("must be a decimal number") from None
        if not value.is_finite():
            raise ValueError("must be a finite number")
        return value
    if kind == "time":
        if isinstance(raw, time):
            return raw
        try:
            return time.fromisoformat(str(raw).strip())
        except ValueError:
            raise ValueError("must be a time HH:MM") from None
    # str and choice
    if not isinstance(raw, str | int | float):
        raise ValueError("must be text")
    return str(raw).strip()


class Candle(NamedTuple):
    """A 1-minute candle of the underlying, labelled by its START time (ms since the epoch).

    Immutable and without a __dict__ like the frozen dataclasses, but a NamedTuple: one is made per
    candle in the backtest's hot loop, and a tuple is several times cheaper to create."""

    ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int = 0


@dataclass(frozen=True, slots=True)
class Signal:
    """A decision on the underlying: enter or exit long/short, at `price` (the underlying price the
    decision refers to), with the reference levels, a readable reason and the facts that caused it."""

    strategy: str
    instrument_key: str
    ts_ms: int
    side: str  # LONG | SHORT: the side of the position on the underlying (also for its exit)
    kind: str  # ENTRY | EXIT
    price: float
    entry: float | None = None
    stop: float | None = None
    target: float | None = None
    reason: str = ""
    facts: dict[str, Any] = field(default_factory=dict)

    @property
    def time(self) -> datetime:
        return datetime.fromtimestamp(self.ts_ms / 1000, tz=IST)


def session_date_of(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz=IST).date()


def minute_of_day(ts_ms: int) -> int:
    """Minutes since 00:00 IST (IST has no DST: a fixed +05:30 offset)."""
    return ((ts_ms // 60_000) + 330) % 1440


def minutes(t: time) -> int:
    return t.hour * 60 + t.minute


SESSION_OPEN_MINUTE = 9 * 60 + 15


class Strategy:
    """Base class. Subclasses set `slug`, `title`, `description`, declare `Param`s as class
    attributes, declare what they need from the auction engine in `needs`, and override the hooks.

    `needs`: an empty set means the runner may skip the auction engine entirely (the fast path);
    {"auction"} means `state` is a full `AuctionState` on every call. `session_done`: set it when
    nothing more can happen today, and the caller stops feeding the strategy until the next session.
    """

    slug: ClassVar[str] = ""
    title: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs: ClassVar[frozenset[str]] = frozenset({"auction"})
    params_spec: ClassVar[dict[str, Param]] = {}
    # True when the strategy wants no more candles or ticks this session (no position, no entry
    # possible): the runner and the live worker may stop calling it until the next session.
    session_done: bool = False

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec: dict[str, Param] = {}
        for klass in reversed(cls.__mro__):
            for name, value in vars(klass).items():
                if isinstance(value, Param):
                    spec[name] = value
        cls.params_spec = spec

    def __init__(self, instrument_key: str, params: Mapping[str, Any] | None = None) -> None:
        clean, errors = self.validate_params(dict(params or {}))
        if errors:
            raise ValueError("; ".join(f"{name}: {message}" for name, message in errors.items()))
        self.instrument_key = instrument_key
        self.params: dict[str, Any] = clean
        for name, value in clean.items():
            # Instance attributes shadow the Param declarations, so hooks read self.row_size.
            setattr(self, name, value)
        self.session_date: date | None = None

    @classmethod
    def validate_params(cls, raw: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
        """Clean values for every declared parameter (defaults for the missing ones) and the errors,
        by parameter name: unknown names, wrong types, out of bounds."""
        clean: dict[str, Any] = {}
        errors: dict[str, str] = {}
        for name in raw:
            if name not in cls.params_spec:
                errors[name] = f"unknown parameter for {cls.slug or cls.__name__}"
        for name, param in cls.params_spec.items():
            if name not in raw or raw[name] is None:
                clean[name] = param.default
                continue
            try:
                clean[name] = param.coerce(raw[name])
            except ValueError as exc:
                errors[name] = str(exc)
        return clean, errors

    @classmethod
    def param_schema(cls) -> list[dict[str, Any]]:
        """The parameter declaration as JSON-friendly dicts, in declaration order, for forms."""
        return [param.as_dict(name) for name, param in cls.params_spec.items()]

    # Hooks. The runner calls on_session_start before a session's first candle, then on_candle for
    # every completed 1-minute candle (after the engine has seen it), on_tick for ticks when ticks
    # drive it, and on_session_end after the last candle; each returns the signals it emits.
    def on_session_start(self, session_date: date, state: Any = None) -> list[Signal]:
        self.session_date = session_date
        self.session_done = False
        return []

    def on_candle(self, candle: Candle, state: Any = None) -> list[Signal]:
        return []

    def on_tick(self, tick: Any, state: Any = None) -> list[Signal]:
        return []

    def on_session_end(self, last: Candle | None, state: Any = None) -> list[Signal]:
        return []

    def signal(self, ts_ms: int, side: str, kind: str, price: float, **rest: Any) -> Signal:
        return Signal(self.slug, self.instrument_key, ts_ms, side, kind, price, **rest)
