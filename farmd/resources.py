"""Reservations: what a frame takes from its worker, and from the farm, while it runs.

Theory of operation
-------------------
A worker declares its resources: `slots` (always), `memory` (bytes, by default the
host's) and any counters an admin names (`--resource gpu=2`). The supervisor declares
farm-wide counters in its configuration (`license.nuke: 10`); a resource name with a dot
is such a *global* one, a name without is a *host* one. A job reserves some of each
(`--reserve slots=2,memory=8G,gpu=1,license.nuke=1`); by default one slot.

Slots take Qube's three forms: `N` exactly N, `N+` at least N and then every free slot,
`N*` only a fully idle host, all of its slots. `Reservation.take` says what a frame
would hold on a worker with the given free amounts, or None when it does not fit; what
it holds is returned (`Taken`) when the process ends. A global counter is never held
beyond its total: the scheduler checks the farm's `Pool` along with the worker's.

Pure: parsing and arithmetic only.
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping

import attrs

from farmd.errors import JobSpecError

UNITS = {"": 1, "k": 1024, "m": 1024**2, "g": 1024**3, "t": 1024**4}
MAX_AMOUNT = 2**62
_NAME = re.compile(r"[a-z][a-z0-9_-]*(?:\.[a-z0-9_-]+)*")
_AMOUNT = re.compile(r"(\d+(?:\.\d+)?)([kKmMgGtT]?)")
_SLOTS = re.compile(r"(\d+)([+*]?)")

Taken = dict[str, float]  # resource name -> amount a frame holds
Available = Callable[[str], float]  # how much of a resource is free
# What a plain frame holds. Shared, never mutated: dispatch compares it by identity to
# skip the arithmetic of reservations for the common case.
ONE_SLOT_TAKEN: Taken = {"slots": 1}


def is_global(name: str) -> bool:
    """A farm-wide counter (`license.nuke`), not a host's (`gpu`)."""
    return "." in name


def check_name(name: object, what: str = "resource") -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        msg = (
            f"bad {what} name {name!r}: lowercase letters, digits, '_' and '-', "
            "dot-separated (license.nuke)"
        )
        raise JobSpecError(msg)
    return name


def parse_amount(text: object, what: str) -> float:
    """`8`, `2.5`, `8G` (binary units K, M, G, T): a whole number when it is one."""
    if isinstance(text, int | float) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _AMOUNT.fullmatch(text.strip()) if isinstance(text, str) else None
        if match is None:
            msg = f"bad amount {text!r} for {what}: expected a number such as 2, 0.5 or 8G"
            raise JobSpecError(msg)
        value = float(match.group(1)) * UNITS[match.group(2).lower()]
    if not 0 <= value <= MAX_AMOUNT:
        msg = f"bad amount {text!r} for {what}: must be between 0 and {MAX_AMOUNT}"
        raise JobSpecError(msg)
    return int(value) if value == int(value) else value


def format_amount(value: float) -> str:
    for unit in ("t", "g", "m", "k"):
        size = UNITS[unit]
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit.upper()}"
    return str(int(value)) if value == int(value) else str(value)


def _items(text: object, what: str) -> list[tuple[str, str]]:
    if not isinstance(text, str):
        msg = f"bad {what} {text!r}: expected NAME=AMOUNT,NAME=AMOUNT"
        raise JobSpecError(msg)
    items = []
    seen = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        name, sep, amount = part.partition("=")
        name = name.strip()
        if not sep:
            msg = f"bad {what} {text!r}: {part!r} is not NAME=AMOUNT"
            raise JobSpecError(msg)
        check_name(name)
        if name in seen:
            msg = f"bad {what} {text!r}: {name} is named twice"
            raise JobSpecError(msg)
        seen.add(name)
        items.append((name, amount.strip()))
    return items


class SlotMode(enum.Enum):
    EXACT = ""  # N slots
    AT_LEAST = "+"  # N or more: every free slot
    IDLE_HOST = "*"  # a fully idle host, all its slots


