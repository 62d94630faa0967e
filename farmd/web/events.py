"""Change notices for the dashboard's live view: a broadcaster of coalesced notices.

Theory of operation
-------------------
The supervisor says *what* changed, never how: `jobs` with the ids of the jobs that
changed, `workers`, `clusters`. A browser that hears a notice fetches what it shows of
that (a page of jobs, one job, the workers) through the ordinary API, so a notice
carries no state, may be dropped or merged without loss, and the page never polls.

`Broadcaster.publish` never blocks and never allocates per notice beyond a set update:
each `Subscription` keeps one *pending* record, a set of changed job ids per kind,
that every publish merges into. Reading a subscription takes the whole record at once
(`Subscription.next`). So a slow reader costs a bounded record, however many notices it
missed: past `MAX_IDS` job ids the record says "every job" (`ids=None`: fetch the page
again) instead of growing. A subscriber that never reads holds at most that.

At most `max_subscribers` subscriptions are open at once (`TooManySubscribers`, which
the HTTP layer answers 503). Each is a context manager; leaving it unsubscribes.
`next(heartbeat)` returns None when nothing came within `heartbeat` seconds: the caller's cue to
send a heartbeat, so that proxies keep the stream open and a dead peer is noticed.

Pure but for one `trio.Event` per subscription (the reader's wake-up): tested alone.
"""

from __future__ import annotations

from collections.abc import Iterable
from types import TracebackType
from typing import Final

import attrs
import trio

from farmd.errors import InternalError, UnavailableError

KINDS: Final = ("jobs", "workers", "clusters")
MAX_IDS: Final = 1000  # job ids one pending notice holds; beyond: "every job changed"
DEFAULT_MAX_SUBSCRIBERS: Final = 256


@attrs.frozen(kw_only=True)
class Notice:
    """Something changed: `kind` (`jobs`, `workers`, `clusters`); for `jobs`, the ids
    that changed, sorted, or None when too many did to name (fetch the list again)."""

    kind: str
    ids: tuple[int, ...] | None = None

    def data(self) -> dict[str, object]:
        """What the event stream sends as the notice's data (JSON)."""
        if self.kind != "jobs":
            return {}
        return {"ids": list(self.ids) if self.ids is not None else None}


class TooManySubscribers(UnavailableError):
    """Every subscription the broadcaster allows is taken."""


class Subscription:
    """One reader's pending notices (see module docs)."""

    def __init__(self, broadcaster: Broadcaster) -> None:
        self._broadcaster = broadcaster
        self._kinds: dict[str, set[int] | None] = {}  # kind -> ids (None: too many / n/a)
        self._wake = trio.Event()
        self.closed = False

    def _add(self, kind: str, ids: Iterable[int]) -> None:
        if kind not in self._kinds:
            self._kinds[kind] = set() if kind == "jobs" else None
        held = self._kinds[kind]
        if held is not None:
            held.update(ids)
            if len(held) > MAX_IDS:
                self._kinds[kind] = None  # a bounded record: "every job"
        self._wake.set()

    def take(self) -> list[Notice]:
        """The pending notices, in `KINDS` order, and an empty record after them."""
        kinds, self._kinds = self._kinds, {}
        self._wake = trio.Event()
        notices = []
        for kind in KINDS:
            if kind in kinds:
                ids = kinds[kind]
                if kind == "jobs" and ids is not None:
                    notices.append(Notice(kind=kind, ids=tuple(sorted(ids))))
                else:
                    notices.append(Notice(kind=kind))
        return notices

    async def next(self, heartbeat: float) -> list[Notice] | None:
        """The notices pending now, waiting for one up to `heartbeat` seconds; None if
        none came (send a heartbeat)."""
        with trio.move_on_after(heartbeat):
            await self._wake.wait()
        if not self._kinds:
            return None
        return self.take()

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self._broadcaster._subscribers.discard(self)

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


class Broadcaster:
    """Fans change notices out to every open subscription (see module docs)."""

    def __init__(self, max_subscribers: int = DEFAULT_MAX_SUBSCRIBERS) -> None:
        self.max_subscribers = max_subscribers
        self._subscribers: set[Subscription] = set()

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    def subscribe(self) -> Subscription:
        """A new subscription (use it as a context manager); `TooManySubscribers` when
        `max_subscribers` are open."""
        if len(self._subscribers) >= self.max_subscribers:
            msg = f"too many event streams open ({self.max_subscribers}): try again later"
            raise TooManySubscribers(msg)
        subscription = Subscription(self)
        self._subscribers.add(subscription)
        return subscription

    def publish(self, kind: str, ids: Iterable[int] = ()) -> None:
        """Tell every subscriber that `kind` changed (for `jobs`: which ids). Never
        blocks; costs one set update per subscriber."""
        if kind not in KINDS:
            msg = f"unknown notice kind {kind!r} (one of {', '.join(KINDS)})"
            raise InternalError(msg)
        if not self._subscribers:
            return
        ids = tuple(ids)
        for subscription in self._subscribers:
            subscription._add(kind, ids)
