"""Wire protocol: every op's happy path, every rejection class, and property tests.

The property tests are the contract the server relies on: whatever frames
arrive, decoding returns a valid Request/Reply or raises ProtocolError, and
anything it accepts can be encoded again unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from etcdguard.common.base.errors import EXIT_FAILED, EXIT_UNSAFE, EtcdguardError
from etcdguard.common.wire import protocol as P
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

SHA = "0123456789abcdef" * 4
SNAP = "snap-20261124T033600.123Z-r4711.db"
CLUSTER = "m1=https://10.0.0.1:2380,m2=https://10.0.0.2:2380,m3=http://[fd00::3]:2380"
PREPARE = {
    "snapshot": SNAP,
    "name": "m1",
    "initial_cluster": CLUSTER,
    "token": "etcdguard-op-1",
    "peer_url": "https://10.0.0.1:2380",
    "bump_revision": 1_000_000_000,
}
FETCH = {"name": SNAP, "offset": 0, "size": 1024}
PUT = {"upload": "up-1", "offset": 0, "total_size": 5, "sha256": SHA, "final": True}


def raw(obj, **dumps_args) -> bytes:
    return json.dumps(obj, **dumps_args).encode("utf-8")


DROP = object()     # leave this key out
EMPTY = object()


def frames_of(op="ping", args=EMPTY, rid="r-1", data=None, **header):
    """Hand-built request frames (no validation), for feeding garbage to the decoder."""
    h = {"v": 1, "id": rid, "op": op, "args": {} if args is EMPTY else args}
    h.update(header)
    h = {key: value for key, value in h.items() if value is not DROP}
    return [raw(h)] + ([data] if data is not None else [])


def rejected(frames, code=P.BAD_REQUEST, *words, decode=None):
    with pytest.raises(P.ProtocolError) as info:
        (decode or P.decode_request)(frames)
    err = info.value
    assert err.code == code, err.message
    for word in words:
        assert word in err.message, err.message
    return err


# ---------------------------------------------------------------------------
# Constants and registry


def test_limits_and_codes():
    assert (P.MAX_HEADER, P.MAX_CHUNK, P.MAX_FRAMES) == (64 * 1024, 4 * 1024 * 1024, 2)
    assert set(P.ERROR_CODES) == {
        "bad_request", "unknown_op", "unsupported_version", "too_large", "not_found",
        "busy", "conflict", "failed", "unsafe", "internal",
    }
    assert issubclass(P.ProtocolError, EtcdguardError)
    assert issubclass(P.RemoteError, EtcdguardError)


def test_registry_declares_the_ops_and_flags():
    assert set(P.OPS) == {
        "ping", "status", "snapshot.list", "snapshot.take", "snapshot.fetch", "snapshot.put",
        "snapshot.put.abort", "restore.step", "restore.status", "etcd.inspect", "bundle.fetch", "restore.warm",
        "etcd.admin",
        "capture.read", "capture.stop",
    }
    assert {n for n, s in P.OPS.items() if s.destructive} == {"restore.step"}
    assert {n for n, s in P.OPS.items() if s.data} == {"snapshot.put"}
    assert {n for n, s in P.OPS.items() if s.reply_data} == {"snapshot.fetch", "bundle.fetch", "capture.read"}
    # every op but snapshot.take and etcd.admin is safe to resend: reads, offset-addressed puts, steps deduplicated
    # by (op_id, step); etcd.admin is not resent (a member add twice fails): its callers read the member list again
    assert {n for n, s in P.OPS.items() if not s.idempotent} == {"snapshot.take", "etcd.admin"}
    assert [n for n in P.OPS if P.is_idempotent(n)] == [n for n, s in P.OPS.items() if s.idempotent]
    assert not P.is_idempotent("no.such.op")
    assert list(P.OPS)[-3:] == ["etcd.admin", "capture.read", "capture.stop"]   # new ops go at the end
    assert P.STEPS == ("preflight", "prepare", "fence", "stop", "swap", "start", "verify",
                       "unfence", "restart-controllers", "retire", "set-aside", "join", "settle",
                       "undo-prepare", "undo-fence", "undo-stop", "undo-swap", "undo-start", "undo-unfence",
                       "undo-retire", "undo-set-aside", "rollback", "cleanup", "finish")
    assert set(P.STEP_PARAMS) == set(P.STEPS)
    assert [s for s in P.STEPS if P.STEP_PARAMS[s]] == ["prepare", "retire", "join", "finish"]


def test_a_destructive_op_must_declare_op_id_and_step():
    with pytest.raises(ValueError, match="op_id"):
        P.OpSpec("x.wipe", {"step": P.Str()}, destructive=True)
    with pytest.raises(ValueError, match="earlier required"):
        P.OpSpec("x", {"params": P.Dependent("step", {}), "step": P.Str()})
    with pytest.raises(ValueError, match="declare it idempotent"):
        P.OpSpec("x.wipe", {"op_id": P.Str(), "step": P.Str()}, destructive=True)


# ---------------------------------------------------------------------------
# Happy paths: every op

VALID = [
    ("ping", {}, None),
    ("status", {}, None),
    ("snapshot.list", {}, None),
    ("snapshot.take", {}, None),
    ("snapshot.fetch", FETCH, None),
    ("snapshot.fetch", {"name": "a", "offset": P.MAX_OFFSET, "size": P.MAX_CHUNK}, None),
    ("snapshot.put", PUT, b"hello"),
    ("snapshot.put", {**PUT, "offset": 10, "total_size": 100, "final": False}, b"\x00\xff" * 8),
    ("snapshot.put", {**PUT, "offset": 0, "total_size": 0}, b""),
    ("snapshot.put.abort", {"upload": "up-1"}, None),
    ("restore.step", {"op_id": "op-1", "step": "prepare", "params": PREPARE}, None),
    ("restore.step", {"op_id": "op-1", "step": "prepare", "params": {**PREPARE, "bump_revision": 0}}, None),
    *[("restore.step", {"op_id": "op-1", "step": s}, None) for s in P.STEPS
      if s not in ("prepare", "finish", "retire", "join")],
    ("restore.step", {"op_id": "op-1", "step": "retire", "flow": "replace",
                      "params": {"name": "m3", "peer_url": "https://10.0.0.3:2380"}}, None),
    ("restore.step", {"op_id": "op-1", "step": "join", "flow": "replace",
                      "params": {"initial_cluster": "m1=https://10.0.0.1:2380,m3=https://10.0.0.3:2380"}}, None),
    ("restore.step", {"op_id": "op-1", "step": "finish", "params": {"outcome": "rolled-back"}}, None),
    ("restore.step", {"op_id": "op-1", "step": "fence", "params": {}}, None),
    ("restore.status", {"op_id": "20261124T033600Z-1a2b"}, None),
    ("etcd.inspect", {}, None),
    ("etcd.inspect", {"hashkv_revision": 1_000_000_042}, None),
    ("bundle.fetch", {"name": "snap-20261124T033600.123Z-r7.db", "offset": 0, "size": P.MAX_CHUNK}, None),
    ("restore.warm", {"snapshot": "pre-abcdef0123456789.db", "sha256": "ab" * 32, "revision": 42, "name": "m1",
                      "initial_cluster": "m1=https://10.0.0.1:2380", "token": "etcdguard-warm-abc",
                      "peer_url": "https://10.0.0.1:2380", "bump_revision": 1_000_000_000}, None),
    ("etcd.admin", {"action": "member-list"}, None),
    ("etcd.admin", {"action": "member-add", "peer_url": "https://10.0.0.3:2380", "learner": True, "timeout": 15}, None),
    ("etcd.admin", {"action": "member-remove", "member_id": "8e9e05c52164694d"}, None),
    ("etcd.admin", {"action": "alarm-disarm", "member_id": "8e9e05c52164694d", "alarm": "NOSPACE"}, None),
    ("capture.read", {"after": 0, "size": 1}, None),
    ("capture.read", {"after": 1_000_000_042, "size": P.MAX_CHUNK}, None),
    ("capture.stop", {}, None),
]


@pytest.mark.parametrize(("op", "args", "data"), VALID, ids=lambda v: v if isinstance(v, str) else "")
def test_every_op_round_trips(op, args, data):
    frames = P.encode_request(op, args, "req-1", data)
    assert len(frames) == (1 if data is None else 2)
    header = json.loads(frames[0])
    assert header == {"v": 1, "id": "req-1", "op": op, "args": args}
    req = P.decode_request(frames)
    assert req == P.Request("req-1", op, args, data)
    assert req.spec is P.OPS[op]
    if op == "restore.step":
        assert req.dedup_key == ("op-1", args["step"])
    else:
        assert req.dedup_key is None


def test_valid_covers_every_op_and_step():
    assert {op for op, _, _ in VALID} == set(P.OPS)
    assert {a["step"] for op, a, _ in VALID if op == "restore.step"} == set(P.STEPS)


def test_request_ids_and_frame_types():
    ids = {P.new_request_id() for _ in range(100)}
    assert len(ids) == 100 and all(P.is_request_id(i) for i in ids)
    req = P.decode_request(P.encode_request("ping", {}))
    assert P.is_request_id(req.id)
    for rid in ("a" * 64, "a.b:c-d_e", "0"):
        assert P.decode_request(frames_of(rid=rid)).id == rid
    frames = P.encode_request("snapshot.put", PUT, "r", b"hello")
    as_views = [bytearray(frames[0]), memoryview(frames[1])]
    assert P.decode_request(as_views) == P.decode_request(tuple(frames))


def test_fingerprint_tells_a_retry_from_a_reused_op_id():
    first = P.decode_request(P.encode_request("restore.step", step("prepare", PREPARE), "r-1"))
    reordered = dict(reversed(list(PREPARE.items())))
    retry = P.decode_request(P.encode_request("restore.step", step("prepare", reordered), "r-2"))
    other = P.decode_request(P.encode_request("restore.step", step("prepare", {**PREPARE, "token": "t2"}), "r-3"))
    assert first.dedup_key == retry.dedup_key == other.dedup_key == ("op-1", "prepare")
    assert first.fingerprint == retry.fingerprint != other.fingerprint
    assert len(first.fingerprint) == 64


def test_request_repr_leaves_out_the_data():
    req = P.decode_request(P.encode_request("snapshot.put", PUT, "r", b"hello"))
    assert "hello" not in repr(req) and "snapshot.put" in repr(req)


def test_header_of_exactly_max_header_bytes_is_accepted():
    base = raw({"v": 1, "id": "r", "op": "ping", "args": {}})
    padded = base[:-1] + b" " * (P.MAX_HEADER - len(base)) + b"}"
    assert len(padded) == P.MAX_HEADER
    assert P.decode_request([padded]).op == "ping"
    rejected([padded[:-1] + b" }"], P.TOO_LARGE, "65537", "65536")


def test_data_frame_of_exactly_max_chunk_is_accepted():
    chunk = b"\x5a" * P.MAX_CHUNK
    args = {**PUT, "total_size": P.MAX_CHUNK, "final": True}
    req = P.decode_request(P.encode_request("snapshot.put", args, "r", chunk))
    assert req.data == chunk
    err = rejected(frames_of("snapshot.put", {**args, "total_size": P.MAX_CHUNK + 1}, data=chunk + b"!"),
                   P.TOO_LARGE, str(P.MAX_CHUNK + 1))
    assert err.request_id == "r-1"


# ---------------------------------------------------------------------------
# Rejections: frames and header bytes


@pytest.mark.parametrize(("frames", "words"), [
    (b'{"v":1}', ["list of frames", "bytes"]),
    ("text", ["list of frames"]),
    (None, ["list of frames"]),
    ([], ["empty message"]),
    (["{}"], ["frame 0", "string"]),
    ([1], ["frame 0", "integer"]),
    ([b"\xff\xfe{}"], ["UTF-8"]),
    ([b'{"v":1,'], ["not valid JSON"]),
    ([b""], ["not valid JSON"]),
    ([b"\xef\xbb\xbf{}"], ["not valid JSON"]),          # a BOM is not JSON
    ([b"[]"], ["JSON object", "array"]),
    ([b'"ping"'], ["JSON object", "string"]),
    ([b"1"], ["JSON object", "integer"]),
    ([b"null"], ["JSON object", "null"]),
    ([b"true"], ["JSON object", "boolean"]),
])
def test_malformed_frames(frames, words):
    err = rejected(frames, P.BAD_REQUEST, *words)
    assert err.request_id is None


def test_oversized_header_is_refused_before_parsing():
    err = rejected([b"{" * (P.MAX_HEADER + 1)], P.TOO_LARGE, "header frame", str(P.MAX_HEADER))
    assert err.request_id is None


def test_too_many_frames_keeps_the_request_id():
    err = rejected(frames_of() + [b"a", b"b"], P.BAD_REQUEST, "3 frames")
    assert err.request_id == "r-1"
    err = rejected(frames_of("snapshot.put", PUT, data=b"hello") + ["x"], P.BAD_REQUEST, "3 frames")
    assert err.request_id == "r-1"
    rejected([frames_of()[0], "not bytes"], P.BAD_REQUEST, "frame 1")


@pytest.mark.parametrize("token", ["NaN", "Infinity", "-Infinity"])
def test_non_finite_constants(token):
    text = f'{{"v":1,"id":"r","op":"snapshot.fetch","args":{{"name":"a","offset":{token},"size":1}}}}'
    rejected([text.encode()], P.BAD_REQUEST, token)


@pytest.mark.parametrize("number", ["1e999", "-1e999", "9" * 5000, str(2**64), str(-(2**63) - 1)])
def test_out_of_range_numbers(number):
    text = f'{{"v":1,"id":"r","op":"snapshot.fetch","args":{{"name":"a","offset":{number},"size":1}}}}'
    rejected([text.encode()], P.BAD_REQUEST, "out of range")


@pytest.mark.parametrize("levels", [P.MAX_DEPTH - 1, 900, 5000, 30000])   # 5000+: the parser's guard
def test_deep_nesting_is_refused(levels):
    text = '{"v":1,"id":"r","op":"ping","args":{"x":' + "[" * levels + "]" * levels + "}}"
    err = rejected([text.encode()[: P.MAX_HEADER]], P.BAD_REQUEST, "nested deeper than 16")
    assert err.request_id is None


def test_nesting_up_to_the_limit_reaches_the_argument_check():
    # header (1) + args (2) + 14 arrays = 16 levels: fine as JSON, refused as an unknown argument
    text = '{"v":1,"id":"r","op":"ping","args":{"x":' + "[" * 14 + "]" * 14 + "}}"
    err = rejected([text.encode()], P.BAD_REQUEST, "unknown key 'x'")
    assert err.request_id == "r"


def test_nesting_limit_is_exact_in_replies():
    at_limit = {"x": json.loads("[" * (P.MAX_DEPTH - 2) + "]" * (P.MAX_DEPTH - 2))}
    assert P.decode_reply(P.encode_reply("r", at_limit)).result == at_limit
    over = {"x": [at_limit["x"]]}
    text = raw({"v": 1, "id": "r", "ok": True, "result": over})
    rejected([text], P.BAD_REQUEST, "nested deeper than 16", decode=P.decode_reply)
    with pytest.raises(P.ProtocolError) as info:
        P.encode_reply("r", over)
    assert info.value.code == P.INTERNAL and "nested deeper" in info.value.message
    brackets_in_text = {"x": "[[[[[[[[[[[[[[[[[[[[{{{{{{{{{{{{{{{{{{{\\\"[[[[["}
    assert P.decode_reply(P.encode_reply("r", brackets_in_text)).result == brackets_in_text


@pytest.mark.parametrize("text", [
    b'{"v":1,"id":"r","op":"ping","args":{},"args":{}}',
    b'{"v":1,"v":1,"id":"r","op":"ping","args":{}}',
    b'{"v":1,"id":"r","op":"restore.status","args":{"op_id":"a","op_id":"a"}}',
    b'{"v":1,"id":"r","op":"restore.step","args":{"op_id":"a","step":"fence","params":{"k":1,"k":2}}}',
])
def test_duplicate_keys(text):
    rejected([text], P.BAD_REQUEST, "duplicate key")


@pytest.mark.parametrize("text", [
    b'{"v":1,"id":"r","op":"snapshot.fetch","args":{"name":"\\ud800","offset":0,"size":1}}',
    b'{"v":1,"id":"r","op":"ping","args":{},"\\udc00":1}',
    b'{"v":1,"id":"r","op":"ping","args":{"\\ud83d":1}}',
])
def test_unpaired_surrogates(text):
    rejected([text], P.BAD_REQUEST, "surrogate")


def test_a_surrogate_pair_is_fine():
    text = b'{"v":1,"id":"r","ok":true,"result":{"m":"\\ud83d\\ude00"}}'
    assert P.decode_reply([text]).result == {"m": "\U0001f600"}


# ---------------------------------------------------------------------------
# Rejections: header fields


@pytest.mark.parametrize(("v", "code", "words"), [
    (DROP, P.BAD_REQUEST, ["'v'", "missing"]),
    ("1", P.BAD_REQUEST, ["'v'", "integer", "string"]),
    (True, P.BAD_REQUEST, ["'v'", "boolean"]),
    (1.0, P.BAD_REQUEST, ["'v'", "number"]),
    (2, P.UNSUPPORTED_VERSION, ["version 2", "version 1"]),
    (0, P.UNSUPPORTED_VERSION, ["version 0"]),
])
def test_version(v, code, words):
    err = rejected(frames_of(v=v), code, *words)
    assert err.request_id == "r-1"


def test_a_newer_peer_gets_unsupported_version_not_a_schema_error():
    err = rejected([raw({"v": 2, "id": "r-9", "op": "new.op", "args": [], "trace": {}})],
                   P.UNSUPPORTED_VERSION)
    assert err.request_id == "r-9"


@pytest.mark.parametrize("rid", [DROP, "", "a" * 65, "a b", "a/b", "é", 5, None, ["r"], True])
def test_bad_request_id(rid):
    err = rejected(frames_of(rid=rid), P.BAD_REQUEST, "'id'")
    assert err.request_id is None


@pytest.mark.parametrize(("over", "code", "words"), [
    ({"extra": 1}, P.BAD_REQUEST, ["unknown key", "'extra'"]),
    ({"op": DROP}, P.BAD_REQUEST, ["missing", "'op'"]),
    ({"args": DROP}, P.BAD_REQUEST, ["missing", "'args'"]),
    ({"op": 5}, P.BAD_REQUEST, ["'op'", "integer"]),
    ({"op": None}, P.BAD_REQUEST, ["'op'", "null"]),
    ({"op": "snapshot.delete"}, P.UNKNOWN_OP, ["'snapshot.delete'", "snapshot.fetch"]),
    ({"op": ""}, P.UNKNOWN_OP, ["''"]),
    ({"op": "PING"}, P.UNKNOWN_OP, ["'PING'"]),
    ({"args": []}, P.BAD_REQUEST, ["args", "object", "array"]),
    ({"args": None}, P.BAD_REQUEST, ["args", "object", "null"]),
])
def test_bad_header_fields_keep_the_id(over, code, words):
    err = rejected(frames_of(**over), code, *words)
    assert err.request_id == "r-1"


def test_long_unknown_op_is_cut_short_in_the_message():
    err = rejected(frames_of(op="x" * 5000), P.UNKNOWN_OP)
    assert len(err.message) < 400


# ---------------------------------------------------------------------------
# Rejections: arguments (each message names the argument)


def bad_args(op, args, *words, data=None, code=P.BAD_REQUEST):
    err = rejected(frames_of(op, args, data=data), code, *words)
    assert err.request_id == "r-1"
    assert f"op {op}" in err.message
    return err


@pytest.mark.parametrize(("op", "args", "words"), [
    ("ping", {"x": 1}, ["unknown key", "'x'", "allowed: none"]),
    ("status", {"verbose": True}, ["'verbose'"]),
    ("snapshot.fetch", {**FETCH, "zz": 1, "aa": 2}, ["unknown keys", "'aa', 'zz'", "name, offset, size"]),
    ("snapshot.fetch", {"name": SNAP, "offset": 0}, ["args.size is required"]),
    ("snapshot.fetch", {**FETCH, "size": True}, ["args.size", "boolean"]),
    ("snapshot.fetch", {**FETCH, "size": 1.0}, ["args.size", "number"]),
    ("snapshot.fetch", {**FETCH, "size": "1"}, ["args.size", "string"]),
    ("snapshot.fetch", {**FETCH, "size": None}, ["args.size", "null"]),
    ("snapshot.fetch", {**FETCH, "size": 0}, ["args.size", "out of range"]),
    ("snapshot.fetch", {**FETCH, "size": P.MAX_CHUNK + 1}, ["args.size", str(P.MAX_CHUNK)]),
    ("snapshot.fetch", {**FETCH, "offset": -1}, ["args.offset", "out of range"]),
    ("snapshot.fetch", {**FETCH, "offset": P.MAX_OFFSET + 1}, ["args.offset"]),
    ("snapshot.fetch", {**FETCH, "name": ""}, ["args.name", "empty"]),
    ("snapshot.fetch", {**FETCH, "name": "../../etc/shadow"}, ["args.name", "snapshot name"]),
    ("snapshot.fetch", {**FETCH, "name": ".."}, ["args.name"]),
    ("snapshot.fetch", {**FETCH, "name": ".hidden"}, ["args.name"]),
    ("snapshot.fetch", {**FETCH, "name": "a/b"}, ["args.name"]),
    ("snapshot.fetch", {**FETCH, "name": "a\nb"}, ["args.name"]),
    ("snapshot.fetch", {**FETCH, "name": "a" * 129}, ["args.name"]),
    ("snapshot.fetch", {**FETCH, "name": [SNAP]}, ["args.name", "array"]),
    ("snapshot.put.abort", {}, ["args.upload is required"]),
    ("snapshot.put.abort", {"upload": "-rf"}, ["args.upload", "upload id"]),
    ("restore.status", {"op_id": "."}, ["args.op_id", "operation id"]),
    ("restore.status", {"op_id": "a" * 65}, ["args.op_id"]),
    ("restore.status", {"op_id": 7}, ["args.op_id", "integer"]),
])
def test_bad_arguments(op, args, words):
    bad_args(op, args, *words)


@pytest.mark.parametrize(("args", "data", "words"), [
    ({**PUT, "final": 1}, b"hello", ["args.final", "true or false", "integer"]),
    ({**PUT, "final": "true"}, b"hello", ["args.final", "string"]),
    ({**PUT, "sha256": SHA.upper()}, b"hello", ["args.sha256", "sha256"]),
    ({**PUT, "sha256": SHA[:-1]}, b"hello", ["args.sha256"]),
    ({**PUT, "upload": ".."}, b"hello", ["args.upload"]),
    ({**PUT, "total_size": 4}, b"hello", ["ends at byte 5", "total_size 4"]),
    ({**PUT, "total_size": 6}, b"hello", ["final chunk ends at byte 5", "total_size is 6"]),
    ({**PUT, "offset": 2, "total_size": 6, "final": False}, b"hello", ["ends at byte 7"]),
    (PUT, None, ["needs one data frame"]),
])
def test_bad_put(args, data, words):
    bad_args("snapshot.put", args, *words, data=data)


def test_data_frame_where_none_is_taken():
    bad_args("ping", {}, "takes no data frame", "3 bytes", data=b"abc")
    bad_args("snapshot.fetch", FETCH, "takes no data frame", data=b"")


def test_oversized_data_frame():
    err = rejected(frames_of("snapshot.put", PUT, data=b"\0" * (P.MAX_CHUNK + 1)), P.TOO_LARGE, "data frame")
    assert err.request_id == "r-1"


def step(step, params=DROP, op_id="op-1"):
    args = {"op_id": op_id, "step": step}
    if params is not DROP:
        args["params"] = params
    return args


@pytest.mark.parametrize(("args", "words"), [
    ({"step": "fence"}, ["args.op_id is required"]),
    ({"op_id": "op-1"}, ["args.step is required"]),
    (step("reboot"), ["args.step", "'reboot'", "restore step", "preflight"]),
    (step("Fence"), ["args.step"]),
    (step("fence", op_id="../x"), ["args.op_id", "operation id"]),
    (step("fence", {"x": 1}), ["args.params", "unknown key", "'x'", "allowed: none"]),
    (step("fence", []), ["args.params", "object", "array"]),
    (step("prepare"), ["args.params is required", "'prepare'"]),
    (step("prepare", {}), ["args.params.snapshot is required"]),
    (step("prepare", {k: v for k, v in PREPARE.items() if k != "token"}), ["args.params.token is required"]),
    (step("prepare", {**PREPARE, "data_dir": "/"}), ["args.params", "'data_dir'"]),
    (step("prepare", {**PREPARE, "bump_revision": True}), ["args.params.bump_revision", "boolean"]),
    (step("prepare", {**PREPARE, "bump_revision": -1}), ["args.params.bump_revision", "out of range"]),
    (step("prepare", {**PREPARE, "bump_revision": 2**60}), ["args.params.bump_revision"]),
    (step("prepare", {**PREPARE, "snapshot": "../db"}), ["args.params.snapshot"]),
    (step("prepare", {**PREPARE, "token": ""}), ["args.params.token", "empty"]),
    (step("prepare", {**PREPARE, "peer_url": "https://10.0.0.1:2380/path"}), ["args.params.peer_url"]),
    (step("prepare", {**PREPARE, "peer_url": "unix:///x"}), ["args.params.peer_url"]),
    (step("prepare", {**PREPARE, "initial_cluster": "m1 https://10.0.0.1:2380"}),
     ["args.params.initial_cluster", "initial cluster"]),
    (step("prepare", {**PREPARE, "initial_cluster": CLUSTER + ","}), ["args.params.initial_cluster"]),
    (step("prepare", {**PREPARE, "initial_cluster": "m1=ftp://10.0.0.1:2380"}),
     ["args.params.initial_cluster"]),
    (step("prepare", {**PREPARE, "initial_cluster": "m2=https://10.0.0.2:2380"}),
     ["args.params.initial_cluster", "m1=https://10.0.0.1:2380"]),
    (step("prepare", {**PREPARE, "initial_cluster": "m1=https://10.0.0.1:2380,m2=https://10.0.0.1:2380"}),
     ["more than once"]),
])
def test_bad_restore_step(args, words):
    bad_args("restore.step", args, *words)


def test_a_member_may_list_several_peer_urls():
    params = {**PREPARE, "initial_cluster": "m1=https://10.0.0.1:2380,m1=https://m1.example:2380"}
    req = P.decode_request(P.encode_request("restore.step", step("prepare", params), "r"))
    assert req.args["params"] == params


def test_validate_supports_lists_and_declared_passthrough():
    schema = {"tags": P.StrList(P.Str(P.NAME_PATTERN, "a tag"), max_items=2),
              "extra": P.Obj(required=False), "note": P.Str(required=False)}
    assert P.validate(schema, {"tags": ["a", "b"]}) == {"tags": ["a", "b"]}
    assert P.validate(schema, {"tags": [], "extra": {"k": [1]}, "note": "hi"}) == {
        "tags": [], "extra": {"k": [1]}, "note": "hi"}
    for value, words in [
        ({"tags": "a"}, ["args.tags", "array of strings"]),
        ({"tags": ["a", 1]}, ["args.tags[1]", "integer"]),
        ({"tags": ["a", "b", "c"]}, ["args.tags", "more than 2"]),
        ({"tags": ["../x"]}, ["args.tags[0]", "a tag"]),
        ({"tags": [], "extra": []}, ["args.extra", "object"]),
        ({"tags": [], "note": "a\x00b"}, ["args.note", "control"]),
        ({"tags": [], "note": "x" * 1025}, ["args.note", "1024"]),
    ]:
        with pytest.raises(P.ProtocolError) as info:
            P.validate(schema, value)
        for word in words:
            assert word in info.value.message


# ---------------------------------------------------------------------------
# Replies


def test_reply_round_trips():
    ok = P.decode_reply(P.encode_reply("r-1", {"name": SNAP, "revision": 2**64 - 1, "ratio": 0.5}))
    assert ok == P.Reply("r-1", True, result={"name": SNAP, "revision": 2**64 - 1, "ratio": 0.5})
    assert ok.raise_for_error() == ok.result
    chunk = P.decode_reply(P.encode_reply("r-2", {"eof": False}, b"\x00" * 10))
    assert chunk.data == b"\x00" * 10 and "x00" not in repr(chunk)
    err = P.decode_reply(P.encode_error("r-3", P.NOT_FOUND, "no snapshot named 'x'"))
    assert err == P.Reply("r-3", False, error_code="not_found", error_message="no snapshot named 'x'")
    anon = P.decode_reply(P.encode_error(None, P.BAD_REQUEST, "header is not valid JSON"))
    assert anon.id is None and anon.error_code == "bad_request"


@pytest.mark.parametrize(("code", "exit_code"), [
    (P.BUSY, EXIT_UNSAFE), (P.UNSAFE, EXIT_UNSAFE), (P.FAILED, EXIT_FAILED), (P.CONFLICT, EXIT_FAILED),
])
def test_error_reply_raises_remote_error(code, exit_code):
    reply = P.decode_reply(P.encode_error("r", code, "why"))
    with pytest.raises(P.RemoteError) as info:
        reply.raise_for_error()
    assert (info.value.code, info.value.message, info.value.request_id) == (code, "why", "r")
    assert info.value.exit_code == exit_code and code in str(info.value)


def reply_frames(**over):
    h = {"v": 1, "id": "r-1", "ok": True, "result": {}}
    for key, value in over.items():
        if value is DROP:
            h.pop(key, None)
        else:
            h[key] = value
    return [raw(h)]


ERROR = {"code": "failed", "message": "m"}


@pytest.mark.parametrize(("frames", "code", "words"), [
    (reply_frames(ok=1), P.BAD_REQUEST, ["'ok'", "integer"]),
    (reply_frames(ok=DROP), P.BAD_REQUEST, ["'ok'", "null"]),
    (reply_frames(id=None), P.BAD_REQUEST, ["'id'"]),
    (reply_frames(id="a b"), P.BAD_REQUEST, ["'id'"]),
    (reply_frames(result=DROP), P.BAD_REQUEST, ["missing", "'result'"]),
    (reply_frames(result=[]), P.BAD_REQUEST, ["'result'", "array"]),
    (reply_frames(error=ERROR), P.BAD_REQUEST, ["unknown key", "'error'"]),
    (reply_frames(v=2), P.UNSUPPORTED_VERSION, ["version 2"]),
    (reply_frames(ok=False, result=DROP, error=ERROR) + [b"x"], P.BAD_REQUEST, ["no data frame"]),
    (reply_frames(ok=False, result=DROP), P.BAD_REQUEST, ["missing", "'error'"]),
    (reply_frames(ok=False, result=DROP, error={**ERROR, "code": "oops"}), P.BAD_REQUEST, ["'oops'"]),
    (reply_frames(ok=False, result=DROP, error={**ERROR, "code": 1}), P.BAD_REQUEST, ["unknown code"]),
    (reply_frames(ok=False, result=DROP, error={**ERROR, "message": 1}), P.BAD_REQUEST, ["'message'"]),
    (reply_frames(ok=False, result=DROP, error={**ERROR, "hint": ""}), P.BAD_REQUEST, ["'hint'"]),
    (reply_frames(ok=False, result=DROP, error=[]), P.BAD_REQUEST, ["'error'", "array"]),
    (reply_frames(ok=False, id="", result=DROP, error=ERROR), P.BAD_REQUEST, ["'id'"]),
    (reply_frames() + [b"x" * (P.MAX_CHUNK + 1)], P.TOO_LARGE, ["data frame"]),
    (reply_frames() + [b"x", b"y"], P.BAD_REQUEST, ["3 frames"]),
    ([b"\x00"], P.BAD_REQUEST, ["not valid JSON"]),
])
def test_malformed_replies(frames, code, words):
    rejected(frames, code, *words, decode=P.decode_reply)


# ---------------------------------------------------------------------------
# Encoders refuse to send what the other side would reject


@pytest.mark.parametrize(("op", "args", "data", "code", "words"), [
    ("snapshot.fetch", {**FETCH, "size": True}, None, P.BAD_REQUEST, ["args.size"]),
    ("nope", {}, None, P.UNKNOWN_OP, ["'nope'"]),
    ("ping", {"path": Path("/x")}, None, P.BAD_REQUEST, ["args.path", "PosixPath"]),
    ("ping", {"x": (1, 2)}, None, P.BAD_REQUEST, ["args.x", "tuple"]),
    ("ping", {"x": {1, 2}}, None, P.BAD_REQUEST, ["args.x", "set"]),
    ("ping", {"x": float("nan")}, None, P.BAD_REQUEST, ["args.x", "finite"]),
    ("ping", {"x": 2**70}, None, P.BAD_REQUEST, ["args.x", "out of range"]),
    ("ping", {1: "x"}, None, P.BAD_REQUEST, ["key 1"]),
    ("ping", {"x\ud800": 1}, None, P.BAD_REQUEST, ["surrogate"]),
    ("ping", None, None, P.BAD_REQUEST, ["args", "null"]),
    ("snapshot.put", PUT, "hello", P.BAD_REQUEST, ["data", "string"]),
    ("snapshot.put", {**PUT, "total_size": P.MAX_CHUNK + 1}, b"x" * (P.MAX_CHUNK + 1), P.TOO_LARGE, ["data"]),
    ("ping", {"pad": "x" * P.MAX_HEADER}, None, P.TOO_LARGE, ["header frame"]),
])
def test_encode_request_refuses(op, args, data, code, words):
    with pytest.raises(P.ProtocolError) as info:
        P.encode_request(op, args, "r-1", data)
    assert info.value.code == code
    assert info.value.request_id == "r-1"
    for word in ["cannot send", *words]:
        assert word in info.value.message, info.value.message


def test_encode_request_refuses_a_bad_request_id():
    with pytest.raises(P.ProtocolError) as info:
        P.encode_request("ping", {}, "not an id")
    assert info.value.request_id is None and "'id'" in info.value.message


def test_circular_values_are_refused_not_recursed():
    loop: dict = {}
    loop["self"] = loop
    with pytest.raises(P.ProtocolError, match="nested deeper"):
        P.encode_request("ping", {"x": loop}, "r")


@pytest.mark.parametrize(("rid", "result", "data", "code"), [
    ("r", {"when": object()}, None, P.INTERNAL),
    ("r", {"path": Path("/x")}, None, P.INTERNAL),
    ("r", [], None, P.INTERNAL),
    (None, {}, None, P.INTERNAL),
    ("a b", {}, None, P.INTERNAL),
    ("r", {"x": float("inf")}, None, P.INTERNAL),
    ("r", {"big": "x" * P.MAX_HEADER}, None, P.TOO_LARGE),
    ("r", {}, b"x" * (P.MAX_CHUNK + 1), P.TOO_LARGE),
    ("r", {}, 5, P.INTERNAL),
])
def test_encode_reply_refuses(rid, result, data, code):
    with pytest.raises(P.ProtocolError) as info:
        P.encode_reply(rid, result, data)
    assert info.value.code == code
    assert "cannot send reply" in info.value.message


def test_encode_error_always_produces_a_sendable_message():
    long = P.decode_reply(P.encode_error("r", P.FAILED, "etcdutl: " + "y" * 100_000))
    assert len(long.error_message) == P.MAX_ERROR_MESSAGE
    assert long.error_message.startswith("etcdutl: yyy") and long.error_message.endswith("(truncated)")
    surrogate = P.decode_reply(P.encode_error("r", P.FAILED, "bad byte \udcff in output"))
    assert surrogate.error_message == "bad byte ? in output"
    blank = P.decode_reply(P.encode_error("r", P.BUSY, "  "))
    assert blank.error_message == P.ERROR_CODES[P.BUSY]
    multiline = P.decode_reply(P.encode_error("r", P.FAILED, "line 1\nline 2\n"))
    assert multiline.error_message == "line 1\nline 2\n"


def test_encode_error_refuses_codes_outside_the_set_and_bad_ids():
    for rid, code in [("r", "oops"), ("r", ""), ("", P.FAILED), ("a" * 65, P.FAILED)]:
        with pytest.raises(P.ProtocolError) as info:
            P.encode_error(rid, code, "x")
        assert info.value.code == P.INTERNAL


# ---------------------------------------------------------------------------
# Property tests

request_ids = st.from_regex(P.REQUEST_ID_PATTERN, fullmatch=True)
op_ids = st.from_regex(P.OP_ID_PATTERN, fullmatch=True)
names = st.from_regex(P.NAME_PATTERN, fullmatch=True)
sha256s = st.binary(min_size=32, max_size=32).map(bytes.hex)
hosts = st.one_of(
    st.from_regex(r"[a-z0-9]{1,8}(\.[a-z0-9-]{0,6}[a-z0-9]){0,3}", fullmatch=True),
    st.ip_addresses(v=4).map(str),
    st.ip_addresses(v=6).map(lambda a: f"[{a}]"),
)
peer_urls = st.builds(
    lambda scheme, host, port: f"{scheme}://{host}" + ("" if port is None else f":{port}"),
    st.sampled_from(["http", "https"]), hosts, st.none() | st.integers(1, 65535),
)


def field_values(spec):
    if isinstance(spec, P.Str):
        return st.from_regex(spec.pattern, fullmatch=True) if spec.pattern else st.text(min_size=1)
    if isinstance(spec, P.Int):
        return st.integers(spec.min, spec.max)
    if isinstance(spec, P.Bool):
        return st.booleans()
    raise AssertionError(f"no strategy for {spec!r}")


@st.composite
def prepare_params(draw):
    members = draw(st.lists(st.tuples(names, peer_urls), min_size=1, max_size=4, unique_by=lambda m: m[1]))
    me = draw(st.sampled_from(members))
    return {
        "snapshot": draw(names),
        "name": me[0],
        "initial_cluster": ",".join(f"{n}={u}" for n, u in members),
        "token": draw(names),
        "peer_url": me[1],
        "bump_revision": draw(st.integers(0, P.MAX_BUMP_REVISION)),
    }


@st.composite
def put_request(draw):
    data = draw(st.binary(max_size=256))
    final = draw(st.booleans())
    offset = draw(st.integers(0, P.MAX_OFFSET - len(data)))
    end = offset + len(data)
    total = end if final else draw(st.integers(end, P.MAX_OFFSET))
    args = {"upload": draw(op_ids), "offset": offset, "total_size": total,
            "sha256": draw(sha256s), "final": final}
    return ("snapshot.put", args, data)


@st.composite
def step_request(draw):
    name = draw(st.sampled_from(P.STEPS))
    args = {"op_id": draw(op_ids), "step": name}
    if name == "prepare":
        args["params"] = draw(prepare_params())
    elif name == "finish":
        args["params"] = {"outcome": draw(st.sampled_from(["done", "failed", "rolled-back"]))}
    elif name == "retire":
        args["params"] = {"name": draw(names), "peer_url": draw(peer_urls)}
    elif name == "join":
        cluster = draw(prepare_params())["initial_cluster"]
        args["params"] = {"initial_cluster": cluster}
    elif draw(st.booleans()):
        args["params"] = {}
    if draw(st.booleans()):
        args["flow"] = draw(st.sampled_from(["restore", "replace", "defrag"]))
    return ("restore.step", args, None)


@st.composite
def fetch_request(draw):
    """A chunk, plain or compressed (a compressed one is at most MAX_COMPRESSED_CHUNK bytes of snapshot)."""
    name = draw(field_values(P.OPS["snapshot.fetch"].args["name"]))
    args = {"name": name, "offset": draw(st.integers(0, P.MAX_OFFSET))}
    if draw(st.booleans()):
        args.update(size=draw(st.integers(1, P.MAX_COMPRESSED_CHUNK)), zstd_level=draw(st.integers(1, 19)))
    else:
        args["size"] = draw(st.integers(1, P.MAX_CHUNK))
    return ("snapshot.fetch", args, None)


def op_request(op):
    if op == "snapshot.put":
        return put_request()
    if op == "snapshot.fetch":
        return fetch_request()
    if op == "restore.step":
        return step_request()
    schema = P.OPS[op].args
    return st.fixed_dictionaries({k: field_values(f) for k, f in schema.items()}).map(lambda a: (op, a, None))


# one strategy per op, built once (a flatmap would rebuild them for every example)
valid_requests = st.tuples(st.none() | request_ids, st.one_of([op_request(op) for op in sorted(P.OPS)]))


def examples(n):
    return settings(max_examples=n, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def depth(value):
    if isinstance(value, list):
        return 1 + max((depth(v) for v in value), default=0)
    if isinstance(value, dict):
        return 1 + max((depth(v) for v in value.values()), default=0)
    return 0


json_leaves = (st.none() | st.booleans() | st.integers(P.INT_MIN, P.INT_MAX)
               | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=16))
json_values = st.recursive(
    json_leaves, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)
results = st.dictionaries(st.text(max_size=8), json_values, max_size=5).filter(lambda r: depth(r) <= P.MAX_DEPTH - 1)


def optional_path(op, args, path):
    """May this leaf of a valid request be left out (and the request still be valid)?"""
    if op == "etcd.admin" and path[-1] in ("peer_url", "member_id", "alarm"):
        return path[-1] not in P._ADMIN_NEEDS.get(args.get("action"), ())   # required by its action only
    if op == "restore.warm" and path == ("args", "revision"):
        return True
    return ((path == ("args", "params") and args.get("step") not in ("prepare", "finish", "retire", "join"))
            or path in (("args", "hashkv_revision"), ("args", "flow"), ("args", "learner"), ("args", "timeout"),
                        ("args", "zstd_level")))


@examples(250)
@given(valid_requests)
def test_property_request_round_trip(item):
    rid, (op, args, data) = item
    frames = P.encode_request(op, args, rid, data)
    assert all(isinstance(f, bytes) for f in frames)
    req = P.decode_request(frames)
    assert req == P.Request(req.id if rid is None else rid, op, args, data)
    assert P.is_request_id(req.id)


@examples(100)
@given(request_ids, results, st.none() | st.binary(max_size=64))
def test_property_ok_reply_round_trip(rid, result, data):
    assert P.decode_reply(P.encode_reply(rid, result, data)) == P.Reply(rid, True, result=result, data=data)


@examples(150)
@given(st.none() | request_ids, st.sampled_from(sorted(P.ERROR_CODES)),
       st.text(min_size=1, max_size=300).filter(str.strip))
def test_property_error_reply_round_trip(rid, code, message):
    reply = P.decode_reply(P.encode_error(rid, code, message))
    assert reply == P.Reply(rid, False, error_code=code, error_message=message)


# --- fuzzing: decode returns a valid message or raises ProtocolError, nothing else


def request_outcome(frames):
    """Decode; on success the request must be re-sendable as is. Other exceptions propagate."""
    try:
        req = P.decode_request(frames)
    except P.ProtocolError as err:
        assert err.code in P.ERROR_CODES
        assert err.request_id is None or P.is_request_id(err.request_id)
        assert isinstance(err.message, str) and err.message
        return err
    spec = P.OPS[req.op]
    assert (req.data is not None) == spec.data
    assert set(req.args) <= set(spec.args)
    assert P.decode_request(req.encode()) == req
    return req


def reply_outcome(frames):
    try:
        reply = P.decode_reply(frames)
    except P.ProtocolError as err:
        assert err.code in P.ERROR_CODES
        assert err.request_id is None or P.is_request_id(err.request_id)
        return err
    if reply.ok:
        assert P.decode_reply(P.encode_reply(reply.id, reply.result, reply.data)) == reply
    else:
        assert reply.error_code in P.ERROR_CODES and reply.data is None
    return reply


surrogates = st.integers(0xD800, 0xDFFF).map(chr)
any_text = st.text(max_size=12) | st.lists(st.text(max_size=3) | surrogates, max_size=4).map("".join)
any_leaves = (st.none() | st.booleans() | st.integers() | st.floats() | any_text
              | st.sampled_from([2**64, -(2**63) - 1, 10**30, 1e308, -0.0, 1.0, 0, 1, 2]))
any_json = st.recursive(
    any_leaves, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(any_text, inner, max_size=3),
    max_leaves=8,
)


def mostly(good, bad):
    """`good` seven times in eight, so fuzzing gets past the outer checks to the inner ones."""
    return st.sampled_from(range(8)).flatmap(lambda i: bad if i == 7 else good)


arg_leaves = (
    st.sampled_from([*P.STEPS, "op-1", "..", SNAP, SHA, SHA.upper(), "https://10.0.0.1:2380", CLUSTER, "",
                     0, 1, -1, 5, P.MAX_CHUNK, P.MAX_CHUNK + 1, P.MAX_OFFSET, P.MAX_OFFSET + 1, 2**64 - 1])
    | st.integers(-1, 300) | st.booleans() | json_leaves
)
prepare_like = st.dictionaries(st.sampled_from(sorted(P.PREPARE_PARAMS)), arg_leaves, max_size=7)
arg_values = arg_leaves | st.just(PREPARE) | prepare_like | json_values


def plausible_request(op):
    """(header, data frame or None) for `op`, each part right most of the time."""
    spec = P.OPS[op]
    keys = sorted(spec.args) or ["x"]

    def right(field):
        if isinstance(field, P.Dependent):
            return st.sampled_from([PREPARE, {}])
        return field_values(field)

    nearly_right = st.fixed_dictionaries({k: mostly(right(f), arg_values) for k, f in spec.args.items()})
    header = st.fixed_dictionaries({
        "v": mostly(st.just(1), any_leaves),
        "id": mostly(request_ids, any_leaves),
        "op": mostly(st.just(op), any_leaves),
        "args": mostly(nearly_right | st.dictionaries(st.sampled_from(keys), arg_values, max_size=len(keys)),
                       any_json),
    })
    right_data = st.binary(max_size=16) if spec.data else st.none()
    return st.tuples(header, mostly(right_data, st.none() | st.binary(max_size=16)))


def plausible_reply(ok):
    if ok:
        body = {"id": mostly(request_ids, any_leaves), "result": mostly(results, any_json)}
    else:
        body = {"id": mostly(st.none() | request_ids, any_leaves),
                "error": mostly(st.fixed_dictionaries({"code": st.sampled_from(sorted(P.ERROR_CODES)),
                                                       "message": st.text(max_size=20)}), any_json)}
    header = st.fixed_dictionaries({"v": mostly(st.just(1), any_leaves), "ok": mostly(st.just(ok), any_leaves),
                                    **body})
    data = st.binary(max_size=16) if ok else st.none()
    return st.tuples(header, mostly(st.none() | data, st.binary(max_size=16)))


plausible_requests = st.one_of([plausible_request(op) for op in sorted(P.OPS)])
plausible_replies = plausible_reply(True) | plausible_reply(False)


def dump(value, ascii_only):
    return json.dumps(value, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")


@examples(300)
@given(st.lists(st.binary(max_size=128), max_size=4))
def test_fuzz_random_bytes(frames):
    request_outcome(frames)
    reply_outcome(frames)


@examples(150)
@given(any_json, st.booleans(), st.lists(st.binary(max_size=16), max_size=2))
def test_fuzz_random_json(header, ascii_only, extra):
    frames = [dump(header, ascii_only), *extra]
    request_outcome(frames)
    reply_outcome(frames)


@examples(200)
@given(plausible_requests, st.booleans())
def test_fuzz_plausible_requests(message, ascii_only):
    header, data = message
    request_outcome([dump(header, ascii_only)] + ([] if data is None else [data]))


@examples(100)
@given(plausible_replies, st.booleans())
def test_fuzz_plausible_replies(message, ascii_only):
    header, data = message
    reply_outcome([dump(header, ascii_only)] + ([] if data is None else [data]))


def leaf_paths(header):
    """Paths (tuples of keys) to every value in a request header."""
    out = []
    for key, value in header.items():
        out.append((key,))
        if isinstance(value, dict):
            for sub, subvalue in value.items():
                out.append((key, sub))
                if isinstance(subvalue, dict):
                    out.extend((key, sub, k) for k in subvalue)
    return out


def at(header, path):
    node = header
    for key in path[:-1]:
        node = node[key]
    return node


def kind(value):
    return "int" if type(value) is int else type(value).__name__


def confusable(value):
    """Values of another JSON type that a lax decoder might take for `value`."""
    if isinstance(value, bool):
        return [int(value), str(value).lower(), None, [value]]
    if isinstance(value, int):
        return [bool(value), float(value), str(value), None, [value]]
    if isinstance(value, str):
        return [1, 0, True, None, [value], {value: value}]
    return [[], None, "", 0, [value]]


def other_kind(value):
    return (st.sampled_from(confusable(value)) | json_values).filter(lambda v: kind(v) != kind(value))


MUTATIONS = ["flip", "truncate", "drop", "add", "retype", "frames", "dupkey"]


@examples(100)
@given(valid_requests, st.sampled_from(MUTATIONS), st.data())
def test_fuzz_mutated_requests(item, mutation, data):
    rid, (op, args, payload) = item
    frames = P.encode_request(op, args, rid, payload)
    header = json.loads(frames[0])
    draw = data.draw
    must_fail_naming = None   # when set, the mutation must be rejected and the message name this

    if mutation == "flip":
        buf = bytearray(frames[0])
        for pos in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4)):
            buf[pos] ^= draw(st.integers(1, 255))
        frames[0] = bytes(buf)
    elif mutation == "truncate":
        frames[0] = frames[0][: draw(st.integers(0, len(frames[0]) - 1))]
    elif mutation == "drop":
        path = draw(st.sampled_from(leaf_paths(header)))
        del at(header, path)[path[-1]]
        if not optional_path(op, args, path):
            must_fail_naming = path[-1]
        frames[0] = raw(header)
    elif mutation == "add":
        targets = [()] + [p for p in leaf_paths(header) if isinstance(at(header, p)[p[-1]], dict)]
        path = draw(st.sampled_from(targets))
        node = header if not path else at(header, path)[path[-1]]
        key = draw(st.text(min_size=1, max_size=4).filter(lambda k: k not in node))
        node[key] = draw(json_values)
        must_fail_naming = repr(key)
        frames[0] = dump(header, draw(st.booleans()))
    elif mutation == "retype":
        path = draw(st.sampled_from(leaf_paths(header)))
        old = at(header, path)[path[-1]]
        new = draw(other_kind(old))
        at(header, path)[path[-1]] = new
        must_fail_naming = path[-1] if path[0] == "args" else ""
        frames[0] = dump(header, draw(st.booleans()))
    elif mutation == "frames":
        choice = draw(st.sampled_from(["drop_data", "add_data", "extra"]))
        if choice == "drop_data" and len(frames) == 2:
            frames.pop()
        elif choice == "add_data" and len(frames) == 1:
            frames.append(draw(st.binary(max_size=32)))
        else:
            frames.extend(draw(st.lists(st.binary(max_size=8), min_size=1, max_size=3)))
        must_fail_naming = "frame"
    else:
        key = draw(st.sampled_from(sorted(header)))
        frames[0] = b"{" + raw(key) + b":" + raw(header[key]) + b"," + frames[0][1:]
        must_fail_naming = "duplicate key"

    outcome = request_outcome(frames)
    if must_fail_naming is not None:
        assert isinstance(outcome, P.ProtocolError), f"{mutation} was accepted: {outcome!r}"
        assert must_fail_naming in outcome.message


requests_with_args = st.tuples(
    request_ids, st.one_of([op_request(op) for op in sorted(P.OPS) if P.OPS[op].args]))


@examples(150)
@given(requests_with_args, st.data())
def test_fuzz_wrong_types_are_refused_by_name(item, data):
    rid, (op, args, payload) = item
    header = json.loads(P.encode_request(op, args, rid, payload)[0])
    path = data.draw(st.sampled_from([p for p in leaf_paths(header) if p[0] == "args" and len(p) > 1]))
    at(header, path)[path[-1]] = data.draw(other_kind(at(header, path)[path[-1]]))
    outcome = request_outcome([raw(header)] + ([] if payload is None else [payload]))
    assert isinstance(outcome, P.ProtocolError), f"{path} accepted: {outcome!r}"
    assert outcome.code == P.BAD_REQUEST and outcome.request_id == rid
    assert "args." + ".".join(path[1:]) in outcome.message


@examples(100)
@given(request_ids, results, st.sampled_from(["flip", "truncate", "extra", "retype"]), st.data())
def test_fuzz_mutated_replies(rid, result, mutation, data):
    frames = P.encode_reply(rid, result)
    draw = data.draw
    if mutation == "flip":
        buf = bytearray(frames[0])
        for pos in draw(st.lists(st.integers(0, len(buf) - 1), min_size=1, max_size=4)):
            buf[pos] ^= draw(st.integers(1, 255))
        frames[0] = bytes(buf)
    elif mutation == "truncate":
        frames[0] = frames[0][: draw(st.integers(0, len(frames[0]) - 1))]
    elif mutation == "extra":
        frames.extend(draw(st.lists(st.binary(max_size=8), min_size=2, max_size=3)))
    else:
        header = json.loads(frames[0])
        key = draw(st.sampled_from(["v", "id", "ok", "result"]))
        header[key] = draw(any_json.filter(lambda v: kind(v) != kind(header[key])))
        frames[0] = dump(header, True)
    outcome = reply_outcome(frames)
    if mutation in ("extra", "retype"):
        assert isinstance(outcome, P.ProtocolError)
