"""Listen addresses: `Address` (a TCP endpoint) and `parse_address`, which reads
`HOST:PORT`, `:PORT` and `[IPV6]:PORT` for flags and config files alike."""

from __future__ import annotations

import ipaddress
import re
from typing import Final

import attrs

from farmd.errors import ConfigError

DEFAULT_PORT: Final = 7531
DEFAULT_HOST: Final = "127.0.0.1"

_PORT = re.compile(r"[0-9]{1,5}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
_DOTTED_NUMBERS = re.compile(r"[0-9.]+")


def _host_problem(host: object) -> str | None:
    """Why `host` (unbracketed) is not a hostname, IPv4 or IPv6 address, or None."""
    if not isinstance(host, str):
        return "the host must be a string"
    if not host:
        return "the host is empty"
    if ":" in host:
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"host {host!r} is not an IPv6 address"
        return None
    if _DOTTED_NUMBERS.fullmatch(host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"host {host!r} is not an IPv4 address"
        return None
    name = host[:-1] if host.endswith(".") else host  # one trailing dot: a rooted name
    if len(name) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in name.split(".")):
        return f"host {host!r} is not a hostname or IP address"
    return None


def _port_problem(port: object) -> str | None:
    if isinstance(port, bool) or not isinstance(port, int):
        return "the port must be an integer"
    if not 0 <= port <= 65535:
        return f"port {port} is out of range 0..65535"
    return None


def _check_host(_: object, __: object, value: str) -> None:
    problem = _host_problem(value)
    if problem is not None:
        msg = f"bad address host {value!r}: {problem}"
        raise ConfigError(msg)


def _check_port(_: object, __: object, value: int) -> None:
    problem = _port_problem(value)
    if problem is not None:
        msg = f"bad address port {value!r}: {problem}"
        raise ConfigError(msg)


@attrs.frozen
class Address:
    """A TCP endpoint. `host` is a hostname, an IPv4 or an (unbracketed) IPv6 address;
    `port` 0 asks the OS for a free port. `str()` gives the text `parse_address` reads."""

    host: str = attrs.field(validator=_check_host)
    port: int = attrs.field(validator=_check_port)

    def __str__(self) -> str:
        if ":" in self.host:
            return f"[{self.host}]:{self.port}"
        return f"{self.host}:{self.port}"


DEFAULT_LISTEN: Final = Address(DEFAULT_HOST, DEFAULT_PORT)
# the HTTP API, the dashboard and /metrics (`farmd.web`): beside the farm's own port
DEFAULT_HTTP: Final = Address(DEFAULT_HOST, DEFAULT_PORT + 1)


def address_or_problem(text: str) -> Address | str:
    """The address `text` names, or why it names none (shared with the file loader)."""
    if any(ch.isspace() for ch in text):
        return "must not contain spaces"
    if text.startswith("["):
        close = text.find("]")
        if close < 0:
            return "'[' without a matching ']'"
        host, rest = text[1:close], text[close + 1 :]
        if ":" not in host:
            return "brackets are only for IPv6 addresses, such as '[::1]:7531'"
        if not rest.startswith(":"):
            return "expected ':PORT' after ']', such as '[::1]:7531'"
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            return "expected HOST:PORT or :PORT, such as '127.0.0.1:7531'"
        if ":" in host:
            return "write an IPv6 address in brackets, such as '[::1]:7531'"
        host = host or DEFAULT_HOST
    if not _PORT.fullmatch(port_text):
        return f"port {port_text!r} is not a number 0..65535"
    port = int(port_text)
    problem = _host_problem(host) or _port_problem(port)
    if problem is not None:
        return problem
    return Address(host, port)


def parse_address(text: str) -> Address:
    """Read `HOST:PORT`, `:PORT` (host 127.0.0.1) or `[IPV6]:PORT`; port 0..65535.

    Refuses anything else with a one-line `ConfigError` quoting `text`.
    """
    result = address_or_problem(text)
    if isinstance(result, str):
        msg = f"bad address {text!r}: {result}"
        raise ConfigError(msg)
    return result


# The most supervisors a peer's list names: an active one and its standbys.
MAX_SUPERVISORS: Final = 16


def parse_supervisors(text: str) -> tuple[Address, ...]:
    """Read a peer's supervisor list, `HOST:PORT[,HOST:PORT...]` (Qube's `qb_supervisor =
    sv001,sv002`): the addresses in the order to try them, each once. One `ConfigError`
    line quoting the bad entry."""
    entries = [entry.strip() for entry in text.split(",")]
    if not text.strip() or any(not entry for entry in entries):
        msg = f"bad supervisor list {text!r}: expected HOST:PORT[,HOST:PORT...]"
        raise ConfigError(msg)
    if len(entries) > MAX_SUPERVISORS:
        msg = f"bad supervisor list {text[:80]!r}...: at most {MAX_SUPERVISORS} addresses"
        raise ConfigError(msg)
    addresses: list[Address] = []
    for entry in entries:
        address = parse_address(entry)
        if address not in addresses:
            addresses.append(address)
    return tuple(addresses)


@attrs.define
class SupervisorList:
    """The supervisors a peer may reach and the one it tries now. A peer moves to the
    next after a failure (`advance`) and straight to the active one a standby names
    (`follow`), which it keeps trying first from then on: the list is where to look,
    the active supervisor is where to stay."""

    addresses: tuple[Address, ...]
    index: int = 0

    @classmethod
    def of(cls, where: str | Address | tuple[Address, ...]) -> SupervisorList:
        if isinstance(where, Address):
            return cls((where,))
        if isinstance(where, tuple):
            return cls(where)
        return cls(parse_supervisors(where))

    @property
    def current(self) -> Address:
        return self.addresses[self.index]

    def advance(self) -> Address:
        """The next address to try after the current one failed."""
        self.index = (self.index + 1) % len(self.addresses)
        return self.current

    def follow(self, active: str) -> bool:
        """Try `active` (`HOST:PORT`, as a standby named it) next: False if it is not
        an address or is the one that just said it is a standby."""
        found = address_or_problem(active)
        if isinstance(found, str) or found == self.current:
            return False
        if found not in self.addresses:
            if len(self.addresses) >= MAX_SUPERVISORS:
                return False
            self.addresses = (*self.addresses, found)
        self.index = self.addresses.index(found)
        return True

    def __len__(self) -> int:
        return len(self.addresses)

    def __str__(self) -> str:
        """The list as `parse_supervisors` reads it (what frames get as FARMD_SUPERVISOR)."""
        return ",".join(map(str, self.addresses))
