"""send/recv that never block, without releasing the GIL (the I/O of threads and -m modes).

CPython releases the GIL around every socket call. For a call that cannot block (the socket
is non-blocking and poll() said it is ready) that buys nothing, and with dozens of handler
threads each release hands the GIL to another thread and back: strace counted about 80
futex calls per 4-RPC event. libc's send/recv called through ``ctypes.PyDLL`` keep the
GIL for those few microseconds; the real waits (poll, epoll) still release it. Both pass
MSG_DONTWAIT, so they cannot block even on a blocking socket (the -m worker channel).

The functions are called without ``argtypes``: ctypes then passes an int, a bytes object
and a buffer as they are, where declared argument types cost a ``from_param`` conversion
per argument (about 1 µs per call, more than the system call). Lengths are passed as C ints,
so one send takes at most 2 GiB - 1 bytes; the caller sends the rest, as after any short send.
"""

from __future__ import annotations

import ctypes
import errno
import os

_libc = ctypes.PyDLL(None, use_errno=True)
_INT_MAX = 2**31 - 1  # an undeclared int argument is passed as a C int

_send = _libc.send  # (int fd, bytes, int length, int flags)
_send.restype = ctypes.c_ssize_t
_recv = _libc.recv  # (int fd, char array, int size, int flags)
_recv.restype = ctypes.c_ssize_t

_MSG_NOSIGNAL = 0x4000  # a closed peer gives EPIPE, not SIGPIPE
_MSG_DONTWAIT = 0x40  # never block, even on a blocking socket


def _error() -> OSError:
    code = ctypes.get_errno()
    if code in (errno.EAGAIN, errno.EWOULDBLOCK):
        return BlockingIOError(code, os.strerror(code))
    return OSError(code, os.strerror(code))


def send(fd: int, data: bytes) -> int:
    """Bytes sent from the start of ``data`` (bytes only); BlockingIOError if none could be."""
    size = min(len(data), _INT_MAX)
    while True:
        sent: int = _send(fd, data, size, _MSG_NOSIGNAL | _MSG_DONTWAIT)
        if sent >= 0:
            return sent
        if ctypes.get_errno() != errno.EINTR:
            raise _error()


class Receiver:
    """recv into a buffer of its own; one per reading thread."""

    def __init__(self, size: int) -> None:
        if size > _INT_MAX:
            raise ValueError(f"a receive buffer of {size} bytes is too large")
        self._size = size
        self._buffer = ctypes.create_string_buffer(size)
        self._view = memoryview(self._buffer).cast("B")  # copying out of it: no ctypes call

    def recv(self, fd: int) -> bytes | None:
        """The bytes available; None if there are none yet; b"" at end of file, and after
        an error (ECONNRESET, ...): the connection is over either way."""
        while True:
            n: int = _recv(fd, self._buffer, self._size, _MSG_DONTWAIT)
            if n >= 0:
                return self._view[:n].tobytes()
            code = ctypes.get_errno()
            if code in (errno.EAGAIN, errno.EWOULDBLOCK):
                return None
            if code != errno.EINTR:
                return b""
