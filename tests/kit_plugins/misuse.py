"""Calls the PDK wrongly on purpose; config "case" says how."""

import contextlib

from kongish_pdk.pdk import Kong

version = "1.0.0"
Schema = ({"case": {"type": "string", "required": True}},)


class Plugin:
    def __init__(self, config: dict) -> None:
        self.case = config["case"]

    def access(self, kong: Kong) -> None:
        if self.case == "wrong_phase":
            kong.response.get_status()
        elif self.case == "swallowed_wrong_phase":
            with contextlib.suppress(Exception):
                kong.response.get_status()
        elif self.case == "raises":
            raise ValueError("boom")
        elif self.case == "raw_unknown":
            kong.raw_call("kong.not.a.function")
        elif self.case == "bad_header":
            kong.response.set_header("x-bad", {"a": 1})  # type: ignore[arg-type]

    def log(self, kong: Kong) -> None:
        if self.case == "log_live":
            kong.request.get_method()
        if self.case == "log_raises":
            raise RuntimeError("log boom")

