"""Calls kong.response.exit, then keeps going; logs (to stderr) how that ended."""

import logging

log = logging.getLogger("exiter")

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        self.first_call = config.get("first_call", "exit")
        self.state = "never ran"

    def access(self, kong):
        if self.first_call == "error":
            kong.response.error(403, "go away")
            return
        if self.first_call == "exit":
            kong.response.exit(403, "forbidden", {"x-reason": "py"})
            return
        # "exit-then-more": ordinary code runs after exit, the next PDK call stops it.
        self.state = "started"
        kong.response.exit(403, "forbidden", {"x-reason": "py"})
        self.state = "continued after exit"
        try:
            kong.log.err("this must never reach Kong")
            self.state = "not stopped"
        except BaseException as exc:
            self.state = f"stopped by {type(exc).__name__}"
            raise
        finally:
            log.warning("after exit: %s", self.state)

    def log(self, kong):
        kong.log.notice(self.state)
