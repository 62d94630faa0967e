"""The release shelf: bundles on disk, uploads in progress, and the release requests.

A release bundle (a .tar.gz, `farmd.releases.bundle`) is kept content-addressed in
STATE/releases/<hex of its sha256>.tar.gz. It arrives over an admin session in chunks
(`upload_release`, in order, each at most `MAX_CHUNK_BYTES`), written to a file of that
upload's own under STATE/releases/uploads and hashed as it comes; the last chunk's
bytes must make the size and the digest the first one announced. The whole bundle is
then inspected (safe archive, valid manifest) in a worker thread, moved into place with
an fsync of the file and of the directory, and only then handed to the core
(`AddRelease`): a release the farm knows always has its bundle on disk, and a crash
(kill -9 mid-upload) leaves at most a file in uploads/, which the next start removes.
A session has one upload at a time; its file goes when the session ends.

Deploying, undeploying, rolling back and removing are core events like any change,
answered once durable with their audit row; a removed version's bundle file is deleted
after that commit (`drop`), when no other known version shares it. Workers fetch
bundles by digest (`read`), a chunk per request, through their own sessions.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from farmd.core import Action, Outcome, Principal, Scheduler
from farmd.core.vocabulary import (
    AddRelease,
    DeployRelease,
    RemoveRelease,
    RollbackRelease,
    UndeployRelease,
)
from farmd.errors import ReleaseError, UserError
from farmd.protocol_releases import (
    MAX_CHUNK_BYTES,
    ListJobTypes,
    ListReleases,
    UploadRelease,
    decode_chunk,
)
from farmd.protocol_releases import DeployRelease as DeployRequest
from farmd.protocol_releases import RemoveRelease as RemoveRequest
from farmd.protocol_releases import RollbackRelease as RollbackRequest
from farmd.protocol_releases import UndeployRelease as UndeployRequest
from farmd.releases import bundle
from farmd.releases.model import Release

RELEASES_DIR: Final = "releases"
UPLOADS_DIR: Final = "uploads"
MAX_BUNDLE_BYTES: Final = bundle.MAX_COMPRESSED_BYTES  # one release's .tar.gz, at most

RELEASE_REQUESTS = (
    UploadRelease,
    DeployRequest,
    UndeployRequest,
    RollbackRequest,
    RemoveRequest,
    ListReleases,
    ListJobTypes,
)
ReleaseRequest = (
    UploadRelease
    | DeployRequest
    | UndeployRequest
    | RollbackRequest
    | RemoveRequest
    | ListReleases
    | ListJobTypes
)


@attrs.define
class _Upload:
    digest: str
    size: int
    path: Path
    received: int = 0
    hasher: Any = attrs.field(factory=hashlib.sha256)


class ReleaseShelf:
    """Bundles on disk, uploads in progress, release requests (module docs)."""

    def __init__(self, state_dir: Path, core: Scheduler) -> None:
        self.folder = state_dir / RELEASES_DIR
        self.uploads = self.folder / UPLOADS_DIR
        self.core = core
        self._open: dict[int, _Upload] = {}  # by session (its connection's id)
        self._lock = trio.Lock()  # one bundle inspected at a time: bounded memory

    def start(self) -> None:
        """Create the folders; remove what uploads a crash cut short left."""
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        for leftover in self.uploads.iterdir():
            leftover.unlink(missing_ok=True)

    def path(self, digest: str) -> Path:
        return self.folder / f"{digest.removeprefix('sha256:')}.tar.gz"

    # ------------------------------------------------------------------ requests

    async def answer(
        self, request: ReleaseRequest, by: Principal, session: int, now: float
    ) -> tuple[Any, Outcome | None]:
        """A release request's result, and the outcome to wait for (None: nothing
        changed). Refusals are FarmdErrors, changing nothing."""
        core = self.core
        match request:
            case UploadRelease():
                core.authorize(by, Action.RELEASE)
                return await self._upload(request, by, session, now)
            case DeployRequest():
                event: Any = DeployRelease(
                    name=request.name,
                    version=request.version,
                    cluster=request.cluster,
                    now=now,
                    by=by,
                )
            case UndeployRequest():
                event = UndeployRelease(name=request.name, cluster=request.cluster, now=now, by=by)
            case RollbackRequest():
                event = RollbackRelease(name=request.name, cluster=request.cluster, now=now, by=by)
            case RemoveRequest():
                event = RemoveRelease(name=request.name, version=request.version, now=now, by=by)
            case ListReleases():
                core.authorize(by, Action.READ)
                return core.rollout.listing(request.cluster), None
            case ListJobTypes():
                core.authorize(by, Action.READ)
                return core.rollout.job_types(request.cluster), None
        outcome = core.handle(event)
        return outcome.result, outcome

    async def _upload(
        self, request: UploadRelease, by: Principal, session: int, now: float
    ) -> tuple[Any, Outcome | None]:
        upload = self._open.get(session)
        if request.offset == 0 and upload is not None:  # a new upload replaces the last
            self.forget(session)
            upload = None
        if upload is None:
            if request.offset != 0:
                msg = f"bad upload: it starts at offset 0, not {request.offset}"
                raise ReleaseError(msg)
            if request.size > MAX_BUNDLE_BYTES:
                msg = (
                    f"bad upload: a release bundle holds at most {MAX_BUNDLE_BYTES} bytes "
                    f"(this one {request.size})"
                )
                raise ReleaseError(msg)
            upload = _Upload(request.digest, request.size, self.uploads / f"{session}.part")
            upload.path.write_bytes(b"")
            self._open[session] = upload
        if (request.digest, request.size) != (upload.digest, upload.size):
            self.forget(session)
            msg = "bad upload: a chunk names another bundle than its upload's first chunk"
            raise ReleaseError(msg)
        if request.offset != upload.received:
            self.forget(session)
            msg = f"bad upload: chunk at offset {request.offset}, expected {upload.received}"
            raise ReleaseError(msg)
        data = decode_chunk(request.data)
        if len(data) > MAX_CHUNK_BYTES or upload.received + len(data) > upload.size:
            self.forget(session)
            msg = f"bad upload: more than the {upload.size} bytes announced"
            raise ReleaseError(msg)
        with upload.path.open("ab") as out:
            out.write(data)
        upload.hasher.update(data)
        upload.received += len(data)
        if not request.done:
            return {"received": upload.received}, None
        del self._open[session]
        try:
            release = await self._take(upload)
        finally:
            upload.path.unlink(missing_ok=True)
        outcome = self.core.handle(
            AddRelease(release=release, digest=upload.digest, size=upload.size, now=now, by=by)
        )
        return outcome.result, outcome

    async def _take(self, upload: _Upload) -> Release:
        """Check a whole upload and move its bundle into place, durably."""
        if upload.received != upload.size:
            msg = f"bad upload: {upload.received} bytes received of the {upload.size} announced"
            raise ReleaseError(msg)
        got = "sha256:" + upload.hasher.hexdigest()
        if got != upload.digest:
            msg = f"bad upload: its bytes hash to {got}, not the {upload.digest} announced"
            raise ReleaseError(msg)
        async with self._lock:
            return await trio.to_thread.run_sync(self._inspect_and_keep, upload)

    def _inspect_and_keep(self, upload: _Upload) -> Release:
        data = upload.path.read_bytes()
        release = bundle.inspect(data, label=f"release bundle {upload.digest[:19]}")
        final = self.path(upload.digest)
        if not final.exists():
            with upload.path.open("rb+") as file:
                os.fsync(file.fileno())
            os.chmod(upload.path, 0o600)
            os.replace(upload.path, final)
            fd = os.open(self.folder, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        return release

    def forget(self, session: int) -> None:
        """A session ended (or started over): its upload's file goes."""
        upload = self._open.pop(session, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ workers

    def read(self, digest: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` bytes of a known bundle from `offset`, and its size."""
        known = {k.digest for k in self.core.rollout.deployments.releases()}
        if digest not in known:
            msg = f"no release the farm holds has the digest {digest}"
            raise UserError(msg)
        path = self.path(digest)
        try:
            with path.open("rb") as file:
                size = os.fstat(file.fileno()).st_size
                file.seek(offset)
                return file.read(min(length, MAX_CHUNK_BYTES)), size
        except OSError as exc:
            msg = f"cannot read the bundle {path}: {exc.strerror}"
            raise UserError(msg) from None

    def drop(self, digest: str) -> None:
        """A removed release's bundle, once no known version uses it (after the commit)."""
        if digest not in {k.digest for k in self.core.rollout.deployments.releases()}:
            self.path(digest).unlink(missing_ok=True)
