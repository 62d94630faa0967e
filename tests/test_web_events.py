"""The change-notice broadcaster alone (`farmd.web.events`): coalescing, bounds, caps."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from farmd.web.events import MAX_IDS, Broadcaster, Notice, TooManySubscribers


async def test_notices_coalesce_per_reader_until_it_reads() -> None:
    hub = Broadcaster()
    with hub.subscribe() as one, hub.subscribe() as two:
        hub.publish("jobs", [3, 1])
        hub.publish("workers")
        hub.publish("jobs", [2, 3])
        assert await one.next(1.0) == [Notice(kind="jobs", ids=(1, 2, 3)), Notice(kind="workers")]
        hub.publish("clusters")
        # the second reader missed nothing, and gets it all at once, in kind order
        assert await two.next(1.0) == [
            Notice(kind="jobs", ids=(1, 2, 3)),
            Notice(kind="workers"),
            Notice(kind="clusters"),
        ]
        assert await one.next(1.0) == [Notice(kind="clusters")]


async def test_a_reader_that_never_reads_holds_a_bounded_record() -> None:
    hub = Broadcaster()
    with hub.subscribe() as slow:
        for start in range(0, 10 * MAX_IDS, 100):
            hub.publish("jobs", range(start, start + 100))
        assert slow._kinds == {"jobs": None}  # "every job": fetch the list again
        assert await slow.next(1.0) == [Notice(kind="jobs", ids=None)]
        assert Notice(kind="jobs", ids=None).data() == {"ids": None}


async def test_next_returns_none_after_the_heartbeat_and_wakes_on_publish(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = Broadcaster()
    with hub.subscribe() as reader:
        started = trio.current_time()
        assert await reader.next(15.0) is None
        assert trio.current_time() - started == pytest.approx(15.0)

        async def publish_later() -> None:
            await trio.sleep(2.0)
            hub.publish("jobs", [7])

        async with trio.open_nursery() as nursery:
            nursery.start_soon(publish_later)
            started = trio.current_time()
            assert await reader.next(15.0) == [Notice(kind="jobs", ids=(7,))]
            assert trio.current_time() - started == pytest.approx(2.0)


def test_subscribers_are_capped_and_leaving_frees_a_place() -> None:
    hub = Broadcaster(max_subscribers=2)
    first = hub.subscribe()
    with hub.subscribe():
        with pytest.raises(TooManySubscribers, match=r"too many event streams open \(2\)"):
            hub.subscribe()
        first.close()
        first.close()  # twice is harmless
        with hub.subscribe():
            assert hub.subscribers == 2
    assert hub.subscribers == 0
    hub.publish("jobs", [1])  # nobody listens: nothing is kept


def test_an_unknown_kind_is_a_bug() -> None:
    with pytest.raises(Exception, match="unknown notice kind 'frames'"):
        Broadcaster().publish("frames")
