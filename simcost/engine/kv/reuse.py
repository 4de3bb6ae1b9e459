"""A replica's side of automatic prefix caching (engine.prefix_caching): which blocks of a
request's prompt have a content key, how much of a prompt the cache already holds at admission,
naming blocks once they are computed, and giving them back when the request ends.

Keys (simcost.engine.kv.prefix_cache): a Mooncake trace's 512-token hash ids, split into engine blocks;
a synthetic session's blocks (turn k+1 extends turn k's prompt + output, so block j of session
s is the same content in every turn that has it full). Other requests have no shared keys: no
trace says what their prompts share, so none is invented.

A preempted request keeps what it computed (vLLM V1 hashes every full block of every request,
prompt and output, as it is computed, and frees a preempted request's blocks into the cache
tail first): its computed full blocks are named when it is preempted, those past its shared
keys under keys of its own (`request_block_keys`, unique to it), and when it is admitted again
it finds whatever of them has not been evicted and recomputes only the rest. Requests never
preempted get no keys of their own: nobody else could hit them.

vLLM leaves at least one prompt token to compute (it needs the last position's logits), so a
lookup covers the full blocks of the first n - 1 tokens. Blocks found on the host tier are
loaded back over the host link; that time is added to the next step, like a swap-in.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from simcost.engine.kv.array_pool import ArrayPrefixBlockPool
from simcost.engine.kv.pool_kernels import trace_keys
from simcost.engine.kv.prefix_cache import (
    PrefixHit,
    check_trace_hash_ids,
    session_block_keys,
)
from simcost.errors import required
from simcost.workload.request_table import RequestTable

_NO_KEYS = np.zeros(0, dtype=np.int64)
_KEYS_KEPT = 2_000_000  # trace keys kept built (16 MB): a few requests per replica are in flight
KeysFn = Callable[[int, int], np.ndarray]  # (request id, tokens) -> int64 keys of the full blocks of its first tokens


@dataclass(frozen=True)
class PrefixSpec:
    """What every replica's prefix cache needs (built once per run by `prefix_spec`)."""

    keys: KeysFn
    host_blocks: int  # host-memory tier, blocks per replica (0: none)
    host_s_per_token: float  # seconds to load one token's KV back from host (per replica)


