"""farmd.config: the central worker configuration (`workers:`), its strict loader and
`farmd config check`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from farmd.config import (
    MAX_RANGE_HOSTS,
    FarmConfig,
    HostPattern,
    PatternKind,
    WorkerEntry,
    WorkersConfig,
    WorkerSettings,
    load_farm_config,
    load_supervisor_config,
    parse_farm_config,
    parse_host_pattern,
    parse_supervisor_config,
)
from farmd.errors import ConfigError

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "conf" / "farm.yaml"

DESIGN = """\
workers:
  default:                 # every host
    cluster: /
    slots: 1
  templates:
    gpu:
      types: [blender]
      resources: {gpu: 2}
    lighting:
      template: gpu
      cluster: /show1/lighting
  hosts:
    render[001-120]:
      template: lighting
      slots: 8
    "gpu-*":
      template: gpu
    node07:
      cluster: /show2/comp
      properties: {rack: b}
"""


@pytest.fixture(autouse=True)
def state_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pin the default state dir, so defaults do not depend on the machine."""
    state = tmp_path / "default-state"
    monkeypatch.setenv("FARMD_STATE", str(state))
    return state


def workers(text: str) -> WorkersConfig:
    return parse_farm_config(text, "farm.yaml").workers


def settings(text: str, host: str) -> WorkerSettings:
    return workers(text).settings_for(host)


