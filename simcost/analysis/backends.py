"""Where batches of runs execute: local processes (the default, every core, no setup) or Ray.
Both call the same top-level function on the same arguments, so a run's result does not depend
on the backend.

`execute` yields each result as it finishes (for a progress bar and a cache that fills as the
sweep goes); `map_runs` is the simpler in-order form that `simcost size` and `forecast` use.
Ray is imported only when asked for, so it stays an optional extra (pip install 'simcost[ray]').
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from contextlib import contextmanager
from typing import Any

from simcost.errors import InputError
from simcost.simulation.progress import new_bar

BACKENDS = ("local", "ray")


@contextmanager
def worker_pool(jobs: int):
    """A process pool for a batch of runs (workers import numba once), or None for jobs <= 1."""
    if jobs <= 1:
        yield None
        return
    with ProcessPoolExecutor(max_workers=jobs) as pool:
        yield pool


def map_runs(pool, fn, args: list[tuple], progress: bool = False, desc: str = "runs", bar=None) -> list:
    """fn(*a) for each a, in the pool's processes when there is one; results in order. `bar`
    (from progress_bar) counts each finished run, for a bar that spans several batches."""
    if pool is None or len(args) < 2:
        return [_counted(fn(*a), bar) for a in progress_items(args, progress, desc)]
    futures = [pool.submit(fn, *a) for a in args]
    return [_counted(f.result(), bar) for f in progress_items(futures, progress, desc)]


def _counted(result, bar):
    if bar is not None:
        bar.update(1)
    return result


def job_key(job: tuple) -> str:
    """A job's identity: equal arguments are one run."""
    return json.dumps(job, sort_keys=True, default=str)


class RunCache:
    """Runs jobs (argument tuples of `fn`) in a pool, each distinct job once (keyed by its JSON):
    the searches of size, forecast and levers revisit points, and a rerun would only repeat it."""

    def __init__(self, pool, fn, progress: bool = False, desc: str = "runs", bar=None):
        self.pool, self.fn, self.progress, self.desc, self.bar = pool, fn, progress, desc, bar
        self.cache: dict[str, Any] = {}  # job JSON -> its result

    def run(self, jobs: list[tuple]) -> list:
        keys = [job_key(job) for job in jobs]
        todo = {k: job for k, job in zip(keys, jobs) if k not in self.cache}
        self.cache.update(zip(todo, map_runs(self.pool, self.fn, list(todo.values()), self.progress, self.desc,
                                             self.bar)))
        return [self.cache[k] for k in keys]

    @property
    def runs(self) -> int:
        return len(self.cache)


def progress_items(items, enabled: bool, desc: str, total: int | None = None):
    """items, behind a tqdm bar (elapsed<remaining is its time-left estimate) when enabled;
    disable=None turns it off where stderr is not a terminal (CI, pipes); tqdm.auto draws a
    widget in a notebook."""
    if not enabled:
        return items
    return new_bar(items, unit="run", desc=desc, delay=1.0, leave=False, disable=None, total=total)


class _NoBar:
    def update(self, n: int = 1) -> None:
        pass

    def close(self) -> None:
        pass


@contextmanager
def progress_bar(enabled: bool, desc: str, total: int | None = None):
    """One bar counting simulations across every batch of a command whose run count is not known
    up front (size's and levers' searches): `bar.update(1)` per run; a no-op when disabled."""
    if not enabled:
        yield _NoBar()
        return
    with new_bar(total=total, unit="sim", desc=desc, delay=1.0, leave=False, disable=None) as bar:
        yield bar


def execute(fn: Callable, args: list[tuple], backend: str = "local", jobs: int = 1,
            address: str | None = None, pool=None) -> Iterator[tuple[int, object, BaseException | None]]:
    """Run fn(*a) for each a; yield (index, result, None) as each finishes, or (index, None,
    error) when the backend itself lost the run (a worker process died). fn's own exceptions are
    errors of this kind too, so a caller that wants to go on should catch them inside fn. `pool`:
    a local worker_pool the caller keeps open for work after the runs (its warm workers)."""
    if backend == "local":
        yield from (_local(fn, args, jobs) if pool is None or len(args) < 2 else _in_pool(pool, fn, args))
    elif backend == "ray":
        yield from _ray(fn, args, jobs, address)
    else:
        raise InputError("--backend", f"'{backend}'; expected one of {', '.join(BACKENDS)}")


def _local(fn, args, jobs):
    if jobs <= 1 or len(args) < 2:  # in this process: no pool start-up, and tests can watch fn
        for i, a in enumerate(args):
            try:
                result = fn(*a)
            except Exception as exc:  # noqa: BLE001 - reported per run, the rest go on
                yield i, None, exc
            else:
                yield i, result, None
        return
    with ProcessPoolExecutor(max_workers=min(jobs, len(args))) as pool:
        yield from _in_pool(pool, fn, args)


def _in_pool(pool, fn, args):
    futures = {pool.submit(fn, *a): i for i, a in enumerate(args)}
    pending = set(futures)
    try:
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in sorted(done, key=futures.get):
                error = f.exception()
                yield futures[f], (None if error else f.result()), error
    finally:  # interrupted: drop the queued runs instead of waiting for them all
        for f in pending:
            f.cancel()


def _ray(fn, args, jobs, address):
    ray = import_ray()
    with ray_session(address, jobs):
        remote = ray.remote(num_cpus=1)(fn)
        refs = {remote.remote(*a): i for i, a in enumerate(args)}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for ref in done:
                    try:
                        yield refs[ref], ray.get(ref), None
                    except Exception as exc:  # noqa: BLE001 - a worker died or fn raised
                        yield refs[ref], None, exc
        finally:
            for ref in pending:
                ray.cancel(ref, force=True)


def import_ray():
    try:
        import ray
    except ImportError:
        raise InputError("--backend ray", "Ray is not installed; pip install 'simcost[ray]'") from None
    return ray


@contextmanager
def ray_session(address: str | None = None, num_cpus: int = 1):
    """Ray connected for the block: to the cluster at `address`, else a local instance of
    num_cpus workers started here and shut down after. A session that is already connected is
    used as it is and left running (a test fixture, or a notebook, owns it)."""
    ray = import_ray()
    if ray.is_initialized():
        yield ray
        return
    quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
    if address:
        try:
            ray.init(address=address, **quiet)
        except ConnectionError as exc:
            raise InputError("--address", f"cannot connect to a Ray cluster at {address} ({exc})") from None
    else:
        ray.init(num_cpus=max(1, num_cpus), include_dashboard=False, **quiet)
    try:
        yield ray
    finally:
        ray.shutdown()
