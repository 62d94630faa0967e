"""The host-load message of the wire protocol (docs/protocol.md 5.7 and 7): a worker of
version 6 tells the supervisor how busy its host is.

It is registered with the other messages when `farmd.protocol` is imported (it imports
this module last), as `farmd.protocol_releases` is. The figures are what the agent read
from the host (`farmd.hostload`); every bound is checked here, at the border, so the
core's record of a worker's load (`farmd.workers.HostLoad`) never sees a wild value.
`heartbeat` itself stays fieldless: the codec recognises it by its bytes (farmd.codec),
which is what keeps 10,000 workers' heartbeats cheap, so load travels in a message of
its own and less often (`LOAD_EVERY` heartbeat intervals).
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from farmd.errors import ProtocolError
from farmd.protocol import Message, _check, _message
from farmd.values import is_count, is_number
from farmd.values import show as _show

LOAD_VERSION: Final = 6  # the first version whose workers send `host_load`
LOAD_EVERY: Final = 2  # heartbeat intervals between two `host_load` of farmd's agent
MAX_LOAD_AVERAGE: Final = 1e9  # a run queue no host has: a bound, not a plausible value


def _is_fraction(value: object) -> bool:
    return is_number(value) and 0 <= value <= 1  # type: ignore[operator]


def _is_load_average(value: object) -> bool:
    return (
        isinstance(value, tuple)
        and len(value) == 3
        and all(is_number(v) and 0 <= v <= MAX_LOAD_AVERAGE for v in value)
    )


def _triple(value: Any) -> Any:
    """A list (as msgpack decodes an array) as a tuple; anything else for the validator."""
    return tuple(value) if isinstance(value, list | tuple) else value


@_message("host_load")
@attrs.frozen(kw_only=True)
class HostLoad(Message):
    """How busy the worker's host is: CPU use over the agent's last sampling interval
    as a fraction of all its cores, memory used and in all (bytes), and the 1, 5 and 15
    minute load averages. Only a worker of version 6 sends it (5.7)."""

    cpu: float = attrs.field(validator=_check(_is_fraction, "must be a number from 0 to 1"))
    memory_used: int = attrs.field(validator=_check(is_count, "must be an integer >= 0"))
    memory_total: int = attrs.field(validator=_check(is_count, "must be an integer >= 0"))
    load_average: tuple[float, float, float] = attrs.field(
        converter=_triple,
        validator=_check(_is_load_average, "must be 3 numbers from 0 to 1e9"),
    )

    def __attrs_post_init__(self) -> None:
        if self.memory_used > self.memory_total:
            msg = (
                "bad field 'memory_used' of 'host_load': must be at most memory_total "
                f"({self.memory_total}) (got {_show(self.memory_used)})"
            )
            raise ProtocolError(msg)
