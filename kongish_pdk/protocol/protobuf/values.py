"""Python values <-> ``google.protobuf.Value``/``Struct``/``ListValue``, and entities -> dicts.

The shapes follow what Kong's ``pb_rpc.lua`` does on its side, so a plugin sees the same
Python values over ProtoBuf:1 as over MsgPack:1:

* Kong reads a ``Value`` with no kind set as Lua ``nil``, but ``null_value`` as the string
  ``"NULL_VALUE"`` (kong-protocol.md 3.7): ``None`` is therefore sent as an empty ``Value``.
* Lua numbers are doubles and lua-MessagePack sends integral ones as integers; integral
  ``number_value``s are given back as ``int`` for the same reason.
* Strings Kong sends are raw bytes (a header may not be UTF-8). protobuf refuses such a
  ``string`` field, so those messages are read and written by :mod:`.wire` instead, with
  surrogate escapes exactly like the MsgPack:1 codec.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from google.protobuf.message import Message

from kongish_pdk.protocol.protobuf.wire import bad_key, lua_number, unsendable


def fill_value(out: Any, value: Any) -> None:
    """Store ``value`` in the ``Value`` message ``out`` (None leaves it empty: Lua nil)."""
    if value is None:
        return
    if value is True or value is False:
        out.bool_value = value
    elif isinstance(value, int | float):
        out.number_value = value
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, bytes | bytearray):
        out.string_value = bytes(value).decode("utf-8", "surrogateescape")
    elif isinstance(value, Mapping):
        fill_struct(out.struct_value, value)
    elif isinstance(value, list | tuple):
        fill_list(out.list_value, value)
    else:
        raise unsendable(value)


def fill_struct(out: Any, mapping: Mapping[Any, Any]) -> None:
    out.SetInParent()  # an empty dict is still a (empty) table on Kong's side
    fields = out.fields
    for key, item in mapping.items():
        if not isinstance(key, str):
            raise bad_key(key)
        fill_value(fields[key], item)


def fill_list(out: Any, items: Any) -> None:
    out.SetInParent()
    values = out.values
    for item in items:
        fill_value(values.add(), item)


def from_value(value: Any) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "number_value":
        return lua_number(value.number_value)
    if kind == "bool_value":
        return value.bool_value
    if kind == "list_value":
        return [from_value(v) for v in value.list_value.values]
    if kind == "struct_value":
        return from_struct(value.struct_value)
    return None  # no kind, or null_value


def from_struct(struct: Any) -> dict[str, Any]:
    return {key: from_value(item) for key, item in struct.fields.items()}


def message_to_dict(message: Message) -> dict[str, Any]:
    """An entity message as the dict a plugin gets over MsgPack:1 (unset fields left out)."""
    out: dict[str, Any] = {}
    for field, value in message.ListFields():
        if field.message_type is not None and field.message_type.GetOptions().map_entry:
            out[field.name] = dict(value)
        elif field.message_type is not None:
            if _is_repeated(field):
                out[field.name] = [message_to_dict(v) for v in value]
            else:
                out[field.name] = message_to_dict(value)
        elif _is_repeated(field):
            out[field.name] = list(value)
        else:
            out[field.name] = value
    return out


def _is_repeated(field: Any) -> bool:
    # FieldDescriptor.label is deprecated in recent protobuf; is_repeated is not in 4.x.
    repeated = getattr(field, "is_repeated", None)
    if repeated is not None:
        return bool(repeated)
    return bool(field.label == field.LABEL_REPEATED)


def fill_message(out: Any, mapping: Mapping[str, Any] | None) -> None:
    """Copy the keys of a plugin's dict that the message has a field for (others are
    dropped: ProtoBuf:1 carries only the fields Kong's .proto declares)."""
    if not mapping:
        return
    fields = out.DESCRIPTOR.fields_by_name
    for key, value in mapping.items():
        field = fields.get(key)
        if field is None or value is None:
            continue
        if _is_repeated(field):
            getattr(out, key).extend(value)
        elif field.message_type is not None:
            fill_message(getattr(out, key), value)
        else:
            setattr(out, key, value)
