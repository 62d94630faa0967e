"""End-to-end: cluster-path bounds at every entry, names at the wire, listings that
cannot be faked, and a poisoned state dir that still starts.

Each entry a cluster path comes through is tried with a path over the bounds (the CLI,
the raw wire for what the CLI checks before sending, the YAML `workers:`
configuration); each must refuse it in one line that names the value and the limit,
change nothing, and leave the supervisor serving with its memory bounded. Names with
control characters are refused on the raw wire (msgpack built by hand, since farmd's own
client refuses them before sending). A state dir whose rows were corrupted by hand
starts with those jobs quarantined, one log line each.
"""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from farmd.codec import NEED_DATA, Codec
from farmd.protocol import PROTOCOL_VERSION, Error, Hello, Message, Refused, Reply, Welcome
from farmd.store import DATABASE_FILE
from tests.e2e_support import CLI_TIMEOUT, Farm, assert_refused, describe, without_load

pytestmark = pytest.mark.e2e

DEEP = "/" + "/".join(f"l{i}" for i in range(17))  # one level over the bound of 16
POISON = "/a" * 20_000  # the 40 KB path that once took the supervisor to 20 GB
RSS_LIMIT_KB = 300 * 1024  # the supervisor idles near 40 MB; 20 GB is what it once took


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


