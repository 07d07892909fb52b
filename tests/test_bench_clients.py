"""The bench's lean Kong-like clients count what they claim to (bench/pb_loadgen.py).

A bench figure is only as good as its event count: each client runs against a real server,
and a timed run must count only the events of that run (it once counted every event since
the client was made, warm-up included).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from kongish_pdk.testing import ServerProcess

BENCH = Path(__file__).resolve().parent.parent / "bench"
sys.path.insert(0, str(BENCH))

from pb_loadgen import MsgPackLoad, ProtoBufLoad  # noqa: E402

CONCURRENCY = 4
CLIENTS: dict[str, Any] = {"msgpack": MsgPackLoad, "protobuf": ProtoBufLoad}
NO_PROTOBUF = importlib.util.find_spec("google.protobuf") is None  # an optional extra


@pytest.mark.parametrize("protocol", [
    "msgpack",
    pytest.param("protobuf", marks=pytest.mark.skipif(NO_PROTOBUF, reason="protobuf missing")),
])
def test_each_run_counts_its_own_events(start: Callable[..., ServerProcess],
                                        protocol: str) -> None:
    server = start(BENCH / "plugins", "--protocol", protocol)
    load = CLIENTS[protocol](server.socket_path, CONCURRENCY)
    try:
        load.start_instance("bench_hello", {"message": "test"})
        assert load.run_events(30) == 30  # exactly that many, all to their end
        assert load.finished == 30
        timed = load.run(0.3)
        # Not the 30 before it; events in flight when the time was up finished uncounted.
        assert 0 < timed <= load.finished - 30 <= timed + CONCURRENCY
        assert load.errors == 0
    finally:
        load.close()
