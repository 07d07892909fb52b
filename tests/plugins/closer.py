"""Records Plugin.close() in a file named by its config."""

version = "0.1.0"
priority = 10


class Plugin:
    def __init__(self, config):
        self.path = config["path"]

    def access(self, kong):
        kong.response.set_header("x-alive", "yes")

    def close(self):
        with open(self.path, "a", encoding="utf-8") as out:
            out.write("closed\n")
