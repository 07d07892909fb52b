"""plugins/py-hello.py as a plain kong-pdk 0.36 plugin (the benchmark's incumbent side).

The example imports ``kongish_pdk.pdk.Kong`` for its type annotation, which kong-pdk's venv
does not have; the logic is the same line for line, so both servers do the same 4 RPCs.
"""

import os

Schema = ({"message": {"type": "string", "default": "hello"}},)
version = "0.1.0"
priority = 100


class Plugin:
    def __init__(self, config):
        self.message = config.get("message") or "hello"

    def access(self, kong):
        host = kong.request.get_header("host")
        kong.response.set_header("x-hello-from-python", f"Python says {self.message} to {host}")
        kong.response.set_header("x-python-pid", str(os.getpid()))