class RawSession:
    """A hand-made peer on a raw socket: hello, welcome, then bodies packed by hand."""

    def __init__(self, farm: Farm, role: str = "admin") -> None:
        host, _, port = farm.address.rpartition(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.codec = Codec()
        token = farm.token_file.read_text().strip()
        self.sock.sendall(Codec().send(Hello(version=PROTOCOL_VERSION, role=role, token=token)))
        assert isinstance(self.receive(), Welcome)
        # A fatal refusal's goodbye must not race the welcome's send still finishing in the
        # supervisor (issue 11, item 1, fixed apart): one round trip on another connection
        # has the supervisor's loop run every ready task, its sender's included, first.
        farm.api.jobs()

    def send(self, body: dict[str, Any]) -> None:
        payload = msgpack.packb(body, use_bin_type=True)
        self.sock.sendall(len(payload).to_bytes(4, "big") + payload)

    def receive(self) -> Message | None:
        """The next message, or None once the supervisor has closed the connection."""
        for _ in range(1000):  # bounded: a message arrives in a few reads
            message = self.codec.next_message()
            if message is not NEED_DATA:
                assert isinstance(message, Message)
                return message
            data = self.sock.recv(65536)
            if not data:
                return None
            self.codec.receive_data(data)
        raise AssertionError("no message in 1000 reads")

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw(farm: Farm) -> Iterator[list[RawSession]]:
    sessions: list[RawSession] = []
    yield sessions
    for session in sessions:
        session.close()


def open_raw(farm: Farm, sessions: list[RawSession], role: str = "admin") -> RawSession:
    session = RawSession(farm, role)
    sessions.append(session)
    return session


def refused_fatally(session: RawSession, field: str) -> Error:
    """The supervisor answered with `error` (naming `field`) and closed the connection."""
    error = session.receive()
    assert isinstance(error, Error), error
    assert error.code == "bad_message", error
    assert f"bad field {field!r}" in error.message, error
    assert "\n" not in error.message
    assert session.receive() is None  # closed after the error
    return error


# --------------------------------------------------------------------------- paths


def test_every_entry_refuses_an_over_deep_cluster_path(farm: Farm, raw: list[RawSession]) -> None:
    farm.worker("w", "/show")
    parked = farm.submit(["true"], name="parked", restrictions="/nowhere")
    jobs_before = farm.cli_json("jobs")["jobs"]
    # a worker's host load changes by itself, every report: what is compared is the rest
    workers_before = without_load(farm.cli_json("workers"))
    deep_levels = "17 levels deep, at most 16 are allowed"
    poison_length = "(40000 characters): longer than 256 characters"

    cases: list[tuple[list[str], str]] = [
        (["submit", "--cluster", DEEP, "--", "true"], deep_levels),
        (["submit", "--cluster", POISON, "--", "true"], poison_length),
        (["submit", "--restrictions", f"/show || {DEEP}/+", "--", "true"], deep_levels),
        (["submit", "--cross-cluster", f"{DEEP}+", "--", "true"], deep_levels),
        (["modify", str(parked), "--cluster", DEEP], deep_levels),
        (["modify", str(parked), "--restrictions", f"{DEEP}/*"], deep_levels),
        (["modify", str(parked), "--cross-cluster", "/a" * 200 + "+"], "longer than 256"),
        # a worker refuses its own flags before it connects
        (["worker", "--name", "deep", "--cluster", DEEP], deep_levels),
    ]
    for args, why in cases:
        result = farm.cli(*args)
        line = assert_refused(result)
        assert why in line, describe(result)
        assert len(line) < 400, line  # the value is named, cut short
        assert DEEP[:30] in line or "/a/a/a/a" in line, line

    # The raw wire, past every client-side check: a refusal, and the session goes on.
    admin = open_raw(farm, raw)
    admin.send({"type": "submit", "request_id": 1, "argv": ["true"], "cluster": POISON})
    refusal = admin.receive()
    assert isinstance(refusal, Refused), refusal
    assert (refusal.code, poison_length in refusal.message) == ("bad_cluster", True), refusal
    batch = [{"argv": ["true"]}, {"argv": ["true"], "restrictions": f"{DEEP}/+"}]
    admin.send({"type": "submit_batch", "request_id": 2, "jobs": batch})
    refusal = admin.receive()
    assert isinstance(refusal, Refused), refusal
    assert "job 2 of the batch" in refusal.message
    assert deep_levels in refusal.message
    admin.send({"type": "list_jobs", "request_id": 3})
    listing = admin.receive()
    assert isinstance(listing, Reply), listing
    assert listing.request_id == 3

    # A worker registering over the wire with an over-deep cluster is refused.
    worker = open_raw(farm, raw, role="worker")
    worker.send({"type": "register", "name": "deep", "cluster": DEEP, "slots": 1})
    error = worker.receive()
    assert isinstance(error, Error), error
    assert error.message.startswith("registration refused: bad cluster path"), error
    assert deep_levels in error.message, error

    assert farm.supervisor is not None
    assert farm.supervisor.running()
    assert farm.cli_json("jobs")["jobs"] == jobs_before
    assert without_load(farm.cli_json("workers")) == workers_before
    assert rss_kb(farm.supervisor.pid) < RSS_LIMIT_KB
    done = farm.submit(farm.frame(), cluster="/show")
    assert farm.wait_jobs([done]) == {str(done): "complete"}


def test_the_workers_configuration_refuses_an_over_deep_cluster(bare_farm: Farm) -> None:
    config = bare_farm.root / "farm.yaml"
    config.write_text(
        f"workers:\n  default:\n    restrictions: /show/+\n  hosts:\n    render01:\n"
        f"      cluster: {DEEP}\n"
    )
    check = subprocess.run(
        [sys.executable, "-m", "farmd", "config", "check", str(config)],
        capture_output=True,
        text=True,
        env=bare_farm.env,
        timeout=CLI_TIMEOUT,
        check=False,
    )
    line = assert_refused(check)
    assert f"{config}:6:16: workers.hosts.render01.cluster: 17 levels deep" in line, line
    assert "at most 16 are allowed" in line, line
    # ... and the supervisor will not start on it (nothing written to its state dir)
    served = bare_farm.spawn("serve", ["serve", "--config", str(config), "--listen", ":0"])
    assert served.popen.wait(30) == 1
    assert "17 levels deep" in served.stderr()
    assert len(served.stderr().splitlines()) == 1, served.stderr()


# --------------------------------------------------------------------------- names


def test_names_with_control_characters_or_5000_characters_are_refused_on_the_wire(
    farm: Farm, raw: list[RawSession]
) -> None:
    jobs_before = farm.cli_json("jobs")["jobs"]
    session = open_raw(farm, raw)
    session.send({"type": "submit", "request_id": 1, "argv": ["true"], "name": "a\nb"})
    error = refused_fatally(session, "name")
    assert "control character '\\n' (U+000A)" in error.message, error

    session = open_raw(farm, raw)
    session.send({"type": "submit", "request_id": 1, "argv": ["true"], "name": "x" * 5000})
    error = refused_fatally(session, "name")
    assert "5000 characters long, at most 256" in error.message, error

    for field, value in (("job_type", "nuke\r"), ("depends_on", ["1\x00"])):
        session = open_raw(farm, raw)
        session.send({"type": "submit", "request_id": 1, "argv": ["true"], field: value})
        refused_fatally(session, field)

    worker = open_raw(farm, raw, role="worker")
    worker.send({"type": "register", "name": "w\nfake 999", "cluster": "/", "slots": 1})
    error = refused_fatally(worker, "name")
    assert "'w\\nfake 999'" in error.message, error  # named, escaped

    worker = open_raw(farm, raw, role="worker")
    body = {"type": "register", "name": "w", "cluster": "/", "slots": 1}
    worker.send({**body, "properties": {"rack\u2028b": "x"}})
    refused_fatally(worker, "properties")

    # farmd's own CLI refuses them before sending, in one line
    for args, why in (
        (["submit", "--name", "a\nb", "--", "true"], "control character '\\n'"),
        (["submit", "--name", "x" * 5000, "--", "true"], "5000 characters long, at most 256"),
        (["worker", "--name", "w\x1bx"], "control character '\\x1b'"),
    ):
        result = farm.cli(*args)
        assert why in assert_refused(result), describe(result)

    assert farm.supervisor is not None
    assert farm.supervisor.running()
    assert farm.cli_json("jobs")["jobs"] == jobs_before
    assert farm.cli_json("workers") == []
    # every line the supervisor logged is a whole event: none was split by a name
    log = farm.supervisor.stderr().splitlines()
    assert log
    assert all(line[:4].isdigit() for line in log), log


# --------------------------------------------------------------------------- state dirs


def stored(state: Path, sql: str, *args: Any) -> list[Any]:
    db = sqlite3.connect(state / DATABASE_FILE, isolation_level=None)
    try:
        return db.execute(sql, args).fetchall()
    finally:
        db.close()


def test_a_poisoned_state_dir_starts_with_the_job_quarantined(bare_farm: Farm) -> None:
    farm = bare_farm
    farm.serve()
    good = farm.submit(["true"], name="good", cluster="/show")
    victim = farm.submit(["true"], name="victim", cluster="/show", frames="1-3")
    dependent = farm.submit(["true"], name="dependent", depends_on=[victim])
    sub_job = farm.submit(["true"], name="sub", parent=victim)
    # What the 40 KB submit left behind before paths were bounded. (No worker: nothing
    # changes these jobs, so the running supervisor never writes their rows again.)
    stored(farm.state, "UPDATE jobs SET cluster = ? WHERE id = ?", POISON, victim)

    def rows() -> tuple[list[Any], list[Any]]:
        return (
            stored(farm.state, "SELECT * FROM jobs WHERE id IN (?, ?)", victim, sub_job),
            stored(farm.state, "SELECT * FROM frames WHERE job_id IN (?, ?)", victim, sub_job),
        )

    poisoned = rows()
    proc = farm.restart()  # before the fix: it died here, on every start
    jobs = farm.cli_json("jobs")["jobs"]
    assert [job["id"] for job in jobs] == [good, dependent]
    (blocked,) = [job for job in jobs if job["id"] == dependent]
    assert blocked["state"] == "blocked", blocked
    assert blocked["reason"].startswith(f"job {victim} is quarantined"), blocked
    assert "longer than 256 characters" in blocked["reason"], blocked
    listing = farm.cli_ok("jobs").splitlines()
    assert len(listing) == 4, listing  # the header, two jobs and their counts
    assert listing[-1] == "2 jobs: 1 pending, 1 blocked", listing
    line = assert_refused(farm.cli("job", str(victim)))
    assert f"job {victim} is quarantined" in line, line
    assert farm.submit(["true"], name="next") == sub_job + 1  # no id is used twice

    quarantined = [line for line in proc.stderr().splitlines() if "job quarantined" in line]
    assert len(quarantined) == 2, proc.stderr()
    assert f"job={victim} " in quarantined[0]
    assert "longer than 256" in quarantined[0]
    assert f"job={sub_job} " in quarantined[1]
    assert f"parent (job {victim})" in quarantined[1]
    assert all(line.split()[1] == "error" for line in quarantined)
    assert proc.stop() == 0
    assert rows() == poisoned  # kept for a fixed farmd, byte for byte


def test_listings_escape_odd_characters_and_show_no_fake_row(bare_farm: Farm) -> None:
    farm = bare_farm
    farm.serve()
    farm.worker("w", "/show")
    argv = ["echo", "\x1b[31mred\x1b[0m", "tab\there"]
    plain = farm.submit(argv, name="plain", restrictions="/nowhere")  # they stay pending
    named = farm.submit(["true"], name="renamed", restrictions="/nowhere")
    # a name an older farmd accepted: a newline and what looks like a row of its own
    fake = "evil\n99    fake     complete  /show  1"
    stored(farm.state, "UPDATE jobs SET name = ? WHERE id = ?", fake, named)
    farm.restart()
    farm.await_workers({"w": farm.processes[1]})

    listing = farm.cli_ok("jobs").splitlines()
    assert len(listing) == 4, listing  # the header and two jobs, no third, and the counts
    assert listing[-1] == "2 jobs: 2 pending", listing
    assert not any(line.startswith("99") for line in listing), listing
    assert repr(fake) in listing[2], listing
    detail = farm.cli_ok("job", str(plain))
    assert "command: echo '\\x1b[31mred\\x1b[0m' 'tab\\there'" in detail, detail
    assert "\x1b" not in detail
    assert "\t" not in detail
    assert repr(fake) in farm.cli_ok("job", str(named)).splitlines()[0]
    explained = farm.cli_ok("explain", str(named))
    assert repr(fake) in explained, explained
    assert "\n99" not in explained, explained
    assert "\x1b" not in farm.cli_ok("order", "w")
