"""A Kong worker's keepalive pool of plugin-server connections, shared by the test clients.

A call borrows the least recently used free connection (so one event's MsgPack:1 Steps hop
between connections, the hardest case for a server) or opens a new one; the connection goes
back only if the call completed and did not abandon it, as ``setkeepalive`` does in Kong.
"""

from __future__ import annotations

import collections
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Generic, Protocol, TypeVar


class PooledConnection(Protocol):
    keepalive: bool  # False once Kong would abandon it: closed instead of pooled again

    def close(self) -> None: ...


C = TypeVar("C", bound=PooledConnection)


class PooledClient(ABC, Generic[C]):
    def __init__(self, socket_path: str, timeout: float) -> None:
        self.socket_path = socket_path
        self.timeout = timeout
        self._free: collections.deque[C] = collections.deque()
        self._all: list[C] = []
        self._lock = threading.Lock()

    @abstractmethod
    def _open(self) -> C:
        """A new connection to the server."""

    @contextmanager
    def connection(self) -> Iterator[C]:
        """Borrow a pooled connection (least recently used first), or open a new one."""
        with self._lock:
            conn = self._free.popleft() if self._free else None
        if conn is None:
            conn = self._open()
            with self._lock:
                self._all.append(conn)
        completed = False
        try:
            yield conn
            completed = True
        finally:
            with self._lock:
                if completed and conn.keepalive:
                    self._free.append(conn)
                else:  # never pool a half-read or abandoned connection, as Kong would not
                    conn.close()
                    self._all.remove(conn)

    def warm(self, n: int) -> None:
        """Open ``n`` pooled connections up front (so steps have somewhere to hop to)."""
        conns = [self._open() for _ in range(n)]
        with self._lock:
            self._all.extend(conns)
            self._free.extend(conns)

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
            self._free.clear()

    def __enter__(self) -> PooledClient[C]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
