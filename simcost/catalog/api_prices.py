"""The hosted-model API price list (configs/api_prices.yaml): per provider and model, the list
prices per 1M input, cached-input and output tokens, the batch-API discount, the context window,
default latency medians and rate limits, each with its source and date (the file's header says
which figures are verified and which are assumptions)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from simcost.catalog.specs import config_dir
from simcost.errors import InputError, closest
from simcost.yamlio import read_yaml_file

CUSTOM = "custom"  # an api pool that gives its own prices and names no listed provider


@dataclass(frozen=True)
class ApiModel:
    """One hosted model as the price list gives it."""

    provider: str  # price-list key (openai, anthropic, ...)
    model: str
    provider_name: str  # FOCUS ProviderName
    publisher_name: str  # FOCUS PublisherName
    input_usd_per_1m: float
    output_usd_per_1m: float
    cached_input_usd_per_1m: float | None
    batch_discount: float | None
    context_tokens: int | None
    ttft_s: float | None
    output_tokens_per_s: float | None
    requests_per_min: float | None
    tokens_per_min: float | None
    source: str


_NUMBERS = ("input_usd_per_1m", "output_usd_per_1m", "cached_input_usd_per_1m", "context_tokens", "ttft_s",
            "output_tokens_per_s", "requests_per_min", "tokens_per_min")


def _number(value, where: str, optional: bool) -> float | None:
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise InputError(where, f"{value!r}; expected a number >= 0")
    return float(value)


def parse_price_list(raw, label: str) -> dict[tuple[str, str], ApiModel]:
    """Every (provider, model) of a price list's data, checked: prices are numbers >= 0."""
    if not isinstance(raw, dict) or not isinstance(raw.get("providers"), dict):
        raise InputError(label, "expected a mapping with a 'providers' section")
    out: dict[tuple[str, str], ApiModel] = {}
    for provider, entry in raw["providers"].items():
        where = f"{label}: providers.{provider}"
        if not isinstance(entry, dict) or not isinstance(entry.get("models"), dict):
            raise InputError(where, "expected a mapping with a 'models' section")
        discount = _number(entry.get("batch_discount"), f"{where}.batch_discount", optional=True)
        if discount is not None and discount >= 1:
            raise InputError(f"{where}.batch_discount", f"{discount:g}; expected a share below 1")
        for model, m in entry["models"].items():
            at = f"{where}.models.{model}"
            if not isinstance(m, dict):
                raise InputError(at, "expected a mapping of prices")
            values = {key: _number(m.get(key), f"{at}.{key}", optional=key not in ("input_usd_per_1m",
                                                                                  "output_usd_per_1m"))
                      for key in _NUMBERS}
            source = m.get("source") or {}
            context = values.pop("context_tokens")
            out[(str(provider), str(model))] = ApiModel(
                provider=str(provider), model=str(model), provider_name=str(entry.get("provider_name", provider)),
                publisher_name=str(m.get("publisher_name", entry.get("publisher_name", provider))),
                batch_discount=discount, context_tokens=None if context is None else int(context),
                source=f"{source.get('url', '?')} ({source.get('date', '?')}, {source.get('checked', '?')})",
                input_usd_per_1m=float(values["input_usd_per_1m"] or 0.0),
                output_usd_per_1m=float(values["output_usd_per_1m"] or 0.0),
                cached_input_usd_per_1m=values["cached_input_usd_per_1m"], ttft_s=values["ttft_s"],
                output_tokens_per_s=values["output_tokens_per_s"], requests_per_min=values["requests_per_min"],
                tokens_per_min=values["tokens_per_min"])
    return out


@lru_cache(maxsize=4)
def _bundled(directory: str) -> dict[tuple[str, str], ApiModel]:
    path = Path(directory) / "api_prices.yaml"
    return parse_price_list(read_yaml_file(path, "API price list"), path.name)


def api_price_list(directory: Path | None = None) -> dict[tuple[str, str], ApiModel]:
    """The bundled price list (configs/api_prices.yaml), keyed by (provider, model)."""
    return _bundled(str(directory if directory is not None else config_dir()))


def get_api_model(provider: str, model: str, where: str) -> ApiModel:
    """A listed model; an unknown provider or model is an InputError at `where` (.provider or .model)."""
    prices = api_price_list()
    providers = sorted({p for p, _ in prices})
    if provider not in providers:
        raise InputError(f"{where}.provider", f"'{provider}' is not in the API price list"
                         f"{closest(provider, [*providers, CUSTOM])}")
    if (provider, model) not in prices:
        raise InputError(f"{where}.model", f"'{model}' is not a {provider} model of the API price list"
                         f"{closest(model, [m for p, m in prices if p == provider])}")
    return prices[(provider, model)]
