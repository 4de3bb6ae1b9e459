"""A monthly budget and its alerts (cost.budget), and outcomes per workload (cost.outcomes).

Alerts are computed on the run's time series (simcost.metrics.budget), as a FinOps budget alert
would fire: a *forecast* alert when the burn rate over the trailing `window_s` seconds,
projected over a 730-hour month, reaches a threshold share of `monthly_usd` (once a whole window
has passed: a run's first seconds, cold starts included, would swing it); an *actual* alert
when the spend so far does. Thresholds default to 50 %, 80 % and 100 % (AWS Budgets' usual
set-up). `seconds_per_hour` compresses time for scenarios whose simulated second stands for more
(default 3600: real time)."""

from __future__ import annotations

from dataclasses import dataclass, field

from simcost.errors import InputError
from simcost.scenario.schema import bounds


@dataclass(frozen=True, kw_only=True)
class BudgetConfig:
    monthly_usd: float = field(metadata=bounds(gt=0))
    thresholds: tuple[float, ...] = (0.5, 0.8, 1.0)
    window_s: float = field(default=3600.0, metadata=bounds(gt=0))

    def _check(self, path: str) -> None:
        if not self.thresholds or any(not 0 < t <= 10 for t in self.thresholds):
            raise InputError(f"{path}.thresholds", f"{list(self.thresholds)}; expected shares of the budget in (0, 10]")
