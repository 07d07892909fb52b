"""Stores a string that is not valid UTF-8 in kong.ctx.shared and reads it back."""

from kongish_pdk.pdk import Kong

version = "1.0.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        pass

    def access(self, kong: Kong) -> None:
        kong.ctx.shared.set("raw", "caf\udce9")  # b"caf\xe9" read as surrogateescape
        kong.ctx.shared.set("back", kong.ctx.shared.get("raw"))
