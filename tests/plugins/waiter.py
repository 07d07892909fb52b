"""Blocks in a PDK call or before it; reports how its previous event ended (reaping tests)."""

import logging
import threading
import time

log = logging.getLogger("waiter")

version = "0.1.0"
priority = 10

# Handlers that meet here prove they run at the same time: a barrier only opens when all
# parties are inside it, so a server that serialised handlers would time out.
BARRIERS = {}
BARRIERS_LOCK = threading.Lock()


class Plugin:
    def __init__(self, config):
        self.sleep_before = config.get("sleep_before", 0)
        self.sleep_after = config.get("sleep_after", 0)
        self.parties = config.get("parties", 0)
        self.ended = "nothing yet"

    def access(self, kong):
        if self.parties:
            with BARRIERS_LOCK:
                barrier = BARRIERS.setdefault(self.parties, threading.Barrier(self.parties))
            barrier.wait(timeout=20)
        time.sleep(self.sleep_before)
        try:
            value = kong.request.get_header("x-wait")
        except BaseException as exc:
            self.ended = f"unwound by {type(exc).__name__}"
            log.warning("waiter %s", self.ended)
            raise
        time.sleep(self.sleep_after)
        kong.response.set_header("x-got", str(value))

    def log(self, kong):
        kong.log.notice(self.ended)
