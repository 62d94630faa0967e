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
bundles by digest (`fetch`), a chunk per request, through their own sessions; each
request is answered by a task of its session, reading off the event loop.

On a PostgreSQL store the files are a cache: the store (`BundleStore`, given by the
standby module as the supervisor becomes active) keeps every bundle too. An upload's
bundle is kept there once verified and before `AddRelease` reaches the core, so every
release the farm knows has its bundle in the database; a digest missing from this
supervisor's disk (it took over from another) is fetched from there once, checked
against its digest, written to the cache (atomically, with fsync) and served; `drop`
deletes the row too, after the commit. A bundle only the disk has (uploaded before
the store kept bundles) is put in the store in the background once the supervisor is
active (`_backfill`). On SQLite there is no such store: the files are the bundles, as
they always were.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final, Protocol

import attrs
import trio

from farmd.core import Action, Outcome, Principal, Scheduler
from farmd.core.vocabulary import (
    AddRelease,
    DeployRelease,
    RemoveRelease,
    RollbackRelease,
    UndeployRelease,
    WorkerReleases,
)
from farmd.errors import ReleaseError, UserError
from farmd.protocol_releases import (
    MAX_CHUNK_BYTES,
    FetchRelease,
    ListJobTypes,
    ListReleases,
    ReleaseData,
    ReleaseStatus,
    UploadRelease,
    decode_chunk,
    encode_chunk,
)
from farmd.protocol_releases import DeployRelease as DeployRequest
from farmd.protocol_releases import RemoveRelease as RemoveRequest
from farmd.protocol_releases import RollbackRelease as RollbackRequest
from farmd.protocol_releases import UndeployRelease as UndeployRequest
from farmd.releases import bundle
from farmd.releases.model import Release

if TYPE_CHECKING:
    from farmd.supervisor.connection import Connection

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


