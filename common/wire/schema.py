"""Argument schemas of the wire protocol: declared data, checked by one validator.

Every value that crosses the control channel is checked against a schema made
of the field types below (a pattern-checked string, a bounded integer, ...),
so a malformed value is refused by name before any handler sees it. The step
registry (common/ops) declares each step's parameters with the same types, so
the wire protocol and the steps share one definition. Decoding raises nothing
but ProtocolError.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional, Union

from etcdguard.common.base.errors import EtcdguardError

MAX_OFFSET = 1 << 50            # bytes; offsets and sizes of snapshot files
MAX_BUMP_REVISION = 1 << 53     # keeps revision + bump far below etcd's int64 limit
INT_MIN = -(1 << 63)            # JSON integers outside [INT_MIN, INT_MAX] are refused;
INT_MAX = (1 << 64) - 1         #   uint64 is needed for etcd member and cluster ids

# Error codes: a closed set. Both sides refuse any other code.
BAD_REQUEST = "bad_request"
UNKNOWN_OP = "unknown_op"
UNSUPPORTED_VERSION = "unsupported_version"
TOO_LARGE = "too_large"
NOT_FOUND = "not_found"
BUSY = "busy"
CONFLICT = "conflict"
FAILED = "failed"
UNSAFE = "unsafe"
INTERNAL = "internal"

ERROR_CODES: Mapping[str, str] = MappingProxyType({
    BAD_REQUEST: "the request is malformed or its arguments are invalid",
    UNKNOWN_OP: "the agent does not know this operation",
    UNSUPPORTED_VERSION: "the peer speaks another protocol version",
    TOO_LARGE: "a frame is larger than the protocol allows",
    NOT_FOUND: "the named snapshot, upload or operation does not exist",
    BUSY: "another operation holds the lock",
    CONFLICT: "the operation id was already used for a different request",
    FAILED: "the operation ran and failed",
    UNSAFE: "refused because going on could lose data or break the cluster",
    INTERNAL: "an unexpected error inside the agent",
})

# Regular expressions (always used with fullmatch; ASCII classes only).
REQUEST_ID_PATTERN = r"[A-Za-z0-9._:-]{1,64}"
# Operation and upload ids become parts of file names in the agent's state dir,
# so they may not start with "." or "-" (no ".", "..", hidden files or option-like names).
SHA256_PATTERN = r"[0-9a-f]{64}"
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"   # snapshot names, member names, cluster tokens
PEER_URL_PATTERN = (
    r"https?://(?:[A-Za-z0-9](?:[A-Za-z0-9.-]{0,251}[A-Za-z0-9])?|\[[0-9A-Fa-f:.]{2,45}\])"
    r"(?::[0-9]{1,5})?"
)
_CLUSTER_ENTRY = f"{NAME_PATTERN}={PEER_URL_PATTERN}"
INITIAL_CLUSTER_PATTERN = f"{_CLUSTER_ENTRY}(?:,{_CLUSTER_ENTRY})*"

_CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
_SURROGATE_RE = re.compile(r"[\ud800-\udfff]")

JSONObject = dict[str, Any]


class ProtocolError(EtcdguardError):
    """A message broke the protocol (or an encoder was asked to send one that would).

    ``request_id`` is the request's id when it could be read, else None: the
    server answers with it, or drops the message when the peer is not trusted.
    """

    def __init__(self, code: str, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.request_id = request_id

    def __repr__(self) -> str:
        return f"ProtocolError({self.code!r}, {self.message!r}, {self.request_id!r})"


def _bad(message: str, code: str = BAD_REQUEST) -> ProtocolError:
    return ProtocolError(code, message)


def _show(value: Any, limit: int = 48) -> str:
    """repr() of untrusted text, cut short: safe to log and to send back."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return f"a {type(value).__name__}"


# ---------------------------------------------------------------------------
# Argument schemas: declared data, checked by one validator.


