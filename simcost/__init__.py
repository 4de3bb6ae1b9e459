"""simcost: a discrete-event simulator of LLM inference serving latency and cost.

The public API is small on purpose: run a scenario, sweep it, size a fleet (simcost.api); study
its levers, forecast its spend, plan its commitments (simcost.api_plans).

    >>> import simcost
    >>> run = simcost.run("configs/example.yaml", overrides={"duration_s": 120})   # doctest: +SKIP
    >>> run.summary["cost"]["usd_per_1m_output_tokens"], run.to_pandas("requests")  # doctest: +SKIP

The names below are loaded on first use (PEP 562), so importing any simcost module (the CLI for
`simcost --help`, say) does not pull in the simulation stack (numba, SimPy) until it is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simcost.api import Run, Sizing, SweepRuns, load, run, size, sweep
    from simcost.api_plans import Commitments, Forecast, Levers, commitments, forecast, levers
    from simcost.errors import InputError
    from simcost.scenario.scenario import Scenario, load_scenario, scenario_from_dict
    from simcost.simulation.simulation import RunResult, Simulation

from simcost.numba_cache import refresh_stale_kernels

# numba cannot see that a kernel's callee in another file changed; drop its cache when one did
refresh_stale_kernels()

__version__ = "0.1.0"  # kept equal to pyproject.toml's; `simcost --version` prefers the installed metadata

# public name -> the module that defines it
_PUBLIC = {
    "InputError": "simcost.errors",
    "Scenario": "simcost.scenario.scenario",
    "load_scenario": "simcost.scenario.scenario",
    "scenario_from_dict": "simcost.scenario.scenario",
    "RunResult": "simcost.simulation.simulation",
    "Simulation": "simcost.simulation.simulation",
    "run": "simcost.api",
    "sweep": "simcost.api",
    "size": "simcost.api",
    "load": "simcost.api",
    "Run": "simcost.api",
    "SweepRuns": "simcost.api",
    "Sizing": "simcost.api",
    "levers": "simcost.api_plans",
    "forecast": "simcost.api_plans",
    "commitments": "simcost.api_plans",
    "Levers": "simcost.api_plans",
    "Forecast": "simcost.api_plans",
    "Commitments": "simcost.api_plans",
}

__all__ = ["Commitments", "Forecast", "InputError", "Levers", "Run", "RunResult", "Scenario", "Simulation", "Sizing",
           "SweepRuns", "commitments", "forecast", "levers", "load", "load_scenario", "run", "scenario_from_dict", "size",
           "sweep"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'simcost' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
