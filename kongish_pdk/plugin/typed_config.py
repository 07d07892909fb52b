"""Typed plugin config: a dataclass (or TypedDict) is the Kong schema and the decoded config.

The convention (docs/testing.md, docs/cookbook.md): annotate the first parameter of
``Plugin.__init__`` with a dataclass or TypedDict::

    @dataclass
    class Config:
        header: str = "x-hello"
        limit: Annotated[int, Between(1, 1000)] = 10
        mode: Literal["strict", "lenient"] = "strict"

    class Plugin:
        def __init__(self, config: Config) -> None: ...

``kong_fields(Config)`` is the schema Kong sees (what ``Schema`` would be), and
``converter(Config)`` is the ``PluginSpec.make_config`` hook: it validates the dict Kong
sends and builds the instance, raising :class:`ConfigError` (so StartInstance fails with a
message naming the field) when it does not fit.

Mapping: ``str`` -> string, ``bool`` -> boolean, ``int`` -> integer, ``float`` -> number,
``list[T]``/``tuple[T, ...]``/``Sequence[T]`` -> array, ``set[T]``/``frozenset[T]`` -> set,
``dict[str, T]``/``Mapping[str, T]`` -> map, a nested dataclass/TypedDict -> record,
``Literal[...]`` -> ``one_of``, ``T | None`` -> optional. A field without a default (and not
``| None``) is required. ``Annotated[T, Between(a, b)]``, ``Length(min, max)`` and
``Attrs(**kong_attributes)`` add Kong validators and attributes.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from kongish_pdk.plugin.schema import SchemaError, json_value


class ConfigError(ValueError):
    """The config Kong sent does not fit the plugin's typed config (names the field)."""


class TypedConfigError(TypeError):
    """The typed config class cannot be expressed as a Kong schema (a plugin bug)."""


@dataclass(frozen=True)
class Between:
    """``Annotated[int, Between(1, 100)]``: Kong's ``between`` validator (inclusive)."""

    low: float
    high: float


@dataclass(frozen=True)
class Length:
    """``Annotated[str, Length(min=1)]``: Kong's ``len_min``/``len_max`` (strings, arrays)."""

    min: int | None = None
    max: int | None = None


class Attrs:
    """``Annotated[str, Attrs(referenceable=True)]``: extra Kong schema attributes, as is."""

    def __init__(self, **attributes: Any) -> None:
        self.attributes = attributes

    def __repr__(self) -> str:
        return f"Attrs({self.attributes!r})"


_SCALARS: dict[Any, str] = {str: "string", bool: "boolean", int: "integer", float: "number"}
_SEQUENCES = (list, tuple, Sequence, typing.Sequence)
_SETS = (set, frozenset, typing.AbstractSet)
_MAPPINGS = (dict, Mapping, typing.Mapping)
_NONE = type(None)


def is_config_class(tp: Any) -> bool:
    return isinstance(tp, type) and (dataclasses.is_dataclass(tp) or _is_typeddict(tp))


def _is_typeddict(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, dict) and hasattr(tp, "__required_keys__")


def config_type(cls: type) -> type | None:
    """The typed config class ``Plugin.__init__`` declares, or None for a plain dict."""
    init = cls.__dict__.get("__init__") or getattr(cls, "__init__", None)
    if init is None or init is object.__init__:
        return None
    try:
        params = list(inspect.signature(init).parameters.values())[1:]
    except (TypeError, ValueError):
        return None
    if not params or params[0].annotation is inspect.Parameter.empty:
        return None
    try:
        hints = typing.get_type_hints(init, include_extras=True)
    except Exception as exc:
        raise TypedConfigError(f"cannot resolve the type hints of Plugin.__init__: "
                               f"{type(exc).__name__}: {exc}") from None
    annotation = hints.get(params[0].name)
    return annotation if is_config_class(annotation) else None


# ---------------------------------------------------------------------- type analysis

@dataclass(frozen=True)
class _Shape:
    """A field type with Annotated metadata and ``| None`` peeled off."""

    base: Any
    optional: bool
    extras: tuple[Any, ...]


