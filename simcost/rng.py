"""Random streams for one run: one SeedSequence from the scenario seed, spawned into independent
named streams, so that changing how one stream is used (say, routing) never shifts another
(say, arrivals). No global random state anywhere in simcost."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STREAM_NAMES = ("arrivals", "input_tokens", "output_tokens", "routing")


@dataclass(frozen=True)
class Streams:
    arrivals: np.random.Generator
    input_tokens: np.random.Generator
    output_tokens: np.random.Generator
    routing: np.random.Generator


def streams(seed: int) -> Streams:
    children = np.random.SeedSequence(seed).spawn(len(STREAM_NAMES))
    return Streams(*(np.random.default_rng(child) for child in children))
