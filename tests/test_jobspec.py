"""The job spec is declared once (`farmd.jobspec.JobSpec`): every place that speaks of a
job's fields — the wire's `submit`, the core's `SubmitJob`, `farmd submit`'s options,
the client's keyword arguments, the store's row and columns, the job's JSON — has each
field, under the same name and with the same default. A field added to the spec and
forgotten in one of them fails here, naming the place and the field.
"""

from __future__ import annotations

import argparse
import inspect
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs
import pytest

from farmd import cli
from farmd.cli import jobs as cli_jobs
from farmd.cli.parser import OPTION_ALIASES
from farmd.client import Client
from farmd.core import ModifyJob, Scheduler, SubmitJob, submission_digest
from farmd.errors import JobSpecError, ProtocolError
from farmd.jobspec import PARSES, SPEC_NAMES, JobSpec, doc, option_flag, spec_fields
from farmd.protocol import Modify, Submit
from farmd.rows import JobRow
from farmd.store import COLUMN_OF, SqliteStore

SPEC = {field.name: field for field in spec_fields()}
OPTIONS = [name for name, field in SPEC.items() if doc(field).option]


def test_every_field_is_documented_with_a_known_parser() -> None:
    for name, field in SPEC.items():
        meta = doc(field)
        assert meta.help, name
        assert meta.parse in PARSES, (name, meta.parse)
    assert [name for name in SPEC if not doc(SPEC[name]).option] == ["argv"]


def test_the_wire_submit_is_the_spec_with_a_request_id_and_a_key() -> None:
    fields = {field.name: field for field in attrs.fields(Submit)}
    assert set(fields) == {*SPEC, "request_id", "key"}
    for name, field in SPEC.items():
        wire = fields[name]
        # the same default and the same check: the codec validates what the spec says
        assert (wire.default, wire.validator, wire.converter) == (
            field.default,
            field.validator,
            field.converter,
        ), name


def test_a_wire_refusal_names_the_field_and_the_message() -> None:
    with pytest.raises(ProtocolError) as refused:
        Submit(request_id=1, argv=("x",), instances=-1)
    assert str(refused.value) == "bad field 'instances' of 'submit': must be >= 0 (got -1)"
    with pytest.raises(JobSpecError) as bare:
        JobSpec(argv=("x",), job_type="a\nb")
    assert "bad job field 'job_type'" in str(bare.value)
    assert "control character" in str(bare.value)


def test_the_core_event_has_the_spec_fields_unchecked() -> None:
    fields = {field.name: field for field in attrs.fields(SubmitJob)}
    assert set(SPEC) <= set(fields)
    for name, field in SPEC.items():
        assert fields[name].default == field.default, name
        # the core takes a spec as given: `draft_job` refuses a bad one, in its words
        assert fields[name].validator is None, name
        assert fields[name].converter is None, name
    assert set(fields) - set(SPEC) == {"now", "key", "by", "prepared", "digest"}
    refused = pytest.raises(JobSpecError, match=r"bad instances -1: must be a whole number")
    with refused:
        Scheduler().handle(SubmitJob(argv=("x",), instances=-1, now=1.0))


def test_modify_names_its_fields_as_the_spec_does() -> None:
    for cls in (Modify, ModifyJob):
        names = {field.name for field in attrs.fields(cls)}
        changed = names - {"request_id", "job_id", "now", "by"}
        assert changed <= set(SPEC), (cls.__name__, changed - set(SPEC))


def test_the_client_takes_every_field_as_a_keyword_argument() -> None:
    parameters = inspect.signature(Client.submit_job).parameters
    names = [name for name in parameters if name != "self"]
    assert names == [*SPEC, "key"]
    for name in OPTIONS:
        parameter = parameters[name]
        assert parameter.kind is inspect.Parameter.KEYWORD_ONLY, name
        default = SPEC[name].default
        assert parameter.default == default, (name, parameter.default, default)


def _submit_parser() -> argparse.ArgumentParser:
    parser = cli.build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    submit: argparse.ArgumentParser = commands.choices["submit"]
    return submit


