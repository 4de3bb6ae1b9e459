"""A cascade (fleet.cascade): a small model answers first; some answers are escalated to a larger
model, which answers again, and both calls are paid.

`first` is where a cascaded request goes first: `fleet` (the self-hosted fleet, routed as
usual), a pool of fleet.pools or an api pool, by name; `escalate_to` is where an escalated one
goes (a pool of fleet.pools or an api pool, by name). Which completed first answers escalate
(simcost.cluster.cascade draws from the run's `cascade` stream):
- `escalation_rate`: a fixed share of them;
- `rates`: a share per workload (workloads not listed: 0);
- `confidence`: each first answer's confidence is drawn from Beta(alpha, beta) and the answer
  escalates when it is below `threshold` (the share is the Beta CDF at the threshold).
The escalated call resends the prompt and asks for an answer of the same length (an
assumption: the larger model writes as much as the smaller one did). The quality proxy is the
mean over final answers of `quality_first` (kept small-model answers) and `quality_escalated`
(escalated ones); in confidence mode a kept answer scores its own confidence instead. The
defaults (0.8 and 1.0) are placeholders, not measurements: set your evaluation's scores.
Limitations: a session's next turn follows the first answer, not the escalated one; an
escalated request is never escalated again.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from simcost.errors import InputError
from simcost.scenario.schema import bounds


@dataclass(frozen=True, kw_only=True)
class WorkloadRate:
    workload: str
    rate: float = field(metadata=bounds(ge=0, le=1))


@dataclass(frozen=True, kw_only=True)
class ConfidenceConfig:
    alpha: float = field(metadata=bounds(gt=0))
    beta: float = field(metadata=bounds(gt=0))
    threshold: float = field(metadata=bounds(ge=0, le=1))


@dataclass(frozen=True, kw_only=True)
class CascadeConfig:
    escalate_to: str
    first: str = "fleet"
    workloads: tuple[str, ...] | None = None  # the cascaded workloads; None: all
    escalation_rate: float | None = field(default=None, metadata=bounds(ge=0, le=1))
    rates: tuple[WorkloadRate, ...] | None = None
    confidence: ConfidenceConfig | None = None
    quality_first: float = field(default=0.8, metadata=bounds(ge=0, le=1))
    quality_escalated: float = field(default=1.0, metadata=bounds(ge=0, le=1))

    def _check(self, path: str) -> None:
        given = [key for key in ("escalation_rate", "rates", "confidence") if getattr(self, key) is not None]
        if len(given) != 1:
            raise InputError(path, "give exactly one of escalation_rate, rates and confidence"
                             + (f" (got {', '.join(given)})" if given else ""))
        if self.first == self.escalate_to:
            raise InputError(f"{path}.escalate_to", f"'{self.escalate_to}' is also `first`; escalate to another pool")
        if self.workloads is not None and not self.workloads:
            raise InputError(f"{path}.workloads", "empty; list workload names, or leave it out for all of them")
