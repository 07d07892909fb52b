"""Keeps a count in the instance: state must persist across events."""

import os

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        self.count = 0

    def access(self, kong):
        self.count += 1
        kong.response.set_header("x-count", str(self.count))
        kong.response.set_header("x-pid", str(os.getpid()))
