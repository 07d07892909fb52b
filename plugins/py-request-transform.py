"""py-request-transform: changes the request before Kong proxies it (kong.service.request).

Adds and removes upstream headers, adds query arguments, and replaces a path prefix
(e.g. ``/api/v1`` -> ``/v1``). The client's own request is untouched: only what the
upstream receives changes.

Its config is *typed*: ``Plugin.__init__`` takes a ``Config`` dataclass, the Kong schema in
``--dump`` is derived from it, and a config that does not fit is refused at StartInstance
with a message naming the field.
"""

from dataclasses import dataclass, field
from typing import Annotated

from kongish_pdk.config import Length
from kongish_pdk.pdk import Kong

version = "1.1.0"
priority = 801


@dataclass(frozen=True)
class Config:
    add_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: list[str] = field(default_factory=list)
    add_query: dict[str, str] = field(default_factory=dict)
    strip_prefix: Annotated[str, Length(min=1)] | None = None
    new_prefix: str = ""


class Plugin:
    def __init__(self, config: Config) -> None:
        self.config = config

    def access(self, kong: Kong) -> None:
        config = self.config
        for name in config.remove_headers:
            kong.service.request.clear_header(name)
        for name, value in config.add_headers.items():
            kong.service.request.set_header(name, value)
        if config.add_query:
            query = kong.request.get_query()
            for name, value in config.add_query.items():
                query[name] = [value]
            kong.service.request.set_query(query)
        if config.strip_prefix:
            path = kong.request.get_path()
            if path.startswith(config.strip_prefix):
                rest = path[len(config.strip_prefix):]
                kong.service.request.set_path(config.new_prefix + rest if rest else
                                              config.new_prefix or "/")
