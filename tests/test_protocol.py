"""The wire codec, without sockets: round trips, hostile bytes, and the refusals.

Three kinds of test live here:

- round trips: random valid instances of *every* class in `farmd.protocol.MESSAGES`,
  several back to back, cut into random chunks, come out of a `Codec` equal and in order;
- hostile input: random bytes, random msgpack, and valid messages with one field broken
  only ever produce messages, `NEED_DATA` or `ProtocolError`, and a codec that raised
  stays broken;
- unit tests for each refusal (its wire code, and a one-line message naming the culprit),
  for `is_plain` (what a `reply.result` may hold) and `welcome.max_frame_bytes`, and
  golden frames that pin the worked example of docs/protocol.md to the codec.

Bugs that were reported and fixed keep a regression test (section "regressions") that
asserts the fixed behaviour. A bug found and not yet fixed is written as an
`xfail(strict=True)` test whose reason says what is wrong: when the bug is fixed the test
passes, strict xfail turns that into a failure, and the marker must be removed.

The message strategies are local (they describe the wire, not the scheduler); if another
test module needs them they belong in tests/strategies.py.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import attrs
import msgpack
import pytest
from hypothesis import event, given, settings
from hypothesis import strategies as st

from farmd.codec import NEED_DATA, Codec, encode
from farmd.errors import ProtocolError
from farmd.protocol import (
    CONTROL_ACTIONS,
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_BYTES,
    MAX_PAGE,
    MESSAGES,
    PROTOCOL_VERSION,
    ControlRequest,
    Error,
    Explain,
    FrameFinished,
    Heartbeat,
    Hello,
    ListResources,
    Lock,
    LogData,
    Message,
    Register,
    Registered,
    Reload,
    Reply,
    ResultAck,
    ResumeFrame,
    RunFrame,
    SetResource,
    Submit,
    SubmitBatch,
    SuspendFrame,
    Unlock,
    Wait,
    Welcome,
    is_plain,
)

# Derandomized, as in tests/strategies.py: a failure replays from the test name alone.
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, report_multiple_bugs=False)
# The round trip of each type on its own: 34 types, so fewer examples each (the mixed
# stream test draws 200 more batches of every type).
PER_TYPE_SETTINGS = settings(SETTINGS, max_examples=50)
WIRE_CODES = frozenset({"bad_frame", "frame_too_large", "bad_message"})
DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"

# --------------------------------------------------------------------------- helpers


def frame(payload: bytes) -> bytes:
    """A frame around `payload`: 4-byte big-endian length, then the bytes."""
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


def packed(body: object) -> bytes:
    """`body` as msgpack, framed (the bytes a peer in another language would send)."""
    return frame(msgpack.packb(body, use_bin_type=True))


def drain(codec: Codec) -> list[Message]:
    """Every complete message the codec holds; stops at NEED_DATA."""
    out: list[Message] = []
    for _ in range(100_000):  # bounded: more messages than any test feeds
        message = codec.next_message()
        if message is NEED_DATA:
            return out
        assert isinstance(message, Message)
        out.append(message)
    raise AssertionError("the codec never ran out of messages")


def decode_one(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> Message:
    codec = Codec(max_frame_bytes)
    codec.receive_data(data)
    message = codec.next_message()
    assert isinstance(message, Message)
    return message


def refusal(data: bytes, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> ProtocolError:
    """The ProtocolError a fresh codec raises for `data`; fails if it raises none."""
    codec = Codec(max_frame_bytes)
    codec.receive_data(data)
    with pytest.raises(ProtocolError) as info:
        drain(codec)
    return info.value


def one_line(text: str) -> bool:
    return len(text.splitlines()) == 1


def split_at(data: bytes, cuts: Iterable[int]) -> list[bytes]:
    points = sorted(cuts)
    return [data[a:b] for a, b in zip([0, *points], [*points, len(data)], strict=True)]


# --------------------------------------------------------------------------- values

# msgpack's whole integer range, with its boundaries drawn often
ints = st.one_of(
    st.integers(-(2**63), 2**64 - 1),
    st.sampled_from([0, 1, -1, 127, 128, -32, -33, 2**31, 2**32, 2**63 - 1, 2**63, 2**64 - 1]),
    st.just(-(2**63)),
)
# st.text() draws empty, non-ASCII and astral text, and never lone surrogates (which
# UTF-8, and so msgpack's str, cannot carry)
texts = st.text(max_size=40)
# names (of jobs, workers, types, properties, resources) hold no control character (Cc)
# and no line or paragraph separator (Zl, Zp)
_name_chars = st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))
name_texts = st.text(_name_chars, max_size=40)
names = st.text(_name_chars, min_size=1, max_size=20)
seconds = st.one_of(
    st.floats(min_value=0, exclude_min=True, allow_nan=False), st.integers(1, 2**63 - 1)
)
timeouts = st.one_of(st.none(), st.floats(min_value=0, allow_nan=False), st.integers(0, 2**63 - 1))
int_lists = st.lists(ints, max_size=6)
counts = st.integers(0, 2**64 - 1)
seconds_or_zero = st.one_of(
    st.floats(min_value=0, allow_nan=False, allow_infinity=False), st.integers(0, 2**63 - 1)
)
# what a Reply may carry and read back equal: nil, bool, int, float (not NaN, which is
# not equal to itself), str, arrays (as lists: a tuple comes back as a list) and maps
# with str keys
plain_data = st.recursive(
    st.one_of(st.none(), st.booleans(), ints, st.floats(allow_nan=False), texts),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.dictionaries(texts, inner, max_size=5)),
    max_leaves=25,
)
# welcome.max_frame_bytes: any int from 65536 up, its lower bound and the usual values often
frame_limits = st.one_of(
    st.integers(65536, 2**64 - 1),
    st.sampled_from([65536, 65537, DEFAULT_MAX_FRAME_BYTES, 268435456, 2**64 - 1]),
)
running_entries = st.lists(
    st.one_of(st.tuples(ints, ints, ints), st.lists(ints, min_size=3, max_size=3)), max_size=5
)
DEPENDENCY_MODES = ("complete", "done", "failed", "frames")
# submit.depends_on: "ID:MODE" and "ID" strings, bare ints (the codec makes them "ID"), and
# any other text (the codec only checks for strings; the scheduler parses them)
dependencies = st.lists(
    st.one_of(
        st.builds("{}:{}".format, st.integers(0, 2**63 - 1), st.sampled_from(DEPENDENCY_MODES)),
        st.integers(0, 2**63 - 1).map(str),
        ints,
        name_texts,
    ),
    max_size=6,
)
chunks = st.one_of(st.integers(1, 2**64 - 1), st.sampled_from([1, 2, 10, 1_000_000]))
# register.properties: host facts, each a str, a number, a bool or a list of str (NaN
# left out: it is a fact, but not equal to itself)
facts = st.dictionaries(
    names,
    st.one_of(
        texts,
        ints,
        st.floats(allow_nan=False),
        st.booleans(),
        st.lists(texts, max_size=4),
    ),
    max_size=6,
)
# register.resources: finite amounts >= 0, ints or floats
amounts = st.dictionaries(
    names,
    st.one_of(st.integers(0, 2**64 - 1), st.floats(0, allow_nan=False, allow_infinity=False)),
    max_size=6,
)
# submit.reserve: the forms the scheduler reads, and any other text (the codec only
# checks for a string; the scheduler parses it)
reservations = st.one_of(
    st.sampled_from(["", "slots=2", "slots=2+", "slots=4*", "slots=2,memory=8G,gpu=1"]),
    texts,
)
requirements = st.one_of(
    st.sampled_from(["", "host.os == linux", "host.memory >= 32G and not host.gpu"]), texts
)
# submit.key: an idempotency key, 1 to 128 characters of A-Z a-z 0-9 . _ : -
digests = st.text("0123456789abcdef", min_size=64, max_size=64).map(lambda h: "sha256:" + h)
release_refs = st.fixed_dictionaries(
    {"name": texts, "version": texts, "digest": digests, "size": counts}
)
release_pins = st.fixed_dictionaries(
    {"name": texts, "version": texts, "digest": digests, "size": counts},
    optional={"python": texts},
)
request_keys = st.text(
    alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-",
    min_size=1,
    max_size=128,
)


def maybe(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.one_of(st.none(), strategy)


# --------------------------------------------------------------------------- messages

# Per message type: (required fields, optional fields). An optional field is sometimes
# left out, so its default is exercised too.
FieldStrategies = Mapping[str, st.SearchStrategy[Any]]
FIELDS: dict[str, tuple[FieldStrategies, FieldStrategies]] = {
    "hello": (
        {"version": ints, "role": st.sampled_from(["worker", "admin"]), "token": texts},
        {"name": name_texts},
    ),
    "welcome": (
        {
            "version": ints,
            "supervisor": texts,
            "heartbeat_interval": seconds,
            "max_frame_bytes": frame_limits,
        },
        {},
    ),
    "error": ({"code": texts, "message": texts}, {}),
    "standby": ({"active": st.text(max_size=40), "epoch": ints, "message": texts}, {}),
    "heartbeat": ({}, {}),
    "register": (
        {"name": names, "cluster": texts, "slots": st.integers(1, 2**64 - 1)},
        {
            "restrictions": texts,
            "types": st.lists(names, max_size=4),
            "properties": facts,
            "resources": amounts,
            "running": running_entries,
            "instance": st.text(max_size=64),
        },
    ),
    "registered": ({"name": texts}, {"settings": st.dictionaries(texts, plain_data, max_size=6)}),
    "run_frame": (
        {
            "job_id": ints,
            "job_name": texts,
            "frame": ints,
            "attempt": ints,
            "argv": st.lists(texts, max_size=6),
        },
        {
            "env": st.dictionaries(texts, texts, max_size=8),
            "time_limit": seconds_or_zero,
            "release": maybe(release_pins),
        },
    ),
    "kill_frame": ({"job_id": ints, "frame": ints, "attempt": ints}, {}),
    "suspend_frame": ({"job_id": ints, "frame": ints, "attempt": ints}, {}),
    "resume_frame": ({"job_id": ints, "frame": ints, "attempt": ints}, {}),
    "frame_finished": (
        {"job_id": ints, "frame": ints, "attempt": ints, "exit_code": ints},
        {"error": texts},
    ),
    "result_ack": ({"job_id": ints, "frame": ints, "attempt": ints}, {}),
    "fetch_log": (
        {"request_id": ints, "job_id": ints, "frame": ints, "attempt": ints},
        {"offset": st.integers(-1, 2**63 - 1)},
    ),
    "log_data": ({"request_id": ints, "found": st.booleans()}, {"text": texts, "size": counts}),
    "submit": (
        {"request_id": ints, "argv": st.lists(texts, max_size=6)},
        {
            "name": name_texts,
            "cluster": maybe(texts),
            "priority": maybe(ints),
            "restrictions": texts,
            "cross_cluster": texts,
            "frames": texts,
            "depends_on": dependencies,
            "instances": counts,
            "retries": counts,
            "retry_delay": seconds_or_zero,
            "time_limit": seconds_or_zero,
            "chunk": chunks,
            "parent": maybe(ints),
            "uninterruptible": st.booleans(),
            "job_type": maybe(name_texts),
            "requires": requirements,
            "reserve": reservations,
            "env": st.lists(texts, max_size=3),
            "params": st.lists(texts, max_size=3),
            "notify": texts,
            "key": maybe(request_keys),
        },
    ),
    "upload_release": (
        {
            "request_id": ints,
            "digest": digests,
            "size": counts,
            "offset": counts,
            "data": st.text(max_size=40),
        },
        {"done": st.booleans()},
    ),
    "deploy_release": (
        {"request_id": ints, "name": names, "version": names, "cluster": texts},
        {},
    ),
    "undeploy_release": ({"request_id": ints, "name": names, "cluster": texts}, {}),
    "rollback_release": ({"request_id": ints, "name": names, "cluster": texts}, {}),
    "remove_release": ({"request_id": ints, "name": names, "version": names}, {}),
    "list_releases": ({"request_id": ints}, {"cluster": maybe(texts)}),
    "list_job_types": ({"request_id": ints}, {"cluster": texts}),
    "releases": ({"releases": st.lists(release_refs, max_size=4)}, {}),
    "fetch_release": (
        {
            "request_id": ints,
            "digest": digests,
            "offset": counts,
            "length": st.integers(1, 1 << 20),
        },
        {},
    ),
    "release_data": (
        {"request_id": ints},
        {"data": st.text(max_size=40), "size": counts, "error": texts},
    ),
    "release_status": (
        {"ready": st.lists(st.tuples(texts, texts), max_size=4)},
        {"failed": st.lists(st.tuples(texts, texts, texts), max_size=4)},
    ),
    "host_load": (
        {
            "cpu": st.one_of(st.floats(0, 1), st.sampled_from([0, 1])),
            "memory_used": st.integers(0, 2**40),
            "memory_total": st.just(2**40),
            "load_average": st.tuples(*[st.one_of(st.floats(0, 1e9), st.integers(0, 10**9))] * 3),
        },
        {},
    ),
    "submit_batch": (
        {
            "request_id": ints,
            "jobs": st.lists(
                st.fixed_dictionaries(
                    {"argv": st.lists(texts, max_size=3)},
                    optional={
                        "name": name_texts,
                        "cluster": maybe(texts),
                        "priority": maybe(ints),
                        "frames": texts,
                        "depends_on": dependencies,
                        "chunk": chunks,
                        "parent": maybe(ints),
                        "uninterruptible": st.booleans(),
                        "job_type": maybe(name_texts),
                        "requires": requirements,
                        "reserve": reservations,
                        "env": st.lists(texts, max_size=3),
                    },
                ),
                min_size=1,
                max_size=4,
            ),
        },
        {"key": maybe(request_keys)},
    ),
    "control": (
        {
            "request_id": ints,
            "action": st.sampled_from(["kill", "block", "unblock", "retry", "suspend", "resume"]),
            "targets": st.lists(name_texts, max_size=4),
        },
        {},
    ),
    "remove": ({"request_id": ints}, {"job_ids": int_lists}),
    "list_jobs": (
        {"request_id": ints},
        {"limit": st.integers(1, MAX_PAGE), "after": maybe(ints), "history": st.booleans()},
    ),
    "get_job": (
        {"request_id": ints, "job_id": ints},
        {"frame_limit": st.integers(1, MAX_PAGE), "frame_after": maybe(ints)},
    ),
    "list_workers": ({"request_id": ints}, {}),
    "list_clusters": ({"request_id": ints}, {}),
    "kill": ({"request_id": ints}, {"job_ids": int_lists}),
    "modify": (
        {"request_id": ints, "job_id": ints},
        {
            "priority": maybe(ints),
            "cluster": maybe(texts),
            "restrictions": maybe(texts),
            "cross_cluster": maybe(texts),
            "instances": maybe(counts),
            "retries": maybe(counts),
            "retry_delay": maybe(seconds_or_zero),
            "time_limit": maybe(seconds_or_zero),
        },
    ),
    "lock": (
        {"request_id": ints, "worker": name_texts},
        {"mode": st.sampled_from(["drain", "purge"])},
    ),
    "unlock": ({"request_id": ints, "worker": name_texts}, {}),
    "explain": ({"request_id": ints, "job_id": ints}, {"worker": maybe(name_texts)}),
    "list_resources": ({"request_id": ints}, {}),
    "set_resource": ({"request_id": ints, "name": name_texts, "total": seconds_or_zero}, {}),
    "reload": ({"request_id": ints}, {}),
    "status": ({"request_id": ints}, {}),
    "add_user": (
        {"request_id": ints, "name": names, "role": names},
        {"clusters": maybe(texts)},
    ),
    "list_users": ({"request_id": ints}, {}),
    "add_worker_token": ({"request_id": ints, "hosts": names}, {"clusters": maybe(texts)}),
    "list_worker_tokens": ({"request_id": ints}, {}),
    "revoke_worker_token": ({"request_id": ints, "token_id": ints}, {}),
    "list_audit": (
        {"request_id": ints},
        {
            "limit": st.integers(1, MAX_PAGE),
            "before": maybe(ints),
            "user": maybe(texts),
            "job": maybe(ints),
            "since": maybe(seconds_or_zero),
        },
    ),
    "modify_user": (
        {"request_id": ints, "name": names},
        {"role": maybe(texts), "clusters": maybe(texts), "new_token": st.booleans()},
    ),
    "revoke_user": ({"request_id": ints, "name": names}, {}),
    "prune_history": (
        {"request_id": ints},
        {"days": maybe(st.floats(0, 1e6) | st.integers(0, 10**6))},
    ),
    "order": ({"request_id": ints, "worker": name_texts}, {"limit": st.integers(1, 2**64 - 1)}),
    "get_log": (
        {"request_id": ints, "job_id": ints},
        {"frame": maybe(ints), "offset": maybe(st.integers(0, 2**63 - 1))},
    ),
    "wait": ({"request_id": ints}, {"job_ids": int_lists, "timeout": timeouts}),
    "reply": ({"request_id": ints}, {"result": plain_data}),
    "refused": ({"request_id": ints, "code": texts, "message": texts}, {}),
}


def message_of(kind: str) -> st.SearchStrategy[Message]:
    required, optional = FIELDS[kind]
    cls = MESSAGES[kind]
    return st.fixed_dictionaries(dict(required), optional=dict(optional)).map(
        lambda fields: cls(**fields)
    )


messages = st.sampled_from(sorted(FIELDS)).flatmap(message_of)


def field_names(cls: type[Message]) -> set[str]:
    return {a.name for a in attrs.fields(cls)}  # type: ignore[arg-type]


def test_every_message_type_and_field_has_a_strategy() -> None:
    """A message or field added to the protocol must be added to FIELDS (and the doc)."""
    assert set(FIELDS) == set(MESSAGES)
    for kind, (required, optional) in FIELDS.items():
        assert set(required).isdisjoint(optional), kind
        assert set(required) | set(optional) == field_names(MESSAGES[kind]), kind


# --------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("kind", sorted(MESSAGES))
@PER_TYPE_SETTINGS
@given(data=st.data())
def test_each_message_type_round_trips(kind: str, data: st.DataObject) -> None:
    message = data.draw(message_of(kind))
    wire = Codec().send(message)
    decoded = decode_one(wire)
    assert type(decoded) is type(message)
    assert decoded == message
    assert encode(decoded) == wire  # same types too: no int became a float or a bool


@SETTINGS
@given(batch=st.lists(messages, min_size=1, max_size=8), data=st.data())
def test_messages_back_to_back_survive_any_chunking(
    batch: list[Message], data: st.DataObject
) -> None:
    sender = Codec()
    stream = b"".join(sender.send(m) for m in batch)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=12), label="cuts")
    receiver = Codec()
    out: list[Message] = []
    for chunk in split_at(stream, cuts):
        receiver.receive_data(chunk)
        out.extend(drain(receiver))
    assert [type(m) for m in out] == [type(m) for m in batch]
    assert out == batch
    assert receiver.next_message() is NEED_DATA


def test_one_byte_at_a_time() -> None:
    batch = [Heartbeat(), Registered(name="ñ·w1"), Reply(request_id=7, result={"a": [1, 2.5]})]
    stream = b"".join(map(encode, batch))
    codec = Codec()
    out: list[Message] = []
    for i in range(len(stream)):
        codec.receive_data(stream[i : i + 1])
        out.extend(drain(codec))
    assert out == batch


def test_need_data_until_the_frame_is_complete() -> None:
    wire = encode(Heartbeat())
    codec = Codec()
    assert codec.next_message() is NEED_DATA
    codec.receive_data(wire[:3])  # not even a header
    assert codec.next_message() is NEED_DATA
    codec.receive_data(wire[3:-1])  # a header, most of the body
    assert codec.next_message() is NEED_DATA
    codec.receive_data(wire[-1:])
    assert codec.next_message() == Heartbeat()
    assert codec.next_message() is NEED_DATA
    assert repr(NEED_DATA) == "NEED_DATA"


def test_wire_field_types_are_plain_msgpack() -> None:
    """Tuples go out as arrays, defaults are written out, nil as nil, `type` first."""
    register = Register(name="w", cluster="/", slots=2, running=[(1, 2, 3)])
    body = msgpack.unpackb(encode(register)[HEADER_BYTES:])
    assert body == {
        "type": "register",
        "name": "w",
        "cluster": "/",
        "restrictions": "",
        "slots": 2,
        "types": [],
        "properties": {},
        "resources": {},
        "running": [[1, 2, 3]],
        "instance": "",
    }
    assert next(iter(body)) == "type"
    submit = msgpack.unpackb(encode(Submit(request_id=1, argv=("x",)))[HEADER_BYTES:])
    assert submit["cluster"] is None
    assert submit["priority"] is None
    assert submit["depends_on"] == []
    assert submit["chunk"] == 1
    assert submit["parent"] is None
    assert submit["uninterruptible"] is False
    assert submit["job_type"] is None
    assert submit["requires"] == ""
    assert submit["reserve"] == ""


def test_optional_fields_may_be_left_out_on_the_wire() -> None:
    """A peer in another language may omit fields with defaults."""
    assert decode_one(packed({"type": "register", "name": "w", "cluster": "/", "slots": 1})) == (
        Register(name="w", cluster="/", slots=1, restrictions="", running=())
    )
    assert decode_one(packed({"type": "reply", "request_id": 1})) == Reply(request_id=1)


def test_field_order_on_the_wire_does_not_matter() -> None:
    body = {"slots": 1, "cluster": "/", "type": "register", "name": "w"}
    assert decode_one(packed(body)) == Register(name="w", cluster="/", slots=1)


def test_non_minimal_msgpack_encodings_are_accepted() -> None:
    """Another language's msgpack library may pick wider encodings: all are valid."""
    body = (
        b"\xde\x00\x02"  # map 16 holding 2 entries
        + b"\xd9\x04type"  # str 8
        + b"\xda\x00\x05reply"  # str 16
        + b"\xdb\x00\x00\x00\x0arequest_id"  # str 32
        + b"\xcf\x00\x00\x00\x00\x00\x00\x00\x05"  # uint 64
    )
    assert decode_one(frame(body)) == Reply(request_id=5)
    single = msgpack.packb({"type": "wait", "request_id": 1, "timeout": 1.5}, use_single_float=True)
    assert b"\xca" in single  # float 32
    assert decode_one(frame(single)) == Wait(request_id=1, timeout=1.5)


