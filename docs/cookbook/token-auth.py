"""Recipe: authentication with signed tokens, mapped to a Kong consumer.

Clients send ``Authorization: Bearer <user>.<signature>`` where the signature is the hex
HMAC-SHA256 of ``<user>`` with a shared secret. A valid token authenticates the request as a
Kong consumer (``kong.client.authenticate``), so other plugins, the log and the upstream see
who it is; anything else ends the request with 401 before it reaches the upstream.
"""

import hashlib
import hmac
from dataclasses import dataclass
from typing import Annotated

from kongish_pdk.config import Attrs, Length
from kongish_pdk.pdk import Kong

version = "1.0.0"
priority = 1000  # before rate limiting and transformations


@dataclass(frozen=True)
class Config:
    # referenceable: the secret may be a Kong vault reference like {vault://env/token-secret}
    secret: Annotated[str, Length(min=16), Attrs(referenceable=True, encrypted=True)]
    header_to_upstream: str = "x-authenticated-user"


def sign(secret: str, user: str) -> str:
    return hmac.new(secret.encode(), user.encode(), hashlib.sha256).hexdigest()


class Plugin:
    def __init__(self, config: Config) -> None:
        self.config = config

    def access(self, kong: Kong) -> None:
        user = self._user(kong.request.get_header("authorization"))
        if user is None:
            kong.response.exit(401, {"message": "Unauthorized"},
                               {"WWW-Authenticate": 'Bearer realm="kong"'})
            return
        consumer_id = f"token-{user}"
        kong.client.authenticate({"id": consumer_id, "username": user},
                                 {"id": f"{consumer_id}-credential", "consumer_id": consumer_id})
        kong.service.request.set_header(self.config.header_to_upstream, user)
        kong.service.request.clear_header("authorization")  # the upstream never sees tokens

    def _user(self, header: str | None) -> str | None:
        scheme, _, token = (header or "").partition(" ")
        user, _, signature = token.rpartition(".")
        if scheme.lower() != "bearer" or not user:
            return None
        expected = sign(self.config.secret, user)
        return user if hmac.compare_digest(signature, expected) else None
