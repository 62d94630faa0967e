"""Durability before effect: the group committer between the core's outcomes and the store.

Every outcome the core returns carries the rows it changed (`Changes`) and the effects
it asks for (frames to send, replies to give). An effect must not show what a crash
could still take back, so the `Committer` runs an outcome's effects only once its
changes, and those of every outcome handled before it, are in the store. Outcomes take
effect in the order they were handled: an outcome with nothing to write still waits
behind one being committed.

It is a group commit: one task (`run`) commits, in a worker thread, everything that
accumulated while the last commit ran, then carries out each outcome's effects in
order. It knows nothing of the farm; the supervisor hands it changes and callables.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence

import trio

from farmd.logs import log_event
from farmd.rows import Changes
from farmd.store import Store

# the supervisor's logger: these lines are the supervisor's, as before the split
log = logging.getLogger("farmd.supervisor")

Effect = Callable[[], None]


class Committer:
    """Changes waiting to be durable, each with what to do once they are."""

    def __init__(self, observe_commit: Callable[[float], None]) -> None:
        self._observe_commit = observe_commit  # seconds each commit took, for the metrics
        self._uncommitted: list[tuple[Changes, Sequence[Effect]]] = []
        self._wanted = trio.Event()
        self._committing = False  # a batch is being committed or carried out

    def after_durable(self, changes: Changes, effects: Sequence[Effect]) -> None:
        """Run `effects` once `changes` and everything handed in before are durable: at
        once when nothing is written or waits to be, else from `run`."""
        if changes or self._uncommitted or self._committing:
            self._uncommitted.append((changes, effects))
            self._wanted.set()
        else:
            for effect in effects:
                effect()

    async def durable(self) -> None:
        """Return once everything handed in so far is durable (and its effects done):
        what a read of the store waits for, to see every change made before it."""
        done = trio.Event()
        self.after_durable(Changes(), [done.set])
        await done.wait()

    async def run(self, store: Store) -> None:
        """Group commit: everything that accumulated while the last commit ran goes into
        the next one; then, in order, what each outcome was waiting to do."""
        while True:
            await self._wanted.wait()
            self._wanted = trio.Event()
            while self._uncommitted:
                self._committing = True
                batch, self._uncommitted = self._uncommitted, []
                changes = Changes.merge([c for c, _ in batch if c])
                if changes:
                    started = trio.current_time()
                    await trio.to_thread.run_sync(store.commit, changes)
                    seconds = trio.current_time() - started
                    self._observe_commit(seconds)
                    log_event(
                        log,
                        "debug",
                        "commit",
                        jobs=len(changes.jobs),
                        frames=len(changes.frames),
                        outcomes=len(batch),
                        seconds=round(seconds, 6),
                    )
                for _, effects in batch:
                    for effect in effects:
                        effect()
            self._committing = False
