"""What tokens cost: the price table of ``RUNYARD_PRICES`` and the sums the
dashboard shows (tokens and cost per run and per pipeline).

The table is JSON, ``{"<model>": {"input_per_mtok": 0.15, "output_per_mtok": 0.6}}``,
prices per million tokens in the currency you choose; the model ``"*"`` prices
every model the table does not name. Tokens come from the runs' ``usage``
events (``{"model"?, "input_tokens", "output_tokens"}``); a model without a
price has tokens but no cost.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

ANY_MODEL = "*"
MILLION = 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    input_per_mtok: float
    output_per_mtok: float

    def public(self) -> dict[str, float]:
        return {"input_per_mtok": self.input_per_mtok, "output_per_mtok": self.output_per_mtok}


@dataclass(frozen=True, slots=True)
class Tokens:
    """Tokens of one model, summed over ``usage`` events."""

    input: int = 0
    output: int = 0

    def __add__(self, other: Tokens) -> Tokens:
        return Tokens(self.input + other.input, self.output + other.output)


def token_count(value: Any) -> int:
    """A ``usage`` event's token count: a non-negative integer, anything else 0
    (the SQL stores say the same in SQL)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0


def usage_model(data: Mapping[str, Any]) -> str:
    """The model a ``usage`` event names, "" when it names none."""
    model = data.get("model")
    return model if isinstance(model, str) else ""


def parse_prices(text: str | None) -> dict[str, Price]:
    """The table of ``RUNYARD_PRICES``; ``ValueError`` saying what is wrong with it."""
    if not text:
        return {}
    try:
        table = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"RUNYARD_PRICES is not JSON: {exc}") from None
    if not isinstance(table, dict):
        raise ValueError('RUNYARD_PRICES must be an object: {"<model>": {"input_per_mtok", "output_per_mtok"}}')
    return {str(model): _price(model, entry) for model, entry in table.items()}


def _price(model: str, entry: Any) -> Price:
    fields = ("input_per_mtok", "output_per_mtok")
    if not isinstance(entry, dict) or set(entry) != set(fields):
        raise ValueError(f"RUNYARD_PRICES[{model!r}] must be exactly {{input_per_mtok, output_per_mtok}}")
    values = [entry[name] for name in fields]
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v >= 0 for v in values):
        raise ValueError(f"RUNYARD_PRICES[{model!r}]: prices are numbers >= 0")
    return Price(float(values[0]), float(values[1]))


def cost(by_model: Mapping[str, Tokens], prices: Mapping[str, Price]) -> float | None:
    """What the tokens cost; None when no model of them has a price."""
    total: float | None = None
    for model, tokens in by_model.items():
        price = prices.get(model) or prices.get(ANY_MODEL)
        if price is not None:
            spent = (tokens.input * price.input_per_mtok + tokens.output * price.output_per_mtok) / MILLION
            total = (total or 0.0) + spent
    return total
