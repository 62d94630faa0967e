"""farmd.config: listen addresses, the state dir, SupervisorConfig and its strict loader."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from farmd.config import (
    DEFAULT_LISTEN,
    DEFAULT_PORT,
    Address,
    SupervisorConfig,
    TlsSettings,
    default_state_dir,
    http_address,
    load_supervisor_config,
    parse_address,
    parse_supervisor_config,
)
from farmd.errors import ConfigError

ALL_KEYS = (
    "listen",
    "state_dir",
    "default_priority",
    "default_cluster",
    "heartbeat_interval",
    "heartbeat_timeout",
    "lost_worker_grace",
    "max_frame_bytes",
    "store",
    "advertise",
    "preempt_policy",
    "resources",
    "metrics",
    "http",
    "highest_user_priority",
    "outbox_pause_bytes",
    "max_outbox_bytes",
    "idle_timeout",
    "max_handshakes",
    "max_admin_sessions",
    "max_user_sessions",
    "max_worker_sessions",
    "history_after",
    "history_days",
    "audit_days",
    "shared_user_token",
    "tls",
    "notify",
    "notify_allow",
)


@pytest.fixture
def state_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Pin the default state dir, so defaults do not depend on the machine."""
    state = tmp_path / "default-state"
    monkeypatch.setenv("FARMD_STATE", str(state))
    return state


def write(tmp_path: Path, text: str | bytes) -> Path:
    path = tmp_path / "farmd.yaml"
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def refused(path: Path) -> str:
    with pytest.raises(ConfigError) as info:
        load_supervisor_config(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}:")
    return message


def assert_at(message: str, path: Path, line: int, column: int, key: str) -> None:
    assert message.startswith(f"{path}:{line}:{column}: {key}: "), message


# --------------------------------------------------------------------------- addresses


@pytest.mark.parametrize(
    ("text", "host", "port"),
    [
        ("127.0.0.1:7531", "127.0.0.1", 7531),
        (":7531", "127.0.0.1", 7531),
        (":0", "127.0.0.1", 0),
        ("0.0.0.0:65535", "0.0.0.0", 65535),
        ("localhost:80", "localhost", 80),
        ("farm-01.example.com:7531", "farm-01.example.com", 7531),
        ("[::1]:7531", "::1", 7531),
        ("[::]:0", "::", 0),
        ("[fe80::1:2]:9", "fe80::1:2", 9),
    ],
)
def test_parse_address_forms(text: str, host: str, port: int) -> None:
    assert parse_address(text) == Address(host, port)


@pytest.mark.parametrize(
    ("address", "text"),
    [
        (Address("127.0.0.1", 7531), "127.0.0.1:7531"),
        (Address("::1", 7531), "[::1]:7531"),
        (Address("localhost", 0), "localhost:0"),
    ],
)
def test_address_str(address: Address, text: str) -> None:
    assert str(address) == text
    assert parse_address(text) == address