def refusal(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_farm_config(text, "farm.yaml")
    message = str(info.value)
    assert "\n" not in message
    return message


# --------------------------------------------------------------------------- parsing


def test_design_example() -> None:
    config = workers(DESIGN)
    render = config.settings_for("render001")
    assert render == WorkerSettings(
        cluster="/show1/lighting",
        restrictions=None,
        slots=8,
        types=("blender",),
        properties={},
        resources={"gpu": 2},
        sources=("default", "template gpu", "template lighting", "host render[001-120]"),
        origins={
            "cluster": "template lighting",
            "slots": "host render[001-120]",
            "types": "template gpu",
            "resources.gpu": "template gpu",
        },
    )
    assert config.settings_for("render120") == render
    gpu = config.settings_for("gpu-3")
    assert (gpu.cluster, gpu.slots, gpu.types, gpu.resources) == ("/", 1, ("blender",), {"gpu": 2})
    assert gpu.sources == ("default", "template gpu", "host gpu-*")
    node = config.settings_for("node07")
    assert (node.cluster, node.slots, node.properties) == ("/show2/comp", 1, {"rack": "b"})
    assert node.origins["cluster"] == "host node07"
    assert node.origins["slots"] == "default"


@pytest.mark.parametrize("host", ["render000", "render121", "render1", "render0001", "Render001"])
def test_hosts_outside_a_range_get_the_default(host: str) -> None:
    got = settings(DESIGN, host)
    assert got.sources == ("default",)
    assert (got.cluster, got.slots, got.types) == ("/", 1, None)


def test_no_workers_section_sets_nothing() -> None:
    for text in ("", "supervisor: {}\n", "workers:\n", "workers: {}\n"):
        got = settings(text, "anyhost")
        assert got == WorkerSettings(sources=("default",))
        assert (got.cluster, got.restrictions, got.slots, got.types) == (None, None, None, None)


def test_every_key_is_read_and_normalised() -> None:
    text = """\
workers:
  hosts:
    h1:
      cluster: /show1/lighting/
      restrictions: /show1/+ or /comp ,/comp
      slots: 16
      types: [blender, nuke.13]
      properties: {rack: b, cores: 64, ghz: 3.5, ssd: true, note: ''}
      resources: {gpu: 2, memory: 64G, scratch: 0.5}
"""
    got = settings(text, "h1")
    assert got.cluster == "/show1/lighting"
    assert got.restrictions == "/show1/+ || /comp"
    assert got.slots == 16
    assert got.types == ("blender", "nuke.13")
    assert got.properties == {"rack": "b", "cores": 64, "ghz": 3.5, "ssd": True, "note": ""}
    assert got.resources == {"gpu": 2, "memory": 64 * 1024**3, "scratch": 0.5}


def test_empty_values_are_settings_too() -> None:
    """`types: []` and `restrictions: ''` set "none" centrally; they are not "unset"."""
    text = """\
workers:
  default: {types: [nuke], restrictions: /a}
  hosts:
    h1: {types: [], restrictions: ''}
    h2:
"""
    h1 = settings(text, "h1")
    assert (h1.types, h1.restrictions) == ((), "")
    assert h1.origins["types"] == "host h1"
    h2 = settings(text, "h2")
    assert (h2.types, h2.restrictions) == (("nuke",), "/a")
    assert h2.sources == ("default", "host h2")


# --------------------------------------------------------------------------- precedence


PRECEDENCE = """\
workers:
  default:
    cluster: /
    slots: 1
    types: [nuke]
    properties: {site: main, rack: a}
    resources: {gpu: 0}
  hosts:
    node07:
      slots: 4
      properties: {rack: b}
    "node*":
      slots: 2
      cluster: /glob
      properties: {os_build: x}
    node[01-09]:
      cluster: /range
      types: [houdini]
      resources: {memory: 8G}
"""


def test_default_then_globs_and_ranges_in_file_order_then_exact() -> None:
    got = settings(PRECEDENCE, "node07")
    assert got.sources == ("default", "host node*", "host node[01-09]", "host node07")
    assert got.cluster == "/range"  # the range comes after the glob in the file
    assert got.slots == 4  # the exact entry wins, though it comes first in the file
    assert got.types == ("houdini",)  # replaced, not merged
    assert got.properties == {"site": "main", "rack": "b", "os_build": "x"}  # merged
    assert got.resources == {"gpu": 0, "memory": 8 * 1024**3}
    assert got.origins == {
        "cluster": "host node[01-09]",
        "slots": "host node07",
        "types": "host node[01-09]",
        "properties.site": "default",
        "properties.rack": "host node07",
        "properties.os_build": "host node*",
        "resources.gpu": "default",
        "resources.memory": "host node[01-09]",
    }


def test_only_matching_entries_apply() -> None:
    got = settings(PRECEDENCE, "node10")
    assert got.sources == ("default", "host node*")
    assert (got.cluster, got.slots, got.types) == ("/glob", 2, ("nuke",))
    assert settings(PRECEDENCE, "nod").sources == ("default",)


def test_file_order_of_patterns_decides() -> None:
    text = """\
workers:
  hosts:
    node[01-09]: {cluster: /range}
    "node*": {cluster: /glob}
"""
    got = settings(text, "node07")
    assert got.sources == ("default", "host node[01-09]", "host node*")
    assert got.cluster == "/glob"


# --------------------------------------------------------------------------- templates


def test_templates_apply_before_the_entrys_own_keys() -> None:
    text = """\
workers:
  templates:
    big: {slots: 32, cluster: /big}
  hosts:
    h1: {slots: 2, template: big}
"""
    got = settings(text, "h1")
    assert (got.slots, got.cluster) == (2, "/big")
    assert got.sources == ("default", "template big", "host h1")


def test_template_lists_apply_in_order_depth_first() -> None:
    text = """\
workers:
  templates:
    base: {slots: 1, properties: {a: base, b: base, c: base}}
    left: {template: base, properties: {b: left}}
    right: {template: [base], properties: {c: right}, slots: 3}
    top: {template: [left, right], properties: {a: top}}
  hosts:
    h1: {template: top}
    h2: {template: [right, left]}
"""
    h1 = settings(text, "h1")
    # base is reached first through left; it applies once, so right's keys stay
    assert h1.sources == (
        "default",
        "template base",
        "template left",
        "template right",
        "template top",
        "host h1",
    )
    assert h1.properties == {"a": "top", "b": "left", "c": "right"}
    assert h1.slots == 3
    h2 = settings(text, "h2")
    assert h2.sources == ("default", "template base", "template right", "template left", "host h2")
    assert h2.properties == {"a": "base", "b": "left", "c": "right"}


def test_a_template_applies_again_for_each_entry_naming_it() -> None:
    text = """\
workers:
  default: {template: small}
  templates:
    small: {slots: 1}
  hosts:
    "h*": {slots: 8}
    h1: {template: small, cluster: /x}
"""
    got = settings(text, "h1")
    # the default entry's template comes before the default entry's own keys
    assert got.sources == (
        "template small",
        "default",
        "host h*",
        "template small",
        "host h1",
    )
    assert got.slots == 1
    assert got.origins["slots"] == "template small"
    assert settings(text, "h2").slots == 8


def test_templates_may_be_defined_after_their_use() -> None:
    text = """\
workers:
  hosts:
    h1: {template: late}
  templates:
    late: {cluster: /late}
"""
    assert settings(text, "h1").cluster == "/late"


@pytest.mark.parametrize(
    ("templates", "line", "column", "owner", "cycle"),
    [
        ("    a: {template: a}\n", 4, 19, "a", "a -> a"),
        ("    a: {template: b}\n    b: {template: a}\n", 5, 19, "b", "a -> b -> a"),
        (
            "    a: {template: [x, b]}\n    b: {template: c}\n    c: {template: [a]}\n    x: {}\n",
            6,
            20,
            "c",
            "a -> b -> c -> a",
        ),
        ("    x: {}\n    b: {template: c}\n    c: {template: b}\n", 6, 19, "c", "b -> c -> b"),
    ],
)
def test_cycles_are_refused_at_the_closing_reference(
    templates: str, line: int, column: int, owner: str, cycle: str
) -> None:
    text = "workers:\n  hosts: {}\n  templates:\n" + templates
    message = refusal(text)
    assert message == (
        f"farm.yaml:{line}:{column}: workers.templates.{owner}.template: templates inherit "
        f"each other in a cycle: {cycle} (got '{cycle[0]}')"
    )


def test_unused_templates_are_checked_too() -> None:
    text = "workers:\n  templates:\n    a: {template: a}\n"
    assert "cycle: a -> a" in refusal(text)


# --------------------------------------------------------------------------- host patterns


@pytest.mark.parametrize(
    ("pattern", "inside", "outside"),
    [
        ("render[001-120]", ["render001", "render010", "render120"], ["render1", "render0001"]),
        ("render[1-120]", ["render1", "render10", "render120"], ["render01", "render001"]),
        ("render[0-9]", ["render0", "render9"], ["render00", "render10"]),
        ("r[00-99]", ["r00", "r07", "r99"], ["r0", "r100", "r7"]),
        ("r[08-10]", ["r08", "r09", "r10"], ["r8", "r07", "r11"]),
        ("node1[0-5]", ["node10", "node15"], ["node1", "node16", "node105"]),
        ("r[1-3]0.lan", ["r10.lan", "r30.lan"], ["r0.lan", "r40.lan", "r100.lan", "r1.lan"]),
        ("[1-3]x", ["1x", "3x"], ["x", "4x"]),
        ("rack[1-2]-n", ["rack1-n", "rack2-n"], ["rack3-n", "rack-n"]),
        ("gpu-*", ["gpu-", "gpu-01", "gpu-a.b"], ["gpu", "GPU-01", "xgpu-01"]),
        ("gpu-??", ["gpu-01", "gpu-ab"], ["gpu-1", "gpu-001"]),
        ("*", ["a", "anything.example.com"], []),
        ("node07", ["node07"], ["node7", "Node07", "node070"]),
    ],
)
def test_host_patterns_match(pattern: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_host_pattern(pattern)
    for host in inside:
        assert parsed.matches(host), host
    for host in outside:
        assert not parsed.matches(host), host


def test_host_pattern_kinds() -> None:
    assert parse_host_pattern("node07") == HostPattern("node07", PatternKind.EXACT)
    assert parse_host_pattern("n?de*").kind is PatternKind.GLOB
    assert parse_host_pattern("render[001-120]") == HostPattern(
        "render[001-120]", PatternKind.RANGE, "render", "", 1, 120, 3
    )
    assert parse_host_pattern("r[1-120].lan").width == 0


def test_range_bounds() -> None:
    top = MAX_RANGE_HOSTS - 1
    parse_host_pattern(f"r[0-{top}]")
    with pytest.raises(ConfigError, match=f"at most {MAX_RANGE_HOSTS} hosts"):
        parse_host_pattern(f"r[0-{top + 1}]")
    big = "9" * 18
    assert parse_host_pattern(f"r[{big}-{big}]").matches(f"r{big}")
    with pytest.raises(ConfigError, match="at most 18 digits"):
        parse_host_pattern("r[1-1234567890123456789]")
    assert parse_host_pattern("r[5-5]").matches("r5")


@pytest.mark.parametrize(
    ("key", "fragment"),
    [
        ("render[120-001]", "the range [120-001] runs backwards: write [001-120]"),
        ("render[001-99]", "zero padding needs both ends of [001-99] written with the same"),
        ("render[1-010]", "zero padding"),
        ("render[0-100000]", "a range names at most 100000 hosts, [0-100000] names 100001"),
        ("render[1-2][3-4]", "brackets are only for one numbered range"),
        ("render[1-5]*", "cannot be combined with * or ?"),
        ("render[a-c]", "brackets are only"),
        ("render[1-]", "brackets are only"),
        ("render[-1]", "brackets are only"),
        ("render[1]", "brackets are only"),
        ("render]", "brackets are only"),
        ("node 07", "a host name holds letters, digits"),
        ("node/07", "a host name holds"),
        ("nöde", "a host name holds"),
        ("''", "must be a host name, glob or range"),
    ],
)
def test_bad_host_keys_are_refused_at_the_key(key: str, fragment: str) -> None:
    text = f"workers:\n  hosts:\n    h1: {{}}\n    {key}:\n      slots: 2\n"
    message = refusal(text)
    shown = "" if key == "''" else key
    assert message.startswith(f"farm.yaml:4:5: workers.hosts.{shown}: "), message
    assert fragment in message
    assert message.endswith(f"(got {shown!r})")


# --------------------------------------------------------------------------- refusals


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        # the section and its parts
        ("workers: []\n", "1:10 workers", "must be a mapping"),
        (
            "workers:\n  hostz: {}\n",
            "2:3 workers",
            "unknown key; allowed: default, templates, hosts (got 'hostz')",
        ),
        ("workers:\n  hosts: [a, b]\n", "2:10 workers.hosts", "must be a mapping"),
        ("workers:\n  templates: gpu\n", "2:14 workers.templates", "(got 'gpu')"),
        ("workers:\n  default: 4\n", "2:12 workers.default", "must be a mapping"),
        (
            "workers:\n  hosts:\n    h1: {}\n    h1: {}\n",
            "4:5 workers.hosts.h1",
            "duplicate key, first given at 3:5",
        ),
        ("workers:\n  hosts:\n    1: {}\n", "3:5 workers.hosts", "plain strings (got '1')"),
        ("workers:\n  hosts:\n    h1: slots\n", "3:9 workers.hosts.h1", "must be a mapping"),
        # entry keys
        (
            "workers:\n  hosts:\n    h1:\n      slot: 2\n",
            "4:7 workers.hosts.h1",
            "unknown key; allowed: template, cluster, restrictions, slots, types, "
            "properties, resources, run_as, users, env_passthrough (got 'slot')",
        ),
        (
            "workers:\n  default:\n    templates: gpu\n",
            "3:5 workers.default",
            "unknown key",
        ),
        (
            "workers:\n  templates:\n    gpu:\n      types: [a]\n      types: [b]\n",
            "5:7 workers.templates.gpu.types",
            "duplicate key, first given at 4:7",
        ),
        (
            "workers:\n  hosts:\n    h1: {<<: {slots: 2}}\n",
            "3:10 workers.hosts.h1",
            "merge keys",
        ),
        # cluster
        (
            "workers:\n  hosts:\n    h1: {cluster: show1}\n",
            "3:19 workers.hosts.h1.cluster",
            "must start with '/' (the root is '/') (got 'show1')",
        ),
        (
            "workers:\n  default:\n    cluster: /a//b\n",
            "3:14 workers.default.cluster",
            "empty segment",
        ),
        (
            "workers:\n  templates:\n    t:\n      cluster: /a/../b\n",
            "4:16 workers.templates.t.cluster",
            "segment '..' is not allowed",
        ),
        ("workers:\n  default:\n    cluster: 5\n", "3:14 workers.default.cluster", "(got '5')"),
        ("workers:\n  default:\n    cluster:\n", "3:13 workers.default.cluster", "(got null)"),
        (
            "workers:\n  default:\n    cluster: [/a]\n",
            "3:14 workers.default.cluster",
            "must be a single value (got a list)",
        ),
        # restrictions
        (
            "workers:\n  hosts:\n    h1:\n      restrictions: /a || b\n",
            "4:21 workers.hosts.h1.restrictions",
            "at column 7: expected a cluster such as /A, /A/*, /A/+ or /+, found 'b'",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      restrictions: /a ||\n",
            "4:21 workers.hosts.h1.restrictions",
            "a cluster must follow '||'",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      restrictions: true\n",
            "4:21 workers.hosts.h1.restrictions",
            "must be a restriction expression",
        ),
        # slots
        ("workers:\n  default:\n    slots: 0\n", "3:12 workers.default.slots", "1..2147483647"),
        ("workers:\n  default:\n    slots: -3\n", "3:12 workers.default.slots", "(got '-3')"),
        ("workers:\n  default:\n    slots: 2.5\n", "3:12 workers.default.slots", "integer"),
        ("workers:\n  default:\n    slots: '4'\n", "3:12 workers.default.slots", "(got '4')"),
        (
            "workers:\n  default:\n    slots: yes\n",
            "3:12 workers.default.slots",
            "in YAML, yes/no/on/off are true/false",
        ),
        (
            "workers:\n  default:\n    slots: 2147483648\n",
            "3:12 workers.default.slots",
            "must be in 1..2147483647",
        ),
        (
            "workers:\n  default:\n    slots: !!python/object:os.system 1\n",
            "3:12 workers.default.slots",
            "non-standard YAML tag",
        ),
        # types
        (
            "workers:\n  default:\n    types: blender\n",
            "3:12 workers.default.types",
            "must be a list of job types",
        ),
        (
            "workers:\n  default:\n    types: {blender: 1}\n",
            "3:12 workers.default.types",
            "(got a mapping)",
        ),
        (
            "workers:\n  default:\n    types: [blender, Nuke]\n",
            "3:22 workers.default.types",
            "lowercase letters, digits, '_' and '-', dot-separated, such as blender (got 'Nuke')",
        ),
        (
            "workers:\n  default:\n    types:\n      - nuke\n      - 12\n",
            "5:9 workers.default.types",
            "(got '12')",
        ),
        (
            "workers:\n  default:\n    types: [nuke, [a]]\n",
            "3:19 workers.default.types",
            "must be a single value",
        ),
        (
            "workers:\n  default:\n    types: [nuke, blender, nuke]\n",
            "3:28 workers.default.types",
            "job type listed twice (got 'nuke')",
        ),
        # properties
        (
            "workers:\n  default:\n    properties: rack\n",
            "3:17 workers.default.properties",
            "must be a mapping",
        ),
        (
            "workers:\n  default:\n    properties: {2rack: b}\n",
            "3:18 workers.default.properties.2rack",
            "so that a requirement reads it as host.NAME (got '2rack')",
        ),
        (
            "workers:\n  default:\n    properties: {cluster: /a}\n",
            "3:18 workers.default.properties.cluster",
            "farmd sets host.cluster itself: use the cluster: key",
        ),
        (
            "workers:\n  default:\n    properties: {memory: 8G}\n",
            "3:18 workers.default.properties.memory",
            "use resources: {memory: 64G}",
        ),
        (
            "workers:\n  default:\n    properties: {country: no}\n",
            "3:27 workers.default.properties.country",
            "YAML 1.1 reads this as true/false: write true or false, or quote the text",
        ),
        (
            "workers:\n  default:\n    properties: {rack: [a, b]}\n",
            "3:24 workers.default.properties.rack",
            "must be a single value",
        ),
        (
            "workers:\n  default:\n    properties: {rack: }\n",
            "3:23 workers.default.properties.rack",
            "must be a string, a number or true/false (got null)",
        ),
        (
            "workers:\n  default:\n    properties: {since: 2024-01-01}\n",
            "3:25 workers.default.properties.since",
            "must be a string, a finite number",
        ),
        (
            "workers:\n  default:\n    properties: {ghz: .inf}\n",
            "3:23 workers.default.properties.ghz",
            "finite number",
        ),
        (
            "workers:\n  default:\n    properties: {big: 9223372036854775808}\n",
            "3:23 workers.default.properties.big",
            "64-bit",
        ),
        # resources
        (
            "workers:\n  hosts:\n    h1:\n      resources: {license.nuke: 1}\n",
            "4:19 workers.hosts.h1.resources.license.nuke",
            "farm-wide counters go in supervisor.resources",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {slots: 4}\n",
            "4:19 workers.hosts.h1.resources.slots",
            "use the slots: key",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {GPU: 4}\n",
            "4:19 workers.hosts.h1.resources.GPU",
            "lowercase letters",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {gpu: two}\n",
            "4:24 workers.hosts.h1.resources.gpu",
            "must be an amount such as 2, 0.5 or 64G (K, M, G, T: powers of 1024) (got 'two')",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {gpu: -1}\n",
            "4:24 workers.hosts.h1.resources.gpu",
            "(got '-1')",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {gpu: on}\n",
            "4:24 workers.hosts.h1.resources.gpu",
            "yes/no/on/off",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {gpu: }\n",
            "4:23 workers.hosts.h1.resources.gpu",
            "must be an amount such as 2 or 64G (got null)",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: {memory: 64X}\n",
            "4:27 workers.hosts.h1.resources.memory",
            "(got '64X')",
        ),
        (
            "workers:\n  hosts:\n    h1:\n      resources: [gpu]\n",
            "4:18 workers.hosts.h1.resources",
            "must be a mapping of counters",
        ),
        # templates: names, references
        (
            "workers:\n  templates:\n    2gpu: {}\n",
            "3:5 workers.templates.2gpu",
            "a template's name is letters",
        ),
        (
            "workers:\n  templates:\n    gpu: {}\n  hosts:\n    h1: {template: gpuu}\n",
            "5:20 workers.hosts.h1.template",
            "unknown template; templates: gpu (got 'gpuu')",
        ),
        (
            "workers:\n  default: {template: [a]}\n",
            "2:24 workers.default.template",
            "unknown template; templates: none are defined (got 'a')",
        ),
        (
            "workers:\n  templates:\n    a: {}\n    b: {template: [a, a]}\n",
            "4:23 workers.templates.b.template",
            "template listed twice",
        ),
        (
            "workers:\n  templates:\n    a: {template: {b: 1}}\n",
            "3:19 workers.templates.a.template",
            "must be a list of template names, or one name (got a mapping)",
        ),
        (
            "workers:\n  templates:\n    a: {template: }\n",
            "3:18 workers.templates.a.template",
            "(got null)",
        ),
        (
            "workers:\n  templates:\n    a: {template: [b c]}\n",
            "3:20 workers.templates.a.template",
            "starting with a letter (got 'b c')",
        ),
    ],
)
def test_refusals(text: str, where: str, fragment: str) -> None:
    """`where` is "LINE:COLUMN KEY": the message starts with FILE:LINE:COLUMN: KEY:."""
    message = refusal(text)
    position, key = where.split(" ", 1)
    assert message.startswith(f"farm.yaml:{position}: {key}: "), message
    assert fragment in message, message


