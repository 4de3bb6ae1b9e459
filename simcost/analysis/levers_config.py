"""The inputs of `simcost levers` (simcost.analysis.levers): which levers to try, their
settings, and the effort and quality-risk assumptions their ROI is computed with (a levers YAML)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal

from simcost.analysis.speculative_lever import EFFORT_RISK, SpeculativeInputs
from simcost.errors import InputError
from simcost.scenario.deployment import BatchingPolicy
from simcost.scenario.schema import bounds, build
from simcost.yamlio import read_yaml_file

# --- inputs (a levers YAML) -------------------------------------------------------------------

# (effort_weeks, quality_risk) per lever: simcost assumptions, not measurements. Effort is
# engineer-weeks to ship the change with its evaluation; risk is the chance (0-1) that its
# quality loss is unacceptable. Quantisation risk grows as bits shrink (int4 loses most);
# prefix caching and batching policies are exact (no quality change); a smaller model is the
# largest quality bet; a response cache can serve stale or wrong answers; trimmed prompts lose
# context; spot needs interruption handling but does not change answers.
DEFAULT_EFFORT_RISK = {
    "fp8": (1.0, 0.05), "int8": (1.0, 0.10), "int4": (2.0, 0.25), "smaller_model": (4.0, 0.40),
    "prefix_caching": (0.5, 0.0), "response_cache": (3.0, 0.15), "prompt_trim": (2.0, 0.15),
    "spot": (2.0, 0.0), "policy": (0.5, 0.0), "edge_offload": (6.0, 0.20),
    "speculative": EFFORT_RISK,
}
# $4,000 per engineer-week: a simcost assumption (about $200k a year fully loaded over 50 weeks).
DEFAULT_USD_PER_ENGINEER_WEEK = 4000.0

# A smaller sibling per model (same family and tokenizer), for the smaller-model lever; a model
# missing from the catalog makes the lever's check refuse it by name.
SMALLER_MODEL = {"llama-3.1-405b": "llama-3.1-70b", "llama-3.1-70b": "llama-3.1-8b",
                 "llama-2-70b": "llama-2-13b", "llama-2-13b": "llama-2-7b",
                 "qwen2.5-72b": "qwen2.5-7b", "mixtral-8x7b": "mistral-7b"}


@dataclass(frozen=True, kw_only=True)
class LeverInputs:
    enabled: bool = True
    effort_weeks: float | None = field(default=None, metadata=bounds(gt=0))  # None: DEFAULT_EFFORT_RISK
    quality_risk: float | None = field(default=None, metadata=bounds(ge=0, le=1))


@dataclass(frozen=True, kw_only=True)
class SmallerModelInputs(LeverInputs):
    model: str | None = None  # None: SMALLER_MODEL


@dataclass(frozen=True, kw_only=True)
class ResponseCacheInputs(LeverInputs):
    hit_rate: float = field(default=0.2, metadata=bounds(gt=0, le=0.99))  # assumption
    cache_latency_s: float = field(default=0.05, metadata=bounds(ge=0))  # assumption: a key-value lookup + network
    cache_usd_per_hour: float = field(default=0.0, metadata=bounds(ge=0))  # the cache's own servers


@dataclass(frozen=True, kw_only=True)
class PromptTrimInputs(LeverInputs):
    fraction: float = field(default=0.2, metadata=bounds(gt=0, le=0.99))  # assumption


@dataclass(frozen=True, kw_only=True)
class SpotInputs(LeverInputs):
    share: float = field(default=0.5, metadata=bounds(gt=0, le=1))  # of device-hours; assumption
    spot_usd_per_device_hour: float | None = field(default=None, metadata=bounds(ge=0))  # None: the price catalog


@dataclass(frozen=True, kw_only=True)
class PolicyInputs(LeverInputs):
    policy: BatchingPolicy | None = None


@dataclass(frozen=True, kw_only=True)
class EdgeOffloadInputs(LeverInputs):
    """Owned edge boards in front of the cloud fleet (edge_first: spill to the cloud when full).
    Defaults are simcost assumptions: a Jetson AGX Orin 64GB developer kit lists at about $2,000
    (NVIDIA store; not in the bundled price catalog), written off over 3 years, power at
    $0.15/kWh, the model in int4 and 8 sequences per board."""

    device: str = "jetson-agx-orin"
    boards: int = field(default=2, metadata=bounds(ge=1))
    weight_format: Literal["fp32", "bf16", "fp16", "fp8", "int8", "int4"] = "int4"
    max_num_seqs: int = field(default=8, metadata=bounds(ge=1))
    capex_usd_per_device: float = field(default=2000.0, metadata=bounds(ge=0))
    lifetime_years: float = field(default=3.0, metadata=bounds(gt=0))
    usd_per_kwh: float = field(default=0.15, metadata=bounds(ge=0))
    client_rtt_s: float = field(default=0.0, metadata=bounds(ge=0))  # the edge site's round trip to its users


@dataclass(frozen=True, kw_only=True)
class LeversConfig:
    """A levers YAML: `usd_per_engineer_week` and, per lever, `enabled`, `effort_weeks`,
    `quality_risk` and the lever's own knobs."""

    usd_per_engineer_week: float = field(default=DEFAULT_USD_PER_ENGINEER_WEEK, metadata=bounds(gt=0))
    fp8: LeverInputs = LeverInputs()
    int8: LeverInputs = LeverInputs()
    int4: LeverInputs = LeverInputs()
    smaller_model: SmallerModelInputs = SmallerModelInputs()
    prefix_caching: LeverInputs = LeverInputs()
    response_cache: ResponseCacheInputs = ResponseCacheInputs()
    prompt_trim: PromptTrimInputs = PromptTrimInputs()
    spot: SpotInputs = SpotInputs()
    policy: PolicyInputs = PolicyInputs()
    edge_offload: EdgeOffloadInputs = EdgeOffloadInputs()
    speculative: SpeculativeInputs = SpeculativeInputs()

    def effort_risk(self, lever: str) -> tuple[float, float]:
        inputs = getattr(self, lever)
        effort, risk = DEFAULT_EFFORT_RISK[lever]
        return (effort if inputs.effort_weeks is None else inputs.effort_weeks,
                risk if inputs.quality_risk is None else inputs.quality_risk)


LEVER_NAMES = tuple(f.name for f in fields(LeversConfig) if f.name != "usd_per_engineer_week")


def load_levers(path: str | Path | None, overrides: dict | None = None) -> LeversConfig:
    """A levers YAML (None: every default), then `overrides` ({lever: {key: value}}) on top."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_file(Path(path), "levers file") or {}
        if not isinstance(raw, dict):
            raise InputError(str(path), "expected a mapping: usd_per_engineer_week and one section per lever")
    raw = copy.deepcopy(raw)
    for lever, values in (overrides or {}).items():
        raw.setdefault(lever, {}).update(values)
    try:
        return build(LeversConfig, raw, "")
    except InputError as exc:  # name the file the key is in
        raise InputError(f"{path}: {exc.where}" if path is not None else exc.where, exc.problem) from None
