# Blocks 0.2 s before and 0.2 s after its first PDK call (a slow database, a slow API).
import time

Schema = ()
version = "0.1.0"
priority = 100


class Plugin(object):
    def __init__(self, config):
        pass

    def access(self, kong):
        time.sleep(0.2)
        host = kong.request.get_header("host")
        time.sleep(0.2)
        kong.response.set_header("x-host", host or "-")
