"""The `farmd.client.Client` calls for releases (a mixin, so the client stays one class
of one file's size): upload a release, deploy it per cluster, list what serves where,
and the job types a submitter builds its form from."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from farmd.errors import UserError
from farmd.protocol_releases import (
    MAX_CHUNK_BYTES,
    DeployRelease,
    ListJobTypes,
    ListReleases,
    RemoveRelease,
    RollbackRelease,
    UndeployRelease,
    UploadRelease,
    encode_chunk,
)

if TYPE_CHECKING:
    from farmd.protocol import Request


class ReleaseCalls:
    """Release calls of `farmd.client.Client` (which provides `_call`)."""

    if TYPE_CHECKING:

        def _call(self, build: type[Request], wait: float | None = None, **fields: Any) -> Any: ...

        _frame_bytes: int

    def upload_release(self, source: str | os.PathLike[str]) -> dict[str, Any]:
        """Upload a release: a directory holding `farmd-release.yaml` (packed here, the
        same bytes every time for the same files) or a `.tar.gz` of one. Returns what
        the farm now holds of it (name, version, digest, size, job types, where
        deployed). Uploading a version the farm holds with the same bytes changes
        nothing; with other bytes it is refused: a version never changes."""
        from farmd.releases import bundle  # only here: a client that uploads nothing skips it

        path = Path(source)
        if path.is_dir():
            data = bundle.pack(path)
        else:
            try:
                data = path.read_bytes()
            except OSError as exc:
                msg = f"cannot read the release {path}: {exc.strerror}"
                raise UserError(msg) from None
        bundle.inspect(data, label=str(path))  # refused here, before any upload
        digest = bundle.digest(data)
        # a chunk and its base64 (4/3 of it) in one frame, with room for the rest
        chunk = max(1024, min(MAX_CHUNK_BYTES, (self._frame_bytes // 2) * 3 // 4))
        offset = 0
        result: dict[str, Any] = {}
        while True:
            piece = data[offset : offset + chunk]
            done = offset + len(piece) >= len(data)
            result = self._call(
                UploadRelease,
                digest=digest,
                size=len(data),
                offset=offset,
                data=encode_chunk(piece),
                done=done,
            )
            offset += len(piece)
            if done:
                return result

    def deploy_release(self, name: str, version: str, cluster: str) -> dict[str, Any]:
        """Deploy a version the farm holds at `cluster`: it serves that subtree, except
        below a deeper deployment of the same release."""
        result: dict[str, Any] = self._call(
            DeployRelease, name=name, version=version, cluster=cluster
        )
        return result

    def undeploy_release(self, name: str, cluster: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call(UndeployRelease, name=name, cluster=cluster)
        return result

    def rollback_release(self, name: str, cluster: str) -> dict[str, Any]:
        """Back to the version deployed at `cluster` before the current one."""
        result: dict[str, Any] = self._call(RollbackRelease, name=name, cluster=cluster)
        return result

    def remove_release(self, name: str, version: str) -> dict[str, Any]:
        """Forget a version deployed nowhere (its bundle goes)."""
        result: dict[str, Any] = self._call(RemoveRelease, name=name, version=version)
        return result

    def releases(self, cluster: str | None = None) -> dict[str, Any]:
        """Every version the farm holds (`releases`), where each is deployed and how
        many workers have it; with `cluster`, what serves it (`effective`) and why."""
        result: dict[str, Any] = self._call(ListReleases, cluster=cluster)
        return result

    def job_types(self, cluster: str = "/") -> list[dict[str, Any]]:
        """The job types the releases at `cluster` provide: each with its `name`,
        `description`, `release`, `version` and `params` (name, type, default,
        required, choices, description), to build a submission form from."""
        result: dict[str, Any] = self._call(ListJobTypes, cluster=cluster)
        types: list[dict[str, Any]] = result["types"]
        return types
