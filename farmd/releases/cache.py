"""A worker's release cache: the releases its cluster uses, downloaded and unpacked.

Theory of operation
-------------------
The cache is a directory (`root`, created 0700: the releases are the worker's, and the
frames it runs, as the same user, read them) holding one directory per release bundle,
named by the bundle's digest without its `sha256:` prefix: `root/<hex>/`. A bundle's
digest names its content (`farmd.releases.bundle`), so a directory there is the
release, whole, and is never rewritten: `ensure` of a digest already there returns it
without asking anything.

`ensure(ref)` brings a release in. It asks `fetch(digest, offset, length)` (the wire,
provided by the agent) for the bundle `chunk` bytes at a time, into memory, and:

- never asks for more than `ref.size` bytes in all, and refuses a `ref.size` over the
  bundle limit (`Limits.compressed_bytes`) before asking anything, so a download costs at
  most that much memory; a piece longer than asked is refused, an empty one ends the
  download (the supervisor has no more), and a short bundle is refused;
- checks the bytes' sha256 against `ref.digest` before `bundle.unpack` reads them, and
  the unpacked manifest's name and version against the ref's;
- unpacks with `bundle.unpack`, which checks a hostile bundle whole and writes it beside
  the cache entry (`.HEX.partial-*`) before one rename puts it in place.

Any failure is one `ReleaseFetchError` naming the release (`pipeline 2.3`) and why
(the fetch's own error, a short download, both digests of a mismatch, the bundle's
refusal) and leaves nothing at `root/<hex>`: the download was in memory, and an unpack
cut short by a crash leaves only a `.partial-*` directory, which the next
`ReleaseCache` on that root removes (`bundle.remove_partials`). A later `ensure` tries
again from the start.

Concurrent `ensure`s of one digest share one download: they take the digest's
`trio.Lock` in turn, and every one after the first finds the directory there. (One
that follows a *failed* download tries once more itself: each caller gets an answer
of its own.) Different digests download at once.

`sync(refs)` ensures each release the supervisor says is effective at the worker's
cluster, one after another, so at most one bundle is in memory at a time, and returns
the ready ones and the failed ones with their reasons. `prune(keep)` removes every
cached release whose digest is not in `keep` (the agent passes those effective at its
cluster and those of the frames it is running) and none that an `ensure` is working on.

Disk use is bounded by what the supervisor lists: after a `sync` and a `prune`, the
cache holds the releases effective at the worker's cluster and those its running
frames use, each at most `Limits.unpacked_bytes` unpacked. Nothing else is ever
written below `root` but the `.partial-*` directories of unpacks in progress (and of
removals: a pruned release is renamed to one before it is deleted, so a crash
mid-delete leaves nothing that looks like a release).
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, Final

import attrs
import trio

from farmd.errors import FarmdError, ReleaseError, ReleaseFetchError
from farmd.releases.bundle import DEFAULT_LIMITS, Limits, digest, remove_partials, unpack
from farmd.releases.model import name_problem, version_problem
from farmd.values import show

log = logging.getLogger("farmd.agent")

DEFAULT_CHUNK: Final = 1024 * 1024
_DIGEST: Final = re.compile(r"sha256:([0-9a-f]{64})")
_HEX: Final = re.compile(r"[0-9a-f]{64}")

Fetch = Callable[[str, int, int], Awaitable[bytes]]


def digest_problem(value: object) -> str | None:
    if not isinstance(value, str) or not _DIGEST.fullmatch(value):
        return "must be 'sha256:' and 64 lowercase hex digits"
    return None


def _size_problem(value: object) -> str | None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        return "must be a whole number of bytes, 0 or more"
    return None


def _check(problem: Callable[[Any], str | None]) -> Callable[[Any, Any, Any], None]:
    def validate(instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        why = problem(value)
        if why is not None:
            msg = f"bad release reference: {attribute.name} {show(value)} {why}"
            raise ReleaseError(msg)

    return validate


@attrs.frozen(kw_only=True)
class ReleaseRef:
    """A release as the supervisor names it to a worker: which it is, and the digest and
    size of its bundle. Checked on construction: the digest becomes a directory name."""

    name: str = attrs.field(validator=_check(name_problem))
    version: str = attrs.field(validator=_check(version_problem))
    digest: str = attrs.field(validator=_check(digest_problem))
    size: int = attrs.field(validator=_check(_size_problem))

    @property
    def label(self) -> str:
        """`pipeline 2.3`, as messages name a release."""
        return f"{self.name} {self.version}"


def _hex(value: str) -> str:
    match = _DIGEST.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        msg = f"bad release digest {show(value)}: {digest_problem(value)}"
        raise ReleaseError(msg)
    return match.group(1)


class ReleaseCache:
    """The releases of one worker, unpacked below `root` (see the module docs)."""

    def __init__(
        self,
        root: str | os.PathLike[str],
        fetch: Fetch,
        chunk: int = DEFAULT_CHUNK,
        *,
        limits: Limits = DEFAULT_LIMITS,
    ) -> None:
        if not isinstance(chunk, int) or chunk < 1:
            msg = f"bad release download chunk {show(chunk)}: must be 1 byte or more"
            raise ValueError(msg)
        self.root = Path(root)
        self._fetch = fetch
        self._chunk = chunk
        self._limits = limits
        self._locks: dict[str, trio.Lock] = {}  # digest -> held while ensuring it
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(self.root, 0o700)  # mkdir's mode is narrowed by the umask, or it existed
        for path in remove_partials(self.root):
            log.info("release cache: removed %s, left by an unpack or removal cut short", path)

    def path(self, release_digest: str) -> Path | None:
        """The unpacked directory of a cached release, or None if it is not here."""
        path = self.root / _hex(release_digest)
        return path if path.is_dir() else None

    def cached(self) -> list[str]:
        """The digests of the releases here, sorted."""
        return sorted(
            f"sha256:{entry.name}"
            for entry in self.root.iterdir()
            if _HEX.fullmatch(entry.name) and entry.is_dir()
        )

    async def ensure(self, ref: ReleaseRef) -> Path:
        """The unpacked directory of `ref`, downloaded, checked and unpacked first if it
        is not here. Refused with one `ReleaseFetchError`, leaving nothing behind."""
        dest = self.root / _hex(ref.digest)
        if dest.is_dir():
            return dest
        lock = self._locks.setdefault(ref.digest, trio.Lock())
        try:
            async with lock:
                if dest.is_dir():  # a concurrent ensure brought it in while we waited
                    return dest
                data = await self._download(ref)
                await self._unpack(ref, data, dest)
                log.info("release cache: %s (%s) is ready at %s", ref.label, ref.digest, dest)
                return dest
        finally:
            # trio's Lock hands itself to the next waiter on release, so a lock that is
            # free now has nobody waiting for it and can go.
            if not lock.locked() and self._locks.get(ref.digest) is lock:
                del self._locks[ref.digest]

    async def sync(
        self, refs: Sequence[ReleaseRef]
    ) -> tuple[list[ReleaseRef], list[tuple[ReleaseRef, str]]]:
        """Ensure each of `refs` (the releases effective at the worker's cluster), one at
        a time: (those ready, those that failed with why)."""
        ready: list[ReleaseRef] = []
        failed: list[tuple[ReleaseRef, str]] = []
        for ref in refs:
            try:
                await self.ensure(ref)
            except ReleaseFetchError as exc:
                log.warning("release cache: %s", exc)
                failed.append((ref, str(exc)))
            else:
                ready.append(ref)
        return ready, failed

    def prune(self, keep: set[str]) -> list[str]:
        """Remove every cached release whose digest is not in `keep`, but those an
        `ensure` is bringing in; the digests removed, sorted. Blocking: it deletes
        files (a release holds at most `Limits.files` of them)."""
        removed = []
        for release_digest in self.cached():
            if release_digest in keep or release_digest in self._locks:
                continue
            path = self.root / _hex(release_digest)
            # Out of sight in one rename first: a crash during the delete leaves a
            # `.partial-*` directory (cleared on the next start), never half a release.
            doomed = self.root / f".{path.name}.partial-pruned-{secrets.token_hex(4)}"
            try:
                os.rename(path, doomed)
            except OSError as exc:
                log.warning("release cache: cannot remove %s: %s", path, exc.strerror or exc)
                continue
            shutil.rmtree(doomed, ignore_errors=True)
            removed.append(release_digest)
            log.info("release cache: removed %s, no longer used", release_digest)
        return removed

    # ------------------------------------------------------------------ internals

    def _refuse(self, ref: ReleaseRef, why: str) -> ReleaseFetchError:
        return ReleaseFetchError(f"release {ref.label} ({ref.digest}): {why}")

    async def _download(self, ref: ReleaseRef) -> bytes:
        if ref.size > self._limits.compressed_bytes:
            why = f"its bundle is {ref.size} bytes, over the {self._limits.compressed_bytes} limit"
            raise self._refuse(ref, why)
        data = bytearray()
        # Every round adds at least one byte or ends, so this loop is bounded by size.
        while len(data) < ref.size:
            offset = len(data)
            want = min(self._chunk, ref.size - offset)
            try:
                piece = await self._fetch(ref.digest, offset, want)
            except (FarmdError, OSError) as exc:
                why = f"fetching bytes {offset}+{want} failed: {exc}"
                raise self._refuse(ref, why) from exc
            if len(piece) > want:
                why = f"asked for {want} bytes at {offset}, the supervisor sent {len(piece)}"
                raise self._refuse(ref, why)
            if not piece:
                why = f"the supervisor sent {offset} of its {ref.size} bytes, then no more"
                raise self._refuse(ref, why)
            data += piece
        got = digest(bytes(data))
        if got != ref.digest:
            raise self._refuse(ref, f"digest mismatch: expected {ref.digest}, got {got}")
        return bytes(data)

    async def _unpack(self, ref: ReleaseRef, data: bytes, dest: Path) -> None:
        try:
            release = await trio.to_thread.run_sync(unpack, data, dest, self._limits)
        except ReleaseError as exc:
            raise self._refuse(ref, f"the bundle is refused: {exc}") from exc
        except OSError as exc:
            raise self._refuse(ref, f"cannot unpack: {exc.strerror or exc}") from exc
        if (release.name, release.version) != (ref.name, ref.version):
            doomed = self.root / f".{dest.name}.partial-mismatch-{secrets.token_hex(4)}"
            os.rename(dest, doomed)
            shutil.rmtree(doomed, ignore_errors=True)
            why = f"the bundle holds release {release.label}, not {ref.label}"
            raise self._refuse(ref, why)
