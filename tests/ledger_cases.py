"""Hand-built step logs and deployments for the ledger, pricing and energy tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from simcost.cost.ledger import settle
from simcost.cost.step_log import StepArrays, StepLog
from simcost.scenario.fleet import FleetConfig
from simcost.scenario.pricing import CostConfig
from simcost.scenario.schema import build


def deployment(usd_per_hour=3.6, devices=1, idle_w=100.0, peak_w=500.0):
    """The Deployment fields the ledger reads (per replica)."""
    return SimpleNamespace(price_usd_per_hour=usd_per_hour, num_devices=devices, idle_w=idle_w, peak_w=peak_w)


def log(steps_by_replica: dict[int, list[tuple[float, float]]]):
    """One single-member record per step; request id = step index."""
    sl, rid = StepLog(), 0
    for replica, steps in steps_by_replica.items():
        for start, end in steps:
            sl.add(replica, start, np.array([end]), np.array([1]), np.array([rid]), np.array([1]), prefill=True)
            rid += 1
    return sl.arrays(), rid


def bill(steps_by_replica, fleet: dict, horizon_s: float, **dep):
    steps, num_requests = log(steps_by_replica)
    return settle(steps, num_requests, build(FleetConfig, fleet, "fleet"), deployment(**dep), horizon_s)


def records_log(records: list[tuple]) -> StepArrays:
    """Hand-built records, each (replica, start_s, step ends, members, member tokens, member
    prefill flags); the record counts as a prefill step when any member is prefilling."""
    sl = StepLog()
    for replica, start_s, ends, members, tokens, prefill in records:
        n = len(ends)
        sl.add(replica, start_s, np.asarray(ends, dtype=float), np.full(n, int(np.sum(tokens))), np.asarray(members),
               np.asarray(tokens), prefill=bool(np.any(prefill)), member_prefill=np.asarray(prefill, dtype=bool))
    return sl.arrays()


def random_step_log(rng, num_records: int, num_requests: int, num_replicas: int) -> tuple[StepArrays, float]:
    """A random log (steps back to back or with gaps, per replica; members with random tokens,
    some 0, and random prompt/output kinds) and a horizon past its last step."""
    clock = np.zeros(num_replicas)
    records = []
    for _ in range(num_records):
        replica = int(rng.integers(num_replicas))
        start_s = clock[replica] + rng.random() * 30 * (rng.random() < 0.5)
        ends = start_s + np.cumsum(rng.random(int(rng.integers(1, 5))) * 20 + 1e-3)
        clock[replica] = ends[-1]
        n = int(rng.integers(1, 5))
        tokens = rng.integers(0, 500, n) * (rng.random(n) < 0.9)  # some members with no tokens
        records.append((replica, start_s, ends, rng.integers(0, num_requests, n), tokens, rng.random(n) < 0.5))
    return records_log(records), float(clock.max()) + rng.random() * 100 + 1.0


def settle_with(steps: StepArrays, num_requests: int, horizon_s: float, cost: dict, fleet: dict | None = None,
                completed: np.ndarray | None = None, **dep):
    return settle(steps, num_requests, build(FleetConfig, fleet or {}, "fleet"), deployment(**dep), horizon_s,
                  build(CostConfig, cost, "cost"), completed)


def unallocated_identity(b) -> float:
    """Relative gap between allocated + unallocated and the formula bill."""
    return abs(b.request_usd.sum() + b.unallocated_usd - b.total_usd) / b.total_usd
