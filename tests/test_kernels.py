"""Every numba kernel of the engine and the ledger against its plain-Python reference
(the hourly step-charging kernel is tested in test_pricing.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.cost.ledger import allocate_records_py, allocate_weighted_records, busy_idle_seconds, busy_idle_seconds_py
from simcost.engine.decode_kernels import (
    apply_decode_steps,
    apply_decode_steps_py,
    decode_blocks_needed,
    decode_blocks_needed_py,
    max_feasible_steps_py,
    plan_decode_span,
)

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 40), block_size=st.sampled_from([1, 4, 16]))
def test_decode_blocks_needed(seed, n, block_size):
    """Prefilling requests (KV short of their prompt) need nothing; a decoding one needs the
    block its next token opens, less any it holds beyond its KV (a recompute claims ahead)."""
    rng = np.random.default_rng(seed)
    num = 50
    prefill_target = rng.integers(1, 400, num)
    kv_tokens = np.where(rng.random(num) < 0.7, prefill_target + rng.integers(0, 100, num),
                         rng.integers(0, prefill_target))
    kv_blocks = -(-kv_tokens // block_size) + rng.integers(0, 2, num)
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    want = decode_blocks_needed_py(ids, kv_tokens, prefill_target, kv_blocks, block_size)
    assert decode_blocks_needed(ids, kv_tokens, prefill_target, kv_blocks, block_size) == want
    decoding = kv_tokens[ids] >= prefill_target[ids]  # the vectorised form it replaced
    assert want == int(((kv_tokens[ids][decoding] + block_size) // block_size - kv_blocks[ids][decoding]).sum())


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 30), block_size=st.sampled_from([1, 4, 16]), free=st.integers(0, 200),
       max_steps=st.integers(1, 300))
def test_plan_decode_span_bisects_to_the_scanned_feasible_steps(seed, n, block_size, free, max_steps):
    # outputs far away, so only the free blocks and max_steps bound the span
    rng = np.random.default_rng(seed)
    kv_tokens = rng.integers(1, 500, n)
    kv_blocks = -(-kv_tokens // block_size)
    ids, output, generated = np.arange(n), np.full(n, 10_000), np.zeros(n, dtype=np.int64)
    k, kv_sum = plan_decode_span(ids, output, generated, kv_tokens, kv_blocks, free, block_size, max_steps)
    assert k == max_feasible_steps_py(kv_tokens, kv_blocks, free, block_size, max_steps)
    assert kv_sum == kv_tokens.sum()


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 20), steps=st.integers(1, 40), block_size=st.sampled_from([1, 16]))
def test_apply_decode_steps(seed, n, steps, block_size):
    rng = np.random.default_rng(seed)
    num = 30
    out = rng.integers(steps + 1, steps + 80, num)
    offset = np.zeros(num + 1, dtype=np.int64)
    np.cumsum(out, out=offset[1:])
    generated = rng.integers(1, 2, num).astype(np.int64)
    kv_tokens = rng.integers(1, 400, num)
    kv_blocks = -(-kv_tokens // block_size)
    ids = rng.choice(num, n, replace=False).astype(np.int64)
    ends = np.sort(rng.random(steps))
    state = [generated, kv_tokens, kv_blocks, np.full(int(offset[-1]), np.nan)]
    a = [x.copy() for x in state]
    b = [x.copy() for x in state]
    na = apply_decode_steps(ids, a[0], a[1], a[2], offset, a[3], ends, steps, block_size)
    nb = apply_decode_steps_py(ids, b[0], b[1], b[2], offset, b[3], ends, steps, block_size)
    assert na == nb
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def random_log(rng, num_records, num_requests, num_replicas):
    """Random records with member tokens, each a prompt or an output member (weights are
    tokens x the kind's weight), so under decode_weight 0 some records weigh 0 in total (as a
    decode span does)."""
    steps = rng.integers(1, 6, num_records)
    members = rng.integers(1, 5, num_records)
    rso = np.concatenate([[0], np.cumsum(steps)])
    rmo = np.concatenate([[0], np.cumsum(members)])
    step_usd = rng.random(rso[-1])
    member_request = rng.integers(0, num_requests, rmo[-1])
    member_tokens = rng.integers(1, 3000, rmo[-1])
    member_prefill = rng.random(rmo[-1]) < 0.3
    return step_usd, rso, rmo, member_request, member_tokens, member_prefill


def weighted(log, prefill_weight, decode_weight, equal):
    """The log as allocate_records_py takes it: one float weight per member."""
    step_usd, rso, rmo, member_request, tokens, prefill = log
    weight = np.ones(len(tokens)) if equal else tokens * np.where(prefill, prefill_weight, decode_weight)
    return step_usd, rso, rmo, member_request, weight


@settings(max_examples=60, deadline=None)
@given(seed=seeds, records=st.integers(1, 40), requests=st.integers(1, 25))
def test_allocate_records_matches_reference_and_conserves(seed, records, requests):
    rng = np.random.default_rng(seed)
    log = random_log(rng, records, requests, 1)
    for prefill_weight, decode_weight, equal in ((1.0, 1.0, False), (0.25, 3.0, False), (1.0, 0.0, False),
                                                 (1.0, 1.0, True)):
        got = allocate_weighted_records(*log, prefill_weight, decode_weight, equal, requests)
        want = allocate_records_py(*weighted(log, prefill_weight, decode_weight, equal), requests)
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
        assert got.sum() == pytest.approx(log[0].sum(), rel=1e-12)  # every dollar goes to someone


def test_a_record_of_zero_weight_is_split_equally():
    # record 0: two output members under decode_weight 0; record 1: prompt members of 1 and 3 tokens
    log = (np.array([6.0, 4.0]), np.array([0, 1, 2]), np.array([0, 2, 4]), np.array([0, 1, 0, 2]),
           np.array([5, 7, 1, 3]), np.array([False, False, True, True]))
    want = [3.0 + 1.0, 3.0, 3.0]
    np.testing.assert_allclose(allocate_weighted_records(*log, 1.0, 0.0, False, 3), want)
    np.testing.assert_allclose(allocate_records_py(*weighted(log, 1.0, 0.0, False), 3), want)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 50), replicas=st.integers(1, 4))
def test_busy_idle_kernel(seed, n, replicas):
    rng = np.random.default_rng(seed)
    replica = rng.integers(0, replicas, n)
    start = np.empty(n)
    end = np.empty(n)
    clock = np.zeros(replicas)
    for j in range(n):  # non-overlapping steps per replica, with random gaps
        r = replica[j]
        start[j] = clock[r] + rng.random() * (rng.random() < 0.5)
        end[j] = start[j] + rng.random()
        clock[r] = end[j]
    horizon = float(clock.max()) + 1.0
    busy, idle, overlaps = busy_idle_seconds(start, end, replica, replicas, horizon)
    busy_py, idle_py, overlaps_py = busy_idle_seconds_py(start, end, replica, replicas, horizon)
    np.testing.assert_allclose(busy, busy_py, atol=1e-12)
    np.testing.assert_allclose(idle, idle_py, atol=1e-12)
    assert overlaps == overlaps_py == 0
    np.testing.assert_allclose(busy + idle, horizon)


def test_overlapping_steps_are_detected():
    start, end, replica = np.array([0.0, 0.5]), np.array([1.0, 2.0]), np.array([0, 0])
    assert busy_idle_seconds(start, end, replica, 1, 3.0)[2] == 1
    assert busy_idle_seconds_py(start, end, replica, 1, 3.0)[2] == 1
