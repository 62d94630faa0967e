"""The agent's releases: what the supervisor says is effective at this worker's cluster,
fetched over the session into the local cache, and the argv of a release job's frame.

The supervisor sends `releases` (docs/protocol.md 5.8) at registration and whenever they
change for this worker's cluster. Each time, one sync runs (`told`): it makes sure of
every release listed (`farmd.releases.cache`, fetching a bundle by `fetch_release` in
chunks, checking its size and digest before it unpacks it), then reports what is ready
and what could not be had (`release_status`) and drops from the cache what is neither
effective nor used by a frame still held. A newer list supersedes an older one: an older
sync still running does not report, and a sync that could not get every release tries
again after RETRY_FIRST seconds, doubling up to RETRY_MAX. A release job's frame names
its pinned release, which need not be the one deployed now; `argv` makes sure of that
one too, then fills the frame's template with where it is unpacked
(`farmd.releases.template`).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Final

import trio

from farmd.errors import ConnectionLostError, FarmdError, UnavailableError
from farmd.logs import log_event
from farmd.protocol import Message, RunFrame
from farmd.protocol_releases import (
    MAX_CHUNK_BYTES,
    FetchRelease,
    ReleaseData,
    Releases,
    ReleaseStatus,
    decode_chunk,
)
from farmd.releases.cache import ReleaseCache, ReleaseRef
from farmd.releases.template import fill_frame

log = logging.getLogger("farmd.agent")

RELEASE_FETCH_TIMEOUT: Final = 30.0  # seconds the supervisor has to send a chunk
RETRY_FIRST: Final = 5.0  # seconds before a release that could not be had is tried again
RETRY_MAX: Final = 120.0  # ... doubling up to this


class AgentReleases:
    """The releases of one agent (module docs). `outbox` is the current session's
    queue of messages to the supervisor, or None between sessions."""

    def __init__(
        self, root: Path, outbox: Callable[[], trio.MemorySendChannel[Message] | None]
    ) -> None:
        self.cache = ReleaseCache(root, self._fetch)
        self._outbox = outbox
        self._effective: tuple[ReleaseRef, ...] = ()  # what the supervisor last said
        self._generation = 0  # the latest sync: an older one does not report
        self._fetches: dict[int, trio.MemorySendChannel[ReleaseData]] = {}
        self._next_fetch = 1

    def told(self, message: Releases, nursery: trio.Nursery, running: Sequence[RunFrame]) -> None:
        """The supervisor's list of the releases effective here: sync to it."""
        try:
            self._effective = tuple(ReleaseRef(**ref) for ref in message.releases)
        except FarmdError as exc:  # the wire checked the shape; this, the values
            log_event(log, "warning", "bad release list", error=str(exc))
            return
        self._generation += 1
        keep = {r.digest for r in self._effective}
        keep |= {str(m.release["digest"]) for m in running if m.release is not None}
        nursery.start_soon(self._sync, self._generation, keep)

    def answered(self, message: ReleaseData) -> None:
        waiter = self._fetches.pop(message.request_id, None)
        if waiter is not None:
            waiter.send_nowait(message)

    async def _sync(self, generation: int, keep: set[str]) -> None:
        """Sync, report, prune; while some release could not be had, try again later
        (a bundle uploaded again, a supervisor back), until a newer list comes."""
        pause = RETRY_FIRST
        while True:
            ready, failed = await self.cache.sync(self._effective)
            outbox = self._outbox()
            if generation != self._generation or outbox is None:
                return  # a newer list came meanwhile (or a new session will): it reports
            for ref, why in failed:
                log_event(log, "warning", "release unavailable", release=ref.label, error=why)
            outbox.send_nowait(
                ReleaseStatus(
                    ready=tuple((r.name, r.version) for r in ready),
                    failed=tuple((r.name, r.version, why) for r, why in failed),
                )
            )
            log_event(log, "info", "releases ready", releases=[r.label for r in ready])
            await trio.to_thread.run_sync(self.cache.prune, keep)
            if not failed:
                return
            await trio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _fetch(self, digest: str, offset: int, length: int) -> bytes:
        """Bytes of a bundle, asked of the supervisor over the current session."""
        outbox = self._outbox()
        if outbox is None:
            msg = "not connected to the supervisor"
            raise ConnectionLostError(msg)
        request_id = self._next_fetch
        self._next_fetch += 1
        send, receive = trio.open_memory_channel[ReleaseData](1)
        self._fetches[request_id] = send
        outbox.send_nowait(
            FetchRelease(
                request_id=request_id,
                digest=digest,
                offset=offset,
                length=min(length, MAX_CHUNK_BYTES),
            )
        )
        try:
            with trio.move_on_after(RELEASE_FETCH_TIMEOUT):
                answer = await receive.receive()
                if answer.error:
                    raise UnavailableError(answer.error)
                return decode_chunk(answer.data)
        finally:
            self._fetches.pop(request_id, None)
        msg = f"the supervisor sent nothing in {RELEASE_FETCH_TIMEOUT:g} s"
        raise UnavailableError(msg)

    async def argv(self, message: RunFrame) -> list[str]:
        """A frame's argv: a release job's filled here, where its pinned release is
        unpacked (fetched now if it is not there)."""
        pin = message.release
        if pin is None:
            return list(message.argv)
        ref = ReleaseRef(
            name=str(pin["name"]),
            version=str(pin["version"]),
            digest=str(pin["digest"]),
            size=int(pin["size"]),
        )
        where = await self.cache.ensure(ref)
        env = message.env
        return fill_frame(
            message.argv,
            message.frame,
            env.get("FARMD_FRAME_START", message.frame),
            env.get("FARMD_FRAME_END", message.frame),
            str(where),
            python=sys.executable,
        )
