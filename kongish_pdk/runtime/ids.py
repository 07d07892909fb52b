"""Instance and event ids that do not repeat across server restarts.

Kong caches instance ids per worker (Kong/kong#8370): a restarted server that counted from 0
again would run one route's requests with another route's config. Starting each counter at a
random point of a 2**30 range makes a clash after a restart vanishingly unlikely, and keeps
ids below 2**31 because ProtoBuf:1 carries them as int32.
"""

from __future__ import annotations

import itertools
import secrets

_LIMIT = 2**31 - 1


class IdCounter:
    """Thread-safe under the GIL: ``itertools.count`` steps atomically."""

    def __init__(self, start: int | None = None) -> None:
        self._start = secrets.randbelow(2**30) + 1 if start is None else start
        self._count = itertools.count(self._start)

    def next(self) -> int:
        value = next(self._count)
        if value >= _LIMIT:  # practically never: wrap around without ever giving 0
            self._count = itertools.count(1)
            value = next(self._count)
        return value
