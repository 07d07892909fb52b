"""A stream plugin whose preread raises: the server ends it with kong.response.exit(500)."""

from kongish_pdk.pdk import Kong

version = "1.0.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        pass

    def preread(self, kong: Kong) -> None:
        raise ValueError("stream boom")