def test_farmd_submit_has_an_option_for_every_field() -> None:
    actions = {action.dest: action for action in _submit_parser()._actions}
    for name in OPTIONS:
        action = actions.get(name)
        assert action is not None, f"farmd submit has no option for {name!r}"
        flags = [option_flag(name), *OPTION_ALIASES.get(name, ())]  # --type, --param
        assert action.option_strings == flags, name
        expected = SPEC[name].default
        assert action.default == (list(expected) if isinstance(expected, tuple) else expected)
        assert action.help == doc(SPEC[name]).help, name
    assert actions["command"].option_strings == []  # argv: after --


def test_farmd_submit_passes_every_option_to_the_client(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each option given on the command line reaches `submit_job` under its name."""
    given: dict[str, Any] = {}

    class Farm:
        def submit_job(self, argv: list[str], **options: Any) -> dict[str, Any]:
            given.update(options, argv=argv)
            return {"id": 7}

    @contextmanager
    def client(args: argparse.Namespace) -> Iterator[Farm]:
        yield Farm()

    monkeypatch.setattr(cli_jobs, "client_for", client)  # the name `farmd submit` calls
    texts = {
        "name": ("shot",),
        "cluster": ("/show1",),
        "priority": ("5",),
        "restrictions": ("/show1/*",),
        "cross_cluster": ("/showA+",),
        "frames": ("1-10",),
        "depends_on": ("3:done",),
        "instances": ("2",),
        "retries": ("3",),
        "retry_delay": ("1.5",),
        "time_limit": ("60",),
        "chunk": ("4",),
        "parent": ("2",),
        "uninterruptible": (),
        "job_type": ("nuke",),
        "requires": ("host.os == linux",),
        "reserve": ("gpu=1",),
        "env": ("OCIO=/studio/ocio.config",),
        "params": ("scene=/a.blend",),
        "notify": ("https://hooks.example/farm",),
    }
    assert set(texts) == set(OPTIONS), "a field is missing from this test's command line"
    line = [part for name in OPTIONS for part in (option_flag(name), *texts[name])]
    assert cli.main(["submit", *line, "--key", "k1", "--", "render", "{frame}"]) == 0
    assert capsys.readouterr().out == "7\n"
    assert given == {
        "argv": ["render", "{frame}"],
        "key": "k1",
        "name": "shot",
        "cluster": "/show1",
        "priority": 5,
        "restrictions": "/show1/*",
        "cross_cluster": "/showA+",
        "frames": "1-10",
        "depends_on": ["3:done"],
        "instances": 2,
        "retries": 3,
        "retry_delay": 1.5,
        "time_limit": 60.0,
        "chunk": 4,
        "parent": 2,
        "uninterruptible": True,
        "job_type": "nuke",
        "params": ["scene=/a.blend"],
        "notify": "https://hooks.example/farm",
        "requires": "host.os == linux",
        "reserve": "gpu=1",
        "env": ["OCIO=/studio/ocio.config"],
    }


def test_the_store_keeps_every_field(tmp_path: Path) -> None:
    row = set(attrs.fields_dict(JobRow))
    # `frames` is stored as the frame range; the job's other fields under their names
    assert set(SPEC) <= row, sorted(set(SPEC) - row)
    store = SqliteStore(tmp_path)
    store.close()
    db = sqlite3.connect(store.path)
    try:
        columns = {r[1] for r in db.execute("PRAGMA table_info(jobs)")}
    finally:
        db.close()
    for name in SPEC:
        assert COLUMN_OF.get(name, name) in columns, name


def test_the_job_json_names_fields_as_the_spec_does() -> None:
    core = Scheduler()
    core.handle(SubmitJob(argv=("x",), now=1.0))
    detail = core.job_view(1)
    # `frames` in the JSON are counts by state (the frames themselves: `frame_list`)
    assert set(SPEC) <= set(detail), sorted(set(SPEC) - set(detail))


def test_a_digest_is_unchanged_by_the_cross_cluster_rename() -> None:
    """Digests are stored with the jobs: one made before the field was renamed (it was
    `patterns`) must match the same submission now."""
    event = SubmitJob(argv=("x",), cross_cluster="/a+", key="k", now=1.0)
    # computed by farmd 0.1.0 for SubmitJob(argv=("x",), patterns="/a+", key="k", now=1.0)
    assert submission_digest(event) == EARLIER_DIGEST


EARLIER_DIGEST = "3f22932c65d0da7b0974a626ff028249"


def test_spec_names_are_the_fields_in_order() -> None:
    assert list(SPEC_NAMES) == list(SPEC)
