"""Agent <-> coordinator wire protocol: pure encoding, decoding and validation.

A message is the list of ZeroMQ frames after the ROUTER's identity frame: one
UTF-8 JSON header frame (an object) and at most one binary data frame
(snapshot chunks). Requests and replies look like::

    {"v": 1, "id": "<request id>", "op": "snapshot.fetch", "args": {...}}
    {"v": 1, "id": "<request id>", "ok": true, "result": {...}}
    {"v": 1, "id": "<request id>" | null, "ok": false,
     "error": {"code": "<code>", "message": "<text for an operator>"}}

Everything read from the network is untrusted: decoding checks sizes before
parsing, bounds nesting before the JSON parser recurses, rejects NaN/Infinity,
out-of-range numbers, duplicate keys and unpaired surrogates, and validates
arguments against each op's declared schema. Decoding raises nothing but
ProtocolError, which carries the request id whenever it was readable so the
server can still answer the right request. Encoders run the same checks on
their own output, so a peer never receives what it would reject.

No sockets here: the agent's server and the coordinator's client own those.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Optional, Union

from etcdguard.common.base.addresses import parse_initial_cluster
from etcdguard.common.base.errors import EXIT_FAILED, EXIT_UNSAFE, EtcdguardError
from etcdguard.common.journal import OP_ID_PATTERN
from etcdguard.common.ops.flows import CLUSTER_FLOWS, STEP_PARAMS, WIRE_STEPS
from etcdguard.common.ops.steps.prepare import PARAMS as PREPARE_PARAMS
from etcdguard.common.snapshot import compression
from etcdguard.common.wire.schema import (
    _SURROGATE_RE,
    BAD_REQUEST,
    BUSY,
    CONFLICT,
    ERROR_CODES,
    FAILED,
    INITIAL_CLUSTER_PATTERN,
    INT_MAX,
    INT_MIN,
    INTERNAL,
    MAX_BUMP_REVISION,
    MAX_OFFSET,
    NAME_PATTERN,
    NOT_FOUND,
    PEER_URL_PATTERN,
    REQUEST_ID_PATTERN,
    SHA256_PATTERN,
    TOO_LARGE,
    UNKNOWN_OP,
    UNSAFE,
    UNSUPPORTED_VERSION,
    Bool,
    Dependent,
    Field,
    Int,
    JSONObject,
    Obj,
    ProtocolError,
    Schema,
    Str,
    StrList,
    _bad,
    _kind,
    _show,
    validate,
)

# The schema's names are the protocol's too: modules import them from here.
__all__ = [
    "BAD_REQUEST",
    "BUSY",
    "CONFLICT",
    "ERROR_CODES",
    "FAILED",
    "INITIAL_CLUSTER_PATTERN",
    "INTERNAL",
    "INT_MAX",
    "INT_MIN",
    "MAX_BUMP_REVISION",
    "MAX_OFFSET",
    "NAME_PATTERN",
    "NOT_FOUND",
    "OP_ID_PATTERN",
    "PEER_URL_PATTERN",
    "PREPARE_PARAMS",
    "REQUEST_ID_PATTERN",
    "SHA256_PATTERN",
    "STEP_PARAMS",
    "TOO_LARGE",
    "UNKNOWN_OP",
    "UNSAFE",
    "UNSUPPORTED_VERSION",
    "Bool",
    "Dependent",
    "Field",
    "Int",
    "JSONObject",
    "Obj",
    "ProtocolError",
    "Schema",
    "Str",
    "StrList",
    "validate",
]

PROTOCOL_VERSION = 1
MAX_HEADER = 64 * 1024          # bytes of the JSON header frame
MAX_CHUNK = 4 * 1024 * 1024     # bytes of the data frame (one snapshot chunk)
FETCH_WINDOW = 32 * 1024 * 1024  # bytes of data replies a peer may have in flight (credit x chunk); more is busy
MAX_COMPRESSED_CHUNK = MAX_CHUNK - (MAX_CHUNK >> 7)   # snapshot bytes whose zstd frame always fits a data frame
MAX_FRAMES = 2                  # header + at most one data frame
MAX_DEPTH = 16                  # nested objects/arrays in a header, the header itself included
MAX_ERROR_MESSAGE = 4000        # characters; longer error messages are truncated when sent

_REQUEST_ID_RE = re.compile(REQUEST_ID_PATTERN)
_STRING_RE = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)   # linear on valid JSON (strings are closed)
_NOT_BRACKET_RE = re.compile(r"[^\[\]{}]+")
_EMPTY_PAIR_RE = re.compile(r"\[\]|\{\}")



class RemoteError(EtcdguardError):
    """The agent answered with an error reply; carries its code and message."""

    def __init__(self, code: str, message: str, request_id: Optional[str] = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.request_id = request_id
        # Exit code contract: 3 when refused because unsafe or another operation runs.
        self.exit_code = EXIT_UNSAFE if code in (UNSAFE, BUSY) else EXIT_FAILED


# ---------------------------------------------------------------------------
# The op registry.

ArgCheck = Callable[[JSONObject, Optional[bytes]], None]


@dataclass(frozen=True)
class OpSpec:
    """What one op accepts. ``data``: the request carries exactly one data frame;
    ``reply_data``: its ok reply does; ``destructive``: it changes the node, so it
    carries ``op_id`` and ``step`` and a retry returns the recorded result;
    ``idempotent``: resending it (after a deadline passed without a reply) cannot
    do anything twice, because it is a read, an offset-addressed write, or a
    request the agent deduplicates; the coordinator's client retries exactly these."""

    name: str
    args: Schema
    data: bool = False
    reply_data: bool = False
    destructive: bool = False
    idempotent: bool = False
    check: Optional[ArgCheck] = None   # cross-field rules, after each field passed
    doc: str = ""

    def __post_init__(self) -> None:
        if self.destructive:
            for key in ("op_id", "step"):
                spec = self.args.get(key)
                if not isinstance(spec, Str) or not spec.required:
                    raise ValueError(f"destructive op {self.name} must declare a required string {key!r}")
            if not self.idempotent:
                raise ValueError(f"destructive op {self.name} is deduplicated by (op_id, step): declare it idempotent")
        for key, spec in self.args.items():
            if isinstance(spec, Dependent):
                names = list(self.args)
                on = self.args.get(spec.on)
                if not isinstance(on, Str) or not on.required or names.index(spec.on) > names.index(key):
                    raise ValueError(f"op {self.name}: {key!r} depends on {spec.on!r}, "
                                     "which must be an earlier required string")


