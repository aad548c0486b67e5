"""The model price table: USD per million tokens, exact decimals, and which models are free at the initial run."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: Decimal
    output_per_million: Decimal
    # The Gemini Batch API's price for the same tokens (half the interactive one for every model it serves).
    batch_input_per_million: Decimal
    batch_output_per_million: Decimal
    # Included in the platform fee for the initial post-call/post-chat run; a rerun is always charged.
    included_at_initial: bool = False


def _price(input_per_million: str, output_per_million: str, batch_input: str, batch_output: str,
           *, included_at_initial: bool = False) -> ModelPrice:
    return ModelPrice(Decimal(input_per_million), Decimal(output_per_million), Decimal(batch_input),
                      Decimal(batch_output), included_at_initial)


# USD per million tokens: interactive input, output, then batch input, output.
PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-pro": _price("1.25", "10.00", "0.625", "5.00"),
    "gemini-2.5-flash": _price("0.30", "2.50", "0.15", "1.25"),
    "gemini-2.5-flash-lite": _price("0.10", "0.40", "0.05", "0.20", included_at_initial=True),
    "gemini-2.0-flash": _price("0.10", "0.40", "0.05", "0.20", included_at_initial=True),
    "gemini-2.0-flash-lite": _price("0.075", "0.30", "0.0375", "0.15", included_at_initial=True),
    "offline": _price("0", "0", "0", "0", included_at_initial=True),
}

DEFAULT_MODEL = "gemini-2.5-flash"
MICRO = Decimal("0.00000001")


def known_models() -> list[str]:
    return sorted(PRICES)


def cost_usd(model: str, input_tokens: int, output_tokens: int, *, batch: bool = False) -> Decimal:
    """Exact cost of one invocation, interactive or through the Batch API, rounded half-up to 1e-8 USD."""
    price = PRICES[model]
    if batch:
        per_input, per_output = price.batch_input_per_million, price.batch_output_per_million
    else:
        per_input, per_output = price.input_per_million, price.output_per_million
    raw = (per_input * input_tokens + per_output * output_tokens) / Decimal(1_000_000)
    return raw.quantize(MICRO, rounding=ROUND_HALF_UP)


def is_waived(model: str, reason: str) -> bool:
    """Only an initial run of an included model is waived; reruns and previews are always charged."""
    return reason == "initial" and PRICES[model].included_at_initial