@dataclass(frozen=True)
class Str:
    """A non-empty string; with ``pattern`` it must match it entirely."""

    pattern: Optional[str] = None
    hint: str = "text"
    max_len: int = 1024
    required: bool = True

    def check(self, where: str, value: Any) -> Any:
        if not isinstance(value, str):
            raise _bad(f"{where}: expected {self.hint} (a string), got {_kind(value)}")
        if not value:
            raise _bad(f"{where}: must not be empty")
        if len(value) > self.max_len:
            raise _bad(f"{where}: longer than {self.max_len} characters")
        if self.pattern is not None:
            if re.fullmatch(self.pattern, value) is None:
                shape = f" ({self.pattern})" if len(self.pattern) <= 48 else ""
                raise _bad(f"{where}: {_show(value)} is not {self.hint}{shape}")
        elif _CONTROL_RE.search(value) or _SURROGATE_RE.search(value):
            raise _bad(f"{where}: contains control characters or unpaired surrogates")
        return value


@dataclass(frozen=True)
class Int:
    """An integer in [min, max]; booleans and floats are refused."""

    min: int = 0
    max: int = INT_MAX
    required: bool = True

    def check(self, where: str, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _bad(f"{where}: expected an integer from {self.min} to {self.max}, got {_kind(value)}")
        if not self.min <= value <= self.max:
            raise _bad(f"{where}: {value} is out of range (expected {self.min} to {self.max})")
        return int(value)


@dataclass(frozen=True)
class Bool:
    """true or false; 0 and 1 are refused."""

    required: bool = True

    def check(self, where: str, value: Any) -> Any:
        if not isinstance(value, bool):
            raise _bad(f"{where}: expected true or false, got {_kind(value)}")
        return value


@dataclass(frozen=True)
class StrList:
    """An array of strings, each checked by ``item``."""

    item: Str = field(default_factory=Str)
    max_items: int = 64
    required: bool = True

    def check(self, where: str, value: Any) -> Any:
        if not isinstance(value, list):
            raise _bad(f"{where}: expected an array of strings, got {_kind(value)}")
        if len(value) > self.max_items:
            raise _bad(f"{where}: more than {self.max_items} items")
        return [self.item.check(f"{where}[{i}]", v) for i, v in enumerate(value)]


@dataclass(frozen=True)
class Obj:
    """Any JSON object, passed through unchecked. Only where a schema declares it."""

    required: bool = True

    def check(self, where: str, value: Any) -> Any:
        if not isinstance(value, dict):
            raise _bad(f"{where}: expected an object, got {_kind(value)}")
        return value


@dataclass(frozen=True)
class Dependent:
    """An object whose schema is chosen by an earlier, required string field (``on``).

    It is required exactly when the chosen schema has a required field; a
    selector value without a schema here allows no object at all.
    """

    on: str
    cases: Mapping[str, Schema]

    @property
    def required(self) -> bool:
        return False  # decided per selector value, see validate()


Field = Union[Str, Int, Bool, StrList, Obj, Dependent]
Schema = Mapping[str, Field]


def validate(schema: Schema, value: Any, where: str = "args") -> JSONObject:
    """Check a decoded JSON object against ``schema``; return a plain copy.

    Unknown keys are refused (by name), so a typo never silently becomes a
    default. Raises ProtocolError(bad_request) naming the offending key.
    """
    if not isinstance(value, dict):
        raise _bad(f"{where}: expected an object, got {_kind(value)}")
    unknown = sorted((k for k in value if k not in schema), key=str)
    if unknown:
        names = ", ".join(_show(k) for k in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
        allowed = ", ".join(schema) if schema else "none"
        plural = "s" if len(unknown) > 1 else ""
        raise _bad(f"{where}: unknown key{plural} {names} (allowed: {allowed})")
    out: JSONObject = {}
    for name, spec in schema.items():
        path = f"{where}.{name}"
        if isinstance(spec, Dependent):
            selector = out.get(spec.on)
            sub = spec.cases.get(selector) if isinstance(selector, str) else None
            if sub is None:
                if name in value:
                    raise _bad(f"{path}: not allowed when {spec.on} is {_show(selector)}")
                continue
            if name not in value:
                if any(s.required for s in sub.values()):
                    raise _bad(f"{path} is required when {spec.on} is {_show(selector)}")
                continue
            out[name] = validate(sub, value[name], path)
            continue
        if name not in value:
            if spec.required:
                raise _bad(f"{path} is required")
            continue
        out[name] = spec.check(path, value[name])
    return out
