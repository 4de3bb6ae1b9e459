"""Record every prefix-pool verb of a run, then replay them against the tree on PYTHONPATH: the
time per verb, and a digest of every return value and of each pool's final state, so two trees'
pool kernels can be timed on exactly the same calls and checked to agree.

    python experiments/pool_replay.py record /tmp/verbs.pkl run configs/scenarios/mooncake_conv_8b_h100.yaml \
        --set duration_s=3600 --set fleet.replicas=8 --set fleet.router=round_robin \
        --set engine.max_num_seqs=256 --out /tmp/run --no-progress -q
    NUMPY_MADVISE_HUGEPAGE=0 PYTHONPATH=<tree> python experiments/pool_replay.py replay /tmp/verbs.pkl
    NUMPY_MADVISE_HUGEPAGE=0 PYTHONPATH=<tree> python experiments/pool_replay.py replay /tmp/verbs.pkl --thrash-mb 4

Run the replays of two trees alternating, a few rounds each, and compare medians (this machine
is noisy). The digests must be equal: they cover every key, count and statistic a verb returns
and each pool's final state, not node numbers, which are each tree's own (a release by nodes is
recorded as its keys and replayed with the nodes this tree gave them, found outside the timed
call). --thrash-mb writes that many MB between calls, as the engine's Python leaves the caches
between the pool's calls in a run. The Mooncake recording is ~290 MB (the keys of 129k calls).
"""

from __future__ import annotations

import argparse
import hashlib
import pickle
import sys
import time
from dataclasses import asdict

import numpy as np

from simcost.engine.kv import array_pool

VERBS = ("allocate", "free", "lookup", "acquire_nodes", "register_nodes", "release_nodes", "match", "release",
         "register", "acquire")


def record(path: str, cli_args: list[str]) -> None:
    log: list[tuple[int, str, tuple]] = []
    number: dict[int, int] = {}
    cls = array_pool.ArrayPrefixBlockPool
    init = cls.__init__

    def new(self, *args, **kw):
        init(self, *args, **kw)
        number[id(self)] = len(number)
        log.append((number[id(self)], "new", args))

    def recorded(verb):
        call = getattr(cls, verb)

        def wrapper(self, *args):
            logged = args
            if verb == "release_nodes":  # as keys: another tree numbers its nodes its own way
                logged = (self._node_keys(np.asarray(args[0], dtype=np.int64)), *args[1:])
            log.append((number[id(self)], verb, tuple(a if np.isscalar(a) else np.array(a, dtype=np.int64) for a in logged)))
            return call(self, *args)
        return wrapper

    cls.__init__ = new
    for verb in VERBS:
        setattr(cls, verb, recorded(verb))
    from simcost.cli.main import main

    status = main(cli_args)
    with open(path, "wb") as fh:
        pickle.dump(log, fh, protocol=5)
    print(f"recorded {len(log):,} calls of {len(number)} pools (run exit status {status})", file=sys.stderr)


def _nodes_of(pool, args: tuple) -> tuple:
    """release_nodes' arguments with its keys turned back into this tree's nodes."""
    return (np.array([pool.find_node(key) for key in args[0].tolist()], dtype=np.int64), *args[1:])


def replay(path: str, thrash_mb: float) -> None:
    with open(path, "rb") as fh:
        log = pickle.load(fh)
    warm = array_pool.ArrayPrefixBlockPool(8, 0, 2)  # load every kernel before timing
    warm.allocate(2)
    warm.release_nodes(warm.register_nodes(np.arange(2))[1], 0)
    warm.lookup(np.arange(3))
    warm.release_nodes(warm.acquire_nodes(np.arange(2))[1], 0)
    warm.allocate(8)
    warm.match(np.arange(2))
    buffer = np.zeros(int(thrash_mb * (1 << 20)) // 8 + 1)
    pools: dict[int, array_pool.ArrayPrefixBlockPool] = {}
    seconds: dict[str, float] = {}
    digest = hashlib.sha256()
    for index, verb, args in log:
        if verb == "new":
            pools[index] = array_pool.ArrayPrefixBlockPool(*args)
            continue
        if thrash_mb:
            buffer += 1.0
        call = getattr(pools[index], verb)
        if verb == "release_nodes":
            args = _nodes_of(pools[index], args)
        start = time.perf_counter()
        result = call(*args)
        seconds[verb] = seconds.get(verb, 0.0) + time.perf_counter() - start
        if verb in ("acquire_nodes", "register_nodes"):  # what was acquired or named, not the nodes (each tree's own)
            digest.update(repr(result[0]).encode())
        elif result is not None:
            digest.update(repr(result).encode())
    for _, pool in sorted(pools.items()):
        digest.update(repr((pool.lru_keys(), pool.host_keys(), asdict(pool.stats), pool.num_free, pool.num_private,
                            pool.num_cached)).encode())
    verbs = " ".join(f"{verb} {s:.3f}" for verb, s in sorted(seconds.items()))
    print(f"{array_pool.__file__}: {sum(seconds.values()):.3f} s ({verbs}); digest {digest.hexdigest()[:16]}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    rec = sub.add_parser("record")
    rec.add_argument("path")
    rec.add_argument("cli_args", nargs=argparse.REMAINDER, help="the simcost command's arguments")
    rep = sub.add_parser("replay")
    rep.add_argument("path")
    rep.add_argument("--thrash-mb", type=float, default=0.0)
    args = parser.parse_args()
    if args.command == "record":
        record(args.path, args.cli_args)
    else:
        replay(args.path, args.thrash_mb)
