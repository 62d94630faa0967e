"""farmd's configuration: listen addresses, the state directory, the supervisor's
settings, the central worker configuration and the strict YAML file they come from.

One module per concern; this package re-exports what the rest of farmd imports:

- `addresses`: `Address`, `parse_address` (`HOST:PORT`, `:PORT`, `[IPV6]:PORT`); a
  peer's supervisor list (`parse_supervisors`, `SupervisorList`).
- `state_dir`: `default_state_dir`, `environment_state_dir` (`$FARMD_STATE`, XDG, home).
- `supervisor_settings`: `SupervisorConfig`, the `supervisor:` section.
- `workers`: the `workers:` section (Qube's qbwrk.conf): `WorkerEntry`, `HostPattern`,
  `WorkersConfig.settings_for(host)` -> `WorkerSettings`.
- `yaml_nodes`: reads YAML nodes with their line and column, for located refusals.
- `loader`: the file's sections and `parse_*`/`load_*`; its docstring shows a file.
- `tls_settings`: `TlsSettings`, the `supervisor.tls:` part.
- `fields`: `FieldError`, how a settings class refuses a value so the loader can point
  at it.
"""

from farmd.config.addresses import (
    DEFAULT_HOST,
    DEFAULT_HTTP,
    DEFAULT_LISTEN,
    DEFAULT_PORT,
    Address,
    SupervisorList,
    parse_address,
    parse_supervisors,
)
from farmd.config.loader import (
    FarmConfig,
    load_farm_config,
    load_supervisor_config,
    parse_farm_config,
    parse_supervisor_config,
)
from farmd.config.state_dir import default_state_dir, environment_state_dir
from farmd.config.supervisor_settings import (
    DEFAULT_FRAME_BYTES,
    MAX_FRAME_BYTES,
    MAX_OUTBOX_BYTES,
    MAX_SESSIONS,
    MIN_FRAME_BYTES,
    MIN_OUTBOX_BYTES,
    PREEMPT_POLICIES,
    STORES,
    SupervisorConfig,
    http_address,
    is_postgres_url,
)
from farmd.config.tls_settings import TLS_MODES, TlsSettings
from farmd.config.workers import (
    ENTRY_KEYS,
    MAX_RANGE_HOSTS,
    HostPattern,
    PatternKind,
    WorkerEntry,
    WorkersConfig,
    WorkerSettings,
    parse_host_pattern,
)

__all__ = [
    "DEFAULT_FRAME_BYTES",
    "DEFAULT_HOST",
    "DEFAULT_HTTP",
    "DEFAULT_LISTEN",
    "DEFAULT_PORT",
    "ENTRY_KEYS",
    "MAX_FRAME_BYTES",
    "MAX_OUTBOX_BYTES",
    "MAX_RANGE_HOSTS",
    "MAX_SESSIONS",
    "MIN_FRAME_BYTES",
    "MIN_OUTBOX_BYTES",
    "PREEMPT_POLICIES",
    "STORES",
    "TLS_MODES",
    "Address",
    "FarmConfig",
    "HostPattern",
    "PatternKind",
    "SupervisorConfig",
    "SupervisorList",
    "TlsSettings",
    "WorkerEntry",
    "WorkerSettings",
    "WorkersConfig",
    "default_state_dir",
    "environment_state_dir",
    "http_address",
    "is_postgres_url",
    "load_farm_config",
    "load_supervisor_config",
    "parse_address",
    "parse_farm_config",
    "parse_host_pattern",
    "parse_supervisor_config",
    "parse_supervisors",
]