def test_the_supervisor_loaders_check_the_workers_section_too(tmp_path: Path) -> None:
    good = tmp_path / "good.yaml"
    good.write_text("supervisor: {default_priority: 5}\n" + DESIGN)
    assert load_supervisor_config(good).default_priority == 5
    bad = "supervisor: {}\nworkers:\n  default: {slots: 0}\n"
    with pytest.raises(ConfigError, match=r"^x\.yaml:3:20: workers\.default\.slots: "):
        parse_supervisor_config(bad, "x.yaml")


def test_load_farm_config_reads_both_sections(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text("supervisor:\n  listen: ':9000'\n" + DESIGN)
    farm = load_farm_config(path)
    assert isinstance(farm, FarmConfig)
    assert farm.supervisor.listen.port == 9000
    assert farm.workers.settings_for("node07").cluster == "/show2/comp"
    assert FarmConfig().workers == WorkersConfig()
    with pytest.raises(ConfigError, match=r"^.*nope\.yaml: cannot read config file"):
        load_farm_config(tmp_path / "nope.yaml")
    path.write_bytes(b"workers:\n  hosts:\n    n\xe9: {}\n")
    with pytest.raises(ConfigError, match=r"farm\.yaml:3:6: not UTF-8"):
        load_farm_config(path)


def test_anchors_are_followed() -> None:
    text = """\
workers:
  templates:
    base: &base {slots: 4, properties: {rack: a}}
  hosts:
    h1: *base
"""
    assert settings(text, "h1").slots == 4


# --------------------------------------------------------------------------- built in code


def test_entries_built_in_code_are_checked() -> None:
    entry = WorkerEntry(
        templates="gpu",  # one name, as in the file
        cluster="/a/",
        restrictions="/a ,/b",
        types=["nuke"],
        resources={"memory": "8G"},
    )
    assert entry.templates == ("gpu",)
    assert entry.cluster == "/a"
    assert entry.restrictions == "/a || /b"
    assert entry.types == ("nuke",)
    assert entry.resources == {"memory": 8 * 1024**3}
    for bad, match in [
        ({"slots": 0}, "bad slots 0: must be in 1..2147483647"),
        ({"slots": True}, "bad slots True"),
        ({"cluster": "x"}, "bad cluster 'x': must start with '/'"),
        ({"restrictions": "a"}, "bad restrictions 'a': at column 1"),
        ({"types": "nuke"}, "bad types 'nuke': must be a list"),
        ({"types": ("a", "a")}, "bad types 'a': is listed twice"),
        ({"properties": {"slots": 1}}, "bad properties 'slots'"),
        ({"properties": {"x": None}}, "bad properties None"),
        ({"resources": {"gpu": True}}, "bad resources True"),
        ({"resources": {"a.b": 1}}, "bad resources 'a.b'"),
        ({"templates": ("9",)}, "bad template '9'"),
    ]:
        with pytest.raises(ConfigError, match=rf"^{match}"):
            WorkerEntry(**bad)  # type: ignore[arg-type]


def test_entries_refuse_paths_and_names_over_the_bounds() -> None:
    deep = "/" + "/".join(f"l{i}" for i in range(17))
    for bad, match in [
        ({"cluster": deep}, "17 levels deep, at most 16 are allowed"),
        ({"cluster": "/a" * 20_000}, "longer than 256 characters"),
        ({"restrictions": f"{deep}/+"}, "17 levels deep, at most 16 are allowed"),
        ({"types": ["t" * 257]}, "a name is at most 256 characters, not 257"),
        ({"properties": {"p" * 257: 1}}, "a name is at most 256 characters, not 257"),
        ({"resources": {"r" * 257: 1}}, "a name is at most 256 characters, not 257"),
    ]:
        with pytest.raises(ConfigError, match=match):
            WorkerEntry(**bad)  # type: ignore[arg-type]
    assert WorkerEntry(types=["t" * 256]).types == ("t" * 256,)


def test_workers_config_built_in_code_is_checked() -> None:
    gpu = WorkerEntry(resources={"gpu": 2})
    config = WorkersConfig(
        default=WorkerEntry(slots=1),
        templates={"gpu": gpu},
        hosts={"gpu-*": WorkerEntry(templates=("gpu",))},
    )
    assert config.settings_for("gpu-1").resources == {"gpu": 2}
    with pytest.raises(ConfigError, match="bad template 'cpu': is not a template"):
        WorkersConfig(hosts={"h": WorkerEntry(templates=("cpu",))})
    with pytest.raises(ConfigError, match="bad template 'cpu': is not a template"):
        WorkersConfig(default=WorkerEntry(templates=("cpu",)))
    with pytest.raises(ConfigError, match=r"cycle: a -> b -> a"):
        WorkersConfig(
            templates={"a": WorkerEntry(templates=("b",)), "b": WorkerEntry(templates=("a",))}
        )
    with pytest.raises(ConfigError, match=r"bad host 'r\[2-1\]': the range \[2-1\] runs back"):
        WorkersConfig(hosts={"r[2-1]": WorkerEntry()})
    with pytest.raises(ConfigError, match="bad template 'a b'"):
        WorkersConfig(templates={"a b": WorkerEntry()})


# --------------------------------------------------------------------------- the worker's flags


def test_combine_central_values_win_and_flags_fill_the_rest() -> None:
    central = settings(PRECEDENCE, "node07")
    flags: dict[str, Any] = {
        "cluster": "/mine",
        "restrictions": "/mine/+",
        "slots": 64,
        "types": ["maya", "nuke"],
        "properties": {"os": "linux", "rack": "z", "cpus": 32},
        "resources": {"memory": 1024, "gpu": 1, "fpga": 1},
    }
    assert central.combine(**flags) == {
        "cluster": "/range",
        "restrictions": "/mine/+",  # not set centrally
        "slots": 4,
        "types": ("houdini",),  # replaced whole
        "properties": {"os": "linux", "rack": "b", "cpus": 32, "site": "main", "os_build": "x"},
        "resources": {"memory": 8 * 1024**3, "gpu": 0, "fpga": 1},
    }
    nothing = WorkerSettings()
    combined = nothing.combine(**flags)
    assert combined == {**flags, "types": ("maya", "nuke")}


# --------------------------------------------------------------------------- the shipped farm


def test_the_shipped_farm() -> None:
    farm = load_farm_config(SHIPPED)
    assert farm.supervisor.resources == {"license.nuke": 10, "license.houdini": 4}
    assert farm.supervisor.preempt_policy == "passive"
    config = farm.workers
    assert set(config.templates) == {"gpu", "show1-lighting", "show1-comp", "show2-fx"}

    lighting = config.settings_for("render042")
    assert lighting.cluster == "/show1/lighting"
    assert lighting.restrictions == "/show1/+"
    assert lighting.slots == 8
    assert lighting.types == ("blender", "redshift")
    assert lighting.resources == {"gpu": 2}
    assert lighting.properties == {"site": "main", "gpu_model": "a6000"}
    assert lighting.sources[-1] == "host render[001-060]"

    special = config.settings_for("render007")
    assert special.resources == {"gpu": 2, "memory": 512 * 1024**3}
    assert special.sources[-2:] == ("host render[001-060]", "host render007")

    fx = config.settings_for("render061")
    assert (fx.cluster, fx.slots, fx.types) == ("/show2/fx", 16, ("houdini",))
    assert fx.resources == {"memory": 256 * 1024**3}

    comp = config.settings_for("comp-a")
    assert (comp.cluster, comp.slots, comp.types) == ("/show1/comp", 2, ("nuke",))

    gpu = config.settings_for("gpu-01")
    assert (gpu.cluster, gpu.slots, gpu.types) == ("/show2/fx", None, ("blender", "redshift"))
    assert gpu.resources == {"gpu": 2, "memory": 256 * 1024**3}

    node = config.settings_for("node07")
    assert (node.cluster, node.slots, node.types) == ("/show2/comp", 4, ("nuke",))
    assert node.properties == {"site": "main", "rack": "b"}

    stranger = config.settings_for("workstation12")
    assert stranger == WorkerSettings(
        properties={"site": "main"},
        sources=("default",),
        origins={"properties.site": "default"},
    )
    clusters = {config.settings_for(h).cluster for h in ("render001", "comp-x", "render100")}
    assert clusters == {"/show1/lighting", "/show1/comp", "/show2/fx"}


# --------------------------------------------------------------------------- farmd config check


def farmd(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FARMD_")}
    return subprocess.run(
        [sys.executable, "-m", "farmd", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=60,
        check=False,
    )


def test_config_check_summary() -> None:
    proc = farmd("config", "check", "conf/farm.yaml")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == "conf/farm.yaml: ok"
    assert "listen 127.0.0.1:7531" in lines[1]
    assert "license.houdini=4, license.nuke=10" in proc.stdout
    assert "workers: 4 templates, 6 host entries" in proc.stdout
    assert proc.stderr == ""

    proc = farmd("config", "check", "conf/farm.yaml", "--json")
    assert proc.returncode == 0, proc.stderr
    summary = json.loads(proc.stdout)
    assert summary["ok"] is True
    assert (summary["templates"], summary["hosts"]) == (4, 6)


def test_config_check_host_text() -> None:
    proc = farmd("config", "check", "conf/farm.yaml", "--host", "render007")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0] == (
        "render007: default, template gpu, template show1-lighting, host render[001-060], "
        "host render007"
    )
    assert "  cluster: /show1/lighting  (template show1-lighting)" in lines
    assert "  slots: 8  (host render[001-060])" in lines
    assert '  types: ["blender", "redshift"]  (template gpu)' in lines
    assert '  properties.site: "main"  (default)' in lines
    assert "  resources.memory: 512G  (host render007)" in lines

    proc = farmd("config", "check", "conf/farm.yaml", "--host", "workstation12")
    assert proc.returncode == 0, proc.stderr
    assert "  slots: not set (the worker's own flag)" in proc.stdout.splitlines()


def test_config_check_host_json() -> None:
    proc = farmd("config", "check", "conf/farm.yaml", "--host", "gpu-01", "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    expected = load_farm_config(SHIPPED).workers.settings_for("gpu-01").as_dict()
    assert got == {"host": "gpu-01", **expected}
    assert got["slots"] is None
    assert got["sources"] == ["default", "template show2-fx", "template gpu", "host gpu-*"]


def test_config_check_refuses_a_bad_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("workers:\n  hosts:\n    render[9-1]: {}\n")
    proc = farmd("config", "check", str(path), "--host", "render5")
    assert proc.returncode == 1
    assert proc.stdout == ""
    assert proc.stderr == (
        f"farmd: error: {path}:3:5: workers.hosts.render[9-1]: the range [9-1] runs "
        "backwards: write [1-9] (got 'render[9-1]')\n"
    )
    proc = farmd("config", "check", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 1
    assert proc.stderr.startswith("farmd: error: ")
    assert "cannot read config file" in proc.stderr
    assert proc.stderr.count("\n") == 1


def test_config_without_a_command_is_a_usage_error() -> None:
    proc = farmd("config")
    assert proc.returncode == 2
    assert proc.stderr.startswith("farmd: error: ")
