# The 4-RPC event (HandleEvent + 3 Steps): kong-pdk's own py-hello. Plain kong-pdk style, so
# the same file runs on both servers.
Schema = ({"message": {"type": "string"}},)
version = "0.1.0"
priority = 100


class Plugin(object):
    def __init__(self, config):
        self.message = config.get("message", "hello")

    def access(self, kong):
        host = kong.request.get_header("host")
        kong.response.set_header("x-hello-from-python", "Python says %s to %s" % (self.message, host))
        kong.response.set_header("x-python-pid", "1")
