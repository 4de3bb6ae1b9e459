"""Upper bounds on the sizes a scenario may ask for.

Every size below scales memory or simulated work: without a bound, a typo (an extra three zeros,
1e12 replicas) dies with MemoryError or runs for days instead of saying what is wrong. Each bound
sits well above any real deployment, so no sensible scenario meets one.
"""

from __future__ import annotations

REPLICAS_WHY = "a bound against typos; no inference fleet is larger"
# the largest GPU fleets run tens of thousands of devices, not replicas of an inference engine
MAX_REPLICAS = 10_000
# context windows reach 10M tokens (Llama 4 Scout); a request beyond that is a typo
MAX_TOKENS_PER_REQUEST = 10_000_000
# closed-loop users are SimPy processes, each with its own state
MAX_USERS = 100_000
# turns of a session and non-token items of a request
MAX_TURNS = 10_000
MAX_ITEMS_PER_REQUEST = 10_000
# the per-request table holds a few dozen 8-byte columns: 10M requests take a few GB
MAX_REQUESTS = 10_000_000
# a simulated year: longer runs are forecasts, which `simcost forecast` builds month by month
MAX_DURATION_S = 365 * 86400.0
# a replica that takes longer than a week to start never serves in any run worth simulating
MAX_START_S = 7 * 86400.0
# a lognormal wider than this has a mean that samples of any size a run draws fall far short of:
# the mean is carried by draws rarer than one in exp(sigma^2) (8,000 at sigma 3)
MAX_LOGNORMAL_SIGMA = 3.0
# timed events a run schedules besides requests (autoscaler samples and decisions, on-off switches
# of bursty arrivals): each costs the event loop microseconds, so 10M is minutes of work
MAX_TIMED_EVENTS = 10_000_000
