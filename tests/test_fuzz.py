"""Fuzzing the supervisor's front doors: the codec and the request validators.

Whatever a peer sends, the supervisor must answer with a typed message or a typed
refusal: the codec yields a `Message` or raises `ProtocolError`; a request that decoded
is answered by the supervisor's request path (`Supervisor._request`, as a session with
the farm token, a user token or a frame's job token would reach it) or refused with a
`FarmdError`. Any other exception would end that connection with a traceback instead of
one clear line, which is what this module rules out.

Examples come from the active Hypothesis profile: `ci` (the default, bounded and
derandomized, so CI replays the same examples) or `--hypothesis-profile=long` for a
local soak (tests/conftest.py registers both).
"""

from __future__ import annotations

import itertools
from typing import Any

import attrs
import msgpack
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from farmd.codec import NEED_DATA, Codec, decode_body, encode
from farmd.config import SupervisorConfig
from farmd.core import ADMIN, Action, Principal, SubmitJob
from farmd.errors import FarmdError, ProtocolError
from farmd.protocol import HEADER_BYTES, MESSAGES, Message, Request, Submit, SubmitBatch
from farmd.supervisor import Supervisor, draft_submission, is_large, submit_event
from tests.test_protocol import message_of

# Field values a hostile peer might send: every msgpack type, odd strings (control
# characters, long runs, path-like text), edge integers, nesting.
_ODD_TEXT = st.one_of(
    st.text(max_size=40),
    st.sampled_from(
        [
            "",
            "/",
            "/a/b",
            "/a" * 200,
            "x\ny",
            "\x00",
            "\u2028",
            "1-1000000",
            "1-10x0",
            "/+",
            "/a/*",
            "license.nuke=1",
            "slots=2+",
            "host.os == linux",
            "((((((((((",
            "9" * 40,
        ]
    ),
)
_EDGE_INTS = st.one_of(
    st.integers(-3, 10),
    st.sampled_from([-(2**63), 2**63 - 1, 2**64 - 1, 10**6, 10**6 + 1, 2**31]),
)
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    _EDGE_INTS,
    st.floats(allow_nan=True, allow_infinity=True),
    _ODD_TEXT,
)
_VALUES = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(_ODD_TEXT, inner, max_size=4),
    ),
    max_leaves=12,
)


@st.composite
def _bodies(draw: st.DrawFn) -> dict[str, Any]:
    """A map shaped like a message: a known (or unknown) type and some of its fields,
    each with any value, and now and then a field it does not have."""
    kind = draw(st.one_of(st.sampled_from(sorted(MESSAGES)), _ODD_TEXT))
    cls = MESSAGES.get(kind)
    names = [a.name for a in attrs.fields(cls)] if cls is not None else []  # type: ignore[arg-type]
    body: dict[str, Any] = {"type": kind}
    for name in names:
        if draw(st.integers(0, 4)):  # mostly present, sometimes left out
            body[name] = draw(_VALUES)
    if draw(st.integers(0, 9)) == 0:
        body[draw(_ODD_TEXT)] = draw(_VALUES)
    return body


def _decoded_or_refused(payload: bytes) -> Message | None:
    try:
        return decode_body(payload)
    except ProtocolError as exc:
        refusal = exc
    assert refusal.code in {"bad_frame", "bad_message"}, refusal.code
    assert len(str(refusal).splitlines()) == 1, str(refusal)
    return None


_FUZZ = hypothesis_settings(suppress_health_check=[HealthCheck.too_slow])


@_FUZZ
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 300), max_size=4))
def test_any_bytes_yield_messages_or_a_protocol_error(data: bytes, cuts: list[int]) -> None:
    codec = Codec(max_frame_bytes=64 * 1024)
    points = sorted({c for c in cuts if c < len(data)} | {0, len(data)})
    try:
        for start, end in itertools.pairwise(points):
            codec.receive_data(data[start:end])
            for _ in range(1000):  # bounded: far more than 300 bytes can frame
                message = codec.next_message()
                if message is NEED_DATA:
                    break
                assert isinstance(message, Message)
    except ProtocolError:
        with_error = True
    else:
        with_error = False
    if with_error:  # a codec that refused once stays refused
        try:
            codec.next_message()
        except ProtocolError:
            pass
        else:
            raise AssertionError("the codec accepted input after refusing")


