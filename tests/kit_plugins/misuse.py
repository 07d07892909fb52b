"""Calls the PDK wrongly on purpose; config "case" says how."""

import contextlib
import threading

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
        elif self.case == "foreign_thread":
            call_from_another_thread(kong)

    def log(self, kong: Kong) -> None:
        if self.case == "log_live":
            kong.request.get_method()
        if self.case == "log_raises":
            raise RuntimeError("log boom")


def call_from_another_thread(kong: Kong) -> None:
    """A PDK call from a thread the handler started; its error is raised in the handler."""
    failures: list[BaseException] = []

    def get_host() -> None:
        try:
            kong.request.get_header("host")
        except BaseException as exc:
            failures.append(exc)

    helper = threading.Thread(target=get_host)
    helper.start()
    helper.join(10)
    if failures:
        raise failures[0]
