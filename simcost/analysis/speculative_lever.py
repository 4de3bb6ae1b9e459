"""The speculative-decoding lever of `simcost levers` (simcost.analysis.levers): the baseline with
engine.speculative added. Speculative decoding with rejection sampling keeps the target model's
output distribution, so its default quality risk is 0; its defaults (an EAGLE-style head, 3 drafts,
acceptance 0.7) are simcost assumptions, to be replaced by the acceptance measured on the team's
own traffic."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from simcost.scenario.scenario import Scenario
from simcost.scenario.schema import bounds

# (effort_weeks, quality_risk): simcost assumptions. Training or fetching a head and tuning k is
# about two weeks; the output distribution is unchanged (rejection sampling), so no quality risk.
EFFORT_RISK = (2.0, 0.0)


@dataclass(frozen=True, kw_only=True)
class SpeculativeInputs:
    enabled: bool = True
    effort_weeks: float | None = field(default=None, metadata=bounds(gt=0))  # None: EFFORT_RISK
    quality_risk: float | None = field(default=None, metadata=bounds(ge=0, le=1))
    method: Literal["draft", "eagle", "mtp"] = "eagle"
    num_speculative_tokens: int = field(default=3, metadata=bounds(ge=1, le=16))
    acceptance_rate: float = field(default=0.7, metadata=bounds(ge=0, le=1))  # assumption
    draft_model: str | None = None  # method draft
    draft_step_fraction: float | None = field(default=None, metadata=bounds(gt=0, le=1))


def speculative_overrides(base: Scenario, inputs: SpeculativeInputs) -> tuple[str, dict | None, str]:
    """(label, the scenario overrides or None when the lever cannot apply, why not or a note)."""
    label = f"speculative {inputs.method} k={inputs.num_speculative_tokens}"
    if base.engine.speculative is not None:
        return label, None, "the baseline already decodes speculatively"
    if base.engine.policy not in ("prefill_first", "chunked"):
        return label, None, f"{base.engine.policy} runs each batch to completion; speculation needs an iteration-level policy"
    if base.specs.model(base.model.name).serving != "tokens":
        return label, None, f"{base.model.name} is served per item: there is no decoding to speed up"
    spec: dict = {"method": inputs.method, "num_speculative_tokens": inputs.num_speculative_tokens,
                  "acceptance_rate": inputs.acceptance_rate}
    if inputs.draft_model is not None:
        spec["draft_model"] = inputs.draft_model
    if inputs.draft_step_fraction is not None:
        spec["draft_step_fraction"] = inputs.draft_step_fraction
    return label, {"engine.speculative": spec}, f"acceptance {inputs.acceptance_rate:g} (an assumption unless measured)"
