"""The `output` section: what a run writes beyond its summary, time series and bill.

`request_records` is how much of the request table (requests.csv or .parquet) a run keeps:
every row (`full`), a reproducible 1 % sample (`sample`: the rows a scenario and seed always
keep, simcost.results.writer.sample_rows) or none (`none`). A run of millions of requests writes
hundreds of MB of rows otherwise; nothing else a run writes depends on it. `simcost run
--request-records` overrides it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True, kw_only=True)
class OutputConfig:
    # rows of requests.csv (.parquet) written: every request (full), a reproducible 1 % (sample) or
    # none; nothing else depends on it. `simcost run --request-records` overrides it
    request_records: Literal["full", "sample", "none"] = "full"
