"""simcost: a discrete-event simulator of LLM inference serving latency and cost.

The public API is small on purpose: load a scenario, run it, read the summary.

    >>> from simcost import load_scenario, run
    >>> result = run(load_scenario("configs/example.yaml"))   # doctest: +SKIP
    >>> result.summary["cost"]["usd_per_1m_output_tokens"]     # doctest: +SKIP

The names below are loaded on first use (PEP 562), so importing any simcost module (the CLI for
`simcost --help`, say) does not pull in the simulation stack (numba, SimPy) until it is needed.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from simcost.errors import InputError
    from simcost.scenario.scenario import Scenario, load_scenario, scenario_from_dict
    from simcost.simulation.simulation import RunResult, Simulation, run

__version__ = "0.1.0"  # kept equal to pyproject.toml's; `simcost --version` prefers the installed metadata

# public name -> the module that defines it
_PUBLIC = {
    "InputError": "simcost.errors",
    "Scenario": "simcost.scenario.scenario",
    "load_scenario": "simcost.scenario.scenario",
    "scenario_from_dict": "simcost.scenario.scenario",
    "RunResult": "simcost.simulation.simulation",
    "Simulation": "simcost.simulation.simulation",
    "run": "simcost.simulation.simulation",
}

__all__ = ["InputError", "RunResult", "Scenario", "Simulation", "load_scenario", "run", "scenario_from_dict"]


def __getattr__(name: str) -> Any:
    if name not in _PUBLIC:
        raise AttributeError(f"module 'simcost' has no attribute {name!r}")
    value = getattr(import_module(_PUBLIC[name]), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
