"""Speculative decoding (engine.speculative): a decode step drafts k tokens per sequence, the
target model verifies them in one step of k + 1 tokens per sequence, and each sequence keeps
1 + (its accepted drafts) tokens.

Acceptance. Draft i (1..k) is accepted with probability a if drafts 1..i-1 were, so the accepted
count J is geometric truncated at k: P(J >= j) = a^j for j <= k, and a step emits 1 + J tokens,
E[1 + J] = (1 - a^(k+1)) / (1 - a) (k + 1 when a = 1). J is drawn by inversion,
J = min(k, floor(ln u / ln a)), from a counter-based generator: u is a hash of (the run's
speculation stream seed, request id, the request's verification step number), so a request's
draws do not depend on which other requests share its batch or on the replica it runs on (paired
comparisons stay paired), and nothing is stored per request but a step counter.

Acceptance per request (acceptance_concentration c): each request draws its own rate a ~ Beta(m c,
(1 - m) c) of mean m (the workload's acceptance_rate) once, from a generator seeded by (the stream
seed, request id), so prompts that draft well and badly mix as in real traffic; a step then draws
J as above at that request's a. Tokens per step average E[sum_{j<=k} a^j], above the fixed-rate
value at the mean (the sum is convex in a).

Cost of one step over n sequences with contexts c_i: the target's step of n (k + 1) tokens whose
KV reads are the contexts once (all k + 1 queries of a sequence attend to the same cached KV),
plus the drafting: method draft runs the draft model's k decode steps (its own step-time model
on the same devices), eagle and mtp charge draft_step_fraction of a target decode step per draft.

Where it applies: decode-only steps (a prefill_first decode step, or a chunked step with no prompt
in it). A chunked step that carries prompt chunks decodes one token per running sequence, as
without speculation, unless speculative.in_mixed_steps (vLLM V1 speculates there too): then its
decoders verify drafts in the same target step as the chunks (when the free KV blocks can take
the accepted tokens; else that step decodes one token each). The draft model's weights come out of the KV cache (simcost.perf.deployment);
not modelled: the draft's own KV, and KV blocks for rejected drafts (a step holds blocks for the
accepted tokens only).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

import simcost.portable_math as pmath
from simcost.errors import InputError
from simcost.perf.deployment import Deployment, plan_deployment
from simcost.perf.step_model import step_params, step_time_s
from simcost.scenario.deployment import ModelConfig, SpeculativeConfig
from simcost.scenario.scenario import Scenario

DEFAULT_DRAFT_STEP_FRACTION = 0.05  # simcost assumption: an EAGLE head / MTP module is ~one layer and the head

_MASK64 = np.uint64(0xFFFFFFFFFFFFFFFF)


@dataclass(frozen=True, eq=False)
class Speculation:
    """What every replica of a pool needs to speculate: k, the acceptance rate of each workload
    entry, the draws' seed, and the draft cost (the draft model's step parameters, or a fraction
    of the target's decode step)."""

    num_speculative_tokens: int
    acceptance_by_workload: np.ndarray  # float64, per workload entry
    seed: int
    draft_params: np.ndarray | None = None  # method draft
    draft_step_fraction: float = DEFAULT_DRAFT_STEP_FRACTION  # eagle, mtp
    concentration_by_workload: np.ndarray | None = None  # float64 per entry, 0: a fixed rate
    in_mixed_steps: bool = False  # chunked steps with prompt chunks speculate too


def request_acceptance(seed: int, rid: int, mean: float, concentration: float) -> float:
    """A request's own acceptance rate: Beta of mean `mean` and concentration alpha + beta, from
    a generator of (seed, rid) only (the same on any replica, whatever shares its batch)."""
    if mean <= 0.0 or mean >= 1.0:
        return mean
    rng = np.random.default_rng([seed, rid, 0x5BEC])
    return float(rng.beta(mean * concentration, (1.0 - mean) * concentration))


