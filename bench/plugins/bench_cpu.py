# About 2 ms of pure-Python work per event, holding the GIL, around two PDK calls.
# bench/run.py times work() first and sets "rounds" so that it takes --cpu-ms (2 ms) here;
# the default is only for other callers.
Schema = ()
version = "0.1.0"
priority = 100


def work(n):
    total = 0
    for i in range(n):
        total = (total * 31 + i) % 1000003
    return total


class Plugin(object):
    def __init__(self, config):
        self.rounds = config.get("rounds", 17500)

    def access(self, kong):
        host = kong.request.get_header("host")
        kong.response.set_header("x-work", "%s %d" % (host, work(self.rounds)))