# --------------------------------------------------------------------------- hostile input

# Any msgpack value at all, including what farmd's messages never hold: bin, ext,
# timestamps, NaN, and map keys that are not strings.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    ints,
    st.floats(),
    texts,
    st.binary(max_size=16),
    st.builds(msgpack.ExtType, st.integers(0, 127), st.binary(max_size=12)),
    st.builds(msgpack.Timestamp, st.integers(0, 2**34 - 1), st.integers(0, 999_999_999)),
)
map_keys = st.one_of(texts, ints, st.booleans(), st.none(), st.binary(max_size=8))
any_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(map_keys, inner, max_size=4)
    ),
    max_leaves=12,
)
type_names = st.one_of(st.sampled_from(sorted(MESSAGES)), texts, any_values)


@st.composite
def broken_messages(draw: st.DrawFn) -> dict[Any, Any]:
    """A valid message's map with a field removed, retyped, or added."""
    message = draw(messages)
    body: dict[Any, Any] = {"type": message.TYPE}
    body.update(attrs.asdict(message, recurse=False))  # type: ignore[arg-type]
    wrong = st.one_of(
        any_values, st.booleans(), st.floats(), st.integers(2**64, 2**70), st.just(-(2**63) - 1)
    )
    for _ in range(draw(st.integers(1, 3))):
        fields = sorted((k for k in body if k != "type"), key=repr)
        how = draw(st.sampled_from(["drop", "retype", "add", "retype type"]))
        if how == "drop" and fields:
            del body[draw(st.sampled_from(fields))]
        elif how == "retype" and fields:
            body[draw(st.sampled_from(fields))] = draw(wrong)
        elif how == "retype type":
            body["type"] = draw(type_names)
        else:
            body[draw(st.one_of(texts, map_keys))] = draw(any_values)
    return body