@attrs.frozen
class Reservation:
    slots: int = 1
    mode: SlotMode = SlotMode.EXACT
    amounts: tuple[tuple[str, float], ...] = ()  # other resources, sorted by name

    def __str__(self) -> str:
        parts = [f"slots={self.slots}{self.mode.value}"]
        parts += [f"{name}={format_amount(amount)}" for name, amount in self.amounts]
        return ",".join(parts)

    @property
    def plain(self) -> bool:
        """One slot and nothing else: what a job reserves unless it says otherwise."""
        return self.slots == 1 and self.mode is SlotMode.EXACT and not self.amounts

    @property
    def global_amounts(self) -> tuple[tuple[str, float], ...]:
        return tuple((n, a) for n, a in self.amounts if is_global(n))

    def take(self, slots_total: float, free: Available, pool_free: Available) -> Taken | None:
        """What a frame holds on a worker with `slots_total` slots and `free` amounts
        (slots included), with `pool_free` left of the farm's counters; None if it does
        not fit."""
        free_slots = free("slots")
        if self.mode is SlotMode.IDLE_HOST:
            if free_slots < slots_total or slots_total < self.slots:
                return None
            slots = slots_total
        else:
            if free_slots < self.slots:
                return None
            slots = free_slots if self.mode is SlotMode.AT_LEAST else self.slots
        taken: Taken = {"slots": slots}
        for name, amount in self.amounts:
            have = pool_free(name) if is_global(name) else free(name)
            if have < amount:
                return None
            taken[name] = amount
        return taken

    def shortfall(self, slots_total: float, free: Available, pool_free: Available) -> str | None:
        """Why `take` would refuse, in words (None if it fits)."""
        free_slots = free("slots")
        if self.mode is SlotMode.IDLE_HOST:
            if free_slots < slots_total or slots_total < self.slots:
                return (
                    f"needs an idle host with at least {self.slots} slots "
                    f"({free_slots:g} of {slots_total:g} free)"
                )
        elif free_slots < self.slots:
            plural = "slot" if self.slots == 1 else "slots"
            return f"needs {self.slots} {plural}, {free_slots:g} free"
        for name, amount in self.amounts:
            where = "farm-wide" if is_global(name) else "on this worker"
            have = pool_free(name) if is_global(name) else free(name)
            if have < amount:
                return f"needs {name}={format_amount(amount)}, {format_amount(have)} free {where}"
        return None


ONE_SLOT = Reservation()


def parse_reservation(text: object) -> Reservation:
    """`slots=2,memory=8G,gpu=1,license.nuke=1`; slots as `N`, `N+` or `N*`."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return ONE_SLOT
    slots, mode = 1, SlotMode.EXACT
    amounts = []
    for name, value in _items(text, "reservation"):
        if name == "slots":
            match = _SLOTS.fullmatch(value)
            if match is None or int(match.group(1)) < 1:
                msg = f"bad reservation {text!r}: slots={value!r} must be N, N+ or N* (N >= 1)"
                raise JobSpecError(msg)
            slots, mode = int(match.group(1)), SlotMode(match.group(2))
        else:
            amounts.append((name, parse_amount(value, name)))
    return Reservation(slots, mode, tuple(sorted(amounts)))


def parse_resources(text: object, what: str = "resources") -> dict[str, float]:
    """A worker's or the farm's counters: `gpu=2,memory=64G` (no slot forms)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    return {name: parse_amount(value, name) for name, value in _items(text, what)}


def taken_text(taken: Mapping[str, float]) -> str:
    return ",".join(f"{n}={format_amount(a)}" for n, a in sorted(taken.items()))


def parse_taken(text: str | None) -> Taken:
    """The inverse of `taken_text`, for stored rows (None: one slot)."""
    if not text:
        return ONE_SLOT_TAKEN
    return parse_resources(text, "held resources")


@attrs.define
class Pool:
    """The farm's global counters: totals (from the configuration, changed at run time
    by an admin) and what running frames hold. `used` may exceed a lowered total until
    enough frames end; nothing new is taken meanwhile."""

    totals: dict[str, float] = attrs.field(factory=dict)
    used: dict[str, float] = attrs.field(factory=dict)

    def free(self, name: str) -> float:
        return max(0.0, self.totals.get(name, 0) - self.used.get(name, 0))

    def hold(self, taken: Mapping[str, float]) -> None:
        if taken is ONE_SLOT_TAKEN:
            return
        for name, amount in taken.items():
            if is_global(name):
                self.used[name] = self.used.get(name, 0) + amount

    def release(self, taken: Mapping[str, float]) -> bool:
        """Give back what `taken` held; True if it held a global counter."""
        if taken is ONE_SLOT_TAKEN:
            return False
        released = False
        for name, amount in taken.items():
            if is_global(name):
                self.used[name] = self.used.get(name, 0) - amount
                released = True
        return released
