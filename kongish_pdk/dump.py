"""The plugin description Kong reads from ``query_cmd`` (kong-protocol.md 1.2).

stdout must carry exactly one JSON document. :func:`protect_stdout` moves file descriptor 1
to stderr for the whole process (prints at import time, C extensions, child processes), and
keeps a private handle on the real stdout for the document itself.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from kongish_pdk.plugin.spec import PluginSpec


def document(specs: Sequence[PluginSpec], protocol: str) -> dict[str, Any]:
    return {"Protocol": protocol, "Plugins": [spec.info() for spec in specs]}


def protect_stdout() -> TextIO:
    """Redirect fd 1 to stderr and return a text stream on the original stdout."""
    sys.stdout.flush()
    real = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return real


def write(out: TextIO, doc: dict[str, Any]) -> None:
    out.write(json.dumps(doc, separators=(",", ":"), allow_nan=False) + "\n")
    out.flush()
