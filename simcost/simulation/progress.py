"""simcost's progress bars: tqdm.auto's (a widget in a notebook, off where stderr is not a
terminal, drawn only after `delay` seconds) without tqdm's monitor thread.

tqdm starts that thread with its first bar and keeps it for the life of the process. A sweep
would then fork its workers, and a later run its figure process, with a thread running: forking a
threaded process is unsafe, and `simcost.results.background` declines to fork at all then (its
figures were drawn in-process, one after the other). The monitor only adjusts how often a bar
whose loop stalls redraws, which these bars (updated per run or per request) do not need.
"""

from __future__ import annotations

from functools import cache
from typing import Any


@cache
def _bar_class() -> Any:
    from tqdm.auto import tqdm

    class Bar(tqdm):  # tqdm.auto picks its class (terminal or notebook) at import
        monitor_interval = 0  # tqdm reads it on the class: no monitor thread for these bars

    return Bar


def new_bar(iterable: Any = None, **options: Any) -> Any:
    """A tqdm bar over iterable (or a manual one), with tqdm's options."""
    return _bar_class()(iterable, **options)
