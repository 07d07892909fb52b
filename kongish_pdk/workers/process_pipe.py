"""The pipe between the server process and a worker process (processes mode).

Messages are short msgpack arrays ``[kind, ...]`` sent as length-prefixed frames over a
``multiprocessing`` connection: no pickling per event, and the same string rules as the
gateway socket, so values Kong sent (even non-UTF-8 ones) cross unchanged.
"""

from __future__ import annotations

import threading
from multiprocessing.connection import Connection
from typing import Any

import msgpack

# server -> worker
CONSTRUCT = 1  # [CONSTRUCT, request_id, instance_id, plugin, config] -> DONE
START = 2  # [START, event_id, instance_id, phase, plugin, config]
RESUME = 3  # [RESUME, event_id, value, error]
ABORT = 4  # [ABORT, event_id, waiting]
DESTROY = 5  # [DESTROY, request_id, instance_id] -> DONE
STOP = 6  # [STOP]
# worker -> server
DONE = 11  # [DONE, request_id, error or None]
CALL = 12  # [CALL, event_id, method, args, terminal]
RETURN = 13  # [RETURN, event_id]
FAIL = 14  # [FAIL, event_id, error, traceback]


class Pipe:
    """A thread-safe sending end plus a receiving end of one connection."""

    def __init__(self, conn: Connection) -> None:
        self.conn = conn
        self._lock = threading.Lock()

    def encode(self, message: list[Any]) -> bytes:
        """Raises TypeError/ValueError/OverflowError for values msgpack cannot carry."""
        data: bytes = msgpack.packb(message, use_bin_type=True, unicode_errors="surrogateescape")
        return data

    def send_bytes(self, data: bytes) -> None:
        with self._lock:
            self.conn.send_bytes(data)

    def send(self, message: list[Any]) -> None:
        self.send_bytes(self.encode(message))

    def receive(self) -> list[Any]:
        """The next message; raises EOFError/OSError when the other side is gone."""
        data = self.conn.recv_bytes()
        message: list[Any] = msgpack.unpackb(
            data, raw=False, unicode_errors="surrogateescape", strict_map_key=False)
        return message
