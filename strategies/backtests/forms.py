"""The backtest and sweep forms: strategy, its parameters (one field per declared parameter, built by
`strategies.forms.parameter_field` from `param_schema()`), instruments, date range, fill model,
costs, capital; a sweep form adds, per parameter, the list of values to try.

The strategy class's `validate_params` has the last word on parameters, as in the admin. A form only
validates: starting a run goes through `strategies.backtests.services`.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms

from strategies.backtests.models import DataSource, FillModel
from strategies.backtests.services import MAX_SWEEP_RUNS
from strategies.forms import PARAM_PREFIX, InstrumentsField, parameter_field

SWEEP_PREFIX = "sweep__"
DEFAULT_INSTRUMENT = "NSE_INDEX|Nifty 50"


def strategy_choices() -> list[tuple[str, str]]:
    from strategies.library import REGISTRY

    return [(slug, cls.title or slug) for slug, cls in sorted(REGISTRY.items())]


class BacktestForm(forms.Form):
    """Subclasses made by `backtest_form` add the parameter fields of one strategy class."""

    strategy_cls: type | None = None
    sweep_mode = False

    strategy = forms.ChoiceField(choices=strategy_choices)
    instruments = InstrumentsField(
        initial=[DEFAULT_INSTRUMENT], help_text="One instrument key per line, e.g. NSE_INDEX|Nifty 50."
    )
    start = forms.DateField(label="From", widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(label="To", widget=forms.DateInput(attrs={"type": "date"}))
    source = forms.ChoiceField(
        label="Data",
        choices=DataSource.choices,
        initial=DataSource.CANDLES,
        help_text="Ticks: each candle's recorded ticks reach the engine and the strategy before it closes.",
    )
    fill = forms.ChoiceField(
        choices=FillModel.choices,
        initial=FillModel.UNDERLYING,
        help_text="Modelled premiums: Black-Scholes at the IV below on the real expiry calendar. "
        "Recorded: the contracts' 1-minute candles in the history store.",
    )
    costs = forms.BooleanField(
        required=False, initial=True, help_text="Deduct brokerage, taxes and fees (option fills)."
    )
    capital = forms.DecimalField(min_value=Decimal("1"), max_digits=16, decimal_places=2, initial=500000)
    lots = forms.IntegerField(min_value=1, max_value=100, initial=1, help_text="Option lots per signal.")
    iv = forms.FloatField(
        label="IV", min_value=0.01, max_value=3.0, initial=0.14, help_text="e.g. 0.14 for 14%."
    )
    strike_offset = forms.IntegerField(
        min_value=-10, max_value=10, initial=0, help_text="0 ATM, +n ITM, -n OTM (listed strikes)."
    )
    slippage = forms.DecimalField(
        min_value=Decimal("0"),
        max_digits=8,
        decimal_places=2,
        initial=Decimal("0.05"),
        help_text="₹ per unit.",
    )

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [name[len(PARAM_PREFIX) :] for name in cls.base_fields if name.startswith(PARAM_PREFIX)]

    def parameter_fields(self) -> list[tuple[forms.BoundField, forms.BoundField | None]]:
        """(parameter field, its sweep-values field or None) in declaration order, for templates."""
        return [
            (self[PARAM_PREFIX + n], self[SWEEP_PREFIX + n] if SWEEP_PREFIX + n in self.fields else None)
            for n in self.parameter_names()
        ]

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        start, end = cleaned.get("start"), cleaned.get("end")
        if start and end and end < start:
            self.add_error("end", "The range ends before it starts.")
        if self.strategy_cls is not None:
            if cleaned.get("strategy") not in (None, self.strategy_cls.slug):
                self.add_error("strategy", "The parameters shown belong to another strategy: reload.")
            _, errors = self.strategy_cls.validate_params(self.parameter_values())
            for name, message in errors.items():
                if PARAM_PREFIX + name in self.cleaned_data:
                    self.add_error(PARAM_PREFIX + name, message)
        if self.sweep_mode and not self.errors and not self.grid():
            self.add_error(None, "Give at least one parameter a list of values to sweep.")
        if self.sweep_mode and not self.errors:
            count = 1
            for values in self.grid().values():
                count *= len(values)
            if count > MAX_SWEEP_RUNS:
                self.add_error(None, f"{count} combinations: at most {MAX_SWEEP_RUNS}.")
        instruments = cleaned.get("instruments")
        if instruments and start and end and end >= start and not self.errors:
            self._check_history(instruments, start, end)
        return cleaned

    def _check_history(self, instruments: list[str], start: dt.date, end: dt.date) -> None:
        from persistence.readers import session_days

        for key in instruments:
            days = [d for d in session_days(key) if start <= d <= end]
            if not days:
                self.add_error(
                    "instruments", f"The history store has no data for {key} from {start} to {end}."
                )
        if self.cleaned_data.get("fill") == FillModel.RECORDED and not self.errors:
            self._check_recorded_options(start, end)
        if self.cleaned_data.get("source") == DataSource.TICKS and not self.errors:
            from persistence.store import TICKS, default_root, read_manifest

            if not read_manifest(default_root()).paths(TICKS, start, end):
                self.add_error("source", f"The history store has no ticks from {start} to {end}.")

    def _check_recorded_options(self, start: dt.date, end: dt.date) -> None:
        """Recorded fills need option prices in the store (which contracts a run trades is known
        only when it runs: a missing one fails the run with its name)."""
        from persistence.store import default_root, read_manifest

        days = read_manifest(default_root()).instruments
        if not any(
            key.startswith("NSE_FO|")
            for day, keys in days.items()
            if start <= dt.date.fromisoformat(day) <= end
            for key in keys
        ):
            self.add_error("fill", f"The history store has no option prices from {start} to {end}.")

    def parameter_values(self) -> dict[str, Any]:
        """The fixed parameters by name (valid only after is_valid())."""
        return {
            name: self.cleaned_data[PARAM_PREFIX + name]
            for name in self.parameter_names()
            if self.cleaned_data.get(PARAM_PREFIX + name) is not None
        }

    def grid(self) -> dict[str, list[Any]]:
        """Sweep: parameter name -> the values to try (valid only after is_valid())."""
        return {
            name: self.cleaned_data[SWEEP_PREFIX + name]
            for name in self.parameter_names()
            if self.cleaned_data.get(SWEEP_PREFIX + name)
        }

    def run_fields(self) -> dict[str, Any]:
        """The service's keyword arguments other than user, strategy and parameters."""
        d = self.cleaned_data
        return {
            "instruments": d["instruments"],
            "start": d["start"],
            "end": d["end"],
            "fill": d["fill"],
            "source": d["source"],
            "costs": d["costs"],
            "capital": d["capital"],
            "lots": d["lots"],
            "iv": d["iv"],
            "strike_offset": d["strike_offset"],
            "slippage": d["slippage"],
        }


