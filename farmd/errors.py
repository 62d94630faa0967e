"""The one error root of farmd and its branches, split by whose fault an error is.

- `UserError`: a person gave bad input (a cluster path, a restriction, a config file, a
  command-line value). Shown as one line, never as a traceback.
- `ProtocolError`: a peer sent bytes or a message that break the wire protocol.
- `InternalError`: farmd broke one of its own invariants; a bug to report.

Messages name the bad value, so the one line a user sees is enough to fix the input.
"""

from __future__ import annotations

import enum


class FarmdError(Exception):
    """Root of every error farmd raises on purpose.

    `code` names the error on the wire, so a client can raise the same class again.
    """

    code = "error"


class UserError(FarmdError):
    """Bad input from a person: refused with one clear line, nothing changed."""

    code = "bad_request"


class ClusterPathError(UserError):
    """A cluster path that is not `/` or `/seg/seg...`."""

    code = "bad_cluster"


class RestrictionError(UserError):
    """A malformed restriction expression (`/A || /B/*`)."""

    code = "bad_restrictions"


class PatternError(UserError):
    """A malformed cross-cluster priority pattern list (`/showA+,/showB`)."""

    code = "bad_patterns"


class JobSpecError(UserError):
    """A job field with a bad value (priority, id, frame range...)."""

    code = "bad_job"


class WorkerSettingsError(UserError):
    """A worker setting with a bad value (a type, a property, a counter, its slots...),
    from a `register` or `farmd worker`'s flags (`farmd.worker_settings`).

    `field` names the setting, `value` is the bad value and `problem` says what is wrong
    without quoting it, so that a caller (the config loader) can point at it instead.
    Its wire code stays `bad_job`, the code registrations were always refused with and
    the one farmd's agent stops on; a client reading `bad_job` gets a JobSpecError.
    """

    code = "bad_job"

    def __init__(
        self, message: str, field: str = "", value: object = None, problem: str = ""
    ) -> None:
        super().__init__(message)
        self.field = field
        self.value = value
        self.problem = problem or message


class RequirementError(UserError):
    """A job requirement expression that does not parse."""

    code = "bad_requirement"


class UnknownJobError(UserError):
    """A job id that is not in the queue."""

    code = "unknown_job"


class ConfigError(UserError):
    """A configuration file that is unreadable, unknown keys, or bad values."""

    code = "bad_config"


class ReleaseError(UserError):
    """A release that cannot be used: a bad `farmd-release.yaml` (located
    `FILE:LINE:COLUMN: ...`), a hostile or oversized bundle, or bad release data."""

    code = "bad_release"


class ParamError(ReleaseError):
    """A job type's parameter given a bad value, or missing, or unknown."""

    code = "bad_param"


class TaskSetupError(ReleaseError):
    """A Python task that cannot be started as asked: a bad `module:function`, a missing
    release directory, or a frame environment that is not farmd's. The task runner
    prints it as one line and exits 2 (`farmd.releases.task_runner`)."""

    code = "bad_task"


class DeploymentError(UserError):
    """A deploy, undeploy, rollback or remove that the deployment state refuses: an
    unknown release, a type that would become ambiguous, a version still deployed."""

    code = "bad_deployment"


class ReleaseFetchError(FarmdError):
    """A worker could not bring a release into its cache (`farmd.releases.cache`): the
    fetch failed, the bytes were short or did not match the digest, or the bundle was
    refused. The message names the release (`pipeline 2.3`) and why; nothing is left
    half-written, so the next try starts afresh."""

    code = "release_fetch"


class ProtocolError(FarmdError):
    """A peer broke the wire protocol: malformed or oversized frame, bad message."""

    code = "protocol"

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class InternalError(FarmdError):
    """farmd broke one of its own invariants: a bug."""

    code = "internal"


class InvalidTransition(InternalError):
    """The core asked a frame to take a step its state machine has no row for
    (`farmd.jobs.TRANSITIONS`): a bug, named by job, frame, state and event."""

    def __init__(self, *, job: int, frame: int, state: enum.Enum, event: enum.Enum) -> None:
        self.job, self.frame, self.state, self.event = job, frame, state, event
        msg = f"job {job} frame {frame} is {state.value}: no transition on {event.value!r}"
        super().__init__(msg)


class UnknownWorkerError(UserError):
    """A worker name that is not connected."""

    code = "unknown_worker"


class UnknownUserError(UserError):
    """A request named a user the farm does not have."""

    code = "unknown_user"


class ForbiddenError(UserError):
    """The session's token does not allow the request (a frame's job token only
    submits sub-jobs and reads)."""

    code = "forbidden"


class UnavailableError(FarmdError):
    """The supervisor cannot answer now (a worker holding a log is away, a time-out)."""

    code = "unavailable"


class ConnectionLostError(FarmdError):
    """The supervisor could not be reached, or the connection dropped."""

    code = "connection"


class SessionIdleError(ConnectionLostError):
    """The supervisor closed a session that sent no request for its `idle_timeout`:
    nothing was lost, and connecting again goes on."""

    code = "idle"


def error_for_code(code: str, message: str) -> FarmdError:
    """The error a refusal with this wire code stands for (FarmdError if unknown)."""
    for cls in _all_subclasses(FarmdError):
        if cls.code == code:
            return cls(message)
    return FarmdError(message)


def _all_subclasses(cls: type[FarmdError]) -> list[type[FarmdError]]:
    out = []
    for sub in cls.__subclasses__():
        out.append(sub)
        out.extend(_all_subclasses(sub))
    return out
