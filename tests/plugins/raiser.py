"""Raises before its first PDK call (rewrite, access, log) or after one (response)."""

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        if config.get("fail_init"):
            raise RuntimeError("refusing this config")

    def rewrite(self, kong):
        raise ValueError("boom before any PDK call")

    def access(self, kong):
        raise ValueError("boom before any PDK call")

    def response(self, kong):
        kong.request.get_header("x-anything")
        raise KeyError("boom after a PDK call")

    def log(self, kong):
        raise ValueError("boom in the log phase")