def _shape(tp: Any) -> _Shape:
    extras: tuple[Any, ...] = ()
    if get_origin(tp) is typing.Annotated:
        tp, *meta = get_args(tp)
        extras = tuple(meta)
    optional = False
    if get_origin(tp) in (Union, types.UnionType):
        members = [a for a in get_args(tp) if a is not _NONE]
        optional = len(members) < len(get_args(tp))
        if len(members) != 1:
            raise TypedConfigError(f"unions other than `T | None` have no Kong type: {tp}")
        inner = _shape(members[0])
        return _Shape(inner.base, True, extras + inner.extras)
    return _Shape(tp, optional, extras)


def _fields_of(cls: type) -> list[tuple[str, Any, bool, Any]]:
    """(name, type, has_default, default) of a dataclass or TypedDict."""
    hints = typing.get_type_hints(cls, include_extras=True)
    out: list[tuple[str, Any, bool, Any]] = []
    if dataclasses.is_dataclass(cls):
        for f in dataclasses.fields(cls):
            if not f.init:
                continue
            if f.default is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], True, f.default))
            elif f.default_factory is not dataclasses.MISSING:
                out.append((f.name, hints[f.name], True, f.default_factory()))
            else:
                out.append((f.name, hints[f.name], False, None))
        return out
    required: frozenset[str] = getattr(cls, "__required_keys__", frozenset())
    for name, tp in hints.items():
        # A TypedDict key that may be absent is optional: like a `T | None = None` field.
        optional = name not in required
        out.append((name, typing.Optional[tp] if optional else tp, optional, None))  # noqa: UP045
    return out


# ---------------------------------------------------------------------- schema derivation

def kong_fields(cls: type) -> list[dict[str, Any]]:
    """The Kong ``config`` record's fields for a config class (kong-pdk ``Schema`` form)."""
    return [{name: _field_schema(tp, has_default, default, name)}
            for name, tp, has_default, default in _fields_of(cls)]


def _field_schema(tp: Any, has_default: bool, default: Any, path: str) -> dict[str, Any]:
    shape = _shape(tp)
    out = _type_schema(shape.base, path)
    if not shape.optional:
        out["required"] = True
    if has_default and default is not None:
        out["default"] = _jsonable(default, path)
    for extra in shape.extras:
        if isinstance(extra, Between):
            out["between"] = [extra.low, extra.high]
        elif isinstance(extra, Length):
            if extra.min is not None:
                out["len_min"] = extra.min
            if extra.max is not None:
                out["len_max"] = extra.max
        elif isinstance(extra, Attrs):
            out.update(extra.attributes)
    return out


def _type_schema(tp: Any, path: str) -> dict[str, Any]:
    if tp in _SCALARS:
        return {"type": _SCALARS[tp]}
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        kinds = {type(a) for a in args}
        if len(kinds) != 1 or next(iter(kinds)) not in (str, int):
            raise TypedConfigError(f"{path}: Literal values must be all strings or all "
                                   f"integers, got {args}")
        return {"type": _SCALARS[next(iter(kinds))], "one_of": list(args)}
    if origin in _SEQUENCES:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            raise TypedConfigError(f"{path}: use tuple[T, ...] (Kong arrays are homogeneous)")
        return {"type": "array", "elements": _type_schema(_element(tp, path), f"{path}[]")}
    if origin in _SETS:
        return {"type": "set", "elements": _type_schema(_element(tp, path), f"{path}[]")}
    if origin in _MAPPINGS:
        if not args or args[0] is not str:
            raise TypedConfigError(f"{path}: map keys must be str, e.g. dict[str, int]")
        return {"type": "map", "keys": {"type": "string"},
                "values": _type_schema(_shape(args[1]).base, f"{path}{{}}")}
    if is_config_class(tp):
        return {"type": "record", "fields": kong_fields(tp)}
    raise TypedConfigError(f"{path}: {getattr(tp, '__name__', tp)!s} has no Kong schema type "
                           f"(use str, bool, int, float, list, set, dict, Literal, or a "
                           f"dataclass/TypedDict)")


