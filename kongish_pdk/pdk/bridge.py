"""The PDK bridge: turns ``kong.request.get_header("host")`` into one call on a backend.

A *backend* answers PDK calls. Kong's protocols hand each call to the gateway and wait for the
answer; a Tyk-style front door or the testing kit answers locally. The bridge does not care:
it validates arguments against the PDK table, calls ``backend.call(name, args)`` and
normalises what comes back, so every backend gives plugins the same Python values.
"""

from __future__ import annotations

import _thread
import difflib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from kongish_pdk.errors import PDKError, PDKThreadError
from kongish_pdk.pdk.table import BY_NAME, FORBIDDEN, PDKFunction, Result


class Backend(Protocol):
    """Something that can run a PDK function: the gateway over a socket, or a local fake."""

    def call(self, name: str, args: list[Any]) -> Any:
        """Run ``name`` with positional ``args``; raise :class:`PDKError` if it failed."""
        ...


_PLAIN_LOG_TYPES = (str, bytes, int, float, bool)


def _log_args(args: Sequence[Any]) -> list[Any]:
    # Kong's log functions concatenate tostring() of each argument, and a nil would cut the
    # argument list short (Lua's `#`), so send Python's own text for anything else.
    return [a if isinstance(a, _PLAIN_LOG_TYPES) else str(a) for a in args]


def prepare_args(fn: PDKFunction, args: Sequence[Any]) -> list[Any]:
    """Positional Args for Kong: trailing Nones dropped, inner Nones replaced or refused.

    Kong unpacks ``Args`` with Lua's ``#``, which stops at the first nil, so ``[403, None, h]``
    would silently lose ``h``. A required argument that is None makes Kong raise a Lua error
    and abandon the event, so that is refused here too, with the function's name.
    """
    if fn.varargs:
        return _log_args(args)
    if None not in args:  # the usual case: nothing to check or drop
        return list(args)
    out = list(args)
    for param, value in zip(fn.params, out, strict=False):
        if value is None and not param.optional:
            raise TypeError(f"{fn.name}(): argument {param.name!r} must not be None")
    while out and out[-1] is None:
        out.pop()
    for i, value in enumerate(out):
        if value is not None:
            continue
        param = fn.params[i]
        if param.nil_as is FORBIDDEN:
            raise TypeError(
                f"{fn.name}(): argument {param.name!r} is None but a later argument is given; "
                "Kong drops nil holes in positional arguments, so pass a value for it"
            )
        out[i] = param.nil_as
    return out


def _as_map(value: Any) -> Any:
    # lua-MessagePack packs every empty table as an empty array.
    return {} if value == [] else value


def _as_multimap(value: Any) -> dict[str, list[str]]:
    if not value:
        return {}
    out: dict[str, list[str]] = {}
    for key, item in value.items():
        if isinstance(item, list):
            out[str(key)] = item
        elif item is True:  # a query flag without "="
            out[str(key)] = []
        else:
            out[str(key)] = [item]
    return out


def _as_bytes(value: Any) -> bytes | None:
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):  # Kong 2.x sent bodies as str
        return value.encode("utf-8", "surrogateescape")
    raise PDKError(f"expected a body (bytes), got {type(value).__name__}")


def _as_uri_captures(value: Any) -> dict[str, Any]:
    value = _as_map(value) or {}
    unnamed = _as_map(value.get("unnamed")) or {}
    if isinstance(unnamed, dict):
        # A Lua table with key 0 (the whole match) arrives as a map with integer keys.
        size = max((k for k in unnamed if isinstance(k, int)), default=-1) + 1
        groups = [unnamed.get(i, "") for i in range(size)]
    else:
        groups = ["", *unnamed]  # no whole match was sent: keep group n at index n
    return {"unnamed": groups, "named": dict(_as_map(value.get("named")) or {})}


def _as_is(value: Any) -> Any:
    return value