class BundleStore(Protocol):
    """A store that keeps release bundles itself (`farmd.store_postgres.PostgresStore`).
    Its methods block: the shelf calls them in worker threads."""

    def keep_bundle(self, digest: str, data: bytes) -> None: ...

    def read_bundle(self, digest: str) -> bytes | None: ...

    def drop_bundle(self, digest: str) -> None: ...

    def bundle_digests(self) -> list[str]: ...


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
        # the store that keeps bundles too (PostgreSQL), once active; None: files only
        self.bundles: BundleStore | None = None
        self._fetching: dict[str, trio.Event] = {}  # digests being fetched from `bundles`
        self._nursery: trio.Nursery | None = None  # the supervisor's, for row deletes

    def _known_digests(self) -> set[str]:
        """The digests of every release version the farm knows (deployed or not)."""
        return {known.digest for known in self.core.rollout.deployments.releases()}

    def start(self, nursery: trio.Nursery) -> None:
        """Create the folders; remove what uploads a crash cut short left. Deletes of
        bundle rows run in `nursery` (the active supervisor's)."""
        self._nursery = nursery
        self.uploads.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(self.folder, 0o700)
        for leftover in self.uploads.iterdir():
            leftover.unlink(missing_ok=True)
        if self.bundles is not None:
            nursery.start_soon(self._backfill, self.bundles)

    async def _backfill(self, bundles: BundleStore) -> None:
        """Keep in the store the bundles of known releases that only this supervisor's
        disk has: those uploaded before the store kept bundles (a farm on PostgreSQL
        before schema 2). In the background, off the loop, one at a time."""
        async with self._lock:
            kept = set(await trio.to_thread.run_sync(bundles.bundle_digests))
        for digest in self._known_digests():
            if digest in kept or not self.path(digest).exists():
                continue
            kept.add(digest)
            async with self._lock:  # as an upload's, and never beside a delete of its row
                if digest in self._known_digests():
                    await trio.to_thread.run_sync(self._keep_file, bundles, digest)

    def _keep_file(self, bundles: BundleStore, digest: str) -> None:
        try:
            data = self.path(digest).read_bytes()
        except OSError:
            return  # gone meanwhile: removed, or never there
        if bundle.digest(data) == digest:  # else: not what it says
            bundles.keep_bundle(digest, data)

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
            _sync_folder(self.folder)
        if self.bundles is not None:  # before the core knows the release (module docs)
            self.bundles.keep_bundle(upload.digest, data)
        return release

    def forget(self, session: int) -> None:
        """A session ended (or started over): its upload's file goes."""
        upload = self._open.pop(session, None)
        if upload is not None:
            upload.path.unlink(missing_ok=True)

    # ------------------------------------------------------------------ workers

    def fetch(self, conn: Connection, worker: str, message: FetchRelease) -> None:
        """A worker's request for a chunk of a bundle: answered by a task of its
        session's, off the event loop (`read`), or refused at once."""
        if not self.core.rollout.fetchable(worker, message.digest):
            msg = (
                f"release {message.digest} is neither deployed at this worker's "
                "cluster nor the release of a frame it runs"
            )
            conn.send(ReleaseData(request_id=message.request_id, error=msg))
            return
        assert conn.nursery is not None  # set for the session's whole life
        conn.nursery.start_soon(self._answer_fetch, conn, message)

    async def _answer_fetch(self, conn: Connection, message: FetchRelease) -> None:
        try:
            data, size = await self.read(message.digest, message.offset, message.length)
        except UserError as exc:
            conn.send(ReleaseData(request_id=message.request_id, error=str(exc)))
        else:
            chunk = encode_chunk(data)
            conn.send(ReleaseData(request_id=message.request_id, data=chunk, size=size))

    async def read(self, digest: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` bytes of a known bundle from `offset`, and its size; a bundle
        missing from disk is first fetched from the store that keeps bundles."""
        known = self._known_digests()
        if digest not in known:
            msg = f"no release the farm holds has the digest {digest}"
            raise UserError(msg)
        path = self.path(digest)
        if self.bundles is not None and not path.exists():
            await self._cache(digest)
        return await trio.to_thread.run_sync(_read_chunk, path, offset, length)

    async def _cache(self, digest: str) -> None:
        """Fetch the bundle `digest` from the store into this supervisor's folder; one
        fetch per digest at a time, the others wait for it."""
        busy = self._fetching.get(digest)
        if busy is not None:
            await busy.wait()
            return  # whatever it got: `read` finds the file, or says it cannot
        done = self._fetching[digest] = trio.Event()
        try:
            await trio.to_thread.run_sync(self._fetch_into_cache, digest)
            if digest not in self._known_digests():
                self.path(digest).unlink(missing_ok=True)  # removed meanwhile (`drop`)
        finally:
            del self._fetching[digest]
            done.set()

    def _fetch_into_cache(self, digest: str) -> None:
        assert self.bundles is not None
        data = self.bundles.read_bundle(digest)
        if data is None:
            msg = f"the bundle {digest} is in neither this supervisor's state dir nor the store"
            raise UserError(msg)
        got = bundle.digest(data)
        if got != digest:
            msg = f"the bundle {digest} in the store is damaged: its bytes hash to {got}"
            raise UserError(msg)
        final = self.path(digest)
        part = self.uploads / f"fetch-{digest.removeprefix('sha256:')}.part"
        try:
            with part.open("wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
            os.chmod(part, 0o600)
            os.replace(part, final)
            _sync_folder(self.folder)
        except OSError as exc:  # a full disk, say: the worker is told, and asks again
            part.unlink(missing_ok=True)
            msg = f"cannot cache the bundle {digest} in {self.folder}: {exc.strerror}"
            raise UserError(msg) from None

    def drop(self, digest: str) -> None:
        """A removed release's bundle, once no known version uses it (after the commit):
        its file now, its row in the store in a task (`_drop_row`)."""
        if digest not in self._known_digests():
            self.path(digest).unlink(missing_ok=True)
            if self.bundles is not None and self._nursery is not None:
                self._nursery.start_soon(self._drop_row, self.bundles, digest)

    async def _drop_row(self, bundles: BundleStore, digest: str) -> None:
        # under the upload lock, and only if still unknown: an upload of the same bytes
        # keeps its row before its release is known, inside that lock (`_take`)
        async with self._lock:
            if digest not in self._known_digests():
                # a StoreError (Deposed included) ends the supervisor, as a commit's does
                await trio.to_thread.run_sync(bundles.drop_bundle, digest)


def worker_releases(
    worker: str, message: ReleaseStatus, now: float, conn: Connection
) -> WorkerReleases:
    """The core event for a worker's report of the releases it has ready and failed."""
    ready = tuple((r[0], r[1]) for r in message.ready)
    failed = tuple((f[0], f[1], f[2]) for f in message.failed)
    return WorkerReleases(name=worker, ready=ready, failed=failed, now=now, by=conn.who)


def _read_chunk(path: Path, offset: int, length: int) -> tuple[bytes, int]:
    try:
        with path.open("rb") as file:
            size = os.fstat(file.fileno()).st_size
            file.seek(offset)
            return file.read(min(length, MAX_CHUNK_BYTES)), size
    except OSError as exc:
        msg = f"cannot read the bundle {path}: {exc.strerror}"
        raise UserError(msg) from None


def _sync_folder(folder: Path) -> None:
    """fsync a folder: a file moved into it stays there after a crash."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