def _element(tp: Any, path: str) -> Any:
    args = get_args(tp)
    if not args:
        raise TypedConfigError(f"{path}: say what the elements are, e.g. list[str]")
    return _shape(args[0]).base


def _jsonable(value: Any, path: str) -> Any:
    try:
        return json_value(value, path)
    except SchemaError as exc:
        raise TypedConfigError(f"default of {exc}") from None


# ---------------------------------------------------------------------- decoding

def converter(cls: type) -> Callable[[dict[str, Any]], Any]:
    """The ``make_config`` hook: Kong's config dict -> a validated instance of ``cls``."""
    kong_fields(cls)  # fail at load time, not at the first StartInstance

    def make_config(config: dict[str, Any]) -> Any:
        return _record(cls, config, "config")

    return make_config


def _describe(value: Any) -> str:
    return f"{value!r} ({type(value).__name__})"


def _record(cls: type, value: Any, path: str) -> Any:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{path}: expected a record (JSON object), got {_describe(value)}")
    fields = _fields_of(cls)
    names = {name for name, *_ in fields}
    unknown = sorted(set(value) - names)
    if unknown:
        raise ConfigError(f"{path}.{unknown[0]}: unknown field (known: {', '.join(sorted(names))})")
    built: dict[str, Any] = {}
    for name, tp, has_default, _ in fields:
        item = value.get(name)
        shape = _shape(tp)
        if item is None:
            if shape.optional:
                if name in value or not has_default:
                    built[name] = None
                continue
            if has_default:
                continue  # Kong sent null for a field with a default: use the default
            raise ConfigError(f"{path}.{name}: required field missing")
        built[name] = _value(shape, item, f"{path}.{name}")
    if _is_typeddict(cls):
        return built
    try:
        return cls(**built)
    except (TypeError, ValueError) as exc:  # __post_init__ validation of the plugin
        raise ConfigError(f"{path}: {exc}") from None


def _value(shape: _Shape, value: Any, path: str) -> Any:
    out = _convert(shape.base, value, path)
    for extra in shape.extras:
        if isinstance(extra, Between) and not extra.low <= out <= extra.high:
            raise ConfigError(f"{path}: {out} is not between {extra.low} and {extra.high}")
        if isinstance(extra, Length):
            if extra.min is not None and len(out) < extra.min:
                raise ConfigError(f"{path}: length must be at least {extra.min}")
            if extra.max is not None and len(out) > extra.max:
                raise ConfigError(f"{path}: length must be at most {extra.max}")
    return out


def _convert(tp: Any, value: Any, path: str) -> Any:
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: expected a boolean, got {_describe(value)}")
        return value
    if tp is int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)  # JSON numbers: 3.0 is an integer to Kong
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: expected an integer, got {_describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{path}: expected a number, got {_describe(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: expected a string, got {_describe(value)}")
        return value
    origin, args = get_origin(tp), get_args(tp)
    if origin is Literal:
        if value not in args or isinstance(value, bool) != isinstance(args[0], bool):
            raise ConfigError(f"{path}: expected one of {', '.join(map(repr, args))}, "
                              f"got {_describe(value)}")
        return value
    if origin in _SEQUENCES or origin in _SETS:
        if not isinstance(value, list):
            raise ConfigError(f"{path}: expected an array, got {_describe(value)}")
        element = _shape(args[0])
        items = [_value(element, v, f"{path}[{i}]") for i, v in enumerate(value)]
        if origin is tuple:
            return tuple(items)
        if origin in _SETS:
            return frozenset(items) if origin is frozenset else set(items)
        return items
    if origin in _MAPPINGS:
        if value == []:
            value = {}  # an empty Lua table
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: expected a map (JSON object), got {_describe(value)}")
        element = _shape(args[1])
        return {str(k): _value(element, v, f"{path}.{k}") for k, v in value.items()}
    if is_config_class(tp):
        return _record(tp, value, path)
    raise ConfigError(f"{path}: no conversion for {tp}")  # kong_fields refused it earlier
