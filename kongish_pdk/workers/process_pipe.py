"""The channel between the server process and a worker process (processes mode).

A socketpair carrying msgpack arrays ``[kind, ...]``: msgpack delimits its own messages, so a
message is one send and one read can bring several. No pickling per event, and the same
string rules as the gateway socket, so values Kong sent (even non-UTF-8 ones) cross
unchanged. The server's end is read by its I/O loop without blocking; a worker reads its end
on a thread of its own.
"""

from __future__ import annotations

import socket
import threading
from typing import Any

import msgpack

from kongish_pdk.server import nogil
from kongish_pdk.server.connections import RECV_SIZE

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
    """One end of the socketpair: thread-safe sending, and reading by one thread at a time."""

    def __init__(self, sock: socket.socket) -> None:
        sock.setblocking(True)
        self.sock = sock
        self.fd = sock.fileno()
        self._send_lock = threading.Lock()
        self._receiver: nogil.Receiver | None = None  # for available(): the server's end only
        # No size limit (0 means 4 GiB): both ends are ours, and msgpack's default 100 MiB
        # would refuse a large body a plugin may legitimately send (kong.response.exit).
        # Frames from Kong keep their --max-frame-size limit in the protocol's decoder.
        self._unpacker = msgpack.Unpacker(raw=False, unicode_errors="surrogateescape",
                                          strict_map_key=False, read_size=16 * 1024,
                                          max_buffer_size=0)

    @staticmethod
    def encode(message: list[Any]) -> bytes:
        """Raises TypeError/ValueError/OverflowError for values msgpack cannot carry."""
        data: bytes = msgpack.packb(message, use_bin_type=True, unicode_errors="surrogateescape")
        return data

    def send_bytes(self, data: bytes) -> None:
        # First without releasing the GIL (nogil): a worker's handler threads would trade it
        # at every release; only what does not fit now goes through the blocking sendall.
        with self._send_lock:
            try:
                sent = nogil.send(self.fd, data)
            except BlockingIOError:
                sent = 0
            if sent < len(data):
                self.sock.sendall(memoryview(data)[sent:])

    def send(self, message: list[Any]) -> None:
        self.send_bytes(self.encode(message))

    def available(self) -> list[list[Any]]:
        """The messages that have arrived, without waiting (and without releasing the GIL);
        EOFError once the peer is gone."""
        if self._receiver is None:
            self._receiver = nogil.Receiver(RECV_SIZE)
        data = self._receiver.recv(self.fd)
        if data is None:
            return []
        if not data:
            raise EOFError("the other process closed the channel")
        self._unpacker.feed(data)
        return list(self._unpacker)

    def receive(self) -> list[Any]:
        """The next message, waiting for it; EOFError/OSError when the peer is gone."""
        while True:
            for message in self._unpacker:
                return message  # type: ignore[no-any-return]
            data = self.sock.recv(RECV_SIZE)
            if not data:
                raise EOFError("the other process closed the channel")
            self._unpacker.feed(data)

    def close(self) -> None:
        """Close the channel. ``fd`` becomes -1 first, in the send lock: a send that comes
        later fails (EBADF) instead of reaching whatever socket reuses the descriptor number,
        and one in progress finishes (or fails) before."""
        with self._send_lock:
            self.fd = -1
            self.sock.close()
        self._receiver = None  # a dead worker's Pipe may stay referenced; its buffer need not
