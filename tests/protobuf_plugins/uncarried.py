"""Calls a PDK function ProtoBuf:1 has no RPC for, and reports the error it gets."""

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        pass

    def access(self, kong):
        try:
            kong.nginx.get_statistics()
        except Exception as exc:  # ValueError in-process, PDKError from a worker process
            kong.log.err(str(exc))
        kong.response.set_header("x-after", "still running")
