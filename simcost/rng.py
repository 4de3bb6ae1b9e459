"""Random streams for one run: one SeedSequence from the scenario seed, spawned into independent
named streams, so that changing how one stream is used (say, routing) never shifts another
(say, arrivals). No global random state anywhere in simcost.

Each workload of a mix draws from its own streams. The first workload uses the run's streams
themselves, so a single workload is exactly the first entry of a mix, and adding a second
workload to a scenario leaves the first one's requests unchanged (paired comparisons).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Append only: a stream's position is its identity, so inserting a name would shift the rest.
STREAM_NAMES = ("arrivals", "input_tokens", "output_tokens", "routing", "sessions", "items", "predictions", "fleet",
                "speculation", "api", "cascade", "response_cache", "records")
_WORKLOAD_KEY_BASE = 64  # spawn keys >= this are per-workload roots, clear of the named streams


@dataclass(frozen=True)
class Streams:
    arrivals: np.random.Generator
    input_tokens: np.random.Generator
    output_tokens: np.random.Generator
    routing: np.random.Generator
    sessions: np.random.Generator  # turn counts, think times, follow-up prompt lengths
    items: np.random.Generator  # non-token items per request
    predictions: np.random.Generator  # the scheduler's output-length predictions (engine.queue sjf)
    fleet: np.random.Generator  # spot reclaims and node failures (simcost.cluster.control)
    speculation: np.random.Generator  # accepted draft tokens (simcost.engine.speculation)
    api: np.random.Generator  # hosted-API latency draws and retry backoffs (simcost.cluster.api_pool)
    cascade: np.random.Generator  # which answers a cascade escalates (simcost.cluster.cascade)
    response_cache: np.random.Generator  # semantic cache matches and false hits (simcost.cluster.response_cache)
    records: np.random.Generator  # which request rows a sampled records file keeps (never the run itself)


def streams(seed: int, workload_index: int = 0) -> Streams:
    if workload_index == 0:
        root = np.random.SeedSequence(seed)
    else:
        root = np.random.SeedSequence(seed, spawn_key=(_WORKLOAD_KEY_BASE + workload_index,))
    children = root.spawn(len(STREAM_NAMES))
    return Streams(*(np.random.default_rng(child) for child in children))
