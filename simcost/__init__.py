"""simcost: a discrete-event simulator of LLM inference serving latency and cost.

The public API is small on purpose: load a scenario, run it, read the summary.

    >>> from simcost import load_scenario, run
    >>> result = run(load_scenario("configs/example.yaml"))   # doctest: +SKIP
    >>> result.summary["cost"]["usd_per_1m_output_tokens"]     # doctest: +SKIP
"""

from simcost.errors import InputError
from simcost.scenario.scenario import Scenario, load_scenario, scenario_from_dict
from simcost.simulation.simulation import RunResult, Simulation, run

__all__ = ["InputError", "RunResult", "Scenario", "Simulation", "load_scenario", "run", "scenario_from_dict"]
