"""Says the greeting it was configured with, and how often __init__ ran in its process.

With a "gate" (a Unix socket path), ``__init__`` holds until the test listening there closes
the connection, so a test can keep it "slow" for exactly as long as it needs; no listener yet
means no wait.
"""

import os
import socket

version = "0.1.0"
priority = 10

Schema = ({"greeting": {"type": "string"}}, {"gate": {"type": "string"}})

INITS = 0  # Plugin objects created in this process


def _hold_at(gate):
    with socket.socket(socket.AF_UNIX) as sock:
        try:
            sock.connect(gate)
        except OSError:
            return
        sock.settimeout(30)
        sock.recv(1)


class Plugin:
    def __init__(self, config):
        global INITS
        INITS += 1
        self.greeting = config.get("greeting")
        if config.get("gate"):
            _hold_at(config["gate"])

    def access(self, kong):
        kong.response.set_header("x-greeting", str(self.greeting))
        kong.response.set_header("x-inits", str(INITS))
        kong.response.set_header("x-pid", str(os.getpid()))
