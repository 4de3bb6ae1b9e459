"""numba kernels for the replica's hot path: the blocks one more decode step needs, how many
decode steps fit, and applying them.

Pure functions over arrays (random numbers never drawn here); each has a plain-Python twin
`*_py` that tests compare against.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def decode_blocks_needed(ids, kv_tokens, prefill_target, kv_blocks, block_size):
    """Blocks the decoding requests among ids (those whose KV holds their whole prompt) need for
    one more token: sum of blocks_for(kv_tokens + 1) - kv_blocks over them. Runs at every step
    boundary, so one compiled loop instead of a handful of numpy gathers on small arrays."""
    total = 0
    for i in ids:
        kv = kv_tokens[i]
        if kv >= prefill_target[i]:
            total += (kv + block_size) // block_size - kv_blocks[i]
    return total


def decode_blocks_needed_py(ids, kv_tokens, prefill_target, kv_blocks, block_size):
    return sum((int(kv_tokens[i]) + block_size) // block_size - int(kv_blocks[i])
               for i in ids if kv_tokens[i] >= prefill_target[i])


def max_feasible_steps_py(kv_tokens, kv_blocks, num_free_blocks, block_size, max_steps):
    best = 0
    for k in range(1, max_steps + 1):
        extra = sum(max(0, -(-(int(t) + k) // block_size) - int(b)) for t, b in zip(kv_tokens, kv_blocks))
        if extra > num_free_blocks:
            break
        best = k
    return best


@njit(cache=True)
def apply_decode_steps(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s, num_steps, block_size):
    """Apply num_steps decode steps to the requests in ids; returns the blocks newly allocated.

    Each step writes one token's KV and emits one output token per request, at that step's end.
    """
    new_blocks = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        base = token_offset[i] + generated[i]
        for j in range(num_steps):
            token_time_s[base + j] = step_end_s[j]
        generated[i] += num_steps
        kv_tokens[i] += num_steps
        need = (kv_tokens[i] + block_size - 1) // block_size
        new_blocks += need - kv_blocks[i]
        kv_blocks[i] = need
    return new_blocks


def apply_decode_steps_py(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s, num_steps, block_size):
    new_blocks = 0
    for i in ids:
        for j in range(num_steps):
            token_time_s[token_offset[i] + generated[i]] = step_end_s[j]
            generated[i] += 1
            kv_tokens[i] += 1
            need = -(-int(kv_tokens[i]) // block_size)
            new_blocks += need - kv_blocks[i]
            kv_blocks[i] = need
    return new_blocks


@njit(cache=True)
def grow_decode_kv(ids, generated, kv_tokens, kv_blocks, num_steps, block_size):
    """apply_decode_steps without writing token times (a table that streams them): counts num_steps
    tokens per request and grows their KV; returns the blocks newly allocated."""
    new_blocks = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        generated[i] += num_steps
        kv_tokens[i] += num_steps
        need = (kv_tokens[i] + block_size - 1) // block_size
        new_blocks += need - kv_blocks[i]
        kv_blocks[i] = need
    return new_blocks


def grow_decode_kv_py(ids, generated, kv_tokens, kv_blocks, num_steps, block_size):
    new_blocks = 0
    for i in ids:
        for _ in range(num_steps):
            generated[i] += 1
            kv_tokens[i] += 1
            need = -(-int(kv_tokens[i]) // block_size)
            new_blocks += need - kv_blocks[i]
            kv_blocks[i] = need
    return new_blocks


@njit(cache=True)
def grow_step_kv(ids, tokens, kv_tokens, kv_blocks, block_size):
    """Member n of a step is about to write tokens[n] more tokens of KV: kv_blocks[ids[n]] =
    the blocks its KV then fills. Returns the blocks newly needed in all (what the pool gives in
    one call), or -1 (nothing changed) if a member would need fewer blocks than it holds."""
    total = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        need = (kv_tokens[i] + tokens[n] + block_size - 1) // block_size - kv_blocks[i]
        if need < 0:
            return -1
        total += need
    for n in range(ids.shape[0]):
        i = ids[n]
        kv_blocks[i] = (kv_tokens[i] + tokens[n] + block_size - 1) // block_size
    return total


def grow_step_kv_py(ids, tokens, kv_tokens, kv_blocks, block_size):
    need = [-(-(int(kv_tokens[i]) + int(c)) // block_size) for i, c in zip(ids, tokens)]
    if any(b < int(kv_blocks[i]) for b, i in zip(need, ids)):
        return -1
    total = sum(b - int(kv_blocks[i]) for b, i in zip(need, ids))
    for b, i in zip(need, ids):
        kv_blocks[i] = b
    return total


@njit(cache=True)
def plan_decode_span(ids, output_tokens, generated, kv_tokens, kv_blocks, num_free_blocks, block_size, max_span_steps):
    """A decode span's size in one call: (k, kv tokens of the batch), k the most steps <=
    max_span_steps that no request outlives (its output tokens left) and the free blocks allow.
    Step j (1-based) writes the KV of one more token per request, so request i needs
    ceil((kv_tokens[i] + j) / block_size) blocks by then; the extra blocks over those it holds
    grow with j, so the largest feasible k is found by bisection (max_feasible_steps_py: by scan)."""
    left = max_span_steps
    kv_sum = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        left = min(left, output_tokens[i] - generated[i])
        kv_sum += kv_tokens[i]
    lo, hi = 0, left
    while lo < hi:
        mid = (lo + hi + 1) // 2
        extra = 0
        for n in range(ids.shape[0]):
            i = ids[n]
            need = (kv_tokens[i] + mid + block_size - 1) // block_size - kv_blocks[i]
            if need > 0:
                extra += need
        if extra <= num_free_blocks:
            lo = mid
        else:
            hi = mid - 1
    return lo, kv_sum


def plan_decode_span_py(ids, output_tokens, generated, kv_tokens, kv_blocks, num_free_blocks, block_size, max_span_steps):
    left = min([max_span_steps] + [int(output_tokens[i] - generated[i]) for i in ids])
    k = max_feasible_steps_py(kv_tokens[ids], kv_blocks[ids], num_free_blocks, block_size, left)
    return k, int(sum(int(kv_tokens[i]) for i in ids))


@njit(cache=True)
def step_shape(ids, tokens, kv_tokens, prefill_target, decoding):
    """What a mixed step computes, in one call: decoding[n] (member n is past its prompt: one
    decode token) and (decoding members, prompt-chunk tokens, prompt chunks, attention pairs,
    KV tokens before the step). A decode token attends to its context plus itself; a chunk to
    what precedes it (a cached prefix included) plus itself, causally. Integer sums: exact."""
    num_decoding = num_chunk_tokens = num_chunks = pairs = kv_sum = 0
    for n in range(ids.shape[0]):
        kv = kv_tokens[ids[n]]
        kv_sum += kv
        if kv >= prefill_target[ids[n]]:
            decoding[n] = True
            num_decoding += 1
            pairs += kv + 1
        else:
            decoding[n] = False
            c = tokens[n]
            num_chunks += 1
            num_chunk_tokens += c
            pairs += c * kv + c * (c + 1) // 2
    return num_decoding, num_chunk_tokens, num_chunks, pairs, kv_sum


def step_shape_py(ids, tokens, kv_tokens, prefill_target, decoding):
    kv = [int(kv_tokens[i]) for i in ids]
    dec = [k >= int(prefill_target[i]) for k, i in zip(kv, ids)]
    decoding[:] = dec
    chunks = [(int(c), k) for c, k, d in zip(tokens, kv, dec) if not d]
    pairs = sum(k + 1 for k, d in zip(kv, dec) if d) + sum(c * k + c * (c + 1) // 2 for c, k in chunks)
    return sum(dec), sum(c for c, _ in chunks), len(chunks), pairs, sum(kv)


@njit(cache=True)
def finish_members(ids, generated, output_tokens, status, finish_s, completed, now_s):
    """The members of ids that have all their output tokens, marked `completed` at now_s, as a
    new array (after every step and span, and most find none: one call instead of two gathers,
    a compare, a mask and two scattered writes on a few elements)."""
    done = np.empty(ids.shape[0], dtype=np.int64)
    return done[:finish_members_into(ids, generated, output_tokens, status, finish_s, completed, now_s, done)]


@njit(cache=True)
def finish_members_into(ids, generated, output_tokens, status, finish_s, completed, now_s, done):
    """finish_members, its members written to done[:count] (len(ids) long at least); returns
    count. A kernel that returns a new array pays ~1 us more per call to hand it to Python."""
    count = 0
    for n in range(ids.shape[0]):
        i = ids[n]
        if generated[i] >= output_tokens[i]:
            done[count] = i
            count += 1
            status[i] = completed
            finish_s[i] = now_s
    return count


def finish_members_py(ids, generated, output_tokens, status, finish_s, completed, now_s):
    done = [int(i) for i in ids if generated[i] >= output_tokens[i]]
    for i in done:
        status[i] = completed
        finish_s[i] = now_s
    return np.array(done, dtype=np.int64)


@njit(cache=True)
def decode_needs(ids, kv_tokens, prefill_target, kv_blocks, block_size):
    """(decode_blocks_needed over ids, how many of ids are still prefilling), in one pass: the
    chunked scheduler asks both before every step."""
    total = prefilling = 0
    for i in ids:
        kv = kv_tokens[i]
        if kv >= prefill_target[i]:
            total += (kv + block_size) // block_size - kv_blocks[i]
        else:
            prefilling += 1
    return total, prefilling


def decode_needs_py(ids, kv_tokens, prefill_target, kv_blocks, block_size):
    return (decode_blocks_needed_py(ids, kv_tokens, prefill_target, kv_blocks, block_size),
            sum(1 for i in ids if kv_tokens[i] < prefill_target[i]))


@njit(cache=True)
def write_step_kv(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done):
    """A step wrote tokens[n] tokens of KV for member n: kv_tokens[ids[n]] = kv_before[n] +
    tokens[n], and prompt_done[n] = its KV now holds its whole prompt (a decoding member's
    does). Returns how many are done. One call per step instead of five numpy operations."""
    done = 0
    for n in range(ids.shape[0]):
        kv = kv_before[n] + tokens[n]
        kv_tokens[ids[n]] = kv
        prompt_done[n] = kv >= prefill_target[ids[n]]
        if prompt_done[n]:
            done += 1
    return done


def write_step_kv_py(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done):
    for n, i in enumerate(ids):
        kv_tokens[i] = kv_before[n] + tokens[n]
        prompt_done[n] = kv_tokens[i] >= prefill_target[i]
    return int(prompt_done.sum())


@njit(cache=True)
def count_emitted(emits, generated, first_token_s, end_s):
    """Each of emits (distinct) emitted one token at end_s, its time already recorded
    (RequestTable.emit_tokens reads `generated` first): count it, and stamp a first token."""
    for i in emits:
        generated[i] += 1
        if np.isnan(first_token_s[i]):
            first_token_s[i] = end_s


def count_emitted_py(emits, generated, first_token_s, end_s):
    for i in emits:
        generated[i] += 1
        if first_token_s[i] != first_token_s[i]:  # NaN
            first_token_s[i] = end_s


@njit(cache=True)
def end_step(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done, generated, first_token_s,
             token_offset, token_time_s, output_tokens, status, finish_s, completed, end_s, finished):
    """A step's end at end_s in one call, for a table with exact token times: `write_step_kv`;
    each member whose prompt is done (a decoder, or a prompt whose last chunk this was) emits a
    token, its time at token_offset + generated (RequestTable.emit_tokens), counted by
    `count_emitted`; `finish_members` over them marks those with all their output, written to
    finished[:count] (len(ids) long at least); returns count. One dispatch instead of four, and
    no gathers or small arrays in Python between them."""
    write_step_kv(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done)
    emits = ids[prompt_done]
    for i in emits:
        token_time_s[token_offset[i] + generated[i]] = end_s
    count_emitted(emits, generated, first_token_s, end_s)
    return finish_members_into(emits, generated, output_tokens, status, finish_s, completed, end_s, finished)


def end_step_py(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done, generated, first_token_s,
                token_offset, token_time_s, output_tokens, status, finish_s, completed, end_s, finished):
    """end_step as the twins of the calls it replaced, one after the other."""
    write_step_kv_py(ids, tokens, kv_before, prefill_target, kv_tokens, prompt_done)
    emits = ids[prompt_done]
    token_time_s[token_offset[emits] + generated[emits]] = end_s
    count_emitted_py(emits, generated, first_token_s, end_s)
    done = finish_members_py(emits, generated, output_tokens, status, finish_s, completed, end_s)
    finished[:len(done)] = done
    return len(done)


@njit(cache=True)
def end_span(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s, num_steps, block_size,
             output_tokens, status, finish_s, completed, finished):
    """A span's end, in one call: `apply_decode_steps`, then the members that now have all their
    output marked `completed` at the last step's end (`finish_members`), written to
    finished[:count] (len(ids) long at least). Returns (the blocks newly allocated, count)."""
    new_blocks = apply_decode_steps(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s,
                                    num_steps, block_size)
    return new_blocks, finish_members_into(ids, generated, output_tokens, status, finish_s, completed,
                                           step_end_s[num_steps - 1], finished)


def end_span_py(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s, num_steps, block_size,
                output_tokens, status, finish_s, completed, finished):
    new_blocks = apply_decode_steps_py(ids, generated, kv_tokens, kv_blocks, token_offset, token_time_s, step_end_s,
                                       num_steps, block_size)
    done = finish_members_py(ids, generated, output_tokens, status, finish_s, completed, float(step_end_s[num_steps - 1]))
    finished[:len(done)] = done
    return new_blocks, len(done)
