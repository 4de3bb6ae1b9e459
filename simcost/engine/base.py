"""What every replica is to the fleet and its routers, whatever its batching policy.

A replica is a SimPy process over a waiting queue and a running batch, with a KV block pool.
The fleet submits requests, drains (take_waiting) and loses (stop) replicas; routers read
num_outstanding, running, waiting, role and itl_ewma_s. Subclasses schedule and run the steps:
simcost.engine.replica (iteration-level: a new batch at every step) and
simcost.engine.request_level (request-level: a batch runs to completion).
"""

from __future__ import annotations

import numpy as np
import simpy

from simcost.engine.kv.blocks import KVPool
from simcost.engine.kv.request_kv import RequestKV
from simcost.engine.kv.reuse import PrefixReuse
from simcost.engine.options import ReplicaOptions
from simcost.engine.waiting import RunningBatch, WaitingQueue
from simcost.perf.step_model import item_time_s

STOP = "stop"  # the interrupt cause that ends a replica's loop (its node is gone)


def wake_after(process: simpy.Process, delay_s: float) -> bool:
    """Make `process`, waiting on an event, wait delay_s from now instead: what
    Process.interrupt does (SimPy 4's `_target` and `_resume`), minus its extra event and
    exception, for a replica whose decode span an arrival cuts short (~1 per request). False,
    changing nothing, on a SimPy without those internals: the caller interrupts instead."""
    try:
        waits_on, resume = process._target.callbacks, process._resume
    except AttributeError:
        return False
    event = process.env.timeout(delay_s)
    waits_on.remove(resume)
    event.callbacks.append(resume)
    process._target = event
    return True


class ReplicaBase:
    # the pool routers' TPOT signal (simcost.cluster.routers): 0.0 until a decode step is seen,
    # and always under request-level policies, whose decode is one step per batch
    itl_ewma_s = 0.0
    reuse: PrefixReuse | None = None  # prefix caching (iteration-level replicas only)

    def __init__(self, env: simpy.Environment, index: int, options: ReplicaOptions):
        self.env = env
        self.index = index
        self.options = options
        self.table = options.table
        self.params = options.step_params
        self.item_work = options.item_work
        self.block_size = options.block_size
        self.max_num_seqs = options.max_num_seqs
        self.max_num_batched_tokens = options.max_num_batched_tokens
        self.log = options.log
        self.on_finish = options.on_finish
        self.role = options.role  # "prefill", "decode" (disaggregation) or "both"
        self.queue_key = options.queue_key
        self.waiting = WaitingQueue(options.queue_key)
        self.running = RunningBatch()
        self._wake: simpy.Event | None = None  # set while the loop idles, waiting for work
        self.pool = self._make_pool(options)
        self.kv = RequestKV(self.table, self.pool, self.block_size, self.reuse)

    def _make_pool(self, options: ReplicaOptions) -> KVPool:
        raise NotImplementedError

    def retire(self) -> None:
        """The replica is gone and holds no request: free what only serving needed."""
        if self.reuse is not None:
            self.reuse.pool.retire()

    # --- the router's side -------------------------------------------------------------------

    @property
    def num_outstanding(self) -> int:
        return len(self.waiting) + len(self.running)

    def max_blocks_admissible(self) -> int:
        """Blocks one request may ever hold here: the whole pool less the admission watermark."""
        return self.pool.num_blocks - self.pool.watermark_blocks

    def submit(self, rid: int) -> None:
        self.table.replica[rid] = self.index
        self._enqueue(rid)
        if self._wake is not None:  # idle: the loop may start now
            self._wake_up()
        else:
            self._arrived_while_busy(rid)

    def _enqueue(self, rid: int) -> None:
        self.waiting.push(rid)

    def _arrived_while_busy(self, rid: int) -> None:
        """A request joined the queue while a step runs (nothing to do unless it can cut in)."""

    def _wake_up(self) -> None:
        wake, self._wake = self._wake, None
        if wake is not None:
            wake.succeed()

    def take_waiting(self) -> list[int]:
        """Draining: give up the requests not yet started here (a swapped-out request stays: its
        KV is in this node's host memory), for the fleet to route elsewhere."""
        t = self.table
        keep = WaitingQueue(self.queue_key)
        moved: list[int] = []
        while self.waiting:
            rid = self.waiting.pop()
            (keep.push if t.swapped_tokens[rid] else moved.append)(rid)
        self.waiting = keep
        return moved

    def stop(self) -> list[int]:
        """The node is lost (spot reclaim, failure): end the loop, the step in progress with it
        (its work is lost and never logged), and hand back the requests held here that have not
        ended, their KV gone, to be retried elsewhere."""
        if self.process.is_alive:
            self.process.interrupt(STOP)
        held = self._abandon()
        self.table.num_retries[np.asarray(held, dtype=np.int64)] += 1
        self.running, self.waiting = RunningBatch(), WaitingQueue(self.queue_key)
        return held

    def _abandon(self) -> list[int]:
        """The requests to retry elsewhere once the node is lost; their KV is forgotten."""
        raise NotImplementedError

    # --- the engine loop ---------------------------------------------------------------------

    def _start(self) -> None:
        """Subclasses call this last in __init__: the loop may run at once."""
        self.process = self.env.process(self._loop())

    def _loop(self):
        try:
            yield from self._serve()
        except simpy.Interrupt as stop:
            if stop.cause is not STOP:
                raise

    def _serve(self):
        raise NotImplementedError
        yield  # a generator

    def _items_s(self, ids: np.ndarray, fresh: np.ndarray) -> float:
        """Time for the items of the requests starting their first prefill (`fresh`): items are
        encoded once; a recompute after preemption never re-encodes them."""
        if self.item_work is None:
            return 0.0
        t = self.table
        ids = ids[fresh & (t.num_preemptions[ids] == 0)]
        flops_per_item, bytes_per_item = self.item_work
        workload, items = t.workload[ids], t.items[ids]
        return item_time_s(self.params, float((items * flops_per_item[workload]).sum()),
                           float((items * bytes_per_item[workload]).sum()))
