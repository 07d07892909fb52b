# Ten PDK calls per event (11 RPCs).
Schema = ()
version = "0.1.0"
priority = 100


class Plugin(object):
    def __init__(self, config):
        pass

    def access(self, kong):
        for i in range(5):
            value = kong.request.get_header("x-%d" % i)
            kong.response.set_header("x-seen-%d" % i, value or "-")
