"""libc send/recv that keep the GIL (server/nogil.py): the contract the connections rely on."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest

from kongish_pdk.server import nogil


@pytest.fixture
def pair() -> Iterator[tuple[socket.socket, socket.socket]]:
    a, b = socket.socketpair()
    a.setblocking(False)
    b.setblocking(False)
    yield a, b
    a.close()
    b.close()


def test_bytes_sent_arrive_whole(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    payload = bytes(range(256)) * 4
    assert nogil.send(a.fileno(), payload) == len(payload)
    assert nogil.Receiver(64 * 1024).recv(b.fileno()) == payload


def test_recv_returns_only_what_is_there(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    receiver = nogil.Receiver(4)
    a.send(b"abcdefg")
    assert receiver.recv(b.fileno()) == b"abcd"  # at most the buffer's size
    assert receiver.recv(b.fileno()) == b"efg"
    assert receiver.recv(b.fileno()) is None  # nothing yet


def test_a_full_socket_takes_part_then_none(pair: tuple[socket.socket, socket.socket]) -> None:
    a, _ = pair
    big = b"x" * (8 * 1024 * 1024)
    sent = nogil.send(a.fileno(), big)
    assert 0 < sent < len(big)  # a short send: the caller sends the rest
    with pytest.raises(BlockingIOError):
        nogil.send(a.fileno(), big)


def test_end_of_file_and_a_closed_peer(pair: tuple[socket.socket, socket.socket]) -> None:
    a, b = pair
    b.shutdown(socket.SHUT_WR)
    assert nogil.Receiver(16).recv(a.fileno()) == b""
    b.close()
    assert nogil.Receiver(16).recv(-1) == b""  # an error (EBADF here) ends the connection too
    with pytest.raises(OSError) as raised:  # EPIPE, and no SIGPIPE killing the process
        nogil.send(a.fileno(), b"late")
    assert not isinstance(raised.value, BlockingIOError)


def test_a_buffer_ctypes_cannot_size_is_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        nogil.Receiver(2**31)
