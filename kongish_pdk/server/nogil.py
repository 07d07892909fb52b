"""send/recv on non-blocking sockets without releasing the GIL (threads mode hot path).

CPython releases the GIL around every socket call. For a call that cannot block (the socket
is non-blocking and poll() said it is ready) that buys nothing, and with dozens of handler
threads each release hands the GIL to another thread and back: strace counted about 80
futex calls per 4-RPC event. libc's send/recv called through ``ctypes.PyDLL`` keep the
GIL for those few microseconds; the real waits (poll, epoll) still release it.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.PyDLL(None, use_errno=True)
_send = _libc.send
_send.argtypes = (ctypes.c_int, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_int)
_send.restype = ctypes.c_ssize_t
_recv = _libc.recv
_recv.argtypes = (ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
_recv.restype = ctypes.c_ssize_t

_MSG_NOSIGNAL = 0x4000  # a closed peer gives EPIPE, not SIGPIPE


def _error() -> OSError:
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return BlockingIOError(code, os.strerror(code))
    return OSError(code, os.strerror(code))


def send(fd: int, data: bytes) -> int:
    """Bytes sent from the start of ``data``; BlockingIOError if none could be."""
    while True:
        sent: int = _send(fd, data, len(data), _MSG_NOSIGNAL)
        if sent >= 0:
            return sent
        if ctypes.get_errno() != errno.EINTR:
            raise _error()


class Receiver:
    """recv into a buffer of its own; one per reading thread."""

    def __init__(self, size: int) -> None:
        self._size = size
        self._buffer = ctypes.create_string_buffer(size)

    def recv(self, fd: int) -> bytes:
        """The bytes available (b"" at end of file); BlockingIOError if there are none."""
        while True:
            n: int = _recv(fd, self._buffer, self._size, 0)
            if n >= 0:
                return ctypes.string_at(self._buffer, n)
            if ctypes.get_errno() != errno.EINTR:
                raise _error()
