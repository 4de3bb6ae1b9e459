"""The replica's small per-event kernels (simcost.engine.decode_kernels) against their
plain-Python twins and the numpy forms they replaced: the same counts, the same floats."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from simcost.engine.decode_kernels import (
    apply_decode_steps,
    count_emitted,
    count_emitted_py,
    decode_blocks_needed,
    decode_needs,
    decode_needs_py,
    end_span,
    end_span_py,
    end_step,
    end_step_py,
    finish_members,
    finish_members_py,
    grow_step_kv,
    grow_step_kv_py,
    write_step_kv,
    write_step_kv_py,
)
from simcost.perf.step_model import span_ends_into, span_ends_py

seeds = st.integers(0, 2**32 - 1)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 40))
def test_finish_members_marks_the_requests_with_all_their_output(seed, n):
    rng = np.random.default_rng(seed)
    num = 60
    output_tokens = rng.integers(1, 50, num)
    generated = np.minimum(output_tokens, rng.integers(0, 60, num))  # some done, most not
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    status, finish_s = np.zeros(num, dtype=np.int8), np.full(num, np.nan)
    a, b = (status.copy(), finish_s.copy()), (status.copy(), finish_s.copy())
    got = finish_members(ids, generated, output_tokens, a[0], a[1], 3, 7.25)
    want = finish_members_py(ids, generated, output_tokens, b[0], b[1], 3, 7.25)
    np.testing.assert_array_equal(got, want)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    done = ids[generated[ids] >= output_tokens[ids]]  # the numpy form it replaced, in ids' order
    np.testing.assert_array_equal(got, done)
    assert got.dtype == np.int64
    assert set(np.flatnonzero(a[0] == 3).tolist()) == set(done.tolist())  # only they are marked
    assert bool((a[1][done] == 7.25).all()) and int(np.isnan(a[1]).sum()) == num - len(done)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, k=st.integers(1, 300), start_s=st.floats(0, 1e6), extra_s=st.sampled_from([0.0, 1e-3, 0.37]))
def test_span_end_times_are_the_cumsum_floats_bit_for_bit(seed, k, start_s, extra_s):
    """Bit-identical, not close: a run's token times and bill come from these sums."""
    step_s = np.random.default_rng(seed).random(k) * 0.05 + 1e-4
    numpy_form = step_s.copy()
    numpy_form[0] += extra_s
    want = start_s + numpy_form.cumsum()
    got = np.full(k + 1, -1.0)  # written for the k steps only
    span_ends_into(step_s, start_s, extra_s, got)
    assert got[k] == -1.0
    got = got[:k]
    assert got.tobytes() == want.tobytes()
    assert span_ends_py(step_s, start_s, extra_s).tobytes() == want.tobytes()
    assert len(got) == k and bool((np.diff(got) >= 0).all())  # every step, in order


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 40), block_size=st.sampled_from([1, 4, 16]))
def test_decode_needs_is_the_decode_blocks_and_the_prefilling_count(seed, n, block_size):
    rng = np.random.default_rng(seed)
    num = 50
    prefill_target = rng.integers(1, 400, num)
    kv_tokens = np.where(rng.random(num) < 0.7, prefill_target + rng.integers(0, 100, num),
                         rng.integers(0, prefill_target))
    kv_blocks = -(-kv_tokens // block_size) + rng.integers(0, 2, num)
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    want = decode_needs_py(ids, kv_tokens, prefill_target, kv_blocks, block_size)
    assert decode_needs(ids, kv_tokens, prefill_target, kv_blocks, block_size) == want
    assert want == (decode_blocks_needed(ids, kv_tokens, prefill_target, kv_blocks, block_size),
                    int((kv_tokens[ids] < prefill_target[ids]).sum()))


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 30))
def test_write_step_kv_writes_the_kv_and_finds_the_finished_prompts(seed, n):
    rng = np.random.default_rng(seed)
    num = 40
    prefill_target = rng.integers(1, 3000, num)
    kv_tokens = rng.integers(0, 3000, num)
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    kv_before, tokens = kv_tokens[ids], rng.integers(1, 600, n)
    a, b = kv_tokens.copy(), kv_tokens.copy()
    done_a, done_b = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)
    count = write_step_kv(ids, tokens, kv_before, prefill_target, a, done_a)
    assert count == write_step_kv_py(ids, tokens, kv_before, prefill_target, b, done_b)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(done_a, done_b)
    # the numpy form it replaced
    np.testing.assert_array_equal(a[ids], kv_before + tokens)
    np.testing.assert_array_equal(done_a, kv_before + tokens >= prefill_target[ids])
    assert count == int(done_a.sum()) and np.delete(a, ids).tolist() == np.delete(kv_tokens, ids).tolist()


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 30))
def test_count_emitted_counts_a_token_and_stamps_only_first_tokens(seed, n):
    rng = np.random.default_rng(seed)
    num = 40
    generated = rng.integers(0, 5, num)
    first_token_s = np.where(generated > 0, rng.random(num), np.nan)
    emits = rng.choice(num, size=n, replace=False).astype(np.int64)
    end_s = 7.25
    a, b = (generated.copy(), first_token_s.copy()), (generated.copy(), first_token_s.copy())
    count_emitted(emits, a[0], a[1], end_s)
    count_emitted_py(emits, b[0], b[1], end_s)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)
    want_generated, want_first = generated.copy(), first_token_s.copy()  # the numpy form it replaced
    want_generated[emits] += 1
    fresh = emits[np.isnan(want_first[emits])]
    want_first[fresh] = end_s
    np.testing.assert_array_equal(a[0], want_generated)
    np.testing.assert_array_equal(a[1], want_first)
    assert int((a[1] == end_s).sum()) == int(np.isnan(first_token_s[emits]).sum())  # first tokens only


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 30), block_size=st.sampled_from([1, 4, 16]))
def test_grow_step_kv_claims_each_members_blocks_and_counts_them(seed, n, block_size):
    rng = np.random.default_rng(seed)
    num = 40
    kv_tokens = rng.integers(0, 300, num)
    kv_blocks = -(-kv_tokens // block_size) + rng.integers(0, 2, num)  # some hold a block ahead
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    tokens = rng.integers(0, 600, n)
    a, b = kv_blocks.copy(), kv_blocks.copy()
    total = grow_step_kv(ids, tokens, kv_tokens, a, block_size)
    assert total == grow_step_kv_py(ids, tokens, kv_tokens, b, block_size)
    np.testing.assert_array_equal(a, b)
    want = kv_blocks.copy()  # the per-request form it replaced: blocks_for(kv + tokens) each
    want_total = 0
    for i, c in zip(ids.tolist(), tokens.tolist()):
        blocks = -(-(int(kv_tokens[i]) + c) // block_size)
        want_total += blocks - int(want[i])
        want[i] = blocks
    if total >= 0:
        assert total == want_total
        np.testing.assert_array_equal(a, want)
    else:  # a member that would shrink: refused, nothing changed
        assert any(-(-(int(kv_tokens[i]) + c) // block_size) < kv_blocks[i] for i, c in zip(ids.tolist(), tokens.tolist()))
        np.testing.assert_array_equal(a, kv_blocks)


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(0, 30))
def test_end_step_is_the_four_calls_it_replaced(seed, n):
    """One kernel for a step's end (write the KV, emit the done prompts' and decoders' tokens,
    count them, finish the complete): the same columns as its twin, which is the replaced calls'
    twins in order, and as those calls' kernels themselves."""
    rng = np.random.default_rng(seed)
    num = 40
    output_tokens = rng.integers(1, 6, num)
    token_offset = np.concatenate(([0], np.cumsum(output_tokens)[:-1]))
    prefill_target = rng.integers(1, 3000, num)
    ids = rng.choice(num, size=n, replace=False).astype(np.int64)
    generated = rng.integers(0, output_tokens)  # every request still has a token to come
    decoding = rng.random(num) < 0.5  # past their prompt (generated >= 1), or mid-prompt (none yet)
    generated[~decoding] = 0
    kv_tokens = np.where(decoding, prefill_target + generated, rng.integers(0, prefill_target))
    first_token_s = np.where(generated > 0, rng.random(num), np.nan)
    tokens = np.where(decoding[ids], 1, rng.integers(1, 1500, n))
    kv_before = kv_tokens[ids]
    columns = (kv_tokens, generated, first_token_s, np.full(int(output_tokens.sum()), np.nan),
               np.zeros(num, dtype=np.int8), np.full(num, np.nan))
    got, want, calls = ([c.copy() for c in columns] for _ in range(3))
    got_done, want_done = np.empty(n, dtype=np.bool_), np.empty(n, dtype=np.bool_)

    def run(fn, cols, prompt_done):
        kv, gen, first, token_s, status, finish_s = cols
        finished = np.full(n + 3, -7, dtype=np.int64)  # longer than needed: only the first `count` are written
        count = fn(ids, tokens, kv_before, prefill_target, kv, prompt_done, gen, first, token_offset, token_s,
                   output_tokens, status, finish_s, 3, 7.25, finished)
        assert (finished[count:] == -7).all()
        return finished[:count]

    finished = run(end_step, got, got_done)
    np.testing.assert_array_equal(finished, run(end_step_py, want, want_done))
    np.testing.assert_array_equal(got_done, want_done)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)
    kv, gen, first, token_s, status, finish_s = calls  # the kernels it replaced, as _run_step called them
    prompt_done = np.empty(n, dtype=np.bool_)
    write_step_kv(ids, tokens, kv_before, prefill_target, kv, prompt_done)
    emits = ids[prompt_done]
    token_s[token_offset[emits] + gen[emits]] = 7.25
    count_emitted(emits, gen, first, 7.25)
    np.testing.assert_array_equal(finished, finish_members(emits, gen, output_tokens, status, finish_s, 3, 7.25))
    for x, y in zip(got, calls):
        np.testing.assert_array_equal(x, y)
    assert finished.dtype == np.int64 and set(finished.tolist()) <= set(emits.tolist())
    assert int((got[3] == 7.25).sum()) == len(emits)  # one token time per emitter


@settings(max_examples=60, deadline=None)
@given(seed=seeds, n=st.integers(1, 20), steps=st.integers(1, 40), block_size=st.sampled_from([1, 16]))
def test_end_span_applies_the_steps_then_finishes_the_complete(seed, n, steps, block_size):
    """One kernel for a span's end: the columns and finished members of its twin, and of the two
    kernels it replaced (apply_decode_steps, then finish_members at the last step's end)."""
    rng = np.random.default_rng(seed)
    num = 30
    generated = rng.integers(1, 30, num)
    output_tokens = generated + rng.integers(steps, steps + 3, num)  # some finish at the span's last step
    offset = np.concatenate(([0], np.cumsum(output_tokens)[:-1]))
    kv_tokens = rng.integers(1, 400, num) + generated
    kv_blocks = -(-kv_tokens // block_size)
    ids = rng.choice(num, n, replace=False).astype(np.int64)
    ends = np.sort(rng.random(steps)) + 1.0
    state = (generated, kv_tokens, kv_blocks, np.full(int(output_tokens.sum()), np.nan),
             np.zeros(num, dtype=np.int8), np.full(num, np.nan))
    got, want, calls = ([x.copy() for x in state] for _ in range(3))

    def run(fn, cols):
        gen, kv, blocks, token_s, status, finish_s = cols
        finished = np.full(n, -7, dtype=np.int64)
        new_blocks, count = fn(ids, gen, kv, blocks, offset, token_s, ends, steps, block_size, output_tokens, status,
                               finish_s, 3, finished)
        assert (finished[count:] == -7).all()
        return new_blocks, finished[:count]

    blocks, finished = run(end_span, got)
    want_blocks, want_finished = run(end_span_py, want)
    gen, kv, kvb, token_s, status, finish_s = calls
    assert blocks == want_blocks == apply_decode_steps(ids, gen, kv, kvb, offset, token_s, ends, steps, block_size)
    np.testing.assert_array_equal(finished, want_finished)
    np.testing.assert_array_equal(finished, finish_members(ids, gen, output_tokens, status, finish_s, 3, ends[-1]))
    for x, y, z in zip(got, want, calls):
        np.testing.assert_array_equal(x, y)
        np.testing.assert_array_equal(x, z)
    assert len(finished) == int((got[0][ids] >= output_tokens[ids]).sum()) and bool((got[5][finished] == ends[-1]).all())
