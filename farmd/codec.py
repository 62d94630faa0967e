"""The sans-IO codec of the farmd wire protocol: bytes in, messages out (see
docs/protocol.md, section 2, and `farmd.protocol` for the messages).

Theory of operation
-------------------
A frame is a 4-byte big-endian length and that many bytes of msgpack holding one map,
whose `"type"` names the message class (`protocol.MESSAGES`). `Codec` never touches a
socket (h11's shape): feed it bytes with `receive_data`, pull messages with
`next_message` until it returns `NEED_DATA`; `send` returns the bytes of a message.
Anything malformed, oversized or of an unknown type raises `ProtocolError` with a wire
code, and the codec stays broken afterwards: a peer that broke the protocol once is not
trusted to frame the next message.
"""

from __future__ import annotations

from typing import Any, Final

import attrs
import msgpack

from farmd.errors import FarmdError, ProtocolError
from farmd.protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    HEADER_BYTES,
    MESSAGES,
    FetchLog,
    Heartbeat,
    LogData,
    Message,
    RunFrame,
    Submit,
    SubmitBatch,
)


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


# Room a reply keeps for what is not a listed entry: its own keys, a page's `next`,
# `counts` and `total`, a job detail's keys around its `frame_list` (a few hundred bytes).
REPLY_SLACK: Final = 4096


def encoded_size(value: Any) -> int:
    """The bytes `value` takes in a message body, written as `encode` writes it."""
    return len(msgpack.packb(value, use_bin_type=True))


def encode(message: Message) -> bytes:
    """The frame (length prefix and msgpack body) of one message."""
    body: dict[str, Any] = {"type": message.TYPE}
    fields = attrs.asdict(message, recurse=False)  # type: ignore[arg-type]
    if "request_id" in fields:  # first, as the doc's tables list it (a spec's fields follow)
        body["request_id"] = fields.pop("request_id")
    if isinstance(message, RunFrame) and message.release is None:
        del fields["release"]  # a plain frame: the run_frame of versions before 6
    if isinstance(message, FetchLog) and message.offset < 0:
        del fields["offset"]  # the log's end: the fetch_log of versions before 6
    if isinstance(message, LogData) and message.size == 0:
        del fields["size"]  # as a worker before version 6 answers
    body.update(fields)
    if isinstance(message, SubmitBatch):  # the one message that nests others
        body["jobs"] = [_fields(job) for job in message.jobs]
    payload: bytes = msgpack.packb(body, use_bin_type=True)
    return len(payload).to_bytes(HEADER_BYTES, "big") + payload


# A heartbeat's frame never changes: encoded once, sent to every worker; and one that
# arrives is known by its bytes, without msgpack (a large farm's commonest message).
HEARTBEAT_FRAME: Final = encode(Heartbeat())
_HEARTBEAT_BODY: Final = HEARTBEAT_FRAME[HEADER_BYTES:]
_HEARTBEAT: Final = Heartbeat()
# each message class's field names, for the unknown-field check: read once per class
_FIELD_NAMES: dict[type[Message], frozenset[str]] = {}


def _fields(job: Submit) -> dict[str, Any]:
    fields = attrs.asdict(job, recurse=False)
    del fields["request_id"], fields["key"]  # a batch's key is the batch's own
    return fields


def decode_body(payload: bytes) -> Message:
    """The message in one frame's body; ProtocolError if it is not one."""
    try:
        body = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:  # msgpack raises several unrelated types for bad input
        msg = f"frame is not valid msgpack ({type(exc).__name__})"
        raise ProtocolError(msg, code="bad_frame") from None
    if not isinstance(body, dict):
        msg = f"a message must be a map, got {type(body).__name__}"
        raise ProtocolError(msg, code="bad_message")
    kind = body.pop("type", None)
    cls = MESSAGES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        msg = f"unknown message type {kind!r}"
        raise ProtocolError(msg, code="bad_message")
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = frozenset(a.name for a in attrs.fields(cls))  # type: ignore[arg-type]
    unknown = sorted(str(k) for k in body if k not in names)
    if unknown:
        msg = f"unknown field(s) {', '.join(map(repr, unknown))} in {kind!r}"
        raise ProtocolError(msg, code="bad_message")
    try:
        return cls(**body)
    except ProtocolError:
        raise
    except (TypeError, ValueError, RecursionError, FarmdError) as exc:
        msg = f"bad {kind!r} message: {exc}"
        raise ProtocolError(msg, code="bad_message") from None


class Codec:
    """Bytes in, messages out, and messages to bytes; never touches a socket."""

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        self.max_frame_bytes = max_frame_bytes
        self._buffer = bytearray()
        self._start = 0
        self._broken: ProtocolError | None = None

    def receive_data(self, data: bytes | bytearray) -> None:
        if self._start and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]
            self._start = 0
        self._buffer += data

    def next_message(self) -> Message | _NeedData:
        if self._broken is not None:
            raise self._broken
        available = len(self._buffer) - self._start
        if available < HEADER_BYTES:
            return NEED_DATA
        start = self._start
        size = int.from_bytes(self._buffer[start : start + HEADER_BYTES], "big")
        if size == 0 or size > self.max_frame_bytes:
            self._broken = ProtocolError(
                f"frame of {size} bytes refused: frames hold 1 to {self.max_frame_bytes} bytes",
                code="frame_too_large" if size else "bad_frame",
            )
            raise self._broken
        if available < HEADER_BYTES + size:
            return NEED_DATA
        payload = bytes(self._buffer[start + HEADER_BYTES : start + HEADER_BYTES + size])
        self._start += HEADER_BYTES + size
        if payload == _HEARTBEAT_BODY:  # frozen and fieldless: one instance serves
            return _HEARTBEAT
        try:
            return decode_body(payload)
        except ProtocolError as exc:
            self._broken = exc
            raise

    def send(self, message: Message) -> bytes:
        data = encode(message)
        if len(data) - HEADER_BYTES > self.max_frame_bytes:
            msg = f"{message.TYPE!r} message of {len(data)} bytes exceeds the frame limit"
            raise ProtocolError(msg, code="frame_too_large")
        return data
