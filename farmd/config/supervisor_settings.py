"""`SupervisorConfig`: the supervisor's settings (the `supervisor:` section), each
checked by an attrs validator on construction, so a config built in code is held to
the same rules as one read from a file."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Final

import attrs

from farmd.cluster import ROOT, ClusterPath, parse_cluster, quote
from farmd.config.addresses import DEFAULT_HTTP, DEFAULT_LISTEN, Address
from farmd.config.fields import FieldError
from farmd.config.state_dir import default_state_dir
from farmd.config.tls_settings import TlsSettings
from farmd.errors import ClusterPathError, UserError
from farmd.ranking import DEFAULT_PRIORITY, HIGHEST_PRIORITY, LOWEST_PRIORITY
from farmd.values import check_notify

MIN_FRAME_BYTES: Final = 64 * 1024
MAX_FRAME_BYTES: Final = 256 * 1024 * 1024
DEFAULT_FRAME_BYTES: Final = 4 * 1024 * 1024


def _refuse(attribute: attrs.Attribute[Any], value: object, problem: str) -> None:
    raise FieldError.refuse((attribute.name,), value, problem)


def _check_metrics(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Address):
        _refuse(attribute, value, "must be an address such as '127.0.0.1:9531', or null (off)")


def _check_http(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Address):
        _refuse(attribute, value, "must be an address such as '127.0.0.1:7532', or null (off)")


def _check_listen(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Address):
        _refuse(attribute, value, "must be an Address, such as parse_address(':7531')")


def _check_state_dir(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, Path):
        _refuse(attribute, value, "must be a pathlib.Path")
    elif "\0" in str(value):
        _refuse(attribute, value, "must not contain a NUL character")


def _check_priority(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer (1 is the most urgent)")
    elif not HIGHEST_PRIORITY <= value <= LOWEST_PRIORITY:
        _refuse(attribute, value, f"must be in {HIGHEST_PRIORITY}..{LOWEST_PRIORITY}")


def _to_cluster(value: str) -> ClusterPath:
    """Normalise a cluster path; anything that is not a string is left to the validator."""
    if not isinstance(value, str):
        return value  # refused by _check_default_cluster
    try:
        return parse_cluster(value)
    except ClusterPathError as exc:
        problem = str(exc).removeprefix(f"bad cluster path {quote(value)}: ")
        raise FieldError.refuse(("default_cluster",), value, problem) from None


def _check_default_cluster(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, str):
        _refuse(attribute, value, "must be a cluster path such as '/' or '/show1/lighting'")


def _to_seconds(value: float) -> float:
    """Widen an integer to float; anything else is left to the validator to refuse."""
    if isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError:
            return math.inf
    return value


def _seconds_problem(value: object) -> str | None:
    if isinstance(value, bool):
        return "must be a number of seconds, not true/false"
    if not isinstance(value, float):
        return "must be a number of seconds"
    if not math.isfinite(value):
        return "must be a finite number of seconds"
    return None


def _check_interval(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value > 0):
        problem = "must be more than 0 seconds"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_timeout(inst: SupervisorConfig, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is not None:
        _refuse(attribute, value, problem)
    elif isinstance(value, float) and not value > inst.heartbeat_interval:
        problem = (
            f"heartbeat_timeout ({value}) must be greater than heartbeat_interval "
            f"({inst.heartbeat_interval})"
        )
        raise FieldError.refuse(("heartbeat_timeout", "heartbeat_interval"), value, problem)


def _check_grace(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value >= 0):
        problem = "must be 0 seconds or more"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_frame_bytes(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer number of bytes, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of bytes")
    elif not MIN_FRAME_BYTES <= value <= MAX_FRAME_BYTES:
        _refuse(attribute, value, f"must be in {MIN_FRAME_BYTES}..{MAX_FRAME_BYTES} bytes")


MIN_OUTBOX_BYTES: Final = 4 * 1024
MAX_OUTBOX_BYTES: Final = 2**40
MAX_SESSIONS: Final = 1_000_000


def _check_outbox_bytes(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool):
        _refuse(attribute, value, "must be an integer number of bytes, not true/false")
    elif not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of bytes")
    elif not MIN_OUTBOX_BYTES <= value <= MAX_OUTBOX_BYTES:
        _refuse(attribute, value, f"must be in {MIN_OUTBOX_BYTES}..{MAX_OUTBOX_BYTES} bytes")


def _check_outbox_limit(
    inst: SupervisorConfig, attribute: attrs.Attribute[Any], value: object
) -> None:
    _check_outbox_bytes(inst, attribute, value)
    if isinstance(value, int) and value < inst.outbox_pause_bytes:
        problem = (
            f"max_outbox_bytes ({value}) must be at least outbox_pause_bytes "
            f"({inst.outbox_pause_bytes})"
        )
        raise FieldError.refuse(("max_outbox_bytes", "outbox_pause_bytes"), value, problem)


def _check_idle_timeout(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    problem = _seconds_problem(value)
    if problem is None and not (isinstance(value, float) and value > 0):
        problem = "must be more than 0 seconds"
    if problem is not None:
        _refuse(attribute, value, problem)


def _check_sessions(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        _refuse(attribute, value, "must be an integer number of connections")
    elif not 1 <= value <= MAX_SESSIONS:
        _refuse(attribute, value, f"must be in 1..{MAX_SESSIONS}")


STORES: Final = ("sqlite", "memory")
POSTGRES_SCHEMES: Final = ("postgresql://", "postgres://")
MAX_STORE_URL_CHARS: Final = 1024


def is_postgres_url(store: str) -> bool:
    """A `store` setting that names a PostgreSQL database (active/standby supervisors)."""
    return store.startswith(POSTGRES_SCHEMES)


def _check_store(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value in STORES:
        return
    if not isinstance(value, str) or not is_postgres_url(value):
        _refuse(attribute, value, f"must be one of {', '.join(STORES)} or a postgresql:// URL")
    elif len(value) > MAX_STORE_URL_CHARS or any(c.isspace() for c in value):
        _refuse(
            attribute, value[:80], f"a URL of at most {MAX_STORE_URL_CHARS} characters, no spaces"
        )


def _check_advertise(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value is not None and not isinstance(value, Address):
        _refuse(attribute, value, "must be HOST:PORT")
    elif value is not None and value.port == 0:
        _refuse(attribute, value, "must name a port, not 0")


PREEMPT_POLICIES: Final = ("passive", "aggressive", "disabled")


def _check_bool(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, bool):
        _refuse(attribute, value, "must be true or false")


def _check_preempt_policy(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if value not in PREEMPT_POLICIES:
        _refuse(attribute, value, f"must be one of {', '.join(PREEMPT_POLICIES)}")


def _to_tuple(value: object) -> object:
    return tuple(value) if isinstance(value, list) else value


def _check_notify(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, dict):
        _refuse(attribute, value, "must map cluster paths to http(s) URLs")
        return
    for cluster, url in value.items():
        try:
            parse_cluster(cluster)
            if not url:
                raise UserError("must be a URL")
            check_notify(url)
        except UserError as exc:
            raise FieldError.refuse(("notify",), cluster, str(exc)) from None


def _check_notify_allow(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, tuple) or not all(isinstance(p, str) and p for p in value):
        _refuse(attribute, value, "must be a list of URL prefixes")
        return
    for prefix in value:
        if not prefix.startswith(("http://", "https://")):
            _refuse(attribute, prefix, "a prefix starts with http:// or https://")


def _check_tls(_: object, attribute: attrs.Attribute[Any], value: object) -> None:
    if not isinstance(value, TlsSettings):
        _refuse(attribute, value, "must be TlsSettings (mode, cert, key, ca, names)")


@attrs.frozen(kw_only=True)
class SupervisorConfig:
    """The supervisor's settings; every value is checked on construction.

    - `listen`: where workers and clients connect.
    - `state_dir`: where the queue survives restarts (`default_state_dir()`).
    - `default_priority`: for jobs submitted without one; 1 is the most urgent.
    - `default_cluster`: for jobs and workers that name none; normalised.
    - `heartbeat_interval`: seconds between a worker's heartbeats.
    - `heartbeat_timeout`: seconds of silence after which a worker is lost; more than
      `heartbeat_interval`.
    - `lost_worker_grace`: seconds after a supervisor restart that the worker of a
      running frame has to come back before the frame is requeued.
    - `max_frame_bytes`: the largest wire frame accepted, 64 KiB..256 MiB.
    - `store`: `sqlite` (the default: STATE/farmd.db, every acknowledged change durable),
      `memory` (nothing survives a restart; for throwaway farms and benchmarks) or a
      `postgresql://` URL: the state in PostgreSQL, where every supervisor given that
      URL is the active one or a standby (`farmd.supervisor.election`).
    - `advertise`: the `HOST:PORT` peers reach this supervisor at, which its standbys
      send them to when it is active (default: `listen`, or this host's name and
      `listen`'s port when `listen` is a wildcard address).
    - `preempt_policy`: Qube's supervisor_preempt_policy. `passive` (the default): a
      better job takes a busy slot when its frame ends; `aggressive`: the running frame
      is stopped and requeued (no retry used) at once; `disabled`: a slot stays with
      its job while the job has frames left.
    - `highest_user_priority`: the most urgent priority a non-admin (the user token in
      STATE/user_token, or a frame's job token) may set; 1, the default, is no limit.
    - `http`: where the HTTP API (`/api/v1/...`), the dashboard and `/metrics` are
      served (`farmd.web`); default 127.0.0.1:7532 (see `http_address` for a supervisor
      on port 0); null: none.
    - `metrics`: a second address serving the same HTTP app, for configurations from
      before `http` (Prometheus scrapes `GET /metrics` there, `127.0.0.1:9531`); null,
      the default, serves none.
    - `resources`: farm-wide counters such as licenses, `{license.nuke: 10}`: a frame
      reserving one holds it while it runs, and no more frames hold one than its total.
    - `outbox_pause_bytes`: a connection's next message is not read while more than
      this many bytes wait to be sent to it (backpressure: a peer that does not read
      its answers stops being served).
    - `max_outbox_bytes`: a peer is dropped when a message is to be sent to it while
      more than this many bytes already wait; at least `outbox_pause_bytes`.
    - `idle_timeout`: seconds after which an admin, user or job-token session with no
      request in flight is closed; also how long a paused connection (above) may take
      nothing before it is dropped.
    - `max_handshakes`, `max_admin_sessions`, `max_user_sessions`,
      `max_worker_sessions`: how many connections may be open at once still in their
      hello, with the farm token, with the user token or a job token, and as workers.
      The excess is refused with an `error` (`unavailable`).
    - `history_after`: seconds a job that ended (with its sub-jobs) stays in the live
      queue (`farmd jobs`) before it moves to history (`farmd jobs --all`, `farmd job
      ID`): kept in the store, not in memory, not read on a restart. With `store:
      memory` there is no history and ended jobs stay in memory.
    - `history_days`: days a job stays in history before it is pruned (hourly, and by
      `farmd history prune`); 0 keeps history for ever.
    - `audit_days`: days the audit log keeps an entry (pruned hourly); 0: for ever.
    - `shared_user_token`: whether the shared user token of older farms
      (STATE/user_token) opens sessions; false once everyone has a personal token.
    - `tls`: TLS on the supervisor's port and its metrics (`TlsSettings`, `farmd.tls`):
      on by default, plaintext accepted only on a loopback connection.
    - `notify`: a cluster path -> the URL told (a JSON POST) when a job there ends,
      unless the job names its own (`--notify`); the deepest cluster above a job wins.
    - `notify_allow`: URL prefixes a job's own `--notify` must start with (the
      supervisor posts to it); empty, the default: any http(s) URL.
    """

    listen: Address = attrs.field(default=DEFAULT_LISTEN, validator=_check_listen)
    state_dir: Path = attrs.field(factory=default_state_dir, validator=_check_state_dir)
    default_priority: int = attrs.field(default=DEFAULT_PRIORITY, validator=_check_priority)
    default_cluster: ClusterPath = attrs.field(
        default=ROOT, converter=_to_cluster, validator=_check_default_cluster
    )
    heartbeat_interval: float = attrs.field(
        default=5.0, converter=_to_seconds, validator=_check_interval
    )
    heartbeat_timeout: float = attrs.field(
        default=15.0, converter=_to_seconds, validator=_check_timeout
    )
    lost_worker_grace: float = attrs.field(
        default=60.0, converter=_to_seconds, validator=_check_grace
    )
    max_frame_bytes: int = attrs.field(default=DEFAULT_FRAME_BYTES, validator=_check_frame_bytes)
    store: str = attrs.field(default="sqlite", validator=_check_store)
    advertise: Address | None = attrs.field(default=None, validator=_check_advertise)
    preempt_policy: str = attrs.field(default="passive", validator=_check_preempt_policy)
    resources: dict[str, float] = attrs.field(factory=dict)
    metrics: Address | None = attrs.field(default=None, validator=_check_metrics)
    http: Address | None = attrs.field(default=DEFAULT_HTTP, validator=_check_http)
    highest_user_priority: int = attrs.field(default=1, validator=_check_priority)
    outbox_pause_bytes: int = attrs.field(default=2**20, validator=_check_outbox_bytes)
    max_outbox_bytes: int = attrs.field(default=32 * 2**20, validator=_check_outbox_limit)
    idle_timeout: float = attrs.field(
        default=300.0, converter=_to_seconds, validator=_check_idle_timeout
    )
    max_handshakes: int = attrs.field(default=256, validator=_check_sessions)
    max_admin_sessions: int = attrs.field(default=256, validator=_check_sessions)
    max_user_sessions: int = attrs.field(default=1024, validator=_check_sessions)
    max_worker_sessions: int = attrs.field(default=10_000, validator=_check_sessions)
    history_after: float = attrs.field(default=300.0, converter=_to_seconds, validator=_check_grace)
    history_days: float = attrs.field(default=30.0, converter=_to_seconds, validator=_check_grace)
    audit_days: float = attrs.field(default=90.0, converter=_to_seconds, validator=_check_grace)
    shared_user_token: bool = attrs.field(default=True, validator=_check_bool)
    tls: TlsSettings = attrs.field(factory=TlsSettings, validator=_check_tls)
    notify: dict[str, str] = attrs.field(factory=dict, validator=_check_notify)
    notify_allow: tuple[str, ...] = attrs.field(
        default=(), converter=_to_tuple, validator=_check_notify_allow
    )


def http_address(config: SupervisorConfig) -> Address | None:
    """Where `config`'s supervisor serves HTTP: its `http` setting, except that the
    default address takes port 0 too (the kernel chooses; STATE/http_address says which)
    when the supervisor's own `listen` port is 0: a throwaway farm, or a test's, must
    not take the well-known port, and two of them must not fight over it."""
    if config.http == DEFAULT_HTTP and config.listen.port == 0:
        return Address(DEFAULT_HTTP.host, 0)
    return config.http


SUPERVISOR_KEYS: Final = tuple(field.name for field in attrs.fields(SupervisorConfig))