STEPS = WIRE_STEPS   # the step registry (common/ops/flows.py) names them once
_STEP_PATTERN = "|".join(STEPS)

_OP_ID = Str(OP_ID_PATTERN, "an operation id")
_UPLOAD = Str(OP_ID_PATTERN, "an upload id")
_SNAPSHOT_NAME = Str(NAME_PATTERN, "a snapshot name")

def _check_fetch(args: JSONObject, data: Optional[bytes]) -> None:
    if "zstd_level" in args and args["size"] > MAX_COMPRESSED_CHUNK:
        raise _bad(f"args.size: a compressed chunk is at most {MAX_COMPRESSED_CHUNK} bytes of snapshot (its frame "
                   f"must fit a {MAX_CHUNK}-byte data frame), got {args['size']}")


def _check_put(args: JSONObject, data: Optional[bytes]) -> None:
    end = args["offset"] + len(data or b"")
    if end > args["total_size"]:
        raise _bad(f"args: chunk ends at byte {end}, past total_size {args['total_size']}")
    if args["final"] and end != args["total_size"]:
        raise _bad(f"args: final chunk ends at byte {end} but total_size is {args['total_size']}")


def _check_restore_step(args: JSONObject, data: Optional[bytes]) -> None:

    if args["step"] != "prepare":
        return
    params = args["params"]
    try:
        entries = parse_initial_cluster(params["initial_cluster"])
    except ValueError as exc:
        raise _bad(f"args.params.initial_cluster: {exc}") from None
    if (params["name"], params["peer_url"]) not in entries:
        raise _bad(f"args.params.initial_cluster: has no entry {params['name']}={params['peer_url']} "
                   "for this member (name=peer_url)")


