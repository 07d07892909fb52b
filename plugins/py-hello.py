#!/usr/bin/env python3
"""py-hello: greets the client from Python (the plugin Kong's own test suite uses).

Sets ``x-hello-from-python: Python says <message> to <host>`` on the response.
Served by ``kongish-pluginserver -d plugins/``, or on its own:
``python plugins/py-hello.py --dump`` / ``python plugins/py-hello.py -p /usr/local/kong``.
"""

import os

from kongish_pdk.pdk import Kong

Schema = ({"message": {"type": "string", "default": "hello"}},)
version = "0.1.0"
priority = 100


class Plugin:
    def __init__(self, config: dict) -> None:
        self.message = config.get("message") or "hello"

    def access(self, kong: Kong) -> None:
        host = kong.request.get_header("host")
        kong.response.set_header("x-hello-from-python", f"Python says {self.message} to {host}")
        kong.response.set_header("x-python-pid", str(os.getpid()))


if __name__ == "__main__":
    from kongish_pdk.cli import start_dedicated_server

    start_dedicated_server("py-hello", Plugin, version, priority, Schema)
