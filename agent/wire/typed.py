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
    origin = typing.get_origin(tp)
    if origin is Union or (sys.version_info >= (3, 10) and isinstance(tp, types.UnionType)):
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
    if origin is tuple:
        args = typing.get_args(tp)
        if not isinstance(value, list):
            raise ValueError(f"{where}: expected an array, got {_kind(value)}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_read(args[0], v, f"{where}[{i}]") for i, v in enumerate(value))
        if len(args) != len(value):
            raise ValueError(f"{where}: expected {len(args)} items, got {len(value)}")
        return tuple(_read(a, v, f"{where}[{i}]") for i, (a, v) in enumerate(zip(args, value)))
    if origin is dict:
        key_t, val_t = typing.get_args(tp)
        if not isinstance(value, dict):
            raise ValueError(f"{where}: expected an object, got {_kind(value)}")
        return {_read(key_t, k, f"{where} key"): _read(val_t, v, f"{where}.{k}") for k, v in value.items()}
    if tp is Any:
        return value
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
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
    if isinstance(tp, type) and issubclass(tp, bool):
        if not isinstance(value, bool):
            raise ValueError(f"{where}: expected true or false, got {_kind(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{where}: expected an integer, got {_kind(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{where}: expected a number, got {_kind(value)}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ValueError(f"{where}: expected a string, got {_kind(value)}")
        return value
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        try:
            return tp(value)
        except ValueError:
            raise ValueError(f"{where}: {value!r} is not one of {[m.value for m in tp]}") from None
    raise TypeError(f"{where}: cannot read type {tp!r}")
