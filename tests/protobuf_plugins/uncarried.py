"""Calls a PDK function ProtoBuf:1 has no RPC for, and reports the error it gets."""

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        try:
            kong.nginx.get_statistics()
        except ValueError as exc:  # NotCarried, in every concurrency mode
            kong.log.err(f"{type(exc).__name__}: {exc}")
        kong.response.set_header("x-after", "still running")
