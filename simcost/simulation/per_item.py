"""Models served per item (serving: per_item: an image classifier, an embedder) and workload
items on token models: what one item costs a replica's devices, whether a fleet serves per item
(and its workload can be served so), and its requests as such a model sees them.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from simcost.catalog.types import ModelSpec
from simcost.errors import InputError
from simcost.perf.deployment import Deployment, Pool
from simcost.perf.step_model import is_per_item
from simcost.scenario.fleet_plan import fleet_plan
from simcost.scenario.scenario import Scenario
from simcost.scenario.workload import FixedLength
from simcost.workload.requests import Requests


def item_work(scenario: Scenario, dep: Deployment) -> tuple[np.ndarray, np.ndarray] | None:
    """Per workload entry, the (FLOPs, bytes) one item costs each of the replica's devices (tensor
    parallelism splits the work); None when no entry has items, or when the model itself is
    served per item (its items are the batch: simcost.step_model.per_item_params times them)."""
    entries = scenario.workload.entries()
    if all(entry.items is None for entry in entries) or is_per_item(dep.model):
        return None
    if scenario.perf.model == "constant":
        raise InputError("perf.model", "constant has no compute or memory rate to time workload items; use roofline")
    flops = np.array([e.items.flops_per_item if e.items else 0.0 for e in entries]) / dep.tensor_parallel
    nbytes = np.array([e.items.bytes_per_item if e.items else 0.0 for e in entries]) / dep.tensor_parallel
    return flops, nbytes


# --- per-item models (serving: per_item) ------------------------------------------------------
# A request carries `items` (workload.items.per_request, else 1): its prompt is its items
# (input_tokens = items) and its answer one result (output_tokens = 1). So "input tokens" in the
# summary count items and "output tokens" results; summary["per_item"] says it in items.

def per_item_fleet(scenario: Scenario, pools: list[Pool]) -> bool:
    """Whether the fleet serves a per-item model (after checking its workload can be served so);
    a fleet cannot mix per-item and token models: their requests mean different things."""
    kinds = {is_per_item(pool.deployment.model) for pool in pools}
    if len(kinds) > 1:
        raise InputError("fleet.pools", "mixes per-item models (" + ", ".join(sorted(
            {p.deployment.model.key for p in pools if is_per_item(p.deployment.model)})) + ") with token models; "
            "run them as separate scenarios")
    if kinds == {True}:
        check_per_item_workload(scenario, pools[0].deployment.model)
        for k, pool_plan in enumerate(fleet_plan(scenario)):
            scaler = pool_plan.fleet.autoscaler
            if scaler is not None and scaler.metric == "kv_cache":
                where = pool_plan.fleet_key + ".autoscaler.metric"
                raise InputError(where, f"kv_cache, but {pools[k].deployment.model.key} is served per item, with no KV "
                                 f"cache; use concurrency, queue_depth, utilization or ttft_p95")
    return kinds == {True}


def check_per_item_workload(scenario: Scenario, model: ModelSpec) -> None:
    """A per-item workload: items per request in workload.items.per_request (default 1); the
    schema's input_tokens and output_tokens fixed at 1 (one request, one result); the model
    catalog's flops_per_item, not the workload's; no sessions (nothing carries over a turn)."""
    workload, model_key = scenario.workload, model.key
    for i, entry in enumerate(workload.entries()):
        path = "workload" if workload.mix is None else f"workload.mix[{i}]"
        if entry.session is not None:
            raise InputError(f"{path}.session", f"{model_key} is served per item; a request carries no context to "
                             f"the next turn; use arrivals or clients")
        for key, why in (("input_tokens", "items per request go in workload.items.per_request"),
                         ("output_tokens", "a request's answer is one result")):
            spec = getattr(entry, key)
            if spec is not None and not (isinstance(spec, FixedLength) and spec.value == 1):
                raise InputError(f"{path}.{key}", f"{model_key} is served per item: {why}; "
                                 f"set {key}: {{dist: fixed, value: 1}}")
        items = entry.items
        if items is not None and items.flops_per_item:
            raise InputError(f"{path}.items.flops_per_item", f"{items.flops_per_item:g}, but {model_key}'s item "
                             f"cost comes from the model catalog (flops_per_item per {model.item_input}); "
                             f"set 0")
        if items is not None and items.prompt_tokens_per_item:
            raise InputError(f"{path}.items.prompt_tokens_per_item", f"{model_key} is served per item, with no "
                             f"prompt; set 0")


def per_item_requests(requests: Requests) -> Requests:
    """Requests as a per-item model sees them: items >= 1 (none given: one), input = items,
    one output. A trace's token lengths are dropped: only its arrivals (and tenants) count."""
    n = len(requests)
    items = np.ones(n, dtype=np.int64) if requests.items is None else np.maximum(requests.items, 1)
    return replace(requests, input_tokens=items, output_tokens=np.ones(n, dtype=np.int64), items=items)