@st.composite
def random_maps(draw: st.DrawFn) -> dict[Any, Any]:
    """A map with a message type (usually a real one) and fields drawn from its real
    names, made-up names and non-string keys, each with any value at all."""
    body: dict[Any, Any] = {}
    if draw(st.booleans()):
        body["type"] = draw(type_names)
    kind = body.get("type")
    real = sorted(field_names(MESSAGES[kind])) if isinstance(kind, str) and kind in MESSAGES else []
    keys = st.one_of(st.sampled_from(real), map_keys) if real else map_keys
    for key, value in draw(st.lists(st.tuples(keys, any_values), max_size=6)):
        body[key] = value
    return body


def pack_or_reject(body: object) -> st.SearchStrategy[bytes]:
    try:
        return st.just(msgpack.packb(body, use_bin_type=True))
    except (TypeError, ValueError, OverflowError):  # not packable: say so to hypothesis
        return st.nothing()


payloads = st.one_of(
    broken_messages().flatmap(pack_or_reject),
    random_maps().flatmap(pack_or_reject),
    any_values.flatmap(pack_or_reject),  # mostly not maps
    st.binary(min_size=1, max_size=64),  # mostly not msgpack
    messages.map(lambda m: encode(m)[HEADER_BYTES:]).flatmap(  # valid msgpack, cut short
        lambda body: st.integers(1, len(body)).map(lambda n: body[:n])
    ),
)
# a byte stream: good frames, framed hostile payloads, raw garbage, odd headers
stream_parts = st.one_of(
    messages.map(encode),
    payloads.map(frame),
    st.binary(max_size=32),
    st.integers(0, 2**32 - 1).map(lambda n: n.to_bytes(HEADER_BYTES, "big")),
)


def pull(codec: Codec) -> tuple[list[Message], ProtocolError | None]:
    """Every message the codec holds, and the ProtocolError that stopped it, if any."""
    out: list[Message] = []
    for _ in range(100_000):  # bounded: more messages than any test feeds
        try:
            message = codec.next_message()
        except ProtocolError as exc:
            return out, exc
        if message is NEED_DATA:
            return out, None
        assert isinstance(message, Message)
        out.append(message)
    raise AssertionError("the codec never ran out of messages")


def check_refusal(error: ProtocolError) -> None:
    assert error.code in WIRE_CODES, error.code
    assert one_line(str(error)), str(error)


def feed_and_check(codec: Codec, chunks: Iterable[bytes]) -> ProtocolError | None:
    """Feed chunks, pulling messages after each; check nothing but messages, NEED_DATA or
    ProtocolError comes out (anything else propagates and fails the test). Returns the
    ProtocolError, if one was raised, after checking the codec stays broken."""
    for chunk in chunks:
        codec.receive_data(chunk)
        received, error = pull(codec)
        for message in received:
            event(f"message {message.TYPE}")
            assert type(message) in MESSAGES.values()
            Codec().send(message)  # a message that exists is well formed
        if error is not None:
            event(f"refused: {error.code}")
            check_refusal(error)
            for _ in range(2):  # broken for good, whatever comes next
                codec.receive_data(encode(Heartbeat()))
                with pytest.raises(ProtocolError) as again:
                    codec.next_message()
                assert again.value is error
            return error
    return None


@SETTINGS
@given(data=st.binary(max_size=200), cuts=st.lists(st.integers(0, 200), max_size=5))
def test_arbitrary_bytes_yield_messages_need_data_or_protocol_error(
    data: bytes, cuts: list[int]
) -> None:
    feed_and_check(Codec(), split_at(data, [c for c in cuts if c <= len(data)]))
    feed_and_check(Codec(max_frame_bytes=64), [data])


@SETTINGS
@given(payload=payloads)
def test_arbitrary_framed_payloads_yield_a_message_or_protocol_error(payload: bytes) -> None:
    codec = Codec()
    error = feed_and_check(codec, [frame(payload)])
    if error is None:
        assert codec.next_message() is NEED_DATA


@SETTINGS
@given(parts=st.lists(stream_parts, min_size=1, max_size=6), data=st.data())
def test_arbitrary_streams_yield_messages_need_data_or_protocol_error(
    parts: list[bytes], data: st.DataObject
) -> None:
    stream = b"".join(parts)
    cuts = data.draw(st.lists(st.integers(0, len(stream)), max_size=6), label="cuts")
    feed_and_check(Codec(max_frame_bytes=4096), split_at(stream, cuts))


@SETTINGS
@given(body=broken_messages())
def test_a_broken_field_is_refused_as_bad_message(body: dict[Any, Any]) -> None:
    """A map that msgpack reads but that is no valid message is `bad_message`; when the
    result happens to be a valid message after all, it carries exactly those fields."""
    try:
        payload = msgpack.packb(body, use_bin_type=True)
    except (TypeError, ValueError, OverflowError):
        return
    codec = Codec()
    codec.receive_data(frame(payload))
    received, error = pull(codec)
    if error is not None:
        event(f"refused: {error.code}")
        check_refusal(error)
        assert error.code != "frame_too_large"
        return
    [message] = received
    event("accepted")
    assert body["type"] == message.TYPE
    assert set(body) - {"type"} <= field_names(type(message))


# --------------------------------------------------------------------------- frame limits


def test_oversized_frame_is_refused_from_its_header_alone() -> None:
    codec = Codec(max_frame_bytes=1024)
    header = (1025).to_bytes(HEADER_BYTES, "big")
    codec.receive_data(header[:3])
    assert codec.next_message() is NEED_DATA  # three bytes say nothing yet
    codec.receive_data(header[3:])  # the header, and not one byte of body
    with pytest.raises(ProtocolError) as info:
        codec.next_message()
    assert info.value.code == "frame_too_large"
    assert "1025" in str(info.value)
    assert "1024" in str(info.value)
    assert one_line(str(info.value))


