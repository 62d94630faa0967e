"""`FieldError`: how a settings class refuses a value, so that the file loader can
point at the line, column and key of it (`loader`)."""

from __future__ import annotations

from farmd.errors import ConfigError


class FieldError(ConfigError):
    """A refused field value: `fields` names the field(s) at fault, the first most
    directly, and `problem` says what is wrong without quoting the value, so that the
    file loader can point at the right line and quote the source text instead.

    It keeps ConfigError's one-argument constructor (`errors.error_for_code` may build
    any subclass from a message); `refuse` is the way to build one with its details."""

    def __init__(self, message: str, fields: tuple[str, ...] = (), problem: str = "") -> None:
        super().__init__(message)
        self.fields = fields
        self.problem = problem or message

    @classmethod
    def refuse(cls, fields: tuple[str, ...], value: object, problem: str) -> FieldError:
        return cls(f"bad {fields[0]} {value!r}: {problem}", fields, problem)
