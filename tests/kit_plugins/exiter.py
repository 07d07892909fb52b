"""Exits in access; keeps running Python until its next PDK call, as in the real server."""

from kongish_pdk.pdk import Kong

version = "1.0.0"


class Plugin:
    def __init__(self, config: dict) -> None:
        self.after_exit = 0

    def access(self, kong: Kong) -> None:
        kong.ctx.shared.set("in_access", True)
        kong.response.exit(403, {"message": "go away"}, {"x-reason": "test"})
        self.after_exit += 1  # plain Python after exit still runs...
        kong.log.err("never logged")  # ...but the next PDK call stops the handler

    def response(self, kong: Kong) -> None:
        kong.log.err("response phase must not run after an access exit")

    def log(self, kong: Kong) -> None:
        kong.log.notice(f"source={kong.response.get_source()} "
                        f"status={kong.response.get_status()}")
