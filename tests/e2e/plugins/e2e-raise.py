"""Raises in the phase named by its config (``raise_in``); in the others it marks the response.

Used to prove what Kong's client sees when a handler fails: with the server's default
``--on-plugin-error fail-closed``, a 500 in rewrite, access and response.
"""

Schema = ({"raise_in": {"type": "string", "default": "access"}},)
version = "1.0.0"
priority = 1000


class Plugin:
    def __init__(self, config):
        self.raise_in = config.get("raise_in") or "access"

    def _run(self, kong, phase):
        if phase == self.raise_in:
            raise RuntimeError(f"e2e-raise: boom in {phase}")
        kong.response.set_header(f"x-e2e-raise-{phase}", "survived")

    def rewrite(self, kong):
        self._run(kong, "rewrite")

    def access(self, kong):
        self._run(kong, "access")

    def response(self, kong):
        self._run(kong, "response")
