"""The release messages of the wire protocol (docs/protocol.md 5.8 and 6.10): uploading,
deploying and listing releases, and a worker fetching them.

They are registered with the other messages when `farmd.protocol` is imported (it
imports this module last). A bundle's bytes cross the wire as base64 text, since only
msgpack's own types do (no binary): `encode_chunk`/`decode_chunk`, bounded by
`MAX_CHUNK_BYTES` of raw data per message.
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any, Final

import attrs

from farmd.errors import ProtocolError
from farmd.protocol import (
    Message,
    Request,
    _check,
    _int_field,
    _message,
    _name_field,
    _opt,
    _str_field,
    is_plain,
)
from farmd.values import is_count as _is_count
from farmd.values import is_int as _is_int
from farmd.values import is_str

MAX_CHUNK_BYTES: Final = 1 << 20  # raw bytes of a bundle one message carries, at most
MAX_RELEASE_REFS: Final = 256  # releases one `releases` message names
_DIGEST: Final = re.compile(r"sha256:[0-9a-f]{64}")


def _is_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST.fullmatch(value) is not None


def _is_chunk(value: object) -> bool:
    return isinstance(value, str) and len(value) <= (MAX_CHUNK_BYTES + 2) // 3 * 4


def encode_chunk(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def decode_chunk(text: str) -> bytes:
    """A chunk's bytes; ProtocolError if the text is not base64."""
    try:
        return base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        msg = "bad release data: not base64 text"
        raise ProtocolError(msg, code="bad_message") from None


def _digest_field() -> Any:
    return attrs.field(validator=_check(_is_digest, "must be 'sha256:' and 64 hex digits"))


def _is_ref(value: object) -> bool:
    return (
        isinstance(value, dict)
        and set(value) == {"name", "version", "digest", "size"}
        and is_str(value["name"])
        and is_str(value["version"])
        and _is_digest(value["digest"])
        and _is_count(value["size"])
    )


def _is_pairs(value: object, width: int) -> bool:
    return (
        isinstance(value, list | tuple)
        and len(value) <= MAX_RELEASE_REFS
        and all(
            isinstance(item, list | tuple) and len(item) == width and all(map(is_str, item))
            for item in value
        )
    )


# --------------------------------------------------------------------------- admin


@_message("upload_release")
@attrs.frozen(kw_only=True)
class UploadRelease(Request):
    """One chunk of a release bundle (a .tar.gz), in order from `offset` 0; `done` on the
    last. `digest` and `size` name the whole bundle and are the same in every chunk."""

    request_id: int = _int_field()
    digest: str = _digest_field()
    size: int = attrs.field(validator=_check(_is_count, "must be >= 0"))
    offset: int = attrs.field(validator=_check(_is_count, "must be >= 0"))
    data: str = attrs.field(validator=_check(_is_chunk, "must be base64 of at most 1 MiB"))
    done: bool = attrs.field(
        default=False, validator=_check(lambda v: isinstance(v, bool), "must be a bool")
    )


@_message("deploy_release")
@attrs.frozen(kw_only=True)
class DeployRelease(Request):
    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    version: str = _name_field(empty=False)
    cluster: str = _str_field()


@_message("undeploy_release")
@attrs.frozen(kw_only=True)
class UndeployRelease(Request):
    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    cluster: str = _str_field()


@_message("rollback_release")
@attrs.frozen(kw_only=True)
class RollbackRelease(Request):
    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    cluster: str = _str_field()


@_message("remove_release")
@attrs.frozen(kw_only=True)
class RemoveRelease(Request):
    request_id: int = _int_field()
    name: str = _name_field(empty=False)
    version: str = _name_field(empty=False)


@_message("list_releases")
@attrs.frozen(kw_only=True)
class ListReleases(Request):
    """Every release version the farm holds; with `cluster`, what serves it and why."""

    request_id: int = _int_field()
    cluster: str | None = _opt(is_str, "must be a string")


@_message("list_job_types")
@attrs.frozen(kw_only=True)
class ListJobTypes(Request):
    """The job types the releases effective at `cluster` provide, with their params."""

    request_id: int = _int_field()
    cluster: str = _str_field("/")


# --------------------------------------------------------------------------- worker


def _refs(value: Any) -> Any:
    """A list of release refs as a tuple; anything else is left to the validator."""
    return tuple(value) if isinstance(value, list | tuple) else value


@_message("releases")
@attrs.frozen(kw_only=True)
class Releases(Message):
    """The supervisor tells a worker the releases effective at its cluster (name,
    version, digest, size each), at registration and whenever they change."""

    releases: tuple[dict[str, Any], ...] = attrs.field(
        converter=_refs,
        validator=_check(
            lambda v: len(v) <= MAX_RELEASE_REFS and all(map(_is_ref, v)),
            "must be a list of {name, version, digest, size}",
        ),
    )


@_message("fetch_release")
@attrs.frozen(kw_only=True)
class FetchRelease(Message):
    """A worker asks for `length` bytes of a bundle from `offset`."""

    request_id: int = _int_field()
    digest: str = _digest_field()
    offset: int = attrs.field(validator=_check(_is_count, "must be >= 0"))
    length: int = attrs.field(
        validator=_check(lambda v: _is_int(v) and 1 <= v <= MAX_CHUNK_BYTES, "must be 1 to 1 MiB")
    )


@_message("release_data")
@attrs.frozen(kw_only=True)
class ReleaseData(Message):
    """The answer to `fetch_release`: `data` (base64, possibly shorter than asked; empty
    at the end), the bundle's `size`, or `error` when the supervisor has no such bundle."""

    request_id: int = _int_field()
    data: str = attrs.field(default="", validator=_check(_is_chunk, "must be base64"))
    size: int = attrs.field(default=0, validator=_check(_is_count, "must be >= 0"))
    error: str = _str_field("")


def _rows(value: Any) -> Any:
    """A list of lists as a tuple of tuples; anything else is left to the validator."""
    if isinstance(value, list | tuple) and all(isinstance(i, list | tuple) for i in value):
        return tuple(tuple(i) for i in value)
    return value


@_message("release_status")
@attrs.frozen(kw_only=True)
class ReleaseStatus(Message):
    """A worker says which releases it has ready ([name, version]) and which it could
    not get ([name, version, why])."""

    ready: tuple[tuple[str, ...], ...] = attrs.field(
        converter=_rows,
        validator=_check(lambda v: _is_pairs(v, 2), "must be a list of [name, version]"),
    )
    failed: tuple[tuple[str, ...], ...] = attrs.field(
        default=(),
        converter=_rows,
        validator=_check(lambda v: _is_pairs(v, 3), "must be a list of [name, version, why]"),
    )


def is_release_pin(value: object) -> bool:
    """A `run_frame`'s `release`: the pinned release of a release job."""
    return (
        isinstance(value, dict)
        and {"name", "version", "digest", "size"} <= set(value)
        and set(value) <= {"name", "version", "digest", "size", "python"}
        and is_plain(value)
        and _is_digest(value["digest"])
    )