ADMIN_ACTIONS = ("member-list", "member-add", "member-remove", "member-promote", "defragment", "alarm-disarm")
MEMBER_ID_PATTERN = r"[0-9a-f]{1,16}"
_ADMIN_NEEDS = {"member-add": ("peer_url",), "member-remove": ("member_id",), "member-promote": ("member_id",),
                "alarm-disarm": ("member_id", "alarm")}


def _check_admin(args: JSONObject, data: Optional[bytes]) -> None:
    missing = [k for k in _ADMIN_NEEDS.get(args["action"], ()) if k not in args]
    if missing:
        raise _bad(f"args: {args['action']} needs {', '.join(missing)}")


def _ops(*specs: OpSpec) -> Mapping[str, OpSpec]:
    return MappingProxyType({s.name: s for s in specs})


_NONE: Schema = MappingProxyType({})

# Idempotent: every read; snapshot.put (a chunk lands at its offset, and the agent records each reply by
# request id); snapshot.put.abort (dropping what is gone already is a no-op); restore.step (recorded on
# disk per (op_id, step)); capture.read (a read from a revision acknowledges what is before it, so a resent
# read answers the same changes). Not snapshot.take: after an agent restart a resent one takes a second snapshot.
OPS: Mapping[str, OpSpec] = _ops(
    OpSpec("ping", _NONE, idempotent=True, doc="liveness and authentication check"),
    OpSpec("status", _NONE, idempotent=True, doc="the member, runtime, store and current operation"),
    OpSpec("snapshot.list", _NONE, idempotent=True, doc="the local catalog"),
    OpSpec("snapshot.take", _NONE, doc="take one verified snapshot now"),
    OpSpec("snapshot.fetch", MappingProxyType({
        "name": _SNAPSHOT_NAME,
        "offset": Int(0, MAX_OFFSET),
        "size": Int(1, MAX_CHUNK),
        # given: the chunk comes as one zstd frame at this level (its reply says "encoding": "zstd")
        "zstd_level": Int(compression.MIN_LEVEL, compression.MAX_LEVEL, required=False),
    }), reply_data=True, idempotent=True, check=_check_fetch,
        doc="read one chunk of a snapshot (credit-based transfer), zstd-compressed when asked"),
    OpSpec("snapshot.put", MappingProxyType({
        "upload": _UPLOAD,
        "offset": Int(0, MAX_OFFSET),
        "total_size": Int(0, MAX_OFFSET),
        "sha256": Str(SHA256_PATTERN, "a sha256 hex digest (64 lowercase hex digits)"),
        "final": Bool(),
    }), data=True, idempotent=True, check=_check_put,
        doc="write one chunk of an incoming snapshot; final verifies it"),
    OpSpec("snapshot.put.abort", MappingProxyType({"upload": _UPLOAD}), idempotent=True,
           doc="drop a partial upload"),
    OpSpec("restore.step", MappingProxyType({
        "op_id": _OP_ID,
        "step": Str(_STEP_PATTERN, "a restore step (" + ", ".join(STEPS) + ")", max_len=32),
        "params": Dependent("step", STEP_PARAMS),
        # the flow the operation runs (its opening step creates it of that flow); absent: a restore
        "flow": Str("|".join(CLUSTER_FLOWS), "a flow (" + ", ".join(CLUSTER_FLOWS) + ")", max_len=32,
                    required=False),
    }), destructive=True, idempotent=True, check=_check_restore_step,
        doc="run one step of an operation (a restore, a replacement), once per (op_id, step)"),
    OpSpec("restore.status", MappingProxyType({"op_id": _OP_ID}), idempotent=True,
           doc="recorded steps of an operation"),
    OpSpec("etcd.inspect", MappingProxyType({"hashkv_revision": Int(0, MAX_OFFSET, required=False)}),
           idempotent=True,
           doc="the local etcd asked now: status, member list, alarms, and hashkv at a revision when given"),
    OpSpec("bundle.fetch", MappingProxyType({
        "name": _SNAPSHOT_NAME,
        "offset": Int(0, MAX_OFFSET),
        "size": Int(1, MAX_CHUNK),
    }), reply_data=True, idempotent=True, doc="read one chunk of the encrypted node bundle beside a snapshot"),
    OpSpec("restore.warm", MappingProxyType({
        "snapshot": _SNAPSHOT_NAME,
        "sha256": Str(SHA256_PATTERN, "a sha256 hex digest (64 lowercase hex digits)"),
        "revision": Int(0, MAX_OFFSET, required=False),
        "name": Str(NAME_PATTERN, "an etcd member name"),
        "initial_cluster": Str(INITIAL_CLUSTER_PATTERN, "an initial cluster ('name=url,name=url')", max_len=8192),
        "token": Str(NAME_PATTERN, "an initial cluster token"),
        "peer_url": Str(PEER_URL_PATTERN, "a peer URL ('https://host:port')"),
        "bump_revision": Int(0, MAX_BUMP_REVISION),
    }), idempotent=True, doc="warm standby: restore a snapshot ahead into a prepared data dir beside the live one"),
    OpSpec("etcd.admin", MappingProxyType({
        "action": Str("|".join(ADMIN_ACTIONS), "an action (" + ", ".join(ADMIN_ACTIONS) + ")", max_len=32),
        "peer_url": Str(PEER_URL_PATTERN, "a peer URL ('https://host:port')", required=False),
        "learner": Bool(required=False),
        "member_id": Str(MEMBER_ID_PATTERN, "a member id (hex)", max_len=16, required=False),
        "alarm": Str("NOSPACE|CORRUPT", "an alarm (NOSPACE, CORRUPT)", max_len=16, required=False),
        "timeout": Int(1, 86400, required=False),
    }), check=_check_admin,
        doc="one administrative call to the local etcd for the coordinator: the member list, member add, remove "
            "and promote, defragment, disarm an alarm (not resent: the coordinator reads the member list again)"),
    OpSpec("capture.read", MappingProxyType({
        "after": Int(0, MAX_OFFSET),
        "size": Int(1, MAX_CHUNK),
    }), reply_data=True, idempotent=True,
        doc="continuous backup: the changes after revision 'after' (whole revisions, at most 'size' bytes), "
            "watching from there when no watch of this agent can answer; acknowledges everything up to 'after'"),
    OpSpec("capture.stop", _NONE, idempotent=True, doc="continuous backup: end this agent's watch"),
)


