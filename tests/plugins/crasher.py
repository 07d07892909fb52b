"""Kills the process it runs in (a segfaulting C extension, an OOM kill...)."""

import os

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        if kong.request.get_header("x-crash") == "yes":
            os._exit(3)
        kong.response.set_header("x-pid", str(os.getpid()))
