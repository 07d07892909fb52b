"""Bounded polling of conditions only observable from outside (a file, a log, /proc, a socket).

Nothing notifies on these, so they are polled at a short interval, always with a deadline.
Used by the e2e gateway driver (``tests/e2e/minikong.py``) and by ``incumbent.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

_T = TypeVar("_T")
POLL_EVERY = 0.01


def poll_until(check: Callable[[], _T], timeout: float,
               every: float = POLL_EVERY) -> _T | None:
    """``check()``'s first truthy result, polled every ``every`` seconds for at most
    ``timeout`` seconds; None when the deadline passes first.

    ``check`` runs once more after the deadline, so a condition met just then still counts.
    An exception from ``check`` ends the wait (that is how a check reports a dead process).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            return None
        time.sleep(every)  # bounded poll of an observable condition


def wait_until(check: Callable[[], _T], timeout: float = 10.0, what: str = "condition",
               detail: Callable[[], str] | None = None) -> _T:
    """``check()``'s first truthy result, polled every 10 ms for at most ``timeout`` seconds.

    For conditions only observable from outside (a file, nginx's error log, /proc): nothing
    notifies on them. AssertionError naming ``what`` (and ``detail()``) on timeout.
    """
    result = poll_until(check, timeout)
    if result is None:
        raise AssertionError(f"no {what} within {timeout}s"
                             + (f":\n{detail()}" if detail else ""))
    return result
