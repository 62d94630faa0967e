"""One rule set for a worker's settings: a config file's `workers:`, `farmd worker`'s
flags and a registration at the core's door refuse the same values for the same
reason (`farmd.worker_settings`)."""

from __future__ import annotations

from typing import Any

import pytest

from farmd import cli
from farmd.agent import host_facts
from farmd.config import parse_farm_config
from farmd.core import Scheduler
from farmd.errors import ConfigError, WorkerSettingsError
from farmd.worker_settings import RESERVED_PROPERTIES, check_worker
from tests.test_core import joined

# (the setting as a config entry's YAML, as `farmd worker` flags, as WorkerJoined
# fields; what every refusal says)
BAD: list[tuple[str, list[str], dict[str, Any], str]] = [
    (
        "properties: {memory: 8G}",
        ["--property", "memory=8G"],
        {"properties": {"memory": 8 * 2**30}},
        "farmd sets host.memory itself: use resources: {memory: 64G} (--resource memory=64G)",
    ),
    (
        "properties: {cluster: /a}",
        ["--property", "cluster=/a"],
        {"properties": {"cluster": "/a"}},
        "farmd sets host.cluster itself",
    ),
    (
        "properties: {2rack: b}",
        ["--property", "2rack=b"],
        {"properties": {"2rack": "b"}},
        "so that a requirement reads it as host.NAME",
    ),
    (
        "types: [Nuke]",
        ["--type", "Nuke"],
        {"types": ("Nuke",)},
        "a job type is lowercase letters",
    ),
    (
        "types: [nuke, nuke]",
        ["--type", "nuke", "--type", "nuke"],
        {"types": ("nuke", "nuke")},
        "listed twice",
    ),
    (
        "resources: {license.nuke: 1}",
        ["--resource", "license.nuke=1"],
        {"resources": {"license.nuke": 1}},
        "a host's counter has no dot",
    ),
    (
        "resources: {slots: 2}",
        ["--resource", "slots=2"],
        {"resources": {"slots": 2}},
        "use the slots: key (--slots)",
    ),
    (
        "slots: 2147483648",
        ["--slots", "2147483648"],
        {"slots": 2**31},
        "must be in 1..2147483647",
    ),
]


@pytest.mark.parametrize(("yaml", "flags", "fields", "problem"), BAD)
def test_the_file_the_flags_and_the_door_refuse_alike(
    yaml: str,
    flags: list[str],
    fields: dict[str, Any],
    problem: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(ConfigError) as in_file:
        parse_farm_config(f"workers:\n  default: {{{yaml}}}\n", "farm.yaml")
    assert problem in str(in_file.value)
    assert str(in_file.value).startswith("farm.yaml:2:")

    assert cli.main(["worker", "--name", "node07", *flags]) == 1
    line = capsys.readouterr().err.strip()
    assert line.startswith("farmd: error: bad worker 'node07': "), line
    assert problem in line, line

    core = Scheduler()
    event = joined("node07", **({"slots": 1} | fields))
    with pytest.raises(WorkerSettingsError) as at_door:
        core.handle(event)
    assert at_door.value.code == "bad_job"  # the code registrations were refused with
    assert str(at_door.value).startswith("bad worker 'node07': ")
    assert problem in str(at_door.value)
    assert core.workers == {}


def test_the_door_refuses_what_the_codec_only_shapes() -> None:
    """The codec takes an array fact, an infinite number and any printable name; the
    rules, at the door, do not."""
    for properties, problem in (
        ({"gpus": ["a100", "a6000"]}, "must be a string, a finite number"),
        ({"ghz": float("inf")}, "must be a string, a finite number"),
        ({"rack b": "x"}, "so that a requirement reads it as host.NAME"),
    ):
        with pytest.raises(WorkerSettingsError) as info:
            check_worker(
                name="w",
                cluster="/",
                restrictions="",
                slots=1,
                types=(),
                properties=properties,
                resources={},
            )
        assert problem in str(info.value)
        assert info.value.field == "properties"


def test_the_agent_reports_no_fact_farmd_fills_in_itself() -> None:
    facts = host_facts()
    assert not set(facts) & set(RESERVED_PROPERTIES)
    spec = check_worker(
        name="node07",
        cluster="/",
        restrictions="",
        slots=1,
        types=(),
        properties=facts,
        resources={"memory": 64 * 2**30},
    )
    assert spec.properties == facts
    assert spec.resources == {"memory": 64.0 * 2**30}