def prefix_spec(table: RequestTable, block_ids: list[np.ndarray] | None, block_tokens: int | None,
                session_prefix: np.ndarray, block_size: int, host_blocks: int, host_s_per_token: float) -> PrefixSpec:
    """`block_ids`: per initial request, its trace hash ids (None: the workload has none);
    `session_prefix`: per workload entry, whether its sessions are synthetic (prompts extend)."""
    trace_ids = block_ids if block_ids is not None else []
    ratio = 1
    if trace_ids:  # once here, not per lookup
        check_trace_hash_ids(np.concatenate(trace_ids), required(block_tokens, "the trace's block size"), block_size)
        ratio = required(block_tokens, "the trace's block size") // block_size  # (checked above: divides)

    # A request's keys are asked for at lookup, when its prompt is computed and when it ends: its
    # whole key array is built once and sliced (views nothing writes to). Bounded: past
    # _KEYS_KEPT keys in all, the oldest requests' arrays go (and are rebuilt if asked for again).
    full_keys: OrderedDict[int, np.ndarray] = OrderedDict()  # (popitem(last=False): O(1); a dict's first key is a scan past the deleted)
    kept = [0]

    def keys(rid: int, num_tokens: int) -> np.ndarray:
        if rid < len(trace_ids) and len(trace_ids[rid]):
            full = full_keys.get(rid)
            if full is None:  # trace_block_key_array's keys of the whole prompt, in one kernel call
                full = trace_keys(np.ascontiguousarray(trace_ids[rid], dtype=np.int64), ratio)
                while full_keys and kept[0] + len(full) > _KEYS_KEPT:
                    kept[0] -= len(full_keys.popitem(last=False)[1])
                full_keys[rid] = full
                kept[0] += len(full)
            return full[:max(num_tokens, 0) // block_size]
        if table.session[rid] >= 0 and session_prefix[table.workload[rid]]:
            return np.array(session_block_keys(int(table.session[rid]), num_tokens, block_size), dtype=np.int64)
        return _NO_KEYS

    return PrefixSpec(keys, host_blocks, host_s_per_token)


class PrefixReuse:
    def __init__(self, spec: PrefixSpec, pool: ArrayPrefixBlockPool, table: RequestTable, block_size: int):
        self.spec = spec
        self.pool = pool
        self.table = table
        self.block_size = block_size
        # request -> the nodes of the keys it references (in parts): released by node, no probe per key
        self.named: dict[int, list[np.ndarray]] = {}
        self.offered: dict[int, int] = {}  # request -> how many of its keys it has reused or named
        self.looked_up_tokens = 0  # prompt tokens offered to the cache at admission
        self.saved_tokens = 0  # of those, found cached: prefill tokens not computed
        # admissions again after a preemption, counted apart (as vLLM's PrefixCacheStats does):
        # blocks looked up and found, mostly the request's own
        self.resumed_blocks_looked_up = 0
        self.resumed_blocks_hit = 0
        self.load_s = 0.0  # host-tier loads not yet charged to a step

    def lookup(self, rid: int, num_tokens: int) -> tuple[np.ndarray, PrefixHit]:
        """The keys of rid's first num_tokens - 1 tokens and what the cache holds of them."""
        keys = self._keys(rid, num_tokens - 1, bool(self.table.num_preemptions[rid]))
        return keys, self.pool.lookup(keys)

    def _keys(self, rid: int, num_tokens: int, own: bool) -> np.ndarray:
        """rid's keys for the full blocks of its first num_tokens tokens: its shared keys, then
        (`own`: it has been preempted) keys of its own for the blocks past them."""
        keys = self.spec.keys(rid, num_tokens)
        num_blocks = max(num_tokens, 0) // self.block_size
        if own and len(keys) < num_blocks:
            keys = np.concatenate((keys, request_block_keys(rid, len(keys), num_blocks)))
        return keys

    def take(self, rid: int, keys: np.ndarray, hit: PrefixHit, num_tokens: int) -> int:
        """Reference the cached run found by `lookup` (the caller checked num_free for
        hit.num_free_blocks_needed); returns the cached tokens, which need no prefill."""
        got, nodes = self.pool.acquire_nodes(keys)  # the same leading run lookup found (nothing changed since)
        self.named[rid] = [nodes]
        self.offered[rid] = got.num_blocks
        cached_tokens = got.num_blocks * self.block_size
        if self.table.num_preemptions[rid]:
            self.resumed_blocks_looked_up += len(keys)
            self.resumed_blocks_hit += got.num_blocks
        else:
            self.looked_up_tokens += num_tokens
            self.saved_tokens += cached_tokens
        self.load_s += got.host * self.block_size * self.spec.host_s_per_token
        return cached_tokens

    def prefilled(self, rid: int) -> None:
        """rid's prompt is computed: name its full blocks so later requests can reuse them."""
        self._name_computed(rid, int(self.table.kv_tokens[rid]))

    def release(self, rid: int, finished: bool, preempted: bool = False) -> None:
        """rid ends (finished, preempted or handed off): drop its references and private blocks.
        A finished session turn first names its output's full blocks too: the next turn's
        prompt starts with them. A preempted request names every full block it computed, under
        its own keys past its shared ones, to find them when it is admitted again."""
        t = self.table
        if finished or preempted:
            self._name_computed(rid, int(t.kv_tokens[rid]), preempted)
        parts = self.named.pop(rid, [])
        held = parts[0] if len(parts) == 1 else np.concatenate(parts) if parts else _NO_KEYS
        self.offered.pop(rid, None)
        self.pool.release_nodes(held, int(t.kv_blocks[rid]) - len(held))

    def _name_computed(self, rid: int, num_tokens: int, preempted: bool = False) -> None:
        """Offer the keys of rid's computed full blocks not offered yet; the pool names those
        nobody else has cached (a block computed twice stays private: one key, one block)."""
        keys = self._keys(rid, num_tokens, preempted or bool(self.table.num_preemptions[rid]))
        done = self.offered.get(rid, 0)
        if len(keys) > done:
            self.named.setdefault(rid, []).append(self.pool.register_nodes(keys[done:])[1])
            self.offered[rid] = len(keys)


def request_block_keys(rid: int, start_block: int, stop_block: int) -> np.ndarray:
    """Keys of blocks start_block..stop_block - 1 of request rid's own sequence: -1 - (rid * 2**32
    + j), negative, so apart from the trace and session keys (>= 0); rid < 2**31, j < 2**32."""
    if not 0 <= rid < 1 << 31 or stop_block > 1 << 32:
        raise ValueError(f"request {rid}, block {stop_block - 1}: outside the request keys' range")
    return -1 - ((rid << 32) + np.arange(start_block, stop_block, dtype=np.int64))
