"""Forms for strategy configuration, with one form field per declared strategy parameter.

The fields are built from the strategy class's `param_schema()` (type, bounds, choices, help), and
the class's own `validate_params` has the last word, so the form, the services and the backtest
pages agree on what a valid parameter is. Forms only validate: saving goes through the services.
"""

from __future__ import annotations

import datetime as dt
from decimal import Decimal
from typing import Any

from django import forms

from strategies.models import StrategyConfig, strategy_registry

PARAM_PREFIX = "param__"


def _bound(kind: str, value: Any) -> Any:
    if value is None:
        return None
    if kind == "decimal":
        return Decimal(str(value))
    if kind == "time":
        return dt.time.fromisoformat(value) if isinstance(value, str) else value
    return value


def _help(spec: dict[str, Any]) -> str:
    bounds = []
    if spec.get("min") is not None:
        bounds.append(f"min {spec['min']}")
    if spec.get("max") is not None:
        bounds.append(f"max {spec['max']}")
    bounds.append(f"default {spec['default']}")
    return f"{spec.get('help') or ''} ({', '.join(bounds)})".strip()


def parameter_field(spec: dict[str, Any]) -> forms.Field:
    """The form field for one entry of a strategy's `param_schema()`."""
    kind = spec["type"]
    common: dict[str, Any] = {"label": spec["name"], "help_text": _help(spec), "initial": spec["default"]}
    low, high = _bound(kind, spec.get("min")), _bound(kind, spec.get("max"))
    if kind == "int":
        return forms.IntegerField(min_value=low, max_value=high, **common)
    if kind == "float":
        return forms.FloatField(min_value=low, max_value=high, **common)
    if kind == "decimal":
        return forms.DecimalField(min_value=low, max_value=high, **common)
    if kind == "bool":
        return forms.BooleanField(required=False, **common)
    if kind == "time":
        # Bounds on times are left to the class's validate_params (TimeField has none of its own).
        return forms.TimeField(widget=forms.TimeInput(format="%H:%M"), **common)
    if kind == "choice":
        return forms.ChoiceField(choices=[(str(c), str(c)) for c in spec["choices"]], **common)
    return forms.CharField(**common)


class InstrumentsField(forms.CharField):
    """Instrument keys, one per line, stored as a JSON list."""

    widget = forms.Textarea(attrs={"rows": 3, "cols": 40})

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, list):
            return "\n".join(value)
        return value

    def to_python(self, value: Any) -> list[str]:
        text = super().to_python(value) or ""
        return [line.strip() for line in text.splitlines() if line.strip()]


class StrategyConfigForm(forms.ModelForm):
    """The admin form; subclasses made by `strategy_config_form` add the parameter fields."""

    strategy_cls: type | None = None
    instruments = InstrumentsField(help_text="One instrument key per line, e.g. NSE_INDEX|Nifty 50.")

    class Meta:
        model = StrategyConfig
        fields = ["slug", "strategy_class", "enabled", "instruments", "capital", "lots", "max_daily_loss"]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stored = self.instance.parameters if self.instance and self.instance.pk else {}
        for name in self.parameter_names():
            if name in stored:
                self.initial.setdefault(PARAM_PREFIX + name, stored[name])

    @classmethod
    def parameter_names(cls) -> list[str]:
        return [name[len(PARAM_PREFIX) :] for name in cls.base_fields if name.startswith(PARAM_PREFIX)]

    def parameter_values(self) -> dict[str, Any]:
        """The submitted parameters by name (valid only after is_valid())."""
        return {
            name: self.cleaned_data[PARAM_PREFIX + name]
            for name in self.parameter_names()
            if PARAM_PREFIX + name in self.cleaned_data
        }

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if self.instance.pk and self.instance.strategy_class not in strategy_registry():
            self.add_error(
                None,
                f"The strategy library has no {self.instance.strategy_class!r} any more: "
                "this configuration cannot be changed (disable it instead).",
            )
        if self.strategy_cls is not None and self.parameter_names():
            # The class's own validation has the last word: one error on each bad parameter's field.
            _, errors = self.strategy_cls.validate_params(self.parameter_values())
            for name, message in errors.items():
                field = PARAM_PREFIX + name
                if field in self.fields:
                    if field in self.cleaned_data:
                        self.add_error(field, message)
                else:
                    self.add_error(None, f"{name}: {message}")
        return cleaned


def strategy_config_form(strategy_cls: type | None) -> type[StrategyConfigForm]:
    """A StrategyConfigForm with one field per parameter `strategy_cls` declares (none on add, when
    the class is not chosen yet: a new configuration starts from the declared defaults)."""
    if strategy_cls is None:
        return StrategyConfigForm
    attrs: dict[str, Any] = {"strategy_cls": strategy_cls, "__module__": __name__}
    for spec in strategy_cls.param_schema():
        attrs[PARAM_PREFIX + spec["name"]] = parameter_field(spec)
    return type(f"{strategy_cls.__name__}ConfigForm", (StrategyConfigForm,), attrs)
