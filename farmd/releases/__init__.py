"""Releases: job types defined once on the farm, in a versioned bundle.

- `model`: `Release`, `JobType`, `Param` (frozen; `to_wire`/`from_wire`).
- `manifest`: `parse_manifest`/`load_manifest` of `farmd-release.yaml`, located refusals.
- `params`: `resolve_params` (typed `--param` values), `fill_command` (step 1) and
  `task_command` (a Python job type's argv).
- `template`: the placeholder syntax, and `fill_frame`, step 2, which the worker runs.
- `bundle`: `pack`, `digest`, `inspect`, `read_manifest_from`, `unpack` (hostile-safe).
- `cache`: `ReleaseCache`, a worker's downloaded and unpacked releases (imported on its
  own: it needs trio, which a frame's task runner does not).
- `task_runner`: `python -m farmd.releases.task_runner RELEASE_DIR module:function`, a
  Python task's process, and its `TaskContext`.

Which release serves which cluster is `farmd.core.releases` (pure state).
"""

from farmd.releases.bundle import (
    DEFAULT_LIMITS,
    Limits,
    digest,
    inspect,
    pack,
    read_manifest_from,
    remove_partials,
    unpack,
)
from farmd.releases.manifest import MANIFEST_NAME, load_manifest, parse_manifest
from farmd.releases.model import JobType, Param, ParamType, ParamValue, Release
from farmd.releases.params import fill_command, format_value, resolve_params, task_command
from farmd.releases.template import RESERVED, fill_frame

__all__ = [
    "DEFAULT_LIMITS",
    "MANIFEST_NAME",
    "RESERVED",
    "JobType",
    "Limits",
    "Param",
    "ParamType",
    "ParamValue",
    "Release",
    "digest",
    "fill_command",
    "fill_frame",
    "format_value",
    "inspect",
    "load_manifest",
    "pack",
    "parse_manifest",
    "read_manifest_from",
    "remove_partials",
    "resolve_params",
    "task_command",
    "unpack",
]
