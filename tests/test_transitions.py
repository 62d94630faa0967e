"""The frame state machine is one table (`model.TRANSITIONS`), and the core never asks a
frame for a step the table lacks.

`Job.move` looks up (state, event) and raises `InvalidTransition`, naming the job, frame,
state and event, for any other pair. The property test drives random event sequences
through the real core (the job-model state machine of `test_core_jobmodel_machine`) with
every move recorded and checked against the table before it is made.
"""

from __future__ import annotations

import pytest
from hypothesis import settings
from hypothesis.stateful import run_state_machine_as_test

from farmd.cluster import parse_cluster, parse_patterns, parse_restrictions
from farmd.errors import InternalError, InvalidTransition
from farmd.frames import Frame, FrameNumbers, FrameState, FrameTable
from farmd.jobs import CONTROLS, TRANSITIONS, Control, FrameEvent, Job
from tests.test_core_jobmodel_machine import JobModelMachine


def a_job(frames: str = "1-3") -> Job:
    return Job(
        id=7,
        name="j",
        cluster=parse_cluster("/"),
        priority=1,
        restrictions=parse_restrictions(""),
        cross_cluster=parse_patterns(""),
        argv=("x",),
        frames=FrameTable(FrameNumbers((1, 2, 3)), 1),
        depends_on=(),
        submitted_at=0.0,
    )


def test_a_step_the_table_lacks_is_refused_naming_job_frame_state_and_event() -> None:
    job = a_job()
    frame = job.frames[2]
    counts = dict(job.counts)
    with pytest.raises(InvalidTransition) as caught:
        job.move(frame, FrameEvent.SUCCEED)  # a pending frame cannot complete
    assert str(caught.value) == "job 7 frame 2 is pending: no transition on 'succeed'"
    assert isinstance(caught.value, InternalError)  # our bug, not the user's
    assert (caught.value.job, caught.value.frame) == (7, 2)
    assert frame.state is FrameState.PENDING  # nothing changed
    assert dict(job.counts) == counts
    assert sorted(job.pending) == [1, 2, 3]


def test_a_frame_takes_the_steps_the_table_gives() -> None:
    job = a_job()
    frame = job.frames[1]
    assert job.move(frame, FrameEvent.DISPATCH) is FrameState.RUNNING
    assert job.move(frame, FrameEvent.REQUEUE) is FrameState.PENDING
    assert 1 in job.pending
    job.move(frame, FrameEvent.DISPATCH)
    assert job.move(frame, FrameEvent.SUCCEED) is FrameState.COMPLETE
    assert job.counts[FrameState.COMPLETE] == 1
    assert sorted(job.pending) == [2, 3]


def test_the_table_is_whole() -> None:
    events = {event for _, event in TRANSITIONS}
    assert events == set(FrameEvent)  # no event without a row
    assert not [pair for pair in TRANSITIONS if pair[0] is FrameState.COMPLETE]  # final
    for state in FrameState:  # every other state has a way on
        if state is not FrameState.COMPLETE:
            assert any(s is state for s, _ in TRANSITIONS), state
    # the admin controls are exactly the table's rows for the control events
    assert {
        (state, control): target
        for control in Control
        for (state, event), target in TRANSITIONS.items()
        if event is FrameEvent.of(control)
    } == CONTROLS


@pytest.fixture
def moves(monkeypatch: pytest.MonkeyPatch) -> list[tuple[FrameState, FrameEvent]]:
    """Every move the core makes, checked against the table before it is made."""
    seen: list[tuple[FrameState, FrameEvent]] = []
    real_move = Job.move

    def checked_move(job: Job, frame: Frame, event: FrameEvent) -> FrameState:
        pair = (frame.state, event)
        assert pair in TRANSITIONS, f"job {job.id} frame {frame.number}: {pair}"
        seen.append(pair)
        return real_move(job, frame, event)

    monkeypatch.setattr(Job, "move", checked_move)
    return seen


def test_random_event_sequences_never_attempt_an_invalid_transition(
    moves: list[tuple[FrameState, FrameEvent]],
) -> None:
    run_state_machine_as_test(
        JobModelMachine,
        settings=settings(
            max_examples=150, stateful_step_count=50, deadline=None, derandomize=True
        ),
    )
    # the sequences reached most events, so the check above was not vacuous (a result
    # for a stopped frame and a SIGCONT are rare here: test_core_control reaches them)
    reached = {event for _, event in moves}
    assert {FrameEvent.DISPATCH, FrameEvent.SUCCEED, FrameEvent.KILL} <= reached
    assert len(reached) >= 9, sorted(event.value for event in reached)