@_FUZZ
@given(value=_VALUES)
def test_any_msgpack_value_yields_a_message_or_a_refusal(value: object) -> None:
    payload = msgpack.packb(value, use_bin_type=True)
    message = _decoded_or_refused(payload)
    assert message is None or isinstance(message, Message)


@_FUZZ
@given(body=_bodies())
def test_any_message_shaped_map_yields_a_valid_message_or_a_refusal(body: dict[str, Any]) -> None:
    try:
        payload = msgpack.packb(body, use_bin_type=True)
    except (OverflowError, ValueError):  # not representable in msgpack: cannot be sent
        return
    message = _decoded_or_refused(payload)
    if message is None:
        return
    # what was accepted is well formed: it encodes and decodes to itself
    wire = encode(message)
    assert decode_body(wire[HEADER_BYTES:]) == message


def _supervisor() -> Supervisor:
    config = SupervisorConfig(store="memory", highest_user_priority=10)
    supervisor = Supervisor(config, clock=lambda: 1000.0)
    supervisor.token = "farm-token"
    supervisor.user_token = "user-token"
    return supervisor


def _answer(supervisor: Supervisor, by: Principal, request: Request) -> None:
    """What the supervisor's request path does with a decoded request, minus the
    socket: a result, or a FarmdError (the one line a refusal carries)."""
    try:
        if isinstance(request, Submit | SubmitBatch):  # as `_answer_submit`, minus the thread
            supervisor.core.authorize(by, Action.SUBMIT)
            event = submit_event(request, by, 1000.0)
            if is_large(event):
                event = draft_submission(event, supervisor.core.max_command_bytes)
            supervisor.core.handle(event)
        else:
            supervisor._request(request, by)
    except FarmdError as exc:
        refusal = str(exc)
    else:
        return
    assert refusal, f"an empty refusal for {request!r}"
    assert len(refusal.splitlines()) == 1, refusal


_REQUEST_KINDS = sorted(k for k, c in MESSAGES.items() if issubclass(c, Request))


@st.composite
def _requests(draw: st.DrawFn) -> Request:
    """A request that decodes: a well-formed one of any kind, with now and then one
    field swapped for a hostile value that still decodes, so that the validators
    behind the codec (the scheduler's) see what the codec lets through."""
    message = draw(st.sampled_from(_REQUEST_KINDS).flatmap(message_of))
    assert isinstance(message, Request)
    names = [a.name for a in attrs.fields(type(message)) if a.name != "request_id"]
    if names and draw(st.booleans()):
        body = {"type": message.TYPE, **attrs.asdict(message, recurse=False)}
        if "jobs" in body:
            body["jobs"] = [attrs.asdict(job, recurse=False) for job in body["jobs"]]
        body[draw(st.sampled_from(names))] = draw(_VALUES)
        try:
            swapped = decode_body(msgpack.packb(body, use_bin_type=True))
        except (ProtocolError, OverflowError, ValueError):
            return message
        assert isinstance(swapped, Request)
        return swapped
    return message


@_FUZZ
@given(requests=st.lists(_requests(), min_size=1, max_size=6), who=st.integers(0, 2))
def test_any_decoded_request_is_answered_or_refused(requests: list[Request], who: int) -> None:
    supervisor = _supervisor()
    # a queue to act on: two jobs, the second a sub-job of the first
    supervisor.core.handle(SubmitJob(argv=("true",), frames="1-3", now=1000.0))
    supervisor.core.handle(SubmitJob(argv=("true",), parent=1, now=1000.0))
    highest = supervisor.config.highest_user_priority
    by = [ADMIN, Principal.shared_user(highest), Principal.job_token(1, highest)][who]
    for request in requests:
        _answer(supervisor, by, request)


def test_frame_numbers_past_what_the_store_holds_are_refused_in_one_line() -> None:
    """Found by fuzzing: a frame number of 2**63 reached the SQLite commit (and stopped
    the supervisor), and one of 5,000 digits raised Python's ValueError."""
    supervisor = _supervisor()
    for frames in ("9223372036854775808", "1-" + "9" * 5000, "0-10x" + "9" * 30):
        request = MESSAGES["submit"](request_id=1, argv=("true",), frames=frames)  # type: ignore[call-arg]
        _answer(supervisor, ADMIN, request)
        assert not supervisor.core.jobs, frames
