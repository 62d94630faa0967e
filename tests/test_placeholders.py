"""Frame placeholders (`farmd.placeholders`): padding (`{frame:04d}`, `{####}`), brace
escapes, checked against a reference written differently (a character scanner); what
dispatch sends equals what a worker fills; a bad spec is refused at submit."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from farmd.core import Scheduler, SubmitJob, WorkerJoined
from farmd.core.vocabulary import RunOnWorker
from farmd.errors import JobSpecError
from farmd.placeholders import MAX_WIDTH, fill_arg, problem
from farmd.releases import fill_command, load_manifest, resolve_params
from farmd.releases.template import fill_frame, template_problem
from tests.e2e_support import Farm

SETTINGS = settings(max_examples=300, deadline=None)
ROOT = Path(__file__).resolve().parents[1]


def reference(arg: str, frame: int, start: int, end: int) -> str:
    """The rules of docs/protocol.md 5.2, scanned a character at a time."""
    numbers = {"frame": frame, "start": start, "end": end}
    out, i = [], 0
    while i < len(arg):
        two = arg[i : i + 2]
        if two in ("{{", "}}"):
            out.append(two[0])
            i += 2
            continue
        if arg[i] == "{":
            close = arg.find("}", i + 1)
            inner_open = arg.find("{", i + 1)
            if close != -1 and (inner_open == -1 or inner_open > close):
                body = arg[i + 1 : close]
                out.append(_reference_value(body, numbers) or arg[i : close + 1])
                i = close + 1
                continue
        out.append(arg[i])
        i += 1
    return "".join(out)


def _reference_value(body: str, numbers: dict[str, int]) -> str | None:
    if 1 <= len(body) <= MAX_WIDTH and body == "#" * len(body):
        return str(numbers["frame"]).zfill(len(body))
    if body in numbers:
        return str(numbers[body])
    name, _, spec = body.partition(":")
    if name not in numbers or ":" not in body:
        return None
    m = re.fullmatch(r"(.?[<>=^])?([+ -])?(0)?([1-9][0-9]?)?(d)?", spec)
    if m is None or (m.group(1) and m.group(1)[:-1] in ("{", "}")):
        return None
    return format(numbers[name], spec)


pieces = st.sampled_from(
    [
        "{frame}", "{start}", "{end}", "{frame:04d}", "{end:>6d}", "{start:+d}", "{frame:}",
        "{####}", "{#}", "{frame:x}", "{frame:.2f}", "{x}", "{{", "}}", "{", "}", "####",
        "frame", "/out/", "-", "{release}", ":", "#", "0", "d",
    ]
)  # fmt: skip
args = st.lists(pieces | st.text(max_size=4), max_size=8).map("".join)


@SETTINGS
@given(arg=args, frame=st.integers(0, 10**7), span=st.integers(0, 100))
def test_fill_matches_the_reference(arg: str, frame: int, span: int) -> None:
    assert fill_arg(arg, frame, frame, frame + span) == reference(arg, frame, frame, frame + span)


@SETTINGS
@given(arg=args, frame=st.integers(0, 10**7))
def test_numbers_as_text_fill_as_numbers(arg: str, frame: int) -> None:
    """The supervisor and the worker hold the numbers as text (FARMD_FRAME_END)."""
    assert fill_arg(arg, str(frame), str(frame), str(frame + 2)) == fill_arg(
        arg, frame, frame, frame + 2
    )


@pytest.mark.parametrize(
    ("arg", "filled"),
    [
        ("/out/shot.{frame:04d}.exr", "/out/shot.0007.exr"),
        ("/out/shot.{####}.exr", "/out/shot.0007.exr"),
        ("{start:03d}-{end:03d}", "007-009"),
        ("-o /renders/a/####", "-o /renders/a/####"),  # the renderer's own: left alone
        ("{{frame}} is {frame}", "{frame} is 7"),
        ('json={{"a": 1}}', 'json={"a": 1}'),
        ("{frame:x}", "{frame:x}"),  # refused at submit; a stored one stays as written
        ("{python} {release}", "{python} {release}"),
    ],
)
def test_examples(arg: str, filled: str) -> None:
    assert fill_arg(arg, 7, 7, 9) == filled


@pytest.mark.parametrize(
    ("arg", "named"),
    [
        ("{frame:x}", "{frame:x}"),
        ("a{frame:.2f}b", "{frame:.2f}"),
        ("{end:04s}", "{end:04s}"),
        ("{frame:0100d}", "{frame:0100d}"),
        ("{" + "#" * (MAX_WIDTH + 1) + "}", f"at most {MAX_WIDTH} '#'"),
    ],
)
def test_a_bad_spec_is_named(arg: str, named: str) -> None:
    why = problem(arg)
    assert why is not None
    assert named in why
    assert "\n" not in why


def test_good_specs_have_no_problem() -> None:
    for arg in ("{frame:04d}", "{frame:d}", "{frame:>8}", "{start:_^9d}", "{####}", "{x:y}"):
        assert problem(arg) is None, arg


def test_submit_refuses_a_bad_spec_in_one_line_naming_it() -> None:
    core = Scheduler()
    with pytest.raises(JobSpecError) as info:
        core.handle(SubmitJob(argv=("render", "-f", "{frame:x}"), now=0.0))
    message = str(info.value)
    assert message.startswith("bad job: argument 3 of the command: bad placeholder {frame:x}")
    assert "\n" not in message
    assert not core.jobs


def test_a_release_template_takes_padding_and_refuses_a_bad_spec() -> None:
    assert template_problem("/out/{frame:04d}.{####}.exr", ["scene"]) is None
    why = template_problem("-f {frame:x}", [])
    assert why is not None
    assert why.startswith("bad placeholder {frame:x}")
    assert why.endswith("at character 4")


@SETTINGS
@given(arg=args, first=st.integers(1, 10**6), chunk=st.integers(1, 4))
def test_dispatch_sends_what_a_worker_would_fill(arg: str, first: int, chunk: int) -> None:
    """A plain job's argv is filled by the supervisor; `fill_frame` without a release
    (the worker's path) must give the same argv."""
    if problem(arg) is not None:
        return
    core = Scheduler()
    core.handle(WorkerJoined(name="w", cluster="/", slots=1, now=0.0))
    outcome = core.handle(
        SubmitJob(argv=("run", arg), frames=f"{first}-{first + chunk - 1}", chunk=chunk, now=0.0)
    )
    (run,) = [c for c in outcome.commands if isinstance(c, RunOnWorker)]
    last = first + chunk - 1
    assert list(run.argv) == fill_frame(["run", arg], first, first, last, None)
    assert run.argv[1] == reference(arg, first, first, last)


# --------------------------------------------------------------------------- end to end


@pytest.mark.e2e
def test_a_frame_prints_its_padded_number(farm: Farm) -> None:
    farm.worker("w1")
    argv = farm.frame("--print", "shot.{frame:04d}.{####}.exr {{x}} ####")
    job_id = farm.submit_cli("--frames", "7", "--", *argv)
    assert farm.wait_jobs([job_id]) == {str(job_id): "complete"}
    assert farm.cli_ok("logs", f"{job_id}:7").strip() == "shot.0007.0007.exr {x} ####"


def test_the_example_releases_blender_output_reaches_blender_as_written() -> None:
    """README's worked example: `--param output=/renders/a/####` is Blender's pattern,
    which Blender fills; farmd must hand it over unchanged."""
    release = load_manifest(ROOT / "examples/releases/pipeline-2.3/farmd-release.yaml")
    (render,) = [t for t in release.job_types if t.name == "blender-render"]
    values = resolve_params(render, {"scene": "/shots/a.blend", "output": "/renders/a/####"})
    argv = fill_frame(fill_command(render, values), 12, 12, 12, "/cache/pipeline")
    assert argv[argv.index("-o") + 1] == "/renders/a/####"
    assert argv[argv.index("-f") + 1] == "12"
    braces = resolve_params(render, {"scene": "/s/{####}.blend", "output": "/r/{frame:04d}"})
    argv = fill_frame(fill_command(render, braces), 12, 12, 12, "/cache/pipeline")
    assert argv[2] == "/s/{####}.blend"  # a param's braces are escaped: never filled
    assert argv[argv.index("-o") + 1] == "/r/{frame:04d}"
