"""JSON <-> frozen dataclasses, strictly: the values that cross the wire are typed on both ends.

A reader gets a typed value or a ValueError naming the field that is wrong
(``report.etcd.revision: expected an integer, got a string``), never a dict
it has to re-check at every use. Hand-written because the types involved are
few (str, int, float, bool, Optional, tuple[X, ...], nested dataclasses) and
a schema library for them would be the only such dependency.

Unknown keys are ignored when reading (a newer peer may send more), missing
keys take the field's default or are an error when it has none. A field that
was renamed declares its old names (``field(metadata=renamed("old_name"))``): a value from an
older peer or an older record on disk is read under either name, and written
under the new one only.
"""

from __future__ import annotations

import dataclasses
import enum
import functools
import sys
import types
import typing
from typing import Any, TypeVar, Union

T = TypeVar("T")

_NONE = type(None)
ALIASES = "etcdguard.json_aliases"


def renamed(*old_names: str) -> dict[str, Any]:
    """Field metadata: the field is also read under ``old_names`` (``field(metadata=renamed("old"))``)."""
    return {ALIASES: old_names}


def _lookup(value: dict[str, Any], f: dataclasses.Field[Any]) -> tuple[bool, Any]:
    """(found, value) of field ``f`` in a JSON object, under its name or one of its old names."""
    for key in (f.name, *f.metadata.get(ALIASES, ())):
        if key in value:
            return True, value[key]
    return False, None


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, vars(module) if module else None)


def to_json(value: Any) -> Any:
    """A dataclass (or tuple/list/dict of them) as plain JSON data."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: to_json(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, (list, tuple)):
        return [to_json(v) for v in value]
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    return value


def from_json(cls: type[T], data: Any, where: str = "value") -> T:
    """Read ``data`` (parsed JSON) as dataclass ``cls``; ValueError names the offending field."""
    return typing.cast(T, _read(cls, data, where))


def _kind(value: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "an array",
            dict: "an object", _NONE: "null"}.get(type(value), type(value).__name__)


def _read(tp: Any, value: Any, where: str) -> Any:
    """``value`` read as type ``tp``: generic aliases by their origin, then classes, then scalars."""
    origin = typing.get_origin(tp)
    if origin is Union or (sys.version_info >= (3, 10) and isinstance(tp, types.UnionType)):
        return _read_union(tp, value, where)
    if origin is tuple:
        return _read_tuple(tp, value, where)
    if origin is dict:
        return _read_dict(tp, value, where)
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _read_dataclass(tp, value, where)
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    return _read_scalar(tp, value, where)


def _read_union(tp: Any, value: Any, where: str) -> Any:
    args = typing.get_args(tp)
    if value is None and _NONE in args:
        return None
    inner = [a for a in args if a is not _NONE]
    if len(inner) == 1:
        return _read(inner[0], value, where)
    for a in inner:
        try:
            return _read(a, value, where)
        except ValueError:
            continue
    raise ValueError(f"{where}: {_kind(value)} does not fit {tp}")


def _read_tuple(tp: Any, value: Any, where: str) -> tuple[Any, ...]:
    args = typing.get_args(tp)
    if not isinstance(value, list):
        raise ValueError(f"{where}: expected an array, got {_kind(value)}")
    if len(args) == 2 and args[1] is Ellipsis:
        return tuple(_read(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
    if len(args) != len(value):
        raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
    return tuple(_read(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))


def _read_dict(tp: Any, value: Any, where: str) -> dict[Any, Any]:
    key_t, val_t = typing.get_args(tp)
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(value)}")
    return {_read(key_t, k, f"{where} key"): _read(val_t, v, f"{where}.{k}") for k, v in value.items()}


def _read_dataclass(tp: type, value: Any, where: str) -> Any:
    if not isinstance(value, dict):
        raise ValueError(f"{where}: expected an object, got {_kind(value)}")
    hints = _hints(tp)
    kwargs: dict[str, Any] = {}
    for f in dataclasses.fields(tp):
        if not f.init:
            continue
        found, raw = _lookup(value, f)
        if not found:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ValueError(f"{where}.{f.name} is missing")
            continue
        kwargs[f.name] = _read(hints[f.name], raw, f"{where}.{f.name}")
    return tp(**kwargs)


# The scalar types: (what a JSON value must be, what it is called in an error, how it is converted).
_SCALARS: dict[Any, tuple[Any, str, Any]] = {
    bool: (bool, "true or false", bool),
    int: (int, "an integer", int),
    float: ((int, float), "a number", float),
    str: (str, "a string", str),
}


def _read_scalar(tp: Any, value: Any, where: str) -> Any:
    base = bool if isinstance(tp, type) and issubclass(tp, bool) else tp
    if base not in _SCALARS:
        raise TypeError(f"{where}: cannot read type {tp!r}")
    accepted, name, convert = _SCALARS[base]
    # JSON's true/false are Python bools, which are ints too: only a bool field takes them
    if (isinstance(value, bool) and base is not bool) or not isinstance(value, accepted):
        raise ValueError(f"{where}: expected {name}, got {_kind(value)}")
    return convert(value)
