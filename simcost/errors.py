"""The one exception type for bad user input.

Every problem a user can fix (a malformed scenario, an unknown device, a bad trace row, a model
that does not fit) is raised as `InputError` with a one-line message that names *where* (a key
path such as `engine.max_num_seqs`, or `file:line`), *what* was found and *what* was expected.
The CLI prints it and exits with status 2; nothing else in simcost catches it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from typing import TypeVar


class InputError(ValueError):
    """Bad input, reported as one line: `<where>: <problem>`."""

    def __init__(self, where: str, problem: str):
        self.where = where
        self.problem = problem
        # args are (where, problem), so code that rebuilds an exception from its args (SimPy
        # re-raising a process's failure, pickling across worker processes) gets an InputError back
        super().__init__(where, problem)

    def __str__(self) -> str:
        return f"{self.where}: {self.problem}" if self.where else self.problem


def closest(name: str, known: Iterable[str], n: int = 3, list_all: bool = True) -> str:
    """A ' (closest: a, b)' hint for an unknown name; when none is close, a list of all names
    (or nothing, with list_all=False)."""
    known = sorted(known)
    near = difflib.get_close_matches(name, known, n=n, cutoff=0.4)
    if near:
        return f" (closest: {', '.join(near)})"
    return f" (known: {', '.join(known)})" if list_all else ""


T = TypeVar("T")


def required(value: T | None, what: str) -> T:
    """`value`, where validation or the code path guarantees it is set (a config key that a
    distribution or policy needs, a section a code path exists for); `what` names it. None there
    is a bug, not bad input, so it is no InputError."""
    if value is None:
        raise RuntimeError(f"{what} is unset where it must be set")
    return value