def is_idempotent(op: str) -> bool:
    """Safe to resend: the op's spec says so (an unknown op is not)."""
    spec = OPS.get(op)
    return spec is not None and spec.idempotent


# ---------------------------------------------------------------------------
# Messages.


@dataclass(frozen=True)
class Request:
    """A validated request. ``args`` is a plain dict holding only declared keys."""

    id: str
    op: str
    args: JSONObject
    data: Optional[bytes] = field(default=None, repr=False)

    @property
    def spec(self) -> Optional[OpSpec]:
        return OPS.get(self.op)

    @property
    def dedup_key(self) -> Optional[tuple[str, str]]:
        """(op_id, step) for destructive ops: a retry with this key gets the recorded reply."""
        spec = self.spec
        if spec is None or not spec.destructive:
            return None
        return (self.args["op_id"], self.args["step"])

    @property
    def fingerprint(self) -> str:
        """sha256 of the op and args as canonical JSON. A true retry has the same one; the
        server answers ``conflict`` when a dedup_key comes back with a different one."""
        canonical = json.dumps({"op": self.op, "args": self.args}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("ascii")).hexdigest()

    def encode(self) -> list[bytes]:
        return encode_request(self.op, self.args, self.id, self.data)


@dataclass(frozen=True)
class Reply:
    """A decoded reply: ``result`` when ok, ``error_code``/``error_message`` when not."""

    id: Optional[str]
    ok: bool
    result: Optional[JSONObject] = None
    error_code: Optional[str] = None
    error_message: Optional[str] = None
    data: Optional[bytes] = field(default=None, repr=False)

    def raise_for_error(self) -> JSONObject:
        """The result of an ok reply; raises RemoteError for an error reply."""
        if not self.ok:
            raise RemoteError(self.error_code or INTERNAL, self.error_message or "", self.id)
        return self.result if self.result is not None else {}