def test_largest_possible_header_is_refused_at_once() -> None:
    error = refusal(b"\xff\xff\xff\xff")
    assert error.code == "frame_too_large"


def log_data_of_size(size: int) -> bytes:
    """The msgpack body of a `log_data` of exactly `size` bytes (300 <= size < 65536)."""
    empty = {"type": "log_data", "request_id": 1, "found": True, "text": "x" * 300}
    overhead = len(msgpack.packb(empty)) - 300
    body = msgpack.packb(
        {"type": "log_data", "request_id": 1, "found": True, "text": "x" * (size - overhead)}
    )
    assert len(body) == size
    return body


def test_frame_of_exactly_the_limit_is_accepted() -> None:
    body = log_data_of_size(1024)
    assert decode_one(frame(body), max_frame_bytes=1024) == LogData(
        request_id=1, found=True, text=msgpack.unpackb(body)["text"]
    )
    assert refusal(frame(body), max_frame_bytes=1023).code == "frame_too_large"


def test_zero_length_frame_is_refused() -> None:
    error = refusal(b"\x00\x00\x00\x00")
    assert error.code == "bad_frame"
    assert one_line(str(error))


def test_send_refuses_a_message_over_the_limit() -> None:
    codec = Codec(max_frame_bytes=1024)
    fits = decode_one(frame(log_data_of_size(1024)))
    assert len(codec.send(fits)) == HEADER_BYTES + 1024
    too_big = decode_one(frame(log_data_of_size(1025)))
    with pytest.raises(ProtocolError) as info:
        codec.send(too_big)
    assert info.value.code == "frame_too_large"
    assert "log_data" in str(info.value)
    assert one_line(str(info.value))


def test_a_broken_codec_can_still_send_its_error() -> None:
    """The supervisor answers a broken peer with `error` through the same codec."""
    codec = Codec()
    codec.receive_data(b"\x00\x00\x00\x00")
    with pytest.raises(ProtocolError):
        codec.next_message()
    assert codec.send(Error(code="bad_frame", message="x")) == encode(
        Error(code="bad_frame", message="x")
    )


def test_messages_before_a_bad_frame_are_delivered() -> None:
    codec = Codec()
    codec.receive_data(encode(Heartbeat()) + encode(Registered(name="a")) + b"\x00\x00\x00\x01\xc1")
    assert codec.next_message() == Heartbeat()
    assert codec.next_message() == Registered(name="a")
    with pytest.raises(ProtocolError) as info:
        codec.next_message()
    assert info.value.code == "bad_frame"  # 0xc1 is never valid msgpack


# --------------------------------------------------------------------------- refusals

# a valid welcome's map, for the cases that break one of its fields
WELCOME = {
    "type": "welcome",
    "version": 1,
    "supervisor": "s",
    "heartbeat_interval": 5.0,
    "max_frame_bytes": 65536,
}
BAD_BODIES: list[tuple[str, object, list[str]]] = [
    # (case, body, what the one-line message must name)
    ("unknown type", {"type": "launch_missiles"}, ["launch_missiles"]),
    ("no type", {"name": "w"}, ["type"]),
    ("type not a string", {"type": 7}, ["type", "7"]),
    ("not a map", ["hello", 1], ["map", "list"]),
    ("a bare string", "hello", ["map", "str"]),
    ("unknown field", {"type": "heartbeat", "colour": "red"}, ["colour", "heartbeat"]),
    (
        "missing field",
        {"type": "hello", "role": "worker", "token": "t"},
        ["version", "hello"],
    ),
    (
        "bool where an int belongs",
        {"type": "hello", "version": True, "role": "worker", "token": "t"},
        ["version", "hello", "integer"],
    ),
    (
        "float where an int belongs",
        {"type": "kill_frame", "job_id": 1.0, "frame": 1, "attempt": 1},
        ["job_id", "kill_frame", "integer"],
    ),
    (
        "bin where a str belongs",
        {"type": "hello", "version": 1, "role": "worker", "token": b"t"},
        ["token", "hello", "string"],
    ),
    (
        "unknown role",
        {"type": "hello", "version": 1, "role": "root", "token": "t"},
        ["role", "hello", "root"],
    ),
    (
        "empty worker name",
        {"type": "register", "name": "", "cluster": "/", "slots": 1},
        ["name", "register"],
    ),
    (
        "no slots",
        {"type": "register", "name": "w", "cluster": "/", "slots": 0},
        ["slots", "register"],
    ),
    (
        "short running entry",
        {"type": "register", "name": "w", "cluster": "/", "slots": 1, "running": [[1, 2]]},
        ["running", "register"],
    ),
    (
        "running entry not a list",
        {"type": "register", "name": "w", "cluster": "/", "slots": 1, "running": [1]},
        ["running", "register"],
    ),
    (
        "argv not strings",
        {"type": "submit", "request_id": 1, "argv": ["render", 5]},
        ["argv", "submit"],
    ),
    (
        "argv a string",
        {"type": "submit", "request_id": 1, "argv": "render -f 1"},
        ["argv", "submit"],
    ),
    (
        "env value not a string",
        {
            "type": "run_frame",
            "job_id": 1,
            "job_name": "j",
            "frame": 1,
            "attempt": 1,
            "argv": ["x"],
            "env": {"A": 1},
        },
        ["env", "run_frame"],
    ),
    (
        "found not a bool",
        {"type": "log_data", "request_id": 1, "found": 1},
        ["found", "log_data", "bool"],
    ),
    (
        "NaN heartbeat interval",
        {**WELCOME, "heartbeat_interval": float("nan")},
        ["heartbeat_interval", "welcome"],
    ),
    (
        "zero heartbeat interval",
        {**WELCOME, "heartbeat_interval": 0},
        ["heartbeat_interval", "welcome"],
    ),
    (
        "welcome without a frame limit",
        {k: v for k, v in WELCOME.items() if k != "max_frame_bytes"},
        ["max_frame_bytes", "welcome"],
    ),
    (
        "frame limit below 65536",
        {**WELCOME, "max_frame_bytes": 65535},
        ["max_frame_bytes", "welcome", "65536", "65535"],
    ),
    (
        "frame limit a float",
        {**WELCOME, "max_frame_bytes": 4194304.0},
        ["max_frame_bytes", "welcome"],
    ),
    (
        "frame limit a bool",
        {**WELCOME, "max_frame_bytes": True},
        ["max_frame_bytes", "welcome"],
    ),
    (
        "negative wait timeout",
        {"type": "wait", "request_id": 1, "timeout": -1},
        ["timeout", "wait"],
    ),
    (
        "dependency a float",
        {"type": "submit", "request_id": 1, "argv": ["x"], "depends_on": [1.5]},
        ["depends_on", "submit"],
    ),
    (
        "dependencies a string",
        {"type": "submit", "request_id": 1, "argv": ["x"], "depends_on": "3:done"},
        ["depends_on", "submit"],
    ),
    (
        "chunk zero",
        {"type": "submit", "request_id": 1, "argv": ["x"], "chunk": 0},
        ["chunk", "submit", ">= 1"],
    ),
    (
        "parent a string",
        {"type": "submit", "request_id": 1, "argv": ["x"], "parent": "3"},
        ["parent", "submit", "integer"],
    ),
    (
        "uninterruptible an int",
        {"type": "submit", "request_id": 1, "argv": ["x"], "uninterruptible": 1},
        ["uninterruptible", "submit", "bool"],
    ),
    (
        "unknown control action",
        {"type": "control", "request_id": 1, "action": "pause", "targets": ["3"]},
        ["action", "control", "suspend", "resume"],
    ),
    (
        "suspend_frame without an attempt",
        {"type": "suspend_frame", "job_id": 1, "frame": 1},
        ["attempt", "suspend_frame"],
    ),
    (
        "resume_frame with a float frame",
        {"type": "resume_frame", "job_id": 1, "frame": 1.0, "attempt": 1},
        ["frame", "resume_frame", "integer"],
    ),
    (
        "order limit zero",
        {"type": "order", "request_id": 1, "worker": "w", "limit": 0},
        ["limit", "order"],
    ),
    (
        "request id nil",
        {"type": "list_jobs", "request_id": None},
        ["request_id", "list_jobs"],
    ),
    (
        "register instance over 64 characters",
        {"type": "register", "name": "w", "cluster": "/", "slots": 1, "instance": "i" * 65},
        ["instance", "register", "64 characters"],
    ),
    (
        "register instance not a string",
        {"type": "register", "name": "w", "cluster": "/", "slots": 1, "instance": 7},
        ["instance", "register"],
    ),
    (
        "host load cpu above 1",
        {
            "type": "host_load",
            "cpu": 1.5,
            "memory_used": 1,
            "memory_total": 2,
            "load_average": [0.5, 0.5, 0.5],
        },
        ["cpu", "host_load", "1.5"],
    ),
    (
        "host load memory used above the total",
        {
            "type": "host_load",
            "cpu": 0.5,
            "memory_used": 3,
            "memory_total": 2,
            "load_average": [0.5, 0.5, 0.5],
        },
        ["memory_used", "host_load", "memory_total"],
    ),
    (
        "host load two load averages",
        {
            "type": "host_load",
            "cpu": 0.5,
            "memory_used": 1,
            "memory_total": 2,
            "load_average": [0.5, 0.5],
        },
        ["load_average", "host_load"],
    ),
    (
        "host load negative load average",
        {
            "type": "host_load",
            "cpu": 0.5,
            "memory_used": 1,
            "memory_total": 2,
            "load_average": [0.5, -1, 0.5],
        },
        ["load_average", "host_load"],
    ),
    (
        "long value is cut short in the message",
        {"type": "error", "code": "x" * 500, "message": 5},
        ["message", "error"],
    ),
]


@pytest.mark.parametrize(
    ("body", "named"),
    [pytest.param(body, named, id=case) for case, body, named in BAD_BODIES],
)
def test_bad_message_is_refused_naming_the_culprit(body: object, named: list[str]) -> None:
    error = refusal(packed(body))
    assert error.code == "bad_message"
    text = str(error)
    assert one_line(text), text
    assert len(text) < 200, text
    for word in named:
        assert word in text, (word, text)