def test_default_listen() -> None:
    assert DEFAULT_PORT == 7531
    assert Address("127.0.0.1", 7531) == DEFAULT_LISTEN
    assert str(DEFAULT_LISTEN) == "127.0.0.1:7531"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "7531",
        "localhost",
        ":",
        "host:",
        "host:-1",
        "host:+80",
        "host:65536",
        "host:123456",
        "host:abc",
        "host:\u0663",
        " :7531",
        ":7531 ",
        "::1:7531",
        "[::1]",
        "[::1]7531",
        "[::1:7531",
        "[127.0.0.1]:80",
        "[nothost]:80",
        "999.1.1.1:80",
        "bad!host:80",
        "-host:80",
        "a..b:80",
    ],
)
def test_parse_address_refusals(text: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_address(text)
    message = str(info.value)
    assert repr(text) in message
    assert "\n" not in message


@pytest.mark.parametrize(("host", "port"), [("", 1), ("a b", 1), ("h", -1), ("h", 65536)])
def test_address_constructor_validates(host: str, port: int) -> None:
    with pytest.raises(ConfigError):
        Address(host, port)


def test_address_refuses_bool_port() -> None:
    with pytest.raises(ConfigError):
        Address("h", True)


@given(
    host=st.sampled_from(["127.0.0.1", "::1", "localhost", "10.0.0.7", "fe80::1", "a.b-c.d"]),
    port=st.integers(0, 65535),
)
def test_address_round_trip(host: str, port: int) -> None:
    address = Address(host, port)
    assert parse_address(str(address)) == address


# --------------------------------------------------------------------------- state dir


def test_state_dir_from_farmd_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARMD_STATE", str(tmp_path / "s"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "s"


def test_state_dir_relative_farmd_state(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("FARMD_STATE", "rel")
    assert default_state_dir() == tmp_path / "rel"


def test_state_dir_from_xdg(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARMD_STATE", "")  # empty counts as unset
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert default_state_dir() == tmp_path / "xdg" / "farmd"


@pytest.mark.parametrize("xdg", [None, "", "relative/xdg"])
def test_state_dir_from_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, xdg: str | None
) -> None:
    monkeypatch.delenv("FARMD_STATE", raising=False)
    if xdg is None:
        monkeypatch.delenv("XDG_STATE_HOME", raising=False)
    else:
        monkeypatch.setenv("XDG_STATE_HOME", xdg)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert default_state_dir() == tmp_path / ".local" / "state" / "farmd"


def test_state_dir_tilde(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("FARMD_STATE", "~/farm")
    assert default_state_dir() == tmp_path / "farm"


def test_state_dir_unknown_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FARMD_STATE", "~no-such-user-for-farmd-tests/farm")
    with pytest.raises(ConfigError, match="FARMD_STATE"):
        default_state_dir()


def test_config_default_state_dir_is_read_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FARMD_STATE", str(tmp_path / "one"))
    assert SupervisorConfig().state_dir == tmp_path / "one"
    monkeypatch.setenv("FARMD_STATE", str(tmp_path / "two"))
    assert SupervisorConfig().state_dir == tmp_path / "two"


# --------------------------------------------------------------------------- SupervisorConfig


def test_supervisor_defaults(state_env: Path) -> None:
    config = SupervisorConfig()
    assert config.listen == DEFAULT_LISTEN
    assert config.state_dir == state_env
    assert config.default_priority == 9999
    assert config.default_cluster == "/"
    assert config.heartbeat_interval == 5.0
    assert config.heartbeat_timeout == 15.0
    assert config.lost_worker_grace == 60.0
    assert config.max_frame_bytes == 4 * 1024 * 1024
    assert config.store == "sqlite"
    assert config.preempt_policy == "passive"
    assert config.resources == {}
    assert config.outbox_pause_bytes == 1024 * 1024
    assert config.max_outbox_bytes == 32 * 1024 * 1024
    assert config.idle_timeout == 300.0
    assert config.max_handshakes == 256
    assert config.max_admin_sessions == 256
    assert config.max_user_sessions == 1024
    assert config.max_worker_sessions == 10_000
    assert config.history_after == 300.0
    assert config.history_days == 30.0
    assert config.audit_days == 90.0
    assert config.shared_user_token is True
    assert config.tls == TlsSettings(mode="auto")
    assert config.http == Address("127.0.0.1", 7532)
    assert http_address(config) == config.http
    # a supervisor on port 0 takes a port 0 for its HTTP too, unless told otherwise
    on_zero = attrs.evolve(config, listen=Address("127.0.0.1", 0))
    assert http_address(on_zero) == Address("127.0.0.1", 0)
    there = Address("127.0.0.1", 8080)
    assert http_address(attrs.evolve(on_zero, http=there)) == there
    assert http_address(attrs.evolve(on_zero, http=None)) is None
    assert tuple(f.name for f in attrs.fields(SupervisorConfig)) == ALL_KEYS


def test_supervisor_config_is_frozen_and_keyword_only(state_env: Path) -> None:
    config = SupervisorConfig()
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        config.default_priority = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        SupervisorConfig(DEFAULT_LISTEN)  # type: ignore[call-arg]


def test_supervisor_config_normalises(state_env: Path) -> None:
    config = SupervisorConfig(default_cluster="/show1/lighting/", heartbeat_interval=2)
    assert config.default_cluster == "/show1/lighting"
    assert type(config.heartbeat_interval) is float


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("listen", "127.0.0.1:7531"),
        ("state_dir", "/tmp/x"),
        ("default_priority", 0),
        ("default_priority", 2**31),
        ("default_priority", True),
        ("default_priority", 5.0),
        ("default_cluster", "show1"),
        ("default_cluster", 7),
        ("heartbeat_interval", 0),
        ("heartbeat_interval", "5"),
        ("heartbeat_interval", True),
        ("heartbeat_interval", float("nan")),
        ("heartbeat_timeout", float("inf")),
        ("lost_worker_grace", -0.5),
        ("lost_worker_grace", 10**400),
        ("max_frame_bytes", 64 * 1024 - 1),
        ("max_frame_bytes", 256 * 1024 * 1024 + 1),
        ("max_frame_bytes", False),
        ("outbox_pause_bytes", 4095),
        ("outbox_pause_bytes", True),
        ("outbox_pause_bytes", 65536.0),
        ("max_outbox_bytes", 2**40 + 1),
        ("max_outbox_bytes", "32M"),
        ("idle_timeout", 0),
        ("idle_timeout", -1.0),
        ("idle_timeout", float("inf")),
        ("idle_timeout", True),
        ("max_handshakes", 0),
        ("max_admin_sessions", 1_000_001),
        ("max_user_sessions", 2.0),
        ("max_worker_sessions", False),
    ],
)
def test_supervisor_config_refuses(state_env: Path, field: str, value: object) -> None:
    with pytest.raises(ConfigError) as info:
        SupervisorConfig(**{field: value})  # type: ignore[arg-type]
    assert field in str(info.value)


def test_supervisor_config_timeout_must_exceed_interval(state_env: Path) -> None:
    with pytest.raises(ConfigError) as info:
        SupervisorConfig(heartbeat_interval=15.0)
    assert "heartbeat_timeout" in str(info.value)
    assert "heartbeat_interval" in str(info.value)


def test_supervisor_config_outbox_limit_must_reach_the_pause(state_env: Path) -> None:
    with pytest.raises(ConfigError) as info:
        SupervisorConfig(outbox_pause_bytes=2**20, max_outbox_bytes=2**20 - 1)
    assert str(info.value) == (
        "bad max_outbox_bytes 1048575: max_outbox_bytes (1048575) must be at least "
        "outbox_pause_bytes (1048576)"
    )
    SupervisorConfig(outbox_pause_bytes=2**20, max_outbox_bytes=2**20)


def test_supervisor_config_bounds_accepted(state_env: Path) -> None:
    low = SupervisorConfig(default_priority=1, max_frame_bytes=64 * 1024, lost_worker_grace=0)
    high = SupervisorConfig(default_priority=2**31 - 1, max_frame_bytes=256 * 1024 * 1024)
    assert (low.default_priority, high.default_priority) == (1, 2**31 - 1)


# --------------------------------------------------------------------------- the file: accepted


@pytest.mark.parametrize(
    "text",
    ["", "\n", "# only a comment\n", "---\n", "~\n", "supervisor:\n", "supervisor: {}\n"],
)
def test_empty_file_means_defaults(tmp_path: Path, state_env: Path, text: str) -> None:
    assert load_supervisor_config(write(tmp_path, text)) == SupervisorConfig()


@pytest.mark.parametrize(
    ("line", "field", "expected"),
    [
        ("listen: 0.0.0.0:7000", "listen", Address("0.0.0.0", 7000)),
        ("listen: ':0'", "listen", Address("127.0.0.1", 0)),
        ('listen: "[::1]:7531"', "listen", Address("::1", 7531)),
        ("http: 0.0.0.0:8080", "http", Address("0.0.0.0", 8080)),
        ("http: null", "http", None),
        ("metrics: ':9531'", "metrics", Address("127.0.0.1", 9531)),
        ("state_dir: /var/lib/farmd", "state_dir", Path("/var/lib/farmd")),
        ("default_priority: 10", "default_priority", 10),
        ("default_priority: 1", "default_priority", 1),
        ("default_priority: 2147483647", "default_priority", 2**31 - 1),
        ("default_cluster: /show1/lighting/", "default_cluster", "/show1/lighting"),
        ("heartbeat_interval: 0.5", "heartbeat_interval", 0.5),
        ("heartbeat_interval: 2", "heartbeat_interval", 2.0),
        ("heartbeat_timeout: 30", "heartbeat_timeout", 30.0),
        ("lost_worker_grace: 0", "lost_worker_grace", 0.0),
        ("lost_worker_grace: 120.5", "lost_worker_grace", 120.5),
        ("max_frame_bytes: 65536", "max_frame_bytes", 65536),
        ("max_frame_bytes: 268435456", "max_frame_bytes", 268435456),
        ("max_frame_bytes: 1_048_576", "max_frame_bytes", 1048576),
        ("outbox_pause_bytes: 65536", "outbox_pause_bytes", 65536),
        ("max_outbox_bytes: 1099511627776", "max_outbox_bytes", 2**40),
        ("idle_timeout: 30", "idle_timeout", 30.0),
        ("idle_timeout: 0.5", "idle_timeout", 0.5),
        ("max_handshakes: 1", "max_handshakes", 1),
        ("max_admin_sessions: 8", "max_admin_sessions", 8),
        ("max_user_sessions: 1000000", "max_user_sessions", 1_000_000),
        ("max_worker_sessions: 500", "max_worker_sessions", 500),
    ],
)
def test_each_key_parsed(
    tmp_path: Path, state_env: Path, line: str, field: str, expected: object
) -> None:
    config = load_supervisor_config(write(tmp_path, f"supervisor:\n  {line}\n"))
    assert getattr(config, field) == expected
    assert type(getattr(config, field)) is type(expected)
    others = {f.name for f in attrs.fields(SupervisorConfig)} - {field}
    defaults = SupervisorConfig()
    assert all(getattr(config, name) == getattr(defaults, name) for name in others)


def test_full_file(tmp_path: Path) -> None:
    text = """\
# farmd supervisor
supervisor:
  listen: 10.1.2.3:9000
  state_dir: /srv/farmd
  default_priority: 500
  default_cluster: /showA
  heartbeat_interval: 1
  heartbeat_timeout: 4.5
  lost_worker_grace: 30
  max_frame_bytes: 8388608
"""
    assert load_supervisor_config(write(tmp_path, text)) == SupervisorConfig(
        listen=Address("10.1.2.3", 9000),
        state_dir=Path("/srv/farmd"),
        default_priority=500,
        default_cluster="/showA",
        heartbeat_interval=1.0,
        heartbeat_timeout=4.5,
        lost_worker_grace=30.0,
        max_frame_bytes=8 * 1024 * 1024,
    )


def test_relative_state_dir_is_resolved_against_config_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conf_dir = tmp_path / "etc"
    conf_dir.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    path = conf_dir / "farmd.yaml"
    path.write_text("supervisor:\n  state_dir: ./state/farmd\n", encoding="utf-8")
    assert load_supervisor_config(path).state_dir == conf_dir / "state" / "farmd"
    relative = Path("..") / "etc" / "farmd.yaml"  # a relative config path, from the cwd
    assert load_supervisor_config(relative).state_dir.resolve() == conf_dir / "state" / "farmd"


def test_parse_resolves_against_filename_dir(tmp_path: Path, state_env: Path) -> None:
    text = "supervisor:\n  state_dir: state\n"
    config = parse_supervisor_config(text, str(tmp_path / "conf" / "farmd.yaml"))
    assert config.state_dir == tmp_path / "conf" / "state"


def test_state_dir_tilde_in_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    path = write(tmp_path, "supervisor:\n  state_dir: ~/farm\n")
    assert load_supervisor_config(path).state_dir == tmp_path / "home" / "farm"


def test_pathlike_and_str_paths(tmp_path: Path, state_env: Path) -> None:
    path = write(tmp_path, "supervisor:\n  default_priority: 7\n")
    assert load_supervisor_config(str(path)) == load_supervisor_config(path)


def test_aliases_and_bom(tmp_path: Path, state_env: Path) -> None:
    text = "\ufeffsupervisor:\n  heartbeat_interval: &beat 3\n  lost_worker_grace: *beat\n"
    config = load_supervisor_config(write(tmp_path, text))
    assert config.heartbeat_interval == config.lost_worker_grace == 3.0


# --------------------------------------------------------------------------- the file: refused

ALLOWED_LIST = ", ".join(ALL_KEYS)


@pytest.mark.parametrize(
    ("text", "where", "fragment"),
    [
        # unknown keys, pointing at the key and listing the allowed ones
        (
            "jobs: {}\n",
            "1:1 top level",
            "unknown key; allowed: supervisor, workers (got 'jobs')",
        ),
        ("supervisor: {}\nresources: []\n", "2:1 top level", "(got 'resources')"),
        ("supervisor:\n  listn: ':1'\n", "2:3 supervisor", f"allowed: {ALLOWED_LIST}"),
        # duplicate keys, pointing at the second one
        ("supervisor: {}\nsupervisor: {}\n", "2:1 top level.supervisor", "first given at 1:1"),
        (
            "supervisor:\n  default_priority: 1\n  default_priority: 2\n",
            "3:3 supervisor.default_priority",
            "duplicate key",
        ),
        # not mappings
        ("- supervisor\n", "1:1 top level", "must be a mapping"),
        ("hello\n", "1:1 top level", "(got 'hello')"),
        ("supervisor: 5\n", "1:13 supervisor", "must be a mapping"),
        ("supervisor:\n  - listen\n", "2:3 supervisor", "(got a list)"),
        # keys that are not strings
        ("yes: 1\n", "1:1 top level", "plain strings (got 'yes')"),
        ("supervisor:\n  1: x\n", "2:3 supervisor", "(got '1')"),
        ("<<: {supervisor: {}}\n", "1:1 top level", "merge keys"),
        # wrong types
        (
            "supervisor:\n  heartbeat_interval: fast\n",
            "2:23 supervisor.heartbeat_interval",
            "must be a number of seconds (got 'fast')",
        ),
        (
            "supervisor:\n  heartbeat_timeout: '20'\n",
            "2:22 supervisor.heartbeat_timeout",
            "(got '20')",
        ),
        (
            "supervisor:\n  default_priority: yes\n",
            "2:21 supervisor.default_priority",
            "must be an integer",
        ),
        ("supervisor:\n  max_frame_bytes: on\n", "2:20 supervisor.max_frame_bytes", "true/false"),
        (
            "supervisor:\n  lost_worker_grace: no\n",
            "2:22 supervisor.lost_worker_grace",
            "(got 'no')",
        ),
        (
            "supervisor:\n  default_priority: 5.0\n",
            "2:21 supervisor.default_priority",
            "must be an integer",
        ),
        (
            "supervisor:\n  max_frame_bytes: 4MiB\n",
            "2:20 supervisor.max_frame_bytes",
            "(got '4MiB')",
        ),
        ("supervisor:\n  listen: 7531\n", "2:11 supervisor.listen", "(got '7531')"),
        ("supervisor:\n  listen: {host: a}\n", "2:11 supervisor.listen", "(got a mapping)"),
        (
            "supervisor:\n  default_cluster: [/a]\n",
            "2:20 supervisor.default_cluster",
            "(got a list)",
        ),
        ("supervisor:\n  default_cluster: 5\n", "2:20 supervisor.default_cluster", "(got '5')"),
        (
            "supervisor:\n  state_dir: 2024-01-01\n",
            "2:14 supervisor.state_dir",
            "(got '2024-01-01')",
        ),
        ("supervisor:\n  state_dir: 12\n", "2:14 supervisor.state_dir", "(got '12')"),
        ("supervisor:\n  state_dir: ''\n", "2:14 supervisor.state_dir", "(got '')"),
        (
            "supervisor:\n  heartbeat_interval:\n",
            "2:22 supervisor.heartbeat_interval",
            "(got null)",
        ),
        ("supervisor:\n  listen: ~\n", "2:11 supervisor.listen", "(got null)"),
        # bad values
        ("supervisor:\n  listen: localhost\n", "2:11 supervisor.listen", "HOST:PORT"),
        ("supervisor:\n  listen: ':70000'\n", "2:11 supervisor.listen", "0..65535"),
        ("supervisor:\n  listen: ::1:80\n", "2:11 supervisor.listen", "brackets"),
        (
            "supervisor:\n  default_priority: 0\n",
            "2:21 supervisor.default_priority",
            "1..2147483647 (got '0')",
        ),
        (
            "supervisor:\n  default_priority: 2147483648\n",
            "2:21 supervisor.default_priority",
            "1..2147483647",
        ),
        (
            "supervisor:\n  default_cluster: show1\n",
            "2:20 supervisor.default_cluster",
            "must start with '/'",
        ),
        (
            "supervisor:\n  default_cluster: /a//b\n",
            "2:20 supervisor.default_cluster",
            "empty segment",
        ),
        (
            "supervisor:\n  heartbeat_interval: 0\n",
            "2:23 supervisor.heartbeat_interval",
            "more than 0",
        ),
        (
            "supervisor:\n  heartbeat_interval: -1\n",
            "2:23 supervisor.heartbeat_interval",
            "(got '-1')",
        ),
        (
            "supervisor:\n  heartbeat_interval: .nan\n",
            "2:23 supervisor.heartbeat_interval",
            "finite",
        ),
        ("supervisor:\n  heartbeat_timeout: .inf\n", "2:22 supervisor.heartbeat_timeout", "finite"),
        (
            "supervisor:\n  lost_worker_grace: -0.1\n",
            "2:22 supervisor.lost_worker_grace",
            "0 seconds or more",
        ),
        (
            "supervisor:\n  max_frame_bytes: 65535\n",
            "2:20 supervisor.max_frame_bytes",
            "65536..268435456",
        ),
        (
            "supervisor:\n  max_frame_bytes: 268435457\n",
            "2:20 supervisor.max_frame_bytes",
            "(got '268435457')",
        ),
        # timeout vs interval: names both, points at the one the file gives
        (
            "supervisor:\n  heartbeat_timeout: 5\n",
            "2:22 supervisor.heartbeat_timeout",
            "heartbeat_timeout (5.0) must be greater than heartbeat_interval (5.0)",
        ),
        (
            "supervisor:\n  heartbeat_interval: 20\n",
            "2:23 supervisor.heartbeat_interval",
            "heartbeat_timeout (15.0) must be greater than heartbeat_interval (20.0)",
        ),
        (
            "supervisor:\n  heartbeat_interval: 10\n  heartbeat_timeout: 10\n",
            "3:22 supervisor.heartbeat_timeout",
            "heartbeat_interval (10.0)",
        ),
        # the connection limits (docs/protocol.md, 2.1)
        (
            "supervisor:\n  outbox_pause_bytes: 1024\n",
            "2:23 supervisor.outbox_pause_bytes",
            "must be in 4096..1099511627776 bytes",
        ),
        (
            "supervisor:\n  max_outbox_bytes: 65536\n",
            "2:21 supervisor.max_outbox_bytes",
            "max_outbox_bytes (65536) must be at least outbox_pause_bytes (1048576)",
        ),
        (
            "supervisor:\n  max_outbox_bytes: 4096\n  outbox_pause_bytes: 8192\n",
            "2:21 supervisor.max_outbox_bytes",
            "must be at least outbox_pause_bytes (8192)",
        ),
        ("supervisor:\n  idle_timeout: 0\n", "2:17 supervisor.idle_timeout", "more than 0"),
        ("supervisor:\n  idle_timeout: off\n", "2:17 supervisor.idle_timeout", "yes/no/on/off"),
        (
            "supervisor:\n  max_user_sessions: 0\n",
            "2:22 supervisor.max_user_sessions",
            "must be in 1..1000000",
        ),
        (
            "supervisor:\n  max_handshakes: many\n",
            "2:19 supervisor.max_handshakes",
            "must be an integer number of connections",
        ),
        # tags: only standard ones, and only on text they can read
        (
            "supervisor:\n  listen: !!python/name:os.system x\n",
            "2:11 supervisor.listen",
            "non-standard YAML tag '!!python/name:os.system'",
        ),
        (
            "supervisor:\n  default_priority: !prio 5\n",
            "2:21 supervisor.default_priority",
            "non-standard YAML tag '!prio'",
        ),
        (
            "supervisor: !!python/object:farmd.config.SupervisorConfig {}\n",
            "1:13 supervisor",
            "must be a mapping",
        ),
        ("supervisor: !!set {listen}\n", "1:13 supervisor", "must be a mapping"),
        (
            "supervisor:\n  max_frame_bytes: !!int abc\n",
            "2:20 supervisor.max_frame_bytes",
            "not a valid !!int value",
        ),
        (
            "supervisor:\n  default_priority: !!str 5\n",
            "2:21 supervisor.default_priority",
            "must be an integer",
        ),
    ],
)
def test_refusals(tmp_path: Path, state_env: Path, text: str, where: str, fragment: str) -> None:
    """`where` is "LINE:COLUMN KEY": the message starts with FILE:LINE:COLUMN: KEY:."""
    path = write(tmp_path, text)
    message = refused(path)
    position, key = where.split(" ", 1)
    line, column = position.split(":")
    assert_at(message, path, int(line), int(column), key)
    assert fragment in message


@pytest.mark.parametrize(
    ("text", "line", "column"),
    [
        ("supervisor: [\n", 2, 1),
        ("supervisor:\n  listen: '[::1]:80\n", 3, 1),
        ("supervisor:\n\tlisten: ':1'\n", 2, 1),
        ('supervisor:\n  listen: "[::1]:80"\n  default_priority 5\n', 4, 1),
        ("supervisor:\n  listen: [::1]:80\n", 2, 12),
        ("supervisor: {}\n---\nsupervisor: {}\n", 2, 1),
        ("supervisor:\n  default_priority: *missing\n", 2, 21),
        ("supervisor:\n  listen: a\x07b\n", 2, 12),
    ],
)
def test_yaml_syntax_errors(tmp_path: Path, text: str, line: int, column: int) -> None:
    path = write(tmp_path, text)
    message = refused(path)
    assert message.startswith(f"{path}:{line}:{column}: YAML"), message


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = refused(path)
    assert message.startswith(f"{path}: cannot read")
    assert "No such file" in message


def test_directory_is_unreadable(tmp_path: Path) -> None:
    assert refused(tmp_path).startswith(f"{tmp_path}: cannot read")


def test_non_utf8_file(tmp_path: Path) -> None:
    path = write(tmp_path, b"supervisor:\n  state_dir: /srv/\xe9t\xe9\n")
    message = refused(path)
    assert message.startswith(f"{path}:2:19: not UTF-8"), message


def test_messages_stay_on_one_line(tmp_path: Path, state_env: Path) -> None:
    path = write(tmp_path, "supervisor:\n  listen: |\n    127.0.0.1:1\n    :2\n")
    message = refused(path)
    assert_at(message, path, 2, 11, "supervisor.listen")
    assert "'127.0.0.1:1\\n:2\\n'" in message


def test_long_values_are_shortened(tmp_path: Path, state_env: Path) -> None:
    path = write(tmp_path, f"supervisor:\n  default_cluster: {'x' * 500}\n")
    message = refused(path)
    assert "x" * 500 not in message
    assert "...'" in message


def test_parse_names_the_given_filename(state_env: Path) -> None:
    with pytest.raises(ConfigError, match=r"^conf/farmd\.yaml:2:3: supervisor: unknown key"):
        parse_supervisor_config("supervisor:\n  bogus: 1\n", "conf/farmd.yaml")


def test_store_is_sqlite_or_memory(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text("supervisor:\n  store: memory\n")
    assert load_supervisor_config(path).store == "memory"
    path.write_text("supervisor:\n  store: mysql\n")
    with pytest.raises(ConfigError, match=r"farm.yaml:2:10: supervisor.store: must be one of"):
        load_supervisor_config(path)


def test_global_resources_are_counters_with_dotted_names(tmp_path: Path) -> None:
    path = tmp_path / "farm.yaml"
    path.write_text("supervisor:\n  resources:\n    license.nuke: 10\n    license.maya: 0\n")
    assert load_supervisor_config(path).resources == {"license.nuke": 10, "license.maya": 0}
    for text, where in [
        (
            "supervisor:\n  resources:\n    nuke: 10\n",
            r"farm.yaml:3:5: supervisor.resources.nuke: .*needs a dot",
        ),
        (
            "supervisor:\n  resources:\n    license.nuke: -1\n",
            r"farm.yaml:3:19: supervisor.resources.license.nuke: must be a number",
        ),
        (
            "supervisor:\n  resources:\n    license.nuke: yes\n",
            r"farm.yaml:3:19: supervisor.resources.license.nuke: must be a number",
        ),
        (
            "supervisor:\n  resources: 10\n",
            r"farm.yaml:2:14: supervisor.resources: must be a mapping",
        ),
        (
            "supervisor:\n  resources:\n    License.Nuke: 1\n",
            r"farm.yaml:3:5: supervisor.resources.License.Nuke: bad resource name",
        ),
    ]:
        path.write_text(text)
        with pytest.raises(ConfigError, match=where):
            load_supervisor_config(path)


def test_the_shipped_farm_config_loads() -> None:
    config = load_supervisor_config(Path(__file__).resolve().parents[1] / "conf" / "farm.yaml")
    assert config.resources == {"license.nuke": 10, "license.houdini": 4}
    assert config.preempt_policy == "passive"