def new_request_id() -> str:
    """A fresh, unguessable request id (32 hex digits)."""
    return uuid.uuid4().hex


def is_request_id(value: Any) -> bool:
    return isinstance(value, str) and _REQUEST_ID_RE.fullmatch(value) is not None


# ---------------------------------------------------------------------------
# Encoding.


def encode_request(
    op: str, args: Mapping[str, Any], request_id: Optional[str] = None, data: Optional[bytes] = None
) -> list[bytes]:
    """Frames of a request; raises ProtocolError if the peer would reject them."""
    rid = new_request_id() if request_id is None else request_id
    header = {"v": PROTOCOL_VERSION, "id": rid, "op": op,
              "args": dict(args) if isinstance(args, Mapping) else args}
    try:
        frames = _frames_of(header, data)
        decode_request(frames)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, f"cannot send {_show(op)}: {exc.message}",
                            rid if is_request_id(rid) else None) from None
    return frames


def encode_reply(request_id: str, result: Mapping[str, Any], data: Optional[bytes] = None) -> list[bytes]:
    """Frames of an ok reply; raises ProtocolError (internal or too_large) if unsendable."""
    header = {"v": PROTOCOL_VERSION, "id": request_id, "ok": True,
              "result": dict(result) if isinstance(result, Mapping) else result}
    return _encode_reply(header, data, request_id)


def encode_error(request_id: Optional[str], code: str, message: str) -> list[bytes]:
    """Frames of an error reply. The message is made sendable (truncated, surrogates
    replaced), so answering with an error never fails on the text."""
    if not isinstance(message, str):
        message = str(message)
    message = message.encode("utf-8", "replace").decode("utf-8")
    if not message.strip():
        message = ERROR_CODES.get(code, "error")
    if len(message) > MAX_ERROR_MESSAGE:
        suffix = " ... (truncated)"
        message = message[: MAX_ERROR_MESSAGE - len(suffix)] + suffix
    header = {"v": PROTOCOL_VERSION, "id": request_id, "ok": False,
              "error": {"code": code, "message": message}}
    return _encode_reply(header, None, request_id)


def _encode_reply(header: JSONObject, data: Optional[bytes], request_id: Any) -> list[bytes]:
    rid = request_id if is_request_id(request_id) else None
    try:
        frames = _frames_of(header, data)
        decode_reply(frames)
    except ProtocolError as exc:
        code = INTERNAL if exc.code == BAD_REQUEST else exc.code
        raise ProtocolError(code, f"cannot send reply: {exc.message}", rid) from None
    return frames


