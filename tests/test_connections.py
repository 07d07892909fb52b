"""Who reads a connection after its bytes were dispatched (``server/connections.py``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest

from kongish_pdk.server.connections import Connection, SocketTransport, claim, dispatch


class Reply:
    def __init__(self, transport: object) -> None:
        self.transport = transport


class ClaimingSession:
    """Each b"req" is a request that claims its connection (as a handler's thread does);
    ``after_claim`` runs right after a claim, still inside the dispatch."""

    settled = True

    def __init__(self) -> None:
        self.transport: object = None
        self.claims: list[Connection | None] = []
        self.after_claim: Callable[[], None] | None = None

    def data_received(self, data: bytes) -> None:
        for request in data.split(b";"):
            if request == b"req":
                self.claims.append(claim(Reply(self.transport)))
                if self.after_claim is not None:
                    self.after_claim()

    def connection_lost(self) -> None:
        pass


@pytest.fixture
def conn() -> Iterator[Connection]:
    ours, peer = socket.socketpair()
    transport = SocketTransport(ours)
    session = ClaimingSession()
    session.transport = transport
    yield Connection(ours, transport, session)
    ours.close()
    peer.close()


def test_dispatch_says_whether_its_bytes_claimed_the_connection(conn: Connection) -> None:
    session = conn.session
    assert isinstance(session, ClaimingSession)
    assert dispatch(conn, b"ack") is False
    assert dispatch(conn, b"req") is True
    assert session.claims == [conn]
    assert dispatch(conn, b"req;req") is True
    assert session.claims[1:] == [conn, None]  # once per dispatch


def test_a_claim_stays_with_the_dispatch_that_made_it(conn: Connection) -> None:
    # The claimant starts reading at once, on its own thread. Its first dispatch (bytes that
    # claim nothing, like a ProtoBuf:1 acknowledgement) may finish before the claiming
    # dispatch returns; that must not undo the claim, or the caller would give the
    # connection back to the I/O loop while the claimant reads it: two readers, and Kong's
    # answer to one goes to the other.
    session = conn.session
    assert isinstance(session, ClaimingSession)
    claimant: list[bool] = []

    def claimant_reads() -> None:
        session.after_claim = None
        reader = threading.Thread(target=lambda: claimant.append(dispatch(conn, b"ack")))
        reader.start()
        reader.join(10)

    session.after_claim = claimant_reads
    assert dispatch(conn, b"req") is True
    assert claimant == [False]


def test_a_reply_on_another_connection_claims_nothing(conn: Connection) -> None:
    session = conn.session
    assert isinstance(session, ClaimingSession)
    session.transport = object()  # the request answers elsewhere
    assert dispatch(conn, b"req") is False
    assert session.claims == [None]
    assert claim(Reply(conn.transport)) is None  # outside any dispatch