def test_invalid_msgpack_is_bad_frame() -> None:
    for payload in [b"\xc1", b"\x81\xa4type", b"\x91\x01\x02", b"\xa3\xff\xfe\xfd"]:
        error = refusal(frame(payload))
        assert error.code == "bad_frame", payload
        assert one_line(str(error))


def test_unknown_field_names_every_unknown_field() -> None:
    error = refusal(packed({"type": "list_jobs", "request_id": 1, "zeta": 1, "alpha": 2}))
    assert "'alpha', 'zeta'" in str(error)


def test_error_message_escapes_newlines() -> None:
    """A peer cannot break the one-line rule (and log lines) with a newline."""
    for body in [
        {"type": "evil\ntype"},
        {"type": "heartbeat", "evil\nfield": 1},
        {"type": "hello", "version": 1, "role": "x\ny", "token": "t"},
    ]:
        assert one_line(str(refusal(packed(body)))), body


# ------------------------------------------------------------------- submit, control, signals


def submit_body(**fields: object) -> dict[str, object]:
    """A `submit` map as another peer sends it: `argv` and the given fields."""
    return {"type": "submit", "request_id": 1, "argv": ["x"], **fields}


def test_integer_dependencies_become_id_strings() -> None:
    """`depends_on` holds "ID" or "ID:MODE" strings; a msgpack int is taken as "ID", so a
    peer of the old shape still works. Modes are the scheduler's to check, not the codec's."""
    submit = Submit(request_id=1, argv=("x",), depends_on=[3, "4:frames", 2**64 - 1, "5"])
    assert submit.depends_on == ("3", "4:frames", "18446744073709551615", "5")
    decoded = decode_one(packed(submit_body(depends_on=[3, "4:done", -1])))
    assert isinstance(decoded, Submit)
    assert decoded.depends_on == ("3", "4:done", "-1")
    body = msgpack.unpackb(encode(decoded)[HEADER_BYTES:])
    assert body["depends_on"] == ["3", "4:done", "-1"]  # always strings on the wire
    assert Submit(request_id=1, argv=("x",), depends_on=(7,)) == Submit(
        request_id=1, argv=("x",), depends_on=("7",)
    )


def test_integer_dependencies_in_a_batch_become_id_strings() -> None:
    batch = decode_one(
        packed(
            {
                "type": "submit_batch",
                "request_id": 1,
                "jobs": [{"argv": ["a"]}, {"argv": ["b"], "depends_on": [1, "1:frames"]}],
            }
        )
    )
    assert isinstance(batch, SubmitBatch)
    assert batch.jobs[1].depends_on == ("1", "1:frames")


BAD_DEPENDENCIES = [
    pytest.param([1.5], id="float"),
    pytest.param([True], id="bool"),
    pytest.param([None], id="nil"),
    pytest.param([["3"]], id="list"),
    pytest.param([{"id": 3}], id="map"),
    pytest.param([2**64], id="int-too-large"),
    pytest.param(["3", 4.0], id="float-after-a-good-one"),
    pytest.param("3:done", id="a-string-not-a-list"),
    pytest.param(3, id="an-int-not-a-list"),
    pytest.param(None, id="nil-not-a-list"),
]