def _frames_of(header: JSONObject, data: Any) -> list[bytes]:
    _check_plain(header, "header", 1)
    raw = json.dumps(header, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    frames = [raw]
    if data is not None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise _bad(f"data: expected bytes, got {_kind(data)}")
        frames.append(bytes(data))
    return frames


def _check_scalar(value: Any, where: str) -> bool:
    """True (after checking it) when ``value`` is a JSON scalar; False for anything else."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, str):
        if _SURROGATE_RE.search(value):
            raise _bad(f"{where}: contains unpaired surrogates")
        return True
    if isinstance(value, int):
        if not INT_MIN <= value <= INT_MAX:
            raise _bad(f"{where}: integer out of range ({INT_MIN} to {INT_MAX})")
        return True
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _bad(f"{where}: {value} is not a finite number")
        return True
    return False


def _check_plain(value: Any, where: str, depth: int) -> None:
    """Refuse Python values that JSON would change or that the decoder refuses."""
    if _check_scalar(value, where):
        return
    if isinstance(value, (list, dict)) and depth > MAX_DEPTH:
        raise _bad(f"{where}: nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]", depth + 1)
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise _bad(f"{where}: key {_show(key)} is not a string")
            _check_plain(key, where, depth)
            _check_plain(item, f"{where}.{key}", depth + 1)
        return
    raise _bad(f"{where}: {_kind(value)} cannot be sent as JSON")


# ---------------------------------------------------------------------------
# Decoding.


def decode_request(frames: Any) -> Request:
    """Validate the frames of a request (identity already removed).

    Raises ProtocolError and nothing else, for any input.
    """
    parts = _frame_list(frames)
    header = _parse_header(_frame_bytes(parts, 0))
    rid = header.get("id") if is_request_id(header.get("id")) else None
    try:
        _check_version(header)
        if rid is None:
            raise _bad(f"header: 'id' must be a request id matching {REQUEST_ID_PATTERN}, "
                       f"got {_show(header['id']) if 'id' in header else 'nothing'}")
        data = _data_frame(parts)
        _check_keys(header, ("v", "id", "op", "args"), "request header")
        op = header["op"]
        if not isinstance(op, str):
            raise _bad(f"header: 'op' must be a string, got {_kind(op)}")
        spec = OPS.get(op)
        if spec is None:
            raise _bad(f"unknown op {_show(op)} (known: {', '.join(OPS)})", UNKNOWN_OP)
        if spec.data and data is None:
            raise _bad(f"op {op} needs one data frame after the header, got none")
        if not spec.data and data is not None:
            raise _bad(f"op {op} takes no data frame, got one of {len(data)} bytes")
        try:
            args = validate(spec.args, header["args"], "args")
            if spec.check is not None:
                spec.check(args, data)
        except ProtocolError as exc:
            raise _bad(f"op {op}: {exc.message}", exc.code) from None
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, rid) from None
    return Request(rid, op, args, data)


def decode_reply(frames: Any) -> Reply:
    """Validate the frames of a reply. Raises ProtocolError and nothing else."""
    parts = _frame_list(frames)
    header = _parse_header(_frame_bytes(parts, 0))
    rid = header.get("id") if is_request_id(header.get("id")) else None
    try:
        _check_version(header)
        ok = header.get("ok")
        if not isinstance(ok, bool):
            raise _bad(f"reply header: 'ok' must be true or false, got {_kind(ok)}")
        data = _data_frame(parts)
        if ok:
            _check_keys(header, ("v", "id", "ok", "result"), "reply header")
            if rid is None:
                raise _bad(f"reply header: 'id' must be a request id, got {_show(header['id'])}")
            result = header["result"]
            if not isinstance(result, dict):
                raise _bad(f"reply header: 'result' must be an object, got {_kind(result)}")
            return Reply(rid, True, result=result, data=data)
        _check_keys(header, ("v", "id", "ok", "error"), "reply header")
        if header["id"] is not None and rid is None:
            raise _bad(f"reply header: 'id' must be a request id or null, got {_show(header['id'])}")
        if data is not None:
            raise _bad("an error reply carries no data frame")
        error = header["error"]
        if not isinstance(error, dict):
            raise _bad(f"reply header: 'error' must be an object, got {_kind(error)}")
        _check_keys(error, ("code", "message"), "reply error")
        code, message = error["code"], error["message"]
        if not isinstance(code, str) or code not in ERROR_CODES:
            raise _bad(f"reply error: unknown code {_show(code)} (known: {', '.join(ERROR_CODES)})")
        if not isinstance(message, str):
            raise _bad(f"reply error: 'message' must be a string, got {_kind(message)}")
        return Reply(rid, False, error_code=code, error_message=message)
    except ProtocolError as exc:
        raise ProtocolError(exc.code, exc.message, rid) from None


def _frame_list(frames: Any) -> Union[list[Any], tuple[Any, ...]]:
    if not isinstance(frames, (list, tuple)):
        raise _bad(f"a message is a list of frames, got {_kind(frames)}")
    if not frames:
        raise _bad("empty message: no header frame")
    return frames


def _frame_bytes(parts: Union[list[Any], tuple[Any, ...]], index: int) -> bytes:
    frame = parts[index]
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, (bytearray, memoryview)):
        try:
            return bytes(frame)
        except (ValueError, TypeError, BufferError):
            pass
    raise _bad(f"frame {index} is {_kind(frame)}, not bytes")


def _data_frame(parts: Union[list[Any], tuple[Any, ...]]) -> Optional[bytes]:
    if len(parts) > MAX_FRAMES:
        raise _bad(f"message has {len(parts)} frames; at most {MAX_FRAMES} "
                   "(a header and one data frame) are allowed")
    if len(parts) < 2:
        return None
    data = _frame_bytes(parts, 1)
    if len(data) > MAX_CHUNK:
        raise _bad(f"data frame is {len(data)} bytes; the limit is {MAX_CHUNK}", TOO_LARGE)
    return data


def _check_version(header: JSONObject) -> None:
    if "v" not in header:
        raise _bad("header: 'v' (protocol version) is missing")
    v = header["v"]
    if isinstance(v, bool) or not isinstance(v, int):
        raise _bad(f"header: 'v' must be an integer, got {_kind(v)}")
    if v != PROTOCOL_VERSION:
        raise _bad(f"protocol version {v} is not supported; this side speaks version {PROTOCOL_VERSION}",
                   UNSUPPORTED_VERSION)


def _check_keys(obj: JSONObject, keys: tuple[str, ...], what: str) -> None:
    unknown = sorted(k for k in obj if k not in keys)
    if unknown:
        raise _bad(f"{what}: unknown key{'s' if len(unknown) > 1 else ''} "
                   f"{', '.join(_show(k) for k in unknown[:5])} (allowed: {', '.join(keys)})")
    missing = [k for k in keys if k not in obj]
    if missing:
        raise _bad(f"{what}: missing {', '.join(repr(k) for k in missing)}")


def _parse_header(raw: bytes) -> JSONObject:
    if len(raw) > MAX_HEADER:
        raise _bad(f"header frame is {len(raw)} bytes; the limit is {MAX_HEADER}", TOO_LARGE)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise _bad(f"header is not valid UTF-8 (byte {exc.start})") from None
    try:
        value = json.loads(text, object_pairs_hook=_unique_keys, parse_constant=_no_constant,
                           parse_float=_finite_float, parse_int=_bounded_int)
    except ProtocolError:
        raise
    except RecursionError:
        # The C parser guards its own recursion; anything that deep is far past MAX_DEPTH.
        raise _bad(f"header is nested deeper than {MAX_DEPTH} levels") from None
    except ValueError as exc:
        raise _bad(f"header is not valid JSON: {_show(str(exc), 120)}") from None
    if not isinstance(value, dict):
        raise _bad(f"header must be a JSON object, got {_kind(value)}")
    if _too_deep(text):
        raise _bad(f"header is nested deeper than {MAX_DEPTH} levels")
    # Valid UTF-8 cannot carry surrogates, but \uXXXX escapes can. Re-serialising keeps
    # them as they are, so one regex search over it finds any in keys or values.
    if "\\u" in text and _SURROGATE_RE.search(json.dumps(value, ensure_ascii=False)):
        raise _bad("header: a string contains an unpaired surrogate (\\ud800-\\udfff)")
    return value


def _too_deep(text: str) -> bool:
    """Nesting depth of valid JSON above MAX_DEPTH? Regex passes only, so linear and fast:
    drop strings, keep brackets, then peel the innermost pairs once per level."""
    if text.count("[") + text.count("{") <= MAX_DEPTH:
        return False
    brackets = _NOT_BRACKET_RE.sub("", _STRING_RE.sub("", text))
    for _ in range(MAX_DEPTH):
        brackets = _EMPTY_PAIR_RE.sub("", brackets)
        if not brackets:
            return False
    return True


def _unique_keys(pairs: list[tuple[str, Any]]) -> JSONObject:
    out: JSONObject = {}
    for key, value in pairs:
        if key in out:
            raise _bad(f"header: duplicate key {_show(key)}")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise _bad(f"header: {name} is not allowed (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _bad(f"header: number {_show(text)} is out of range")
    return value


def _bounded_int(text: str) -> int:
    if len(text) > 21:   # a sign and 20 digits hold every integer in range
        raise _bad(f"header: integer {_show(text)} is out of range ({INT_MIN} to {INT_MAX})")
    value = int(text)
    if not INT_MIN <= value <= INT_MAX:
        raise _bad(f"header: integer {value} is out of range ({INT_MIN} to {INT_MAX})")
    return value
