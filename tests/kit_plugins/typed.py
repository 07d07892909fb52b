"""A plugin with a typed config (dataclass, nested record, Literal, ranges, optional)."""

from dataclasses import dataclass, field
from typing import Annotated, Literal

from kongish_pdk.config import Between, Length
from kongish_pdk.pdk import Kong

version = "1.0.0"


@dataclass(frozen=True)
class Limits:
    per_minute: Annotated[int, Between(1, 1000)] = 60
    burst: int | None = None


@dataclass(frozen=True)
class Config:
    header: Annotated[str, Length(min=1)]
    mode: Literal["strict", "lenient"] = "strict"
    ratio: float = 0.5
    tags: list[str] = field(default_factory=list)
    limits: Limits = field(default_factory=Limits)
    labels: dict[str, int] = field(default_factory=dict)


class Plugin:
    def __init__(self, config: Config) -> None:
        assert isinstance(config, Config)
        self.config = config

    def access(self, kong: Kong) -> None:
        c = self.config
        kong.response.set_header(c.header, f"{c.mode}/{c.limits.per_minute}/{c.ratio}/"
                                           f"{','.join(c.tags)}/{type(c.limits).__name__}")