@pytest.mark.parametrize("depends_on", BAD_DEPENDENCIES)
def test_a_bad_dependency_is_refused_naming_the_field(depends_on: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Submit(request_id=1, argv=("x",), depends_on=depends_on)  # type: ignore[arg-type]
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'depends_on'" in text
    assert "'submit'" in text
    assert one_line(text), text
    with pytest.raises(ProtocolError, match="'depends_on'"):
        SubmitBatch(request_id=1, jobs=[{"argv": ["x"], "depends_on": depends_on}])


@pytest.mark.parametrize(
    "depends_on",
    [
        pytest.param([b"3"], id="bin"),
        pytest.param([1.5], id="float"),
        pytest.param([True], id="bool"),
        pytest.param([msgpack.ExtType(1, b"3")], id="ext"),
    ],
)
def test_a_bad_dependency_on_the_wire_is_bad_message(depends_on: object) -> None:
    for body in (
        submit_body(depends_on=depends_on),
        {
            "type": "submit_batch",
            "request_id": 1,
            "jobs": [{"argv": ["x"]}, {"argv": ["y"], "depends_on": depends_on}],
        },
    ):
        error = refusal(packed(body))
        assert error.code == "bad_message"
        assert "'depends_on'" in str(error)
        assert one_line(str(error))


@pytest.mark.parametrize("chunk", [0, -1, -(2**63), 2**64, True, 1.0, 2.5, None, "2"])
def test_a_chunk_below_1_or_not_an_int_is_refused(chunk: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Submit(request_id=1, argv=("x",), chunk=chunk)  # type: ignore[arg-type]
    assert "'chunk'" in str(info.value)
    assert "'submit'" in str(info.value)
    if chunk == 2**64:
        return  # msgpack cannot carry it: no peer can send it
    error = refusal(packed(submit_body(chunk=chunk)))
    assert error.code == "bad_message"
    assert "'chunk'" in str(error)


def test_chunk_parent_and_uninterruptible_defaults_and_values() -> None:
    plain = decode_one(packed(submit_body()))
    assert isinstance(plain, Submit)
    assert (plain.chunk, plain.parent, plain.uninterruptible) == (1, None, False)
    sub = decode_one(packed(submit_body(chunk=10, parent=3, uninterruptible=True)))
    assert isinstance(sub, Submit)
    assert (sub.chunk, sub.parent, sub.uninterruptible) == (10, 3, True)
    assert decode_one(packed(submit_body(chunk=2**64 - 1, parent=None))) == Submit(
        request_id=1, argv=("x",), chunk=2**64 - 1
    )


@pytest.mark.parametrize("action", ["kill", "block", "unblock", "retry", "suspend", "resume"])
def test_every_control_action_is_accepted(action: str) -> None:
    assert action in CONTROL_ACTIONS
    control = ControlRequest(request_id=1, action=action, targets=("3", "4:1-10x2"))
    assert decode_one(Codec().send(control)) == control
    body = {"type": "control", "request_id": 2, "action": action, "targets": ["3"]}
    assert decode_one(packed(body)) == ControlRequest(request_id=2, action=action, targets=("3",))


@pytest.mark.parametrize(
    "action", ["pause", "stop", "continue", "Suspend", "RESUME", " resume", "", None, 1, ["kill"]]
)
def test_an_unknown_control_action_is_refused(action: object) -> None:
    with pytest.raises(ProtocolError) as info:
        ControlRequest(request_id=1, action=action, targets=("3",))  # type: ignore[arg-type]
    text = str(info.value)
    assert "'action'" in text
    assert "'control'" in text
    assert "suspend" in text
    assert "resume" in text  # the message lists the actions there are
    assert one_line(text), text
    error = refusal(packed({"type": "control", "request_id": 1, "action": action, "targets": []}))
    assert error.code == "bad_message"
    assert "'action'" in str(error)


@pytest.mark.parametrize("cls", [SuspendFrame, ResumeFrame])
def test_suspend_and_resume_frame_round_trip(cls: type[SuspendFrame | ResumeFrame]) -> None:
    for job_id, number, attempt in [(3, 12, 1), (0, 0, 0), (2**64 - 1, -(2**63), 2**63)]:
        message = cls(job_id=job_id, frame=number, attempt=attempt)
        wire = Codec().send(message)
        assert msgpack.unpackb(wire[HEADER_BYTES:]) == {
            "type": cls.TYPE,
            "job_id": job_id,
            "frame": number,
            "attempt": attempt,
        }
        decoded = decode_one(wire)
        assert type(decoded) is cls
        assert decoded == message
    assert (SuspendFrame.TYPE, ResumeFrame.TYPE) == ("suspend_frame", "resume_frame")
    # the same fields do not make the two the same message
    assert SuspendFrame(job_id=1, frame=1, attempt=1) != ResumeFrame(job_id=1, frame=1, attempt=1)
    suspend, resume = (
        decode_one(packed({"type": kind, "attempt": 2, "frame": 5, "job_id": 9}))
        for kind in ("suspend_frame", "resume_frame")
    )
    assert suspend == SuspendFrame(job_id=9, frame=5, attempt=2)
    assert resume == ResumeFrame(job_id=9, frame=5, attempt=2)


@pytest.mark.parametrize("kind", ["suspend_frame", "resume_frame"])
def test_suspend_and_resume_frame_refuse_extra_fields(kind: str) -> None:
    body = {"type": kind, "job_id": 1, "frame": 1, "attempt": 1, "signal": 19}
    error = refusal(packed(body))
    assert error.code == "bad_message"
    assert "'signal'" in str(error)


# ------------------------------------------- worker offers, job needs, locks, resources


def register_body(**fields: object) -> dict[str, object]:
    """A `register` map as another worker sends it: the required fields and the given."""
    return {"type": "register", "name": "node07", "cluster": "/show1", "slots": 4, **fields}


HOST_FACTS = {
    "os": "linux",
    "arch": "x86_64",
    "cpus": 16,
    "memory": 68719476736,
    "hostname": "node07",
    "load": 0.25,
    "gpu": True,
    "gpu_model": ["a100", "h100"],
    "empty": [],
}


def test_register_with_types_properties_and_resources_round_trips() -> None:
    register = Register(
        name="node07",
        cluster="/show1",
        slots=4,
        types=["nuke", "blender"],
        properties=HOST_FACTS,
        resources={"gpu": 2, "memory": 68719476736, "scratch": 1.5, "none": 0},
    )
    assert register.types == ("nuke", "blender")  # a list becomes a tuple, as argv does
    wire = Codec().send(register)
    decoded = decode_one(wire)
    assert decoded == register
    assert encode(decoded) == wire  # no int became a float, no bool an int
    body = msgpack.unpackb(wire[HEADER_BYTES:])
    assert body["types"] == ["nuke", "blender"]
    assert body["properties"] == HOST_FACTS
    assert body["resources"] == {"gpu": 2, "memory": 68719476736, "scratch": 1.5, "none": 0}
    assert list(body) == [
        "type",
        "name",
        "cluster",
        "restrictions",
        "slots",
        "types",
        "properties",
        "resources",
        "running",
        "instance",
    ]
    # and as another implementation sends it, without the fields it leaves out
    peer = decode_one(packed(register_body(types=["nuke"], properties={"os": "linux"})))
    assert isinstance(peer, Register)
    assert (peer.types, peer.properties, peer.resources) == (("nuke",), {"os": "linux"}, {})


@pytest.mark.parametrize(
    "value",
    [
        pytest.param({"vendor": "nvidia"}, id="map"),
        pytest.param(None, id="nil"),
        pytest.param([1, 2], id="list-of-ints"),
        pytest.param([["a"]], id="list-of-lists"),
        pytest.param(["a", None], id="nil-in-a-list"),
        pytest.param(["x"] * 257, id="list-of-257"),
        pytest.param(b"linux", id="bin"),
        pytest.param(msgpack.ExtType(1, b"x"), id="ext"),
    ],
)
def test_a_property_that_is_not_a_fact_is_refused_naming_the_field(value: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Register(name="w", cluster="/", slots=1, properties={"gpu": value})
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'properties'" in text
    assert "'register'" in text
    assert one_line(text), text
    error = refusal(packed(register_body(properties={"os": "linux", "gpu": value})))
    assert error.code == "bad_message"
    assert "'properties'" in str(error)
    assert one_line(str(error))


@pytest.mark.parametrize(
    "properties",
    [
        pytest.param(["os", "linux"], id="a-list"),
        pytest.param("os=linux", id="a-string"),
        pytest.param({f"p{i}": i for i in range(257)}, id="257-entries"),
    ],
)
def test_properties_that_are_not_a_map_of_facts_are_refused(properties: object) -> None:
    error = refusal(packed(register_body(properties=properties)))
    assert error.code == "bad_message"
    assert "'properties'" in str(error)
    assert len(str(error)) < 200


def test_256_properties_with_256_strings_each_are_accepted() -> None:
    properties = {f"p{i}": ["x"] * 256 for i in range(256)}
    register = decode_one(packed(register_body(properties=properties)))
    assert isinstance(register, Register)
    assert register.properties == properties


@pytest.mark.parametrize(
    "amount",
    [
        pytest.param(-1, id="negative-int"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(-(2**63), id="most-negative"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(True, id="bool"),
        pytest.param("2", id="string"),
        pytest.param(None, id="nil"),
        pytest.param([2], id="list"),
    ],
)
def test_a_resource_that_is_not_a_number_at_least_0_is_refused(amount: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Register(name="w", cluster="/", slots=1, resources={"gpu": amount})
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'resources'" in text
    assert "'register'" in text
    assert ">= 0" in text
    assert one_line(text), text
    error = refusal(packed(register_body(resources={"memory": 8, "gpu": amount})))
    assert error.code == "bad_message"
    assert "'resources'" in str(error)


def test_the_codec_leaves_resource_names_to_the_supervisor() -> None:
    """`slots` and dotted names are refused at registration (`bad_job`), not by the
    codec: the message is well formed."""
    register = Register(name="w", cluster="/", slots=1, resources={"slots": 2, "license.x": 1})
    assert decode_one(Codec().send(register)) == register


@pytest.mark.parametrize("types", [["nuke", 1], "nuke", [None], [b"nuke"]])
def test_types_that_are_not_strings_are_refused(types: object) -> None:
    error = refusal(packed(register_body(types=types)))
    assert error.code == "bad_message"
    assert "'types'" in str(error)


def test_submit_with_job_type_requires_and_reserve_round_trips() -> None:
    submit = Submit(
        request_id=4,
        argv=("nuke", "-x", "big.nk", "{frame}"),
        job_type="nuke",
        requires="host.os == linux and host.memory >= 32G",
        reserve="slots=2+,memory=8G,gpu=1,license.nuke=1",
    )
    wire = Codec().send(submit)
    assert decode_one(wire) == submit
    body = msgpack.unpackb(wire[HEADER_BYTES:])
    assert body["type"] == "submit"  # the message's own key...
    assert body["job_type"] == "nuke"  # ...so the job's type is `job_type`
    assert body["requires"] == "host.os == linux and host.memory >= 32G"
    assert body["reserve"] == "slots=2+,memory=8G,gpu=1,license.nuke=1"
    peer = decode_one(packed(submit_body(job_type="blender", reserve="slots=4*")))
    assert isinstance(peer, Submit)
    assert (peer.job_type, peer.requires, peer.reserve) == ("blender", "", "slots=4*")
    batch = SubmitBatch(request_id=5, jobs=[{"argv": ["a"], "job_type": "nuke"}, {"argv": ["b"]}])
    decoded = decode_one(Codec().send(batch))
    assert decoded == batch
    assert isinstance(decoded, SubmitBatch)
    assert [job.job_type for job in decoded.jobs] == ["nuke", None]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("job_type", 1),
        ("job_type", ["nuke"]),
        ("requires", None),
        ("requires", 1),
        ("reserve", {"slots": 2}),
        ("reserve", None),
    ],
)
def test_submit_refuses_a_job_type_requirement_or_reservation_of_the_wrong_type(
    field: str, value: object
) -> None:
    error = refusal(packed(submit_body(**{field: value})))
    assert error.code == "bad_message"
    assert f"'{field}'" in str(error)
    assert "'submit'" in str(error)


def test_a_job_type_sent_as_a_second_type_key_is_refused() -> None:
    """`type` names the message, which is why the job's type is `job_type`: a peer that
    writes it as a second `type` key (msgpack maps may repeat a key; the last one wins)
    turns the map into a message of an unknown type."""
    body = (
        b"\x84"
        + msgpack.packb("type")
        + msgpack.packb("submit")
        + msgpack.packb("request_id")
        + b"\x01"
        + msgpack.packb("argv")
        + msgpack.packb(["x"])
        + msgpack.packb("type")
        + msgpack.packb("nuke")
    )
    error = refusal(frame(body))
    assert error.code == "bad_message"
    assert "'nuke'" in str(error)
    error = refusal(packed(submit_body(job_type="nuke", kind="nuke")))
    assert error.code == "bad_message"
    assert "'kind'" in str(error)


@pytest.mark.parametrize("mode", ["drain", "purge"])
def test_lock_modes_round_trip(mode: str) -> None:
    lock = Lock(request_id=1, worker="node07", mode=mode)
    assert decode_one(Codec().send(lock)) == lock
    assert decode_one(packed({"type": "lock", "request_id": 1, "worker": "node07"})) == Lock(
        request_id=1, worker="node07", mode="drain"
    )
    unlock = Unlock(request_id=2, worker="node07")
    assert decode_one(Codec().send(unlock)) == unlock


@pytest.mark.parametrize("mode", ["maybe", "", "Drain", "PURGE", " drain", None, 1, ["purge"]])
def test_an_unknown_lock_mode_is_refused(mode: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Lock(request_id=1, worker="node07", mode=mode)  # type: ignore[arg-type]
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'mode'" in text
    assert "'lock'" in text
    assert "drain" in text
    assert "purge" in text  # the message says what there is
    assert one_line(text), text
    error = refusal(packed({"type": "lock", "request_id": 1, "worker": "w", "mode": mode}))
    assert error.code == "bad_message"
    assert "'mode'" in str(error)


def test_explain_and_list_resources_round_trip() -> None:
    for message in (
        Explain(request_id=1, job_id=4),
        Explain(request_id=2, job_id=4, worker="node07"),
        ListResources(request_id=3),
        SetResource(request_id=4, name="license.nuke", total=12),
        SetResource(request_id=5, name="license.nuke", total=0.5),
        SetResource(request_id=6, name="license.nuke", total=0),
    ):
        assert decode_one(Codec().send(message)) == message
    assert decode_one(packed({"type": "explain", "request_id": 1, "job_id": 4})) == Explain(
        request_id=1, job_id=4, worker=None
    )


@pytest.mark.parametrize(
    "total",
    [
        pytest.param(-1, id="negative-int"),
        pytest.param(-0.5, id="negative-float"),
        pytest.param(float("nan"), id="nan"),
        pytest.param(float("inf"), id="infinite"),
        pytest.param(True, id="bool"),
        pytest.param("12", id="string"),
        pytest.param(None, id="nil"),
    ],
)
def test_set_resource_refuses_a_total_that_is_not_a_number_at_least_0(total: object) -> None:
    with pytest.raises(ProtocolError) as info:
        SetResource(request_id=1, name="license.nuke", total=total)  # type: ignore[arg-type]
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'total'" in text
    assert "'set_resource'" in text
    assert one_line(text), text
    body = {"type": "set_resource", "request_id": 1, "name": "license.nuke", "total": total}
    error = refusal(packed(body))
    assert error.code == "bad_message"
    assert "'total'" in str(error)


def test_reload_round_trips() -> None:
    message = Reload(request_id=7)
    assert decode_one(Codec().send(message)) == message
    assert decode_one(packed({"type": "reload", "request_id": 7})) == message
    error = refusal(packed({"type": "reload", "request_id": 7, "path": "farm.yaml"}))
    assert error.code == "bad_message"
    reply = Reply(request_id=7, result={"reconfigured": ["node07"], "restart_needed": []})
    assert decode_one(Codec().send(reply)) == reply


def test_set_resource_needs_a_total() -> None:
    error = refusal(packed({"type": "set_resource", "request_id": 1, "name": "license.nuke"}))
    assert error.code == "bad_message"
    assert "total" in str(error)


@pytest.mark.parametrize(
    "build",
    [
        pytest.param(
            lambda: Register(name="w", cluster="/", slots=1, properties={"n": 2**64}),
            id="property",
        ),
        pytest.param(
            lambda: Register(name="w", cluster="/", slots=1, resources={"gpu": 2**64}),
            id="resource",
        ),
        pytest.param(lambda: SetResource(request_id=1, name="x", total=2**64), id="total"),
    ],
)
def test_a_number_msgpack_cannot_carry_is_refused_when_the_message_is_built(
    build: Any,
) -> None:
    with pytest.raises(ProtocolError):
        build()


# --------------------------------------------------------------------------- regressions

# Each test below was an xfail(strict=True) for a reported bug; it now pins the fix.


def nested(depth: int) -> bytes:
    """msgpack for `depth` arrays, one inside the other, around the int 1."""
    return b"\x91" * depth + b"\x01"


def nested_list(depth: int, leaf: object = 1) -> object:
    """`depth` lists, one inside the other, around `leaf` (built without recursion)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def nested_map(depth: int, leaf: object = 1) -> object:
    """`depth` maps {"k": ...}, one inside the other, around `leaf`."""
    value = leaf
    for _ in range(depth):
        value = {"k": value}
    return value


def hello_with_token(token: bytes) -> bytes:
    """The body of a `hello` whose `token` is the msgpack `token` (written as is)."""
    return (
        b"\x84"
        + msgpack.packb("type")
        + msgpack.packb("hello")
        + msgpack.packb("version")
        + b"\x01"
        + msgpack.packb("role")
        + msgpack.packb("admin")
        + msgpack.packb("token")
        + token
    )


@pytest.mark.parametrize("depth", [100, 1000, 1023])  # 1 + 1023 levels: msgpack's most
def test_deeply_nested_wrong_field_is_a_protocol_error(depth: int) -> None:
    """Was: protocol._fail's repr() of a wrong-typed field nested ~1000 deep raised
    RecursionError out of Codec.next_message, which crashed the supervisor before any
    authentication. The culprit is now shown through a bounded reprlib repr."""
    body = hello_with_token(nested(depth))
    assert len(body) < 1100  # about a kilobyte
    error = refusal(frame(body))
    assert error.code == "bad_message"
    text = str(error)
    assert "'token'" in text
    assert "'hello'" in text
    assert one_line(text), text
    assert len(text) < 200, text


def test_deeply_nested_map_in_a_checked_field_is_a_protocol_error() -> None:
    env = b"\x81\xa1k" * 1000 + b"\x01"  # {"k": {"k": ... 1}}, 1000 maps deep
    body = msgpack.packb(
        {"type": "run_frame", "job_id": 1, "job_name": "j", "frame": 1, "attempt": 1, "argv": []}
    )
    body = b"\x87" + body[1:] + msgpack.packb("env") + env  # the map grows a 7th entry
    error = refusal(frame(body))
    assert error.code == "bad_message"
    assert "'env'" in str(error)
    assert len(str(error)) < 200


@pytest.mark.parametrize(
    "value",
    [
        pytest.param(b"x" * 5000, id="long-bin"),
        pytest.param(["x" * 40000], id="long-str-in-a-list"),
        pytest.param(list(range(10000)), id="long-list"),
        pytest.param({str(i): i for i in range(10000)}, id="long-map"),
    ],
)
def test_a_long_culprit_is_cut_short_in_the_message(value: object) -> None:
    error = refusal(packed({"type": "error", "code": value, "message": "m"}))
    text = str(error)
    assert "'code'" in text
    assert one_line(text), text
    assert len(text) < 200, text


@pytest.mark.parametrize(
    "value",
    [
        pytest.param([["x" * 500] * 6] * 6, id="lists-of-long-strings"),
        pytest.param([[["x" * 500] * 6] * 6] * 6, id="three-levels"),
        pytest.param({str(i): {str(j): "y" * 100 for j in range(5)} for i in range(5)}, id="maps"),
    ],
)
def test_a_long_nested_culprit_is_cut_short_in_the_message(value: object) -> None:
    error = refusal(packed({"type": "error", "code": value, "message": "m"}))
    assert "'code'" in str(error)
    assert len(str(error)) < 200, len(str(error))


def test_a_recursion_error_while_decoding_is_bad_message(monkeypatch: pytest.MonkeyPatch) -> None:
    """decode_body turns a RecursionError from building a message into `bad_message`
    rather than letting it out of the codec (no field check of farmd's own messages can
    recurse that deep any more; this pins the safety net with a stand-in message)."""

    def too_deep(instance: object, attribute: object, value: object) -> None:
        raise RecursionError("maximum recursion depth exceeded")

    @attrs.frozen(kw_only=True)
    class Deep(Message):
        value: Any = attrs.field(validator=too_deep)

    Deep.TYPE = "deep"
    monkeypatch.setitem(MESSAGES, "deep", Deep)
    codec = Codec()
    codec.receive_data(packed({"type": "deep", "value": 1}) + encode(Heartbeat()))
    with pytest.raises(ProtocolError) as info:
        codec.next_message()
    assert info.value.code == "bad_message"
    assert "'deep'" in str(info.value)
    assert one_line(str(info.value))
    with pytest.raises(ProtocolError) as again:  # and the codec stays broken
        codec.next_message()
    assert again.value is info.value


def test_nesting_deeper_than_msgpack_allows_is_bad_frame() -> None:
    body = b"\x82" + msgpack.packb("type") + msgpack.packb("reply") + b"\xa6result" + nested(5000)
    assert refusal(frame(body)).code == "bad_frame"


@pytest.mark.parametrize(
    "role",
    [
        pytest.param(["worker"], id="list"),
        pytest.param({"a": 1}, id="map"),
        pytest.param(1, id="int"),
        pytest.param(None, id="nil"),
        pytest.param(True, id="bool"),
        pytest.param(b"worker", id="bin"),
    ],
)
def test_a_role_that_is_not_a_string_names_the_field(role: object) -> None:
    """Was: Hello's role check did `v in {...}`, which raised TypeError for a list or
    map; the message ("unhashable type: 'list'") did not name the field."""
    error = refusal(packed({"type": "hello", "version": 1, "role": role, "token": "t"}))
    assert error.code == "bad_message"
    text = str(error)
    assert "'role'" in text
    assert "'hello'" in text
    assert one_line(text), text
    with pytest.raises(ProtocolError, match="'role'"):
        Hello(version=1, role=role, token="t")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- reply.result

# Values that may not be a reply's result, or any part of one.
NOT_PLAIN = [
    pytest.param({1, 2}, id="set"),
    pytest.param(frozenset({"a"}), id="frozenset"),
    pytest.param(b"raw", id="bytes"),
    pytest.param(bytearray(b"raw"), id="bytearray"),
    pytest.param({1: "a"}, id="int-key"),
    pytest.param({None: 1}, id="nil-key"),
    pytest.param({True: 1}, id="bool-key"),
    pytest.param({b"k": 1}, id="bytes-key"),
    pytest.param({("a",): 1}, id="tuple-key"),
    pytest.param(2**64, id="int-2**64"),
    pytest.param(-(2**63) - 1, id="int-below-int64"),
    pytest.param(msgpack.ExtType(1, b"x"), id="ext"),
    pytest.param(msgpack.Timestamp(0, 0), id="timestamp"),
    pytest.param(object(), id="object"),
    pytest.param(nested_list(33), id="33-lists-deep"),
    pytest.param(nested_map(33), id="33-maps-deep"),
    pytest.param(nested_list(100_000), id="100000-deep"),
    pytest.param({"ok": [1, 2, {"deep": [b"x"]}]}, id="bytes-inside"),
    pytest.param([1, {2: 3}], id="int-key-inside"),
    pytest.param({"a": {1, 2}}, id="set-inside"),
    pytest.param([0, 2**64], id="big-int-inside"),
]


@PER_TYPE_SETTINGS
@given(value=plain_data)
def test_plain_data_is_plain(value: object) -> None:
    assert is_plain(value)
    assert Reply(request_id=1, result=value).result == value


@pytest.mark.parametrize(
    "value",
    [
        None,
        True,
        False,
        0,
        -(2**63),
        2**64 - 1,
        0.5,
        float("inf"),
        float("nan"),  # a float: plain, though never equal to itself
        "",
        "ñ\U0001f600",
        [],
        (),  # sent as an array; comes back as a list
        (1, "a", None),
        {},
        {"": None, "k": [1, {"x": 2.5}]},
        nested_list(32),
        nested_map(32),
        nested_list(31, leaf=[]),  # 32 arrays, the innermost empty
    ],
)
def test_is_plain_accepts_msgpack_data_32_levels_deep(value: object) -> None:
    assert is_plain(value)
    Reply(request_id=1, result=value)


def test_is_plain_stops_at_33_levels() -> None:
    assert is_plain(nested_list(32))
    assert not is_plain(nested_list(33))
    assert not is_plain(nested_list(32, leaf=[]))  # an empty array counts as a level
    assert not is_plain(nested_list(16, leaf=nested_map(17)))


@pytest.mark.parametrize("result", NOT_PLAIN)
def test_reply_refuses_a_result_that_cannot_cross_the_wire(result: object) -> None:
    """Was: Reply.result was not validated, so Codec.send passed results a peer cannot
    read back (non-str keys), that never cross the wire (bin, ext), and raised
    TypeError/OverflowError for what msgpack cannot pack. Now the Reply itself is refused
    at construction, naming the field."""
    assert not is_plain(result)
    with pytest.raises(ProtocolError) as info:
        Reply(request_id=1, result=result)
    text = str(info.value)
    assert info.value.code == "bad_message"
    assert "'result'" in text
    assert "'reply'" in text
    assert one_line(text), text
    assert len(text) < 300, text


@pytest.mark.parametrize(
    "result",
    [
        pytest.param(b"raw", id="bin"),
        pytest.param(msgpack.ExtType(1, b"x"), id="ext"),
        pytest.param(msgpack.Timestamp(1, 0), id="timestamp"),
        pytest.param({"log": [1, b"raw"]}, id="bin-inside"),
        pytest.param(nested_list(33), id="33-deep"),
    ],
)
def test_receive_refuses_a_reply_that_is_not_plain(result: object) -> None:
    """Was: a received reply's result was not checked: bin arrived as bytes, ext as
    msgpack.ExtType. The receiving codec now refuses it like any bad field."""
    error = refusal(packed({"type": "reply", "request_id": 1, "result": result}))
    assert error.code == "bad_message"
    assert "'result'" in str(error)
    assert one_line(str(error))


def test_a_reply_nested_too_deep_on_the_wire_is_bad_message() -> None:
    body = b"\x83" + msgpack.packb("type") + msgpack.packb("reply")
    body += msgpack.packb("request_id") + b"\x01" + b"\xa6result" + nested(1000)
    error = refusal(frame(body))
    assert error.code == "bad_message"
    assert "'result'" in str(error)
    assert len(str(error)) < 300


def test_a_reply_with_a_non_string_key_is_refused_on_both_sides() -> None:
    """Sending: the Reply cannot be built. Receiving one from another implementation:
    msgpack's own check refuses the key (`bad_frame`)."""
    with pytest.raises(ProtocolError, match="'result'"):
        Reply(request_id=1, result={1: "a"})
    error = refusal(packed({"type": "reply", "request_id": 1, "result": {1: "a"}}))
    assert error.code == "bad_frame"


def test_a_reply_32_levels_deep_round_trips() -> None:
    for value in [nested_list(32), nested_map(32)]:
        reply = Reply(request_id=1, result=value)
        assert decode_one(Codec().send(reply)) == reply


# --------------------------------------------------------------------------- registered

EFFECTIVE_SETTINGS = {
    "cluster": "/show1/lighting",
    "restrictions": "/show1/*",
    "slots": 4,
    "types": ["blender", "nuke"],
    "properties": {"os": "linux", "cpus": 16, "gpu": True, "tags": ["fast"], "load": 0.5},
    "resources": {"gpu": 2, "memory": 68719476736},
}


def test_registered_carries_the_effective_settings() -> None:
    registered = Registered(name="node07", settings=EFFECTIVE_SETTINGS)
    wire = Codec().send(registered)
    decoded = decode_one(wire)
    assert decoded == registered
    assert isinstance(decoded, Registered)
    assert decoded.settings == EFFECTIVE_SETTINGS
    assert encode(decoded) == wire
    assert msgpack.unpackb(wire[4:])["settings"]["slots"] == 4


def test_registered_without_settings_is_an_empty_map() -> None:
    """What a supervisor from before `settings` sends still decodes."""
    decoded = decode_one(packed({"type": "registered", "name": "node07"}))
    assert decoded == Registered(name="node07", settings={})


@pytest.mark.parametrize(
    "settings",
    [
        pytest.param("not a map", id="str"),
        pytest.param(["cluster", "/"], id="array"),
        pytest.param({1: "a"}, id="int-key"),
        pytest.param({"blob": b"raw"}, id="bin"),
        pytest.param(nested_map(33), id="33-deep"),
    ],
)
def test_registered_refuses_settings_that_are_not_a_map_of_plain_data(settings: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Registered(name="node07", settings=settings)  # type: ignore[arg-type]
    assert info.value.code == "bad_message"
    assert "'settings'" in str(info.value)
    assert "'registered'" in str(info.value)


# --------------------------------------------------------------------------- welcome


def test_the_frame_limit_from_welcome_applies_to_later_frames() -> None:
    """farmd's agent and client set their codec's limit to `welcome.max_frame_bytes`
    once the welcome is read: later frames, in and out, are held to it."""
    welcome = Welcome(version=1, supervisor="s", heartbeat_interval=5.0, max_frame_bytes=65536)
    codec = Codec()
    codec.receive_data(encode(welcome) + frame(log_data_of_size(65537)))
    received = codec.next_message()
    assert received == welcome
    assert isinstance(received, Welcome)
    codec.max_frame_bytes = received.max_frame_bytes
    with pytest.raises(ProtocolError) as info:
        codec.next_message()
    assert info.value.code == "frame_too_large"
    sender = Codec()
    sender.max_frame_bytes = received.max_frame_bytes
    too_big = decode_one(frame(log_data_of_size(65537)))
    with pytest.raises(ProtocolError) as sent:
        sender.send(too_big)
    assert sent.value.code == "frame_too_large"
    assert len(sender.send(decode_one(frame(log_data_of_size(65536))))) == HEADER_BYTES + 65536


@pytest.mark.parametrize("limit", [65535, 1024, 0, -1, 2**64, 65536.0, True, None, "4194304"])
def test_welcome_refuses_a_frame_limit_below_64k_or_not_an_int(limit: object) -> None:
    with pytest.raises(ProtocolError) as info:
        Welcome(version=1, supervisor="s", heartbeat_interval=5.0, max_frame_bytes=limit)  # type: ignore[arg-type]
    assert "'max_frame_bytes'" in str(info.value)
    assert "'welcome'" in str(info.value)


# --------------------------------------------------------------------------- the document


def documented_job_token(farm_token: str, job_id: int) -> str:
    """A frame's job token as docs/protocol.md (6.3) defines it."""
    mac = hmac.new(farm_token.encode(), f"farmd-job:{job_id}".encode(), hashlib.sha256)
    return f"job.{job_id}.{mac.hexdigest()}"


# The worker session of docs/protocol.md's worked example, frame by frame.
EXAMPLE: list[tuple[str, Message]] = [
    ("W→S", Hello(version=PROTOCOL_VERSION, role="worker", token="s3cret", name="node07")),
    (
        "S→W",
        Welcome(
            version=PROTOCOL_VERSION,
            supervisor="farmd 0.1.0",
            heartbeat_interval=5.0,
            max_frame_bytes=DEFAULT_MAX_FRAME_BYTES,
        ),
    ),
    ("W→S", Register(name="node07", cluster="/show1", slots=1, instance="5d1e0c37a9f24b86")),
    (
        "S→W",
        Registered(
            name="node07",
            settings={
                "cluster": "/show1",
                "restrictions": "",
                "slots": 1,
                "types": [],
                "properties": {},
                "resources": {},
            },
        ),
    ),
    (
        "S→W",
        RunFrame(
            job_id=3,
            job_name="comp",
            frame=12,
            attempt=1,
            argv=("nuke", "-x", "comp.nk", "12"),
            env={
                "FARMD_JOB_ID": "3",
                "FARMD_JOB_NAME": "comp",
                "FARMD_FRAME": "12",
                "FARMD_FRAME_START": "12",
                "FARMD_FRAME_END": "12",
                "FARMD_FRAMES": "12",
                "FARMD_ATTEMPT": "1",
                "FARMD_SLOTS": "1",
                "FARMD_WORKER": "node07",
                "FARMD_CLUSTER": "/show1",
                "FARMD_WORKER_CLUSTER": "/show1",
                "FARMD_TOKEN": documented_job_token("s3cret", 3),
            },
        ),
    ),
    ("W→S", FrameFinished(job_id=3, frame=12, attempt=1, exit_code=0)),
    ("S→W", ResultAck(job_id=3, frame=12, attempt=1)),
]


def hex_dump(data: bytes) -> str:
    """Sixteen bytes a line, as the doc prints them."""
    return "\n".join(data[i : i + 16].hex(" ") for i in range(0, len(data), 16))


def doc_text() -> str:
    if not DOCS.exists():
        pytest.fail(f"{DOCS} is missing")
    return DOCS.read_text(encoding="utf-8")


def test_doc_example_frames_are_what_the_codec_sends() -> None:
    doc = doc_text()
    for direction, message in EXAMPLE:
        dump = hex_dump(encode(message))
        assert dump in doc, f"{direction} {message.TYPE}: expected in the doc:\n{dump}"


def test_doc_documents_every_message_and_field() -> None:
    """Each message has a `### `type`` section whose field table lists each field."""
    doc = doc_text()
    sections = re.split(r"^### ", doc, flags=re.MULTILINE)
    by_type = {}
    for section in sections[1:]:
        match = re.match(r"`([a-z_]+)`", section)
        if match:
            by_type[match.group(1)] = section
    assert set(MESSAGES) <= set(by_type), sorted(set(MESSAGES) - set(by_type))
    for kind, cls in MESSAGES.items():
        for name in field_names(cls):
            assert f"| `{name}` |" in by_type[kind], (kind, name)


def test_doc_lists_every_message_in_the_reference_table() -> None:
    """Section 7's table of message types names each one."""
    doc = doc_text()
    table = doc[doc.index("| type | direction | when |") :]
    table = table[: table.index("\n\n")]
    for kind in MESSAGES:
        assert f"`{kind}`" in table, kind


def test_doc_control_table_has_a_column_per_action() -> None:
    doc = doc_text()
    section = re.split(r"^### ", doc, flags=re.MULTILINE)
    [control] = [s for s in section if s.startswith("`control`")]
    header = next(line for line in control.splitlines() if line.startswith("| frame state |"))
    assert [c.strip(" `") for c in header.strip("|").split("|")][1:] == list(CONTROL_ACTIONS)


def test_doc_job_token_is_the_supervisors() -> None:
    """The job token the doc defines (and its worked example carries) is the one the
    supervisor puts in FARMD_TOKEN and accepts in `hello`."""
    from farmd.supervisor import job_token

    assert job_token("s3cret", 3) == documented_job_token("s3cret", 3)
    assert job_token("x" * 43, 12345) == documented_job_token("x" * 43, 12345)
    assert documented_job_token("s3cret", 3) in doc_text()


def test_a_batch_nests_submits_and_refuses_what_a_submit_would() -> None:
    batch = SubmitBatch(request_id=1, jobs=[{"argv": ["true"], "frames": "1-3"}])
    assert batch.jobs == (Submit(request_id=0, argv=("true",), frames="1-3"),)
    assert decode_one(Codec().send(batch)) == batch
    for jobs in (
        [],
        [{"argv": ["x"], "request_id": 1}],
        [{"argv": ["x"], "priority": "high"}],
        [{"argv": ["x"], "colour": "red"}],
        "not a list",
    ):
        with pytest.raises((ProtocolError, TypeError)):
            SubmitBatch(request_id=1, jobs=jobs)  # type: ignore[arg-type]
