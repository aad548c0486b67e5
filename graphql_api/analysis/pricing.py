"""The model price table: USD per million tokens, exact decimals, and which models are free at the initial run."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal


@dataclass(frozen=True)
class ModelPrice:
    input_per_million: Decimal
    output_per_million: Decimal
    # Included in the platform fee for the initial post-call/post-chat run; a rerun is always charged.
    included_at_initial: bool = False


PRICES: dict[str, ModelPrice] = {
    "gemini-2.5-pro": ModelPrice(Decimal("1.25"), Decimal("10.00")),
    "gemini-2.5-flash": ModelPrice(Decimal("0.30"), Decimal("2.50")),
    "gemini-2.5-flash-lite": ModelPrice(Decimal("0.10"), Decimal("0.40"), included_at_initial=True),
    "gemini-2.0-flash": ModelPrice(Decimal("0.10"), Decimal("0.40"), included_at_initial=True),
    "gemini-2.0-flash-lite": ModelPrice(Decimal("0.075"), Decimal("0.30"), included_at_initial=True),
    "offline": ModelPrice(Decimal("0"), Decimal("0"), included_at_initial=True),
}

DEFAULT_MODEL = "gemini-2.5-flash"
MICRO = Decimal("0.00000001")


def known_models() -> list[str]:
    return sorted(PRICES)


def cost_usd(model: str, input_tokens: int, output_tokens: int) -> Decimal:
    """Exact cost of one invocation, rounded half-up to 1e-8 USD."""
    price = PRICES[model]
    raw = (price.input_per_million * input_tokens + price.output_per_million * output_tokens) / Decimal(1_000_000)
    return raw.quantize(MICRO, rounding=ROUND_HALF_UP)


def is_waived(model: str, reason: str) -> bool:
    """Only an initial run of an included model is waived; reruns and previews are always charged."""
    return reason == "initial" and PRICES[model].included_at_initial
