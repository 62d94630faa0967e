"""The command line's figures (issue 16): progress, durations and dates in the tables,
colour only on a terminal (NO_COLOR honoured), shell completion scripts generated from
the parser, and help text on every option. No supervisor: a fake client answers what
the protocol would."""

from __future__ import annotations

import argparse
import contextlib
import datetime
import io
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import farmd.cli.jobs as cli_jobs
from farmd.cli import build_parser, main
from farmd.cli.completion import commands, script
from farmd.cli.output import duration, percent, print_table, use_colour, when
from farmd.core import Scheduler
from farmd.frames import FrameState
from tests.test_core import joined, starts, submit

ROOT = Path(__file__).resolve().parents[1]
STATES = {s.value: 0 for s in FrameState}


def job(**fields: Any) -> dict[str, Any]:
    """A job summary as the protocol sends it (docs/protocol.md 6.1)."""
    base: dict[str, Any] = {
        "id": 1,
        "name": "shot",
        "state": "running",
        "cluster": "/",
        "priority": 9999,
        "owner": "farm",
        "frames": {**STATES, "complete": 84, "running": 4, "pending": 112},
        "submitted_at": 1_000.0,
        "started_at": 1_010.0,
        "ended_at": None,
        "elapsed": 192.0,
        "progress": 0.42,
        "eta": 7_500.0,
        "reason": "",
        "parent": None,
    }
    return base | fields


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, "-"),
        (0.4, "0s"),
        (42, "42s"),
        (192, "3m12s"),
        (2 * 3600 + 5 * 60 + 9, "2h05m"),
        (86_400 + 4 * 3600 + 59, "1d4h"),
    ],
)
def test_durations_read_in_two_units_at_most(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


def test_percent_rounds_down_so_100_means_done() -> None:
    assert [percent(p) for p in (0.0, 0.42, 0.999, 1.0, None)] == ["0%", "42%", "99%", "100%", "-"]


def test_a_time_is_a_local_date() -> None:
    at = time.mktime((2026, 12, 3, 14, 5, 12, 0, 0, -1))
    assert when(at) == "2026-12-03 14:05:12"
    assert when(None) == "-"


def test_jobs_table_shows_progress_done_elapsed_eta_and_reasons(
    capsys: pytest.CaptureFixture[str],
) -> None:
    waiting = job(
        id=2,
        name="comp",
        state="pending",
        frames={**STATES, "pending": 10},
        started_at=None,
        elapsed=None,
        progress=0.0,
        eta=None,
        reason="no worker runs type 'nuke'",
    )
    cli_jobs._print_jobs([job(), waiting])
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == [c.upper() for c in cli_jobs.JOBS_COLUMNS]
    assert lines[1].split()[6:10] == ["42%", "84/200", "3m12s", "2h05m"]
    assert lines[2].split()[6:10] == ["0%", "0/10", "-", "-"]
    assert lines[2].endswith("no worker runs type 'nuke'")
    assert "\x1b" not in "".join(lines)  # not a terminal: no colour


class FakeFarm:
    def __init__(self, detail: dict[str, Any]) -> None:
        self.detail = detail

    def job(self, job_id: int, **_: Any) -> dict[str, Any]:
        return self.detail


def test_job_shows_dates_and_durations(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    submitted = time.mktime((2026, 12, 3, 14, 5, 12, 0, 0, -1))
    detail = job(
        submitted_at=submitted,
        started_at=submitted + 3,
        ended_at=submitted + 3 + 192,
        elapsed=192.0,
        state="complete",
        progress=1.0,
        eta=None,
        frames={**STATES, "complete": 2},
        restrictions="",
        cross_cluster="",
        depends_on=[],
        waiting_on=[],
        subjob_ids=[],
        chunk=1,
        argv=["render", "{frame}"],
        frame_list=[
            {
                "frame": 1,
                "frames": "1",
                "state": "complete",
                "worker": "w1",
                "attempts": 1,
                "started_at": submitted + 3,
                "finished_at": submitted + 75,
                "exit_code": 0,
            }
        ],
        frame_next=None,
        frame_list_total=2,
    )

    @contextlib.contextmanager
    def client_for(args: argparse.Namespace) -> Iterator[FakeFarm]:
        yield FakeFarm(detail)

    monkeypatch.setattr(cli_jobs, "client_for", client_for)
    assert main(["job", "1"]) == 0
    out = capsys.readouterr().out
    assert "  submitted: 2026-12-03 14:05:12\n" in out
    assert "  started: 2026-12-03 14:05:15 (after 3s)\n" in out
    assert "  ended: 2026-12-03 14:08:27 (ran 3m12s)\n" in out
    assert "  progress: 100%, 2/2 frames\n" in out
    header, row = out.splitlines()[-2:]
    assert header.split() == [
        "FRAMES",
        "STATE",
        "WORKER",
        "ATTEMPTS",
        "STARTED_AT",
        "FINISHED_AT",
        "DURATION",
        "EXIT_CODE",
    ]
    started, finished = ["2026-12-03", "14:05:15"], ["2026-12-03", "14:06:27"]
    assert row.split() == ["1", "complete", "w1", "1", *started, *finished, "1m12s", "0"]
    # --json gives the times as ISO 8601 dates in UTC (the protocol keeps numbers)
    assert main(["job", "1", "--json"]) == 0
    iso = datetime.datetime.fromtimestamp(submitted, datetime.UTC).isoformat(
        timespec="microseconds"
    )
    assert f'"submitted_at": "{iso}"' in capsys.readouterr().out


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_colour_only_on_a_terminal_and_never_with_no_color(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.delenv("NO_COLOR", raising=False)
    assert use_colour(Terminal())
    assert not use_colour(io.StringIO())
    monkeypatch.setenv("NO_COLOR", "1")
    assert not use_colour(Terminal())
    monkeypatch.setenv("NO_COLOR", "")  # set but empty: as if unset (no-color.org)
    assert use_colour(Terminal())

    rows = [{"name": "w1", "state": "busy"}, {"name": "w2", "state": "idle"}]
    print_table(rows, ["name", "state"], colour=True)
    out = capsys.readouterr().out.splitlines()
    assert out[1] == "w1    \x1b[36mbusy \x1b[0m"  # padded inside: columns stay aligned
    assert out[2] == "w2    \x1b[32midle \x1b[0m"


def test_a_supervisor_jobs_page_prints_with_its_figures(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The core's page, as the CLI prints it: the figures line up with the protocol's."""
    core = Scheduler()
    core.handle(joined("w1", now=0.0))
    starts(core.handle(submit(frames="1-4", now=100.0)))
    core.handle(submit(job_type="nuke", now=100.0))
    cli_jobs._print_jobs(core.jobs_page(now=172.0)["jobs"])
    lines = capsys.readouterr().out.splitlines()
    assert lines[1].split()[2] == "running"
    assert lines[1].split()[6:10] == ["0%", "0/4", "1m12s", "-"]
    assert lines[2].endswith("no worker runs type 'nuke'")


# --------------------------------------------------------------------------- completion


def test_completion_lists_every_command_and_its_options() -> None:
    found = {" ".join(c.words): c for c in commands(build_parser())}
    assert {"jobs", "job", "submit", "config check", "completion"} <= set(found)
    assert "--frame-limit" in {f for o in found["job"].options for f in o.flags}
    bash = script(build_parser(), "bash")
    assert "--frame-limit" in bash
    assert '"config check")' in bash


def test_bash_completion_parses_and_completes(tmp_path: Path) -> None:
    path = tmp_path / "farmd.bash"
    path.write_text(script(build_parser(), "bash"))
    subprocess.run(["bash", "-n", str(path)], check=True)
    probe = (
        f"source {path}; "
        'COMP_WORDS=(farmd jo); COMP_CWORD=1; _farmd; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(farmd serve --log-level ""); COMP_CWORD=3; _farmd; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(farmd serve --store ""); COMP_CWORD=3; _farmd; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(farmd config ""); COMP_CWORD=2; _farmd; echo "${COMPREPLY[*]}"; '
        'COMP_WORDS=(farmd job 3 --frame-l); COMP_CWORD=3; _farmd; echo "${COMPREPLY[*]}"'
    )
    out = subprocess.run(["bash", "-c", probe], check=True, capture_output=True, text=True)
    # A free value (--store takes a path or a URL) offers no options: the shell lists files.
    assert out.stdout.splitlines() == [
        "jobs job",
        "debug info warning error",
        "",
        "check",
        "--frame-limit",
    ]


@pytest.mark.parametrize(("shell", "check"), [("zsh", ["zsh", "-n"]), ("fish", ["fish", "-n"])])
def test_zsh_and_fish_completion_parse(tmp_path: Path, shell: str, check: list[str]) -> None:
    text = script(build_parser(), shell)
    assert "--frame-limit" in text.replace("-l frame-limit", "--frame-limit")
    if shutil.which(check[0]) is None:
        pytest.skip(f"{check[0]} is not installed")
    path = tmp_path / f"farmd.{shell}"
    path.write_text(text)
    subprocess.run([*check, str(path)], check=True)


def test_farmd_completion_prints_the_script(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["completion", "bash"]) == 0
    assert "complete -o default -F _farmd farmd" in capsys.readouterr().out


# --------------------------------------------------------------------------- help


def test_every_option_has_help_and_those_with_a_default_state_it() -> None:
    def options(parser: argparse.ArgumentParser, path: str) -> Iterator[tuple[str, Any]]:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from options(sub, f"{path} {name}")
            elif action.option_strings and action.dest not in ("help", "version"):
                yield path, action

    missing, undefaulted = [], []
    for path, action in options(build_parser(), "farmd"):
        flag = f"{path} {action.option_strings[0]}"
        if not action.help:
            missing.append(flag)
        elif action.default not in (None, False, [], "") and not re.search(
            r"default", action.help, re.IGNORECASE
        ):
            undefaulted.append(flag)
    assert missing == []
    assert undefaulted == ["farmd lock --purge"]  # --drain says it is the default


# --------------------------------------------------------------------------- docs


def test_the_protocol_doc_lists_every_field_of_a_job_summary() -> None:
    doc = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")
    section = doc[doc.index("**Job summary**") : doc.index("**Job detail**")]
    core = Scheduler()
    core.handle(submit(now=0.0))
    for key in core.job_summary(1):
        assert f"| `{key}` |" in section, key
