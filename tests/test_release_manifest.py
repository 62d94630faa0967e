"""farmd.releases: the manifest reader's located refusals, the model's wire form, typed
parameters and the two-step template filling (submit, then the worker)."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.errors import ParamError, ReleaseError, UserError
from farmd.placeholders import fill_arg
from farmd.releases import (
    JobType,
    Param,
    ParamType,
    Release,
    fill_command,
    fill_frame,
    load_manifest,
    parse_manifest,
    read_manifest_from,
    resolve_params,
    task_command,
)
from farmd.releases.manifest import MAX_MANIFEST_BYTES
from farmd.releases.model import MAX_JOB_TYPES, MAX_PARAMS
from tests.strategies import PROPERTY_SETTINGS

EXAMPLES = Path(__file__).parent.parent / "examples" / "releases"

BASE = """\
name: pipeline
version: 2.3
job_types:
  render:
    params:
      scene: {type: path, required: true}
    command: [blender, -b, "{scene}", -f, "{frame}"]
"""


def parse(text: str) -> Release:
    return parse_manifest(textwrap.dedent(text), "rel.yaml")


def refused(text: str) -> str:
    with pytest.raises(ReleaseError) as info:
        parse(text)
    message = str(info.value)
    assert "\n" not in message
    assert isinstance(info.value, UserError)
    return message


# --------------------------------------------------------------------------- reading


def test_base_manifest() -> None:
    release = parse(BASE)
    assert release.label == "pipeline 2.3"
    render = release.job_type("render")
    assert render is not None
    assert render.command == ("blender", "-b", "{scene}", "-f", "{frame}")
    assert render.params == (Param(name="scene", type=ParamType.PATH, required=True),)
    assert render.python is None
    assert render.chunk is None


@pytest.mark.parametrize(
    ("written", "version"),
    [("2.10", "2.10"), ("'2.3'", "2.3"), ("2.3.1-rc1", "2.3.1-rc1"), ("3", "3"), ("1.0", "1.0")],
)
def test_version_is_the_source_text(written: str, version: str) -> None:
    release = parse(BASE.replace("version: 2.3", f"version: {written}"))
    assert release.version == version


def test_all_options_and_param_types() -> None:
    release = parse(
        """\
        name: tools.x
        version: 1
        description: all of it
        job_types:
          kitchen-sink:
            description: every option
            params:
              s: {type: str, default: 4, description: text}
              i: {type: int, default: -3}
              f: {type: float, default: 2}
              b: {type: bool, default: false}
              p: {type: path, default: /tmp/x}
              c: {type: choice, choices: [low, high, 4k], default: 4k}
              r: {type: str, required: true}
              o: {type: int}
            command: [run, "{s}", "{i}", "{f}", "{b}", "{p}", "{c}", "{r}", "{{literal}}"]
            chunk: 5
            requires: host.os == linux
            reserve: slots=2,memory=8G
            env: {A_B: "1", PATHS: /x:/y}
            frame_timelimit: 1.5
            retries: 3
          task:
            python: pkg.mod:run.inner
        """
    )
    sink = release.job_type("kitchen-sink")
    assert sink is not None
    defaults = {p.name: p.default for p in sink.params}
    assert defaults == {
        "s": "4",
        "i": -3,
        "f": 2.0,
        "b": False,
        "p": "/tmp/x",
        "c": "4k",
        "r": None,
        "o": None,
    }
    assert isinstance(defaults["f"], float)
    assert (sink.chunk, sink.requires, sink.reserve) == (5, "host.os == linux", "slots=2,memory=8G")
    assert sink.environment == {"A_B": "1", "PATHS": "/x:/y"}
    assert (sink.frame_timelimit, sink.retries) == (1.5, 3)
    task = release.job_type("task")
    assert task is not None
    assert (task.python, task.command) == ("pkg.mod:run.inner", None)


# Each refusal: the exact FILE:LINE:COLUMN (of the bad value, or of an unknown or
# duplicate key), the key path, and words naming what is wrong.
@pytest.mark.parametrize(
    ("text", "prefix", "words"),
    [
        (BASE.replace("name: pipeline", "name: Pipe Line"), "rel.yaml:1:7: name:", "lowercase"),
        (BASE + "bogus: 1\n", "rel.yaml:8:1: top level:", "unknown key"),
        (BASE.replace("version: 2.3", "version: [1]"), "rel.yaml:2:10: version:", "single value"),
        (BASE.replace("version: 2.3", "version: true"), "rel.yaml:2:10: version:", "string"),
        (BASE.replace("version: 2.3", "version: 2/3"), "rel.yaml:2:10: version:", "2.3.1-rc1"),
        (BASE.replace("version: 2.3\n", ""), "rel.yaml:1:1: top level:", "missing 'version'"),
        (
            BASE.replace("render:", "Render:"),
            "rel.yaml:4:3: job_types.Render:",
            "lowercase",
        ),
        (
            BASE.replace("type: path", "type: file"),
            "rel.yaml:6:21: job_types.render.params.scene.type:",
            "str, int, float, bool, path, choice",
        ),
        (
            BASE.replace("scene: {", "frame: {").replace("{scene}", "x"),
            "rel.yaml:6:7: job_types.render.params.frame:",
            "reserved",
        ),
        (
            BASE.replace("scene: {", "python: {").replace("{scene}", "x"),
            "rel.yaml:6:7: job_types.render.params.python:",
            "{python} is filled in by the worker",
        ),
        (
            BASE.replace('"{scene}"', '"{scnee}"'),
            "rel.yaml:7:28: job_types.render.command:",
            "unknown placeholder {scnee}",
        ),
        (
            BASE.replace('"{scene}"', '"{scene"'),
            "rel.yaml:7:28: job_types.render.command:",
            "unmatched '{'",
        ),
        (
            BASE.replace("required: true", "required: true, default: /x"),
            "rel.yaml:6:52: job_types.render.params.scene.default:",
            "required parameter may not have a default",
        ),
        (
            BASE.replace("required: true", "required: maybe"),
            "rel.yaml:6:37: job_types.render.params.scene.required:",
            "true or false",
        ),
        (
            BASE + "    chunk: 0\n",
            "rel.yaml:8:12: job_types.render.chunk:",
            "whole number of frames",
        ),
        (
            BASE + "    retries: -1\n",
            "rel.yaml:8:14: job_types.render.retries:",
            "0 to",
        ),
        (
            BASE + "    frame_timelimit: yes\n",
            "rel.yaml:8:22: job_types.render.frame_timelimit:",
            "yes/no/on/off",
        ),
        (
            BASE + "    env: {FARMD_X: a}\n",
            "rel.yaml:8:11: job_types.render.env.FARMD_X:",
            "FARMD_* variables are the farm's",
        ),
        (
            BASE + "    env: {1A: a}\n",
            "rel.yaml:8:11: job_types.render.env.1A:",
            "variable name",
        ),
        (
            BASE + "    requires: host.os ==\n",
            "rel.yaml:8:15: job_types.render.requires:",
            "bad requirement",
        ),
        (
            BASE + "    reserve: slots=zero\n",
            "rel.yaml:8:14: job_types.render.reserve:",
            "bad reservation",
        ),
        (
            BASE + "    python: a:b\n",
            "rel.yaml:8:5: job_types.render:",
            "exactly one of command",
        ),
        (
            BASE.replace("command: [blender", "python: 'mod:'\n    x: [blender"),
            "rel.yaml:8:5: job_types.render: unknown key; allowed: description,",  # at the key
            "unknown key",
        ),
        (
            BASE + "    command: [x]\n",
            "rel.yaml:8:5: job_types.render.command:",
            "duplicate key, first given at 7:5",
        ),
        (
            BASE.replace('[blender, -b, "{scene}", -f, "{frame}"]', "[]"),
            "rel.yaml:7:14: job_types.render.command:",
            "non-empty list",
        ),
        (
            BASE.replace('[blender, -b, "{scene}", -f, "{frame}"]', "[x, {a: 1}]"),
            "rel.yaml:7:18: job_types.render.command:",
            "must be a string",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: choice, default: a}"),
            "rel.yaml:6:14: job_types.render.params.scene:",
            "needs choices",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: int, choices: [a]}"),
            "rel.yaml:6:26: job_types.render.params.scene.choices:",
            "only a choice parameter",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: choice, choices: [a, b, a]}"),
            "rel.yaml:6:45: job_types.render.params.scene.choices:",
            "listed twice",
        ),
        (
            BASE.replace("path, required: true}", "choice, choices: [a], default: c}"),
            "rel.yaml:6:52: job_types.render.params.scene.default:",
            "must be one of a",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: int, default: 1.5}"),
            "rel.yaml:6:35: job_types.render.params.scene.default:",
            "not a valid int",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: bool, default: 1}"),
            "rel.yaml:6:36: job_types.render.params.scene.default:",
            "true or false",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: float, default: .nan}"),
            "rel.yaml:6:37: job_types.render.params.scene.default:",
            "finite",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: path, default: ''}"),
            "rel.yaml:6:36: job_types.render.params.scene.default:",
            "must not be empty",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: path}"),
            "rel.yaml:7:28: job_types.render.command:",
            "neither required nor has a default",
        ),
        (
            BASE.replace("{type: path, required: true}", "{type: path, default: !!python/none x}"),
            "rel.yaml:6:36: job_types.render.params.scene.default:",
            "non-standard YAML tag",
        ),
        (BASE + "  x: [\n", "rel.yaml:", "YAML syntax"),
        ("", "rel.yaml:1:1:", "empty"),
    ],
)
def test_refusals_are_located(text: str, prefix: str, words: str) -> None:
    message = refused(text)
    assert message.startswith(prefix), message
    assert words in message, message


def test_bounds_are_named() -> None:
    many_types = "".join(f"  t{i}:\n    python: m:f\n" for i in range(MAX_JOB_TYPES + 1))
    message = refused("name: a\nversion: 1\njob_types:\n" + many_types)
    assert message.startswith("rel.yaml:4:3: job_types:")
    assert f"at most {MAX_JOB_TYPES}" in message
    params = "".join(f"      p{i}: {{type: str}}\n" for i in range(MAX_PARAMS + 1))
    text = f"name: a\nversion: 1\njob_types:\n  t:\n    python: m:f\n    params:\n{params}"
    message = refused(text)
    assert message.startswith("rel.yaml:7:7: job_types.t.params:")
    assert f"at most {MAX_PARAMS}" in message
    message = refused("# " + "x" * MAX_MANIFEST_BYTES)
    assert message.startswith("rel.yaml:1:1:")
    assert str(MAX_MANIFEST_BYTES) in message


def test_non_utf8_and_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "farmd-release.yaml"
    path.write_bytes(b"name: a\nversion: \xff\n")
    with pytest.raises(ReleaseError, match=r"farmd-release.yaml:2:10: not UTF-8"):
        load_manifest(path)
    with pytest.raises(ReleaseError, match="cannot read the release manifest"):
        load_manifest(tmp_path / "missing.yaml")


def test_examples_parse() -> None:
    pipeline = read_manifest_from(EXAMPLES / "pipeline-2.3")
    assert (pipeline.name, pipeline.version) == ("pipeline", "2.3")
    assert [t.name for t in pipeline.job_types] == ["blender-render", "ffmpeg-encode"]
    render = pipeline.job_type("blender-render")
    assert render is not None
    assert render.command is not None
    assert render.command[:4] == ("blender", "-b", "{scene}", "-E")
    multi = read_manifest_from(EXAMPLES / "multicluster-1.0")
    assert (multi.name, multi.version) == ("multicluster", "1.0")
    kinds = {t.name: t.python for t in multi.job_types}
    assert kinds == {
        "multi-cluster": "multicluster.tasks:multi_cluster",
        "dummy": "multicluster.tasks:dummy",
    }


# --------------------------------------------------------------------------- wire


def _all_examples() -> list[Release]:
    return [read_manifest_from(d) for d in sorted(EXAMPLES.iterdir())]


@pytest.mark.parametrize("release", _all_examples(), ids=lambda r: r.label)
def test_wire_roundtrip(release: Release) -> None:
    import msgpack

    wire = release.to_wire()
    assert Release.from_wire(msgpack.unpackb(msgpack.packb(wire))) == release


def _render_wire() -> dict[str, object]:
    return parse(BASE).to_wire()


@pytest.mark.parametrize(
    ("mutate", "words"),
    [
        (lambda w: w.update(extra=1), "release: unknown key 'extra'"),
        (lambda w: w.pop("version"), "release: missing 'version'"),
        (lambda w: w.update(version="2 3"), "version"),
        (lambda w: w.update(job_types="x"), "job_types: must be a list"),
        (lambda w: w["job_types"][0].update(command=[]), "job_types[0]"),
        (lambda w: w["job_types"][0].update(python="m:f"), "exactly one of command and python"),
        (
            lambda w: w["job_types"][0]["params"][0].update(type="file"),
            "job_types[0].params[0].type: must be one of",
        ),
        (lambda w: w["job_types"][0]["params"][0].update(required="yes"), "params[0]"),
        (lambda w: w["job_types"][0].update(command=["{nope}"]), "unknown placeholder {nope}"),
        (lambda w: w["job_types"][0].update(env={"FARMD_X": "1"}), "FARMD_* variables"),
        (lambda w: w["job_types"][0].update(chunk=True), "chunk"),
        (lambda w: w["job_types"].append(w["job_types"][0]), "declared twice"),
        (lambda w: w["job_types"][0].update(params=[{}] * 100), "at most 64"),
    ],
)
def test_from_wire_refuses_hostile_data(mutate: object, words: str) -> None:
    wire = _render_wire()
    mutate(wire)  # type: ignore[operator]
    with pytest.raises(ReleaseError) as info:
        Release.from_wire(wire)
    assert str(info.value).startswith("bad release data: ")
    assert words in str(info.value)


def test_from_wire_not_a_mapping() -> None:
    with pytest.raises(ReleaseError, match="release: must be a mapping"):
        Release.from_wire(["x"])


# --------------------------------------------------------------------------- params

SINK = JobType(
    name="sink",
    params=(
        Param(name="s", type=ParamType.STR, default="x"),
        Param(name="i", type=ParamType.INT, default=1),
        Param(name="f", type=ParamType.FLOAT, default=0.5),
        Param(name="b", type=ParamType.BOOL, default=False),
        Param(name="p", type=ParamType.PATH, required=True),
        Param(name="c", type=ParamType.CHOICE, choices=("lo", "hi"), default="lo"),
        Param(name="opt", type=ParamType.INT),
    ),
    command=("run", "{s}", "{i}", "{f}", "{b}", "{p}", "{c}", "-f", "{frame}", "{{x}}"),
)


def test_defaults_are_applied() -> None:
    values = resolve_params(SINK, {"p": "/a"})
    assert values == {"s": "x", "i": 1, "f": 0.5, "b": False, "p": "/a", "c": "lo"}
    argv = fill_command(SINK, values)
    assert argv == ("run", "x", "1", "0.5", "false", "/a", "lo", "-f", "{frame}", "{{x}}")
    assert fill_frame(argv, 7, 7, 7, "/rel") == [
        "run", "x", "1", "0.5", "false", "/a", "lo", "-f", "7", "{x}",
    ]  # fmt: skip


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ({"i": "42"}, {"i": 42}),
        ({"i": "-7"}, {"i": -7}),
        ({"i": 5}, {"i": 5}),
        ({"f": "1e3"}, {"f": 1000.0}),
        ({"f": "-.5"}, {"f": -0.5}),
        ({"f": "3"}, {"f": 3.0}),
        ({"f": 2}, {"f": 2.0}),
        ({"b": "TRUE"}, {"b": True}),
        ({"b": "yes"}, {"b": True}),
        ({"b": "1"}, {"b": True}),
        ({"b": "No"}, {"b": False}),
        ({"b": "0"}, {"b": False}),
        ({"b": True}, {"b": True}),
        ({"c": "hi"}, {"c": "hi"}),
        ({"s": ""}, {"s": ""}),
        ({"opt": "3"}, {"opt": 3}),
    ],
)
def test_every_type_reads_text(given: dict[str, object], expected: dict[str, object]) -> None:
    values = resolve_params(SINK, {"p": "/a", **given})
    for name, value in expected.items():
        assert values[name] == value
        assert type(values[name]) is type(value)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({"i": "4.5"}, "job type 'sink': param i='4.5': not a valid int: must be a whole number"),
        ({"i": "1_000"}, "param i='1_000': not a valid int"),
        ({"i": str(2**64)}, "signed 64-bit"),
        ({"i": True}, "param i=True: not a valid int"),
        ({"f": "nan"}, "param f='nan': not a valid float"),
        ({"f": "1e999"}, "must be a finite number"),
        ({"f": "abc"}, "param f='abc': not a valid float"),
        ({"b": "maybe"}, "param b='maybe': not a valid bool: must be true/false, yes/no or 1/0"),
        ({"c": "mid"}, "param c='mid': not a valid choice: must be one of lo, hi"),
        ({"p": ""}, "param p='': not a valid path: a path must not be empty"),
        ({"s": "a\0b"}, "NUL"),
        ({"zz": "1"}, "job type 'sink' has no param 'zz'; params: s, i, f, b, p, c, opt"),
    ],
)
def test_bad_params_are_refused(given: dict[str, object], message: str) -> None:
    with pytest.raises(ParamError) as info:
        resolve_params(SINK, {"p": "/a", **given})
    assert message in str(info.value)


def test_missing_required_param() -> None:
    with pytest.raises(ParamError, match=r"job type 'sink' needs param 'p' \(--param p=PATH\)"):
        resolve_params(SINK, {})


def test_python_type_runs_the_task_runner() -> None:
    task = JobType(
        name="t",
        params=(Param(name="n", type=ParamType.INT, default=1),),
        python="pkg.tasks:run",
    )
    values = resolve_params(task, {"n": "3"})
    assert values == {"n": 3}
    # Its values travel in FARMD_PARAMS, not in the argv.
    argv = fill_command(task, values)
    assert argv == task_command(task)
    assert fill_frame(argv, 7, 1, 9, "/c/{x}", python="/opt/py {3}/bin/python") == [
        "/opt/py {3}/bin/python", "-m", "farmd.releases.task_runner", "/c/{x}", "pkg.tasks:run",
    ]  # fmt: skip


def test_task_command_refuses_a_command_type() -> None:
    with pytest.raises(ParamError, match="job type 'sink' runs a command, not a python function"):
        task_command(SINK)


def test_python_placeholder_in_a_command() -> None:
    job_type = JobType(name="t", command=("{python}", "{release}/tool.py", "{{python}}"))
    argv = fill_command(job_type, {})
    assert fill_frame(argv, 1, 1, 1, "/r", python="/py") == ["/py", "/r/tool.py", "{python}"]
    assert fill_frame(argv, 1, 1, 1, "/r")[0] == sys.executable


# --------------------------------------------------------------------------- templates

braces = st.text(alphabet="{}frameststartendrelease-x/ ", max_size=30)
any_text = st.text(max_size=30).filter(lambda t: "\0" not in t)


@PROPERTY_SETTINGS
@given(argv=st.lists(braces | any_text, max_size=6), frame=st.integers(0, 10**6))
def test_jobs_without_release_are_filled_as_dispatch_fills_them(
    argv: list[str], frame: int
) -> None:
    end = str(frame + 3)
    assert fill_frame(argv, frame, frame, end, None) == [
        fill_arg(arg, str(frame), str(frame), end) for arg in argv
    ]


def test_a_job_without_a_release_leaves_release_alone() -> None:
    argv = ["{frame}", "{{frame}}", "{release}", "{start}-{end}", "{x}", "{frame:03d}", "####"]
    assert fill_frame(argv, 3, 1, 4, None) == [
        "3", "{frame}", "{release}", "1-4", "{x}", "003", "####",
    ]  # fmt: skip


@PROPERTY_SETTINGS
@given(value=braces | any_text, frame=st.integers(0, 10**6))
def test_a_param_value_reaches_the_frame_as_written(value: str, frame: int) -> None:
    job_type = JobType(
        name="t",
        params=(Param(name="v", type=ParamType.STR, required=True),),
        command=("x{v}y", "{v}", "-f", "{frame}", "{{v}}", "{release}/bin"),
    )
    argv = fill_command(job_type, resolve_params(job_type, {"v": value}))
    filled = fill_frame(argv, frame, frame, frame, "/r")
    assert filled == [f"x{value}y", value, "-f", str(frame), "{v}", "/r/bin"]


def test_reserved_placeholders_are_kept_for_the_worker() -> None:
    job_type = JobType(name="t", command=("{start}", "{end}", "{frame}", "{release}", "}}{{"))
    argv = fill_command(job_type, {})
    assert argv == ("{start}", "{end}", "{frame}", "{release}", "}}{{")
    assert fill_frame(argv, 5, 1, 9, "/cache/p-2.3") == ["1", "9", "5", "/cache/p-2.3", "}{"]
