"""The floor: the leanest Python server that answers the hello plugin's call sequence.

One process, one selectors loop, msgpack's C extension, no plugin machinery: HandleEvent and
each Step are answered from a fixed script. Its CPU time per RPC is the least any Python
plugin server can spend, so the bench reports ours against it.

    python bench/floor_server.py SOCKET_PATH
"""

from __future__ import annotations

import os
import selectors
import signal
import socket
import sys

import msgpack

SCRIPT = [
    {"Method": "kong.request.get_header", "Args": ["host"]},
    None,  # the set_header that uses the host (built per event)
    {"Method": "kong.response.set_header", "Args": ["x-python-pid", "1"]},
    "ret",
]


def main(path: str) -> None:
    if os.path.exists(path):
        os.unlink(path)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(4096)
    listener.setblocking(False)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, None)
    steps: dict[int, int] = {}
    next_event = 0
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("floor server listening", flush=True)
    packb = msgpack.packb
    while True:
        for key, _ in selector.select():
            if key.data is None:
                conn, _ = listener.accept()
                conn.setblocking(False)
                selector.register(conn, selectors.EVENT_READ,
                                  (conn, msgpack.Unpacker(raw=False, strict_map_key=False)))
                continue
            conn, unpacker = key.data
            data = conn.recv(65536)
            if not data:
                selector.unregister(conn)
                conn.close()
                continue
            unpacker.feed(data)
            for _, msgid, method, params in unpacker:
                if method == "plugin.HandleEvent":
                    next_event += 1
                    event, step = next_event, 0
                elif method == "plugin.StartInstance":
                    conn.sendall(packb([1, msgid, None, {"Id": 1, "Name": "bench_hello"}]))
                    continue
                else:
                    event = params[0]["EventId"]
                    step = steps.pop(event) + 1
                if step == 1:
                    out = {"Method": "kong.response.set_header",
                           "Args": ["x-hello-from-python",
                                    f"Python says hello to {params[0].get('Data')}"]}
                else:
                    out = SCRIPT[step]
                if out != "ret":
                    steps[event] = step
                conn.sendall(packb([1, msgid, None, {"EventId": event, "Data": out}]))


if __name__ == "__main__":
    main(sys.argv[1])
