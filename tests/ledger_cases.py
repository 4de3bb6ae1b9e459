"""Hand-built step logs and deployments for the ledger, pricing and energy tests."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np

from simcost.config import FleetConfig
from simcost.ledger import StepLog, settle
from simcost.schema import build


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


def unallocated_identity(b) -> float:
    """Relative gap between allocated + unallocated and the formula bill."""
    return abs(b.request_usd.sum() + b.unallocated_usd - b.total_usd) / b.total_usd