def _nothing(value: Any) -> None:
    return None


_NORMALISE: dict[Result, Callable[[Any], Any]] = {
    Result.VALUE: _as_is,
    Result.MAP: _as_map,
    Result.MULTIMAP: _as_multimap,
    Result.BYTES: _as_bytes,
    Result.URI_CAPTURES: _as_uri_captures,
    Result.NOTHING: _nothing,
}
# Per function name, computed once: hashing an Enum member runs Python code (3.11).
_NORMALISER = {name: _NORMALISE[fn.result] for name, fn in BY_NAME.items()}


class PDK:
    """One handler invocation's view of the PDK: validation, the backend call, normalisation.

    ``lua_style`` makes every call return ``(value, error)`` like kong-pdk's default, for
    plugins written that way; otherwise a failed call raises :class:`PDKError`.

    It belongs to the thread that creates it, the one running the handler (a greenlet under
    gevent, whose monkey-patching makes ``_thread.get_ident`` name greenlets): a call from any
    other raises :class:`PDKThreadError` at once.
    """

    __slots__ = ("_backend", "_lua_style", "_owner")

    def __init__(self, backend: Backend, lua_style: bool = False) -> None:
        self._backend = backend
        self._lua_style = lua_style
        self._owner = _thread.get_ident()

    def call(self, name: str, args: Sequence[Any]) -> Any:
        self._check_thread(name)
        fn = BY_NAME[name]
        prepared = prepare_args(fn, args)
        if not self._lua_style:
            value = self._backend.call(name, prepared)
            normalise = _NORMALISER[name]
            return value if normalise is _as_is else normalise(value)
        try:
            value = self._backend.call(name, prepared)
        except PDKError as exc:
            return None, str(exc)
        return _NORMALISER[name](value), None

    def _check_thread(self, name: str) -> None:
        if _thread.get_ident() != self._owner:
            raise PDKThreadError(
                f"{name}() was called from a thread other than the one running the handler. "
                "The gateway answers an event's PDK calls one at a time, on the handler's own "
                "thread (its greenlet under gevent): make the call there and hand the value "
                "to your thread.")

    def raw_call(self, name: str, args: Sequence[Any]) -> Any:
        """Call a PDK function the table does not know (a newer Kong, Enterprise)."""
        if not name.startswith("kong."):
            raise ValueError(f"PDK function names start with 'kong.': {name!r}")
        if name in BY_NAME:
            return self.call(name, args)
        self._check_thread(name)
        if not self._lua_style:
            return self._backend.call(name, list(args))
        try:
            return self._backend.call(name, list(args)), None
        except PDKError as exc:
            return None, str(exc)


class Namespace:
    """Base of the generated PDK namespaces (``kong``, ``kong.request``, ...).

    Unknown names fail at once with a suggestion instead of reaching the gateway, and printing
    a namespace never performs a call.
    """

    __slots__ = ("_pdk",)
    _path: ClassVar[str] = "kong"
    _names: ClassVar[tuple[str, ...]] = ()

    def __init__(self, pdk: PDK) -> None:
        self._pdk = pdk

    def __repr__(self) -> str:
        return f"<PDK namespace {self._path}>"

    if not TYPE_CHECKING:
        # Hidden from type checkers: a class with __getattr__ accepts any attribute, so mypy
        # would let `kong.request.get_heade(...)` through. At runtime it explains the typo.
        def __getattr__(self, name: str) -> Any:
            if name.startswith("__"):
                raise AttributeError(name)
            close = difflib.get_close_matches(name, self._names, n=1, cutoff=0.6)
            hint = f"; did you mean {self._path}.{close[0]}?" if close else ""
            raise AttributeError(
                f"{self._path} has no PDK function or namespace {name!r}{hint} "
                f"(known: {', '.join(self._names)}). For a function this version does not know, "
                f"use kong.raw_call('{self._path}.{name}', ...)."
            )
