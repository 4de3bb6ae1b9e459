"""A cascade at run time (scenario section: simcost.scenario.cascade).

Arrivals of the cascaded workloads go to the cascade's first stage; when one completes, the
cascade decides (from the run's `cascade` stream) whether to escalate it, and if so adds a new
request (same prompt and answer length, arriving now) sent to the escalation target. Both calls
are billed as any request is. The summary's `cascade` section counts answers, not calls: the
escalation rate, the latency an escalation adds (the escalated call's E2EL, the user waiting
from the first answer to the second), the user-visible E2EL of every final answer, the dollars
of each stage and the quality proxy.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from simcost.scenario.cascade import CascadeConfig
from simcost.workload.request_table import COMPLETED, RequestTable

FLEET = "fleet"


class Cascade:
    def __init__(self, cfg: CascadeConfig, table: RequestTable, workload_names: list[str], pool_names: list[str],
                 api_names: list[str], rng: np.random.Generator, send: Callable[[int, tuple[str, int | None]], None]):
        self.cfg, self.table, self.rng, self.send = cfg, table, rng, send
        n_workloads = len(workload_names)
        self.cascaded = np.array([cfg.workloads is None or name in cfg.workloads for name in workload_names])
        self.rate = np.zeros(n_workloads)
        if cfg.escalation_rate is not None:
            self.rate[:] = cfg.escalation_rate
        for r in cfg.rates or ():
            self.rate[workload_names.index(r.workload)] = r.rate
        self.first = self._target(cfg.first, pool_names, api_names)
        self.second = self._target(cfg.escalate_to, pool_names, api_names)
        self.escalated_to: dict[int, int] = {}  # first-stage request -> its escalated request
        self.first_stage: set[int] = set()
        self.confidence: dict[int, float] = {}  # confidence mode: each decided first answer's

    @staticmethod
    def _target(name: str, pool_names: list[str], api_names: list[str]) -> tuple[str, int | None]:
        if name == FLEET:
            return ("fleet", None)
        if name in api_names:
            return ("api", api_names.index(name))
        return ("fleet", pool_names.index(name))

    def arrived(self, rid: int) -> tuple[str, int | None] | None:
        """Where a new arrival goes: the first stage for a cascaded workload, else None (as usual)."""
        if not self.cascaded[int(self.table.workload[rid])]:
            return None
        self.first_stage.add(rid)
        return self.first

    def done(self, rid: int) -> None:
        """Request rid completed or was rejected: escalate a completed first answer, maybe."""
        t = self.table
        if rid not in self.first_stage or t.status[rid] != COMPLETED:
            return
        conf = self.cfg.confidence
        if conf is not None:
            score = float(self.rng.beta(conf.alpha, conf.beta))
            self.confidence[rid] = score
            escalate = score < conf.threshold
        else:
            escalate = bool(self.rng.random() < self.rate[int(t.workload[rid])])
        if not escalate:
            return
        new = t.add(t.finish_s[rid], int(t.input_tokens[rid]), int(t.output_tokens[rid]),
                    workload=int(t.workload[rid]), tenant=int(t.tenant[rid]))
        self.escalated_to[rid] = new
        self.send(new, self.second)

    def summary(self, request_usd: np.ndarray) -> dict:
        """summary.json `cascade` (request_usd: the bill's per-request dollars)."""
        t, cfg = self.table, self.cfg
        first = np.array(sorted(self.first_stage), dtype=np.int64)
        answered = first[t.status[first] == COMPLETED] if len(first) else first
        second = np.array([self.escalated_to[r] for r in answered if r in self.escalated_to], dtype=np.int64)
        escalated = np.array([r for r in answered if r in self.escalated_to], dtype=np.int64)
        final_finish = t.finish_s[answered].copy()
        has_second = np.isin(answered, escalated)
        final_finish[has_second] = t.finish_s[second]
        done_second = t.status[second] == COMPLETED if len(second) else np.zeros(0, dtype=bool)
        user_e2el = (final_finish - t.arrival_s[answered])[~np.isnan(final_finish)]
        added = (t.finish_s[second] - t.arrival_s[second])[done_second] if len(second) else np.zeros(0)
        kept = answered[~has_second]
        if cfg.confidence is not None:
            kept_quality = float(sum(self.confidence[r] for r in kept))
        else:
            kept_quality = cfg.quality_first * len(kept)
        n_final = len(kept) + int(done_second.sum())
        quality = (kept_quality + cfg.quality_escalated * int(done_second.sum())) / n_final if n_final else None

        def pct(values: np.ndarray, q: float) -> float | None:
            return float(np.percentile(values, q)) if len(values) else None

        return {"first": cfg.first, "escalate_to": cfg.escalate_to,
                "first_answers": int(len(answered)), "escalated": int(len(escalated)),
                "escalation_rate": len(escalated) / len(answered) if len(answered) else None,
                "escalations_completed": int(done_second.sum()),
                "added_latency_s": {"mean": float(added.mean()) if len(added) else None, "p50": pct(added, 50),
                                    "p95": pct(added, 95)},
                "user_e2el_s": {"mean": float(user_e2el.mean()) if len(user_e2el) else None,
                                "p50": pct(user_e2el, 50), "p95": pct(user_e2el, 95), "p99": pct(user_e2el, 99)},
                "first_stage_usd": float(request_usd[first].sum()) if len(first) else 0.0,
                "escalation_usd": float(request_usd[second].sum()) if len(second) else 0.0,
                "quality_proxy": quality}