def expected_tokens_per_step(acceptance_rate: float, k: int) -> float:
    """E[1 + J]: tokens one sequence emits per step."""
    if acceptance_rate >= 1.0:
        return float(k + 1)
    return (1.0 - acceptance_rate ** (k + 1)) / (1.0 - acceptance_rate)


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each element (SplitMix64's finaliser)."""
    with np.errstate(over="ignore"):
        z = (x + np.uint64(0x9E3779B97F4A7C15)) & _MASK64
        z = ((z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)) & _MASK64
        z = ((z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)) & _MASK64
        return z ^ (z >> np.uint64(31))


def uniforms(seed: int, rids: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """u in (0, 1) for each (request, step) pair: a counter-based draw of the run's stream."""
    with np.errstate(over="ignore"):
        key = _splitmix64(np.uint64(seed) ^ _splitmix64(rids.astype(np.uint64) * np.uint64(0x100000001B3)))
        bits = _splitmix64(key ^ (steps.astype(np.uint64) * np.uint64(0xD6E8FEB86659FD93)))
    return ((bits >> np.uint64(11)).astype(np.float64) + 0.5) / float(1 << 53)


def accepted_drafts(u: np.ndarray, acceptance_rate: np.ndarray, k: int) -> np.ndarray:
    """J = min(k, floor(ln u / ln a)) per draw: the truncated geometric count of accepted drafts."""
    a = np.broadcast_to(np.asarray(acceptance_rate, dtype=np.float64), u.shape)
    out = np.full(u.shape, k, dtype=np.int64)  # a = 1: every draft accepted
    partial = a < 1.0
    with np.errstate(divide="ignore"):
        # a = 0: ln a = -inf, so J = 0
        j = np.floor(pmath.log(u[partial]) / pmath.log(a[partial]))
    out[partial] = np.minimum(j, k).astype(np.int64)
    return out


class SpeculationState:
    """One replica's view: how many verification steps each running request has taken."""

    def __init__(self, spec: Speculation):
        self.spec = spec
        self.steps: dict[int, int] = {}
        self.rates: dict[int, float] = {}  # per-request rates (acceptance_concentration), drawn once

    def _rates(self, ids: np.ndarray, workload: np.ndarray) -> np.ndarray:
        spec = self.spec
        means = spec.acceptance_by_workload[workload]
        if spec.concentration_by_workload is None:
            return means
        conc = spec.concentration_by_workload[workload]
        out = means.copy()
        for i, rid in enumerate(ids.tolist()):
            if conc[i] > 0.0:
                rate = self.rates.get(rid)
                if rate is None:
                    rate = self.rates[rid] = request_acceptance(spec.seed, rid, float(means[i]), float(conc[i]))
                out[i] = rate
        return out

    def tokens(self, ids: np.ndarray, workload: np.ndarray, remaining: np.ndarray) -> np.ndarray:
        """Tokens each of ids emits in its next verification step (1 + accepted drafts, at most
        what it still has to generate). Does not advance: `advance` does once the step ran."""
        spec = self.spec
        steps = np.fromiter((self.steps.get(rid, 0) for rid in ids.tolist()), dtype=np.int64, count=len(ids))
        u = uniforms(spec.seed, ids, steps)
        drafts = accepted_drafts(u, self._rates(ids, workload), spec.num_speculative_tokens)
        return np.minimum(1 + drafts, remaining)

    def advance(self, ids: np.ndarray, done: np.ndarray) -> None:
        for rid, finished in zip(ids.tolist(), done.tolist()):
            if finished:
                self.steps.pop(rid, None)
                self.rates.pop(rid, None)
            else:
                self.steps[rid] = self.steps.get(rid, 0) + 1


def step_s(params: np.ndarray, spec: Speculation, kv_tokens: np.ndarray) -> float:
    """One speculative step over sequences with kv_tokens of context each: verification plus drafting."""
    kv = kv_tokens.astype(np.float64)
    n, k1 = len(kv), spec.num_speculative_tokens + 1
    pairs = float((kv * k1).sum() + n * k1 * (k1 + 1) / 2)
    verify_s = step_time_s(params, 0, n * k1, pairs, float(kv.sum()), 0)
    return verify_s + draft_s(params, spec, kv)


def draft_s(params: np.ndarray, spec: Speculation, kv: np.ndarray) -> float:
    """Drafting k tokens for sequences with kv tokens of context each."""
    n, k = len(kv), spec.num_speculative_tokens
    if spec.draft_params is not None:  # k autoregressive steps of the draft model
        return sum(step_time_s(spec.draft_params, 0, n, float((kv + j + 1).sum()), float((kv + j).sum()), 0)
                   for j in range(k))
    return k * spec.draft_step_fraction * step_time_s(params, 0, n, float((kv + 1).sum()), float(kv.sum()), 0)


# --- speculation in chunked steps that also carry prompt chunks (speculative.in_mixed_steps) --

def mixed_step_tokens(replica, dec_ids: np.ndarray) -> np.ndarray | None:
    """Tokens each decoding request of a mixed step emits (1 + accepted drafts), or None when the
    free KV blocks cannot take the extra tokens (the step then decodes one token each, as without
    speculation, rather than preempting in the middle of a planned step)."""
    t, state = replica.table, replica.speculation
    tokens = state.tokens(dec_ids, t.workload[dec_ids], t.output_tokens[dec_ids] - t.generated[dec_ids])
    # the planned step holds blocks for one more token each; the extras need the rest
    kv_after = t.kv_tokens[dec_ids] + tokens
    need = np.maximum(-(-kv_after // replica.block_size) - np.maximum(
        t.kv_blocks[dec_ids], -(-(t.kv_tokens[dec_ids] + 1) // replica.block_size)), 0).sum()
    return tokens if need <= replica.kv.pool.num_free else None


def mixed_step_s(params: np.ndarray, spec: Speculation, num_chunk_tokens: int, chunk_pairs: float,
                 chunk_kv_read: float, num_chunks: int, dec_kv: np.ndarray) -> float:
    """A step of prompt chunks and verifying decoders: one target step of the chunks and
    n (k + 1) decode tokens, plus the decoders' drafting."""
    kv = dec_kv.astype(np.float64)
    n, k1 = len(kv), spec.num_speculative_tokens + 1
    pairs = chunk_pairs + float((kv * k1).sum() + n * k1 * (k1 + 1) / 2)
    return (step_time_s(params, num_chunk_tokens, n * k1, pairs, chunk_kv_read + float(kv.sum()), num_chunks)
            + draft_s(params, spec, kv))


def apply_mixed_extra(replica, dec_ids: np.ndarray, tokens: np.ndarray, end_s: float) -> None:
    """After a mixed step gave each decoder its first token: the accepted drafts beyond it."""
    t = replica.table
    for count in np.unique(tokens).tolist():
        if count > 1:
            group = dec_ids[tokens == count]
            replica.kv.apply_decode_steps(group, np.full(count - 1, end_s), count - 1)
    replica.speculation.advance(dec_ids, t.generated[dec_ids] >= t.output_tokens[dec_ids])


def speculation(scenario: Scenario, dep: Deployment, seed: int) -> Speculation | None:
    """The pool's speculation from engine.speculative (None without it)."""
    cfg: SpeculativeConfig | None = scenario.engine.speculative
    if cfg is None:
        return None
    names = [scenario.workload.entry_name(i) for i in range(len(scenario.workload.entries()))]
    rates = np.full(len(names), cfg.acceptance_rate)
    concentrations = np.full(len(names), cfg.acceptance_concentration or 0.0)
    for i, w in enumerate(cfg.per_workload):
        if w.workload not in names:
            raise InputError(f"engine.speculative.per_workload[{i}].workload",
                             f"'{w.workload}' is no workload entry (entries: {', '.join(names)})")
        rates[names.index(w.workload)] = w.acceptance_rate
        if w.acceptance_concentration is not None:
            concentrations[names.index(w.workload)] = w.acceptance_concentration
    draft_params = None
    if cfg.method == "draft":
        assert cfg.draft_model is not None  # SpeculativeConfig._check
        draft = replace(scenario, model=ModelConfig(name=cfg.draft_model))
        try:
            draft_params = step_params(draft, plan_deployment(draft))
        except InputError as exc:
            raise InputError("engine.speculative.draft_model", f"{cfg.draft_model}: {exc.problem}") from None
    return Speculation(cfg.num_speculative_tokens, rates, seed, draft_params,
                       cfg.draft_step_fraction or DEFAULT_DRAFT_STEP_FRACTION,
                       concentrations if concentrations.any() else None, cfg.in_mixed_steps)


def run_step(replica):
    """One speculative decode step of `replica`'s running requests (a SimPy generator), in place
    of a decode span: preempts while the KV cache cannot take the accepted tokens."""
    t, state = replica.table, replica.speculation
    block_size = replica.block_size
    while True:
        ids = replica.running.ids()
        tokens = state.tokens(ids, t.workload[ids], t.output_tokens[ids] - t.generated[ids])
        need = np.maximum(-(-(t.kv_tokens[ids] + tokens) // block_size) - t.kv_blocks[ids], 0).sum()
        if need <= replica.kv.pool.num_free:
            break
        replica.preempt_last()
        if not replica.running:
            return
    start_s = replica.env.now
    yield replica.env.timeout(step_s(replica.params, state.spec, t.kv_tokens[ids]) + replica._take_transfer_s())
    end_s = replica.env.now
    for count in np.unique(tokens).tolist():  # the kernel applies one count to a group
        group = ids[tokens == count]
        replica.kv.apply_decode_steps(group, np.full(count, end_s), count)
    state.advance(ids, t.generated[ids] >= t.output_tokens[ids])
    # routers read the replica's inter-token gap: the step over the tokens each sequence got from it
    replica._record_itl((end_s - start_s) * len(ids) / float(tokens.sum()), 1)
    replica.log.add(replica.index, start_s, np.array([end_s]), np.array([int(tokens.sum())]), ids, tokens,
                    prefill=False)
    replica._retire_finished(ids, end_s)
