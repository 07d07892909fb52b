"""What only the gevent mode (-g) promises: thousands of slow events at once on one thread."""

from __future__ import annotations

import contextlib
import os
import socket

import msgpack

from kongish_pdk.testing import KongClient

from conftest import TEST_PLUGINS
from support.procstat import process_tree, resources

N = 1000
TRIMMED = r"returned \d+ KiB of freed memory to the OS"


def _concurrent_first_calls(path: str, instance_id: int) -> list[dict]:
    """Send N HandleEvents at once, on N connections; return the N replies."""
    with contextlib.ExitStack() as sockets:  # all closed, whatever fails
        conns = []
        for msgid in range(N):
            sock = sockets.enter_context(socket.socket(socket.AF_UNIX))
            sock.settimeout(30)
            sock.connect(path)
            sock.sendall(msgpack.packb([0, msgid, "plugin.HandleEvent",
                                        [{"InstanceId": instance_id, "EventName": "access"}]]))
            conns.append(sock)
        replies = []
        for sock in conns:
            unpacker = msgpack.Unpacker(raw=False)
            while True:
                data = sock.recv(65536)
                assert data, "the server closed the connection before replying"
                unpacker.feed(data)
                messages = [m for m in unpacker if m[0] == 1]
                if messages:
                    replies.append(messages[0][3])
                    break
        return replies


def test_a_thousand_blocking_handlers_wait_together_on_one_thread(start) -> None:
    # Each handler blocks in threading.Barrier (monkey-patched to cooperate) and sleeps
    # before its first PDK call: the barrier only opens with all 1000 in flight at once.
    server = start(TEST_PLUGINS, "--event-timeout", "2", mode="gevent")
    assert len(os.listdir(f"/proc/{server.pid}/task")) <= 3  # one thread does the work
    with KongClient(server.socket_path) as kong:
        iid = kong.start_instance("waiter", {"parties": N, "sleep_before": 0.05})
        first = _concurrent_first_calls(server.socket_path, iid)
        assert [r["Data"]["Method"] for r in first] == ["kong.request.get_header"] * N
        for reply in first:  # finish them (their Steps hop to the client's pool)
            assert kong.step(reply["EventId"], "x")["Data"]["Method"] == (
                "kong.response.set_header")
            assert kong.step(reply["EventId"], None)["Data"] == "ret"
        pids = process_tree(server.pid)
        server.wait_for_count(TRIMMED, 1, timeout=20)  # freed memory back to the OS
        before = resources(pids)
        second = _concurrent_first_calls(server.socket_path, iid)
        for reply in second:  # this time Kong gives up on all of them: reaped, not leaked
            assert reply["Data"]["Method"] == "kong.request.get_header"
        assert kong.call("plugin.GetStatus")["Events"] == N
    server.wait_for_count(r"stopped: no Step arrived", N, timeout=30)
    with KongClient(server.socket_path) as kong:
        assert kong.call("plugin.GetStatus")["Events"] == 0
        server.wait_for_count(r"waiter unwound by EventStopped", N)  # every handler ended
    server.wait_for_count(TRIMMED, 2, timeout=20)
    after = resources(pids)
    assert after[0] <= before[0] + 2, f"open fds grew from {before[0]} to {after[0]}"
    assert after[1] - before[1] < 4096, f"RSS grew by {after[1] - before[1]} KiB"


# ---------------------------------------------------------------- handler greenlets


def test_handler_greenlets_are_reused_bounded_and_keep_nothing_alive() -> None:
    import gc
    import weakref

    from greenlet import getcurrent

    from kongish_pdk.workers.gevent import HandlerGreenlets

    handlers = HandlerGreenlets(keep=1)
    ran_in: list[object] = []
    waiting: list[object] = []

    class Request:  # stands for what a finished event's handler referenced
        pass

    def handler(request: Request, wait: bool) -> None:
        ran_in.append(getcurrent())
        if wait:  # like a PDK call: back to whoever started it, until resumed
            waiting.append(getcurrent())
            getcurrent().parent.switch()

    gc.disable()  # freed by reference counting alone: nothing parked still points at it
    try:
        request = Request()
        alive = weakref.ref(request)
        handlers.run_inline(lambda r=request: handler(r, False))
        del request
        assert alive() is None
    finally:
        gc.enable()
    handlers.run_inline(lambda: handler(Request(), False))
    assert ran_in[0] is ran_in[1]  # one greenlet ran both, one after the other

    handlers.run_inline(lambda: handler(Request(), True))  # suspended in its "PDK call"
    handlers.run_inline(lambda: handler(Request(), True))
    assert ran_in[2] is ran_in[0] and ran_in[3] is not ran_in[0]  # a second one meanwhile
    first, second = waiting
    first.switch()  # both finish; only ``keep`` of them stays parked, the other ends
    second.switch()
    assert first.dead != second.dead
