"""Recipe: rate limiting with a store shared by every instance of the plugin.

Kong starts one instance per nginx worker (and per config change), but all of them talk to
the same plugin server process, so a store living in the server is shared by all of Kong's
workers. Swap ``MemoryStore`` for a Redis-backed class with the same ``hit`` method to share
the count between several Kong nodes.

Limits per consumer when one is authenticated (run an auth plugin first), else per client IP.
Each window starts with the first request of a key, so counts never reset mid-burst.
"""

import threading
import time
from dataclasses import dataclass
from typing import Annotated, Literal, Protocol

from kongish_pdk.config import Between
from kongish_pdk.pdk import Kong

version = "1.0.0"
priority = 910  # after authentication (1000), like Kong's rate-limiting


class Store(Protocol):
    def hit(self, key: str, window: float) -> tuple[int, float]:
        """Count one request for ``key``; return (requests in window, seconds left)."""
        ...


class MemoryStore:
    """Counters in this server process, safe across the server's handler threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._windows: dict[str, tuple[float, int]] = {}

    def hit(self, key: str, window: float) -> tuple[int, float]:
        now = time.monotonic()
        with self._lock:
            started, count = self._windows.get(key, (now, 0))
            if now - started >= window:
                started, count = now, 0
            self._windows[key] = (started, count + 1)
        return count + 1, window - (now - started)


# One store per server process: every instance (every Kong worker) counts in it.
STORE: Store = MemoryStore()


@dataclass(frozen=True)
class Config:
    limit: Annotated[int, Between(1, 1_000_000)]
    window_seconds: Annotated[int, Between(1, 86_400)] = 60
    limit_by: Literal["consumer", "ip"] = "consumer"


class Plugin:
    def __init__(self, config: Config, store: Store = STORE) -> None:
        self.config = config
        self.store = store

    def access(self, kong: Kong) -> None:
        key = self._key(kong)
        count, left = self.store.hit(key, self.config.window_seconds)
        remaining = max(self.config.limit - count, 0)
        kong.response.set_header("x-ratelimit-limit", self.config.limit)
        kong.response.set_header("x-ratelimit-remaining", remaining)
        if count > self.config.limit:
            kong.response.exit(429, {"message": "API rate limit exceeded"},
                               {"retry-after": str(max(int(left), 1))})

    def _key(self, kong: Kong) -> str:
        if self.config.limit_by == "consumer":
            consumer = kong.client.get_consumer()
            if consumer and "id" in consumer:
                return f"consumer:{consumer['id']}"
        return f"ip:{kong.client.get_forwarded_ip()}"