class SweepValuesField(forms.CharField):
    """Comma-separated values of one parameter, each checked by the parameter's own declaration."""

    def __init__(self, param, **kwargs: Any) -> None:
        self.param = param
        super().__init__(required=False, **kwargs)

    def to_python(self, value: Any) -> list[Any]:
        text = super().to_python(value) or ""
        values = []
        for item in (part.strip() for part in text.split(",")):
            if not item:
                continue
            try:
                values.append(self.param.coerce(item))
            except ValueError as exc:
                raise forms.ValidationError(f"{item}: {exc}") from None
        if len(set(map(str, values))) != len(values):
            raise forms.ValidationError("A value is listed twice.")
        return values


def backtest_form(strategy_cls: type, sweep: bool = False) -> type[BacktestForm]:
    """A BacktestForm with one field per parameter `strategy_cls` declares (and, for a sweep, one
    list-of-values field per parameter)."""
    attrs: dict[str, Any] = {"strategy_cls": strategy_cls, "sweep_mode": sweep, "__module__": __name__}
    for spec in strategy_cls.param_schema():
        field = parameter_field(spec)
        field.required = field.required and not sweep
        attrs[PARAM_PREFIX + spec["name"]] = field
        if sweep:
            attrs[SWEEP_PREFIX + spec["name"]] = SweepValuesField(
                strategy_cls.params_spec[spec["name"]],
                label=f"{spec['name']} values",
                help_text="Comma-separated; empty: not swept.",
            )
    kind = "Sweep" if sweep else "Backtest"
    return type(f"{strategy_cls.__name__}{kind}Form", (BacktestForm,), attrs)
