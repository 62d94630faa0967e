"""Serving the HTTP app: hypercorn's trio worker, on the supervisor's HTTP addresses.

Theory of operation
-------------------
`serve_http` binds every address itself (`open_listeners`: a port that cannot be had
is one line, as for the supervisor's own port; port 0 is chosen by the kernel), hands
the sockets to hypercorn by file descriptor (`fd://N`, hypercorn's own way to take a
socket it did not open), and reports the addresses bound through `task_status`.
hypercorn then runs in this task's nursery until it is cancelled with the supervisor.

TLS follows the supervisor's port (docs/protocol.md 1.2) as far as an HTTP server can.
The supervisor's port tells TLS from plaintext by a connection's first byte; hypercorn
serves a socket either as HTTPS or as HTTP, not both. So each address is one or the
other (`https_for`): with `tls.mode: off` plain HTTP; with `auto` plain HTTP on a
loopback address (its bytes never cross a network) and HTTPS on any other; with
`required` HTTPS everywhere. A plaintext request to an HTTPS address fails its
handshake and is closed, without an answer.

hypercorn's own bounds apply: a request head at most 16 KiB (`h11_max_incomplete_size`),
a TLS handshake within `HANDSHAKE_TIMEOUT`, an idle keep-alive connection closed after
`KEEP_ALIVE_TIMEOUT`; the app bounds bodies and event streams (`farmd.web.app`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import attrs
import hypercorn.trio
import trio
from hypercorn.config import Config
from starlette.types import ASGIApp

from farmd.config import Address
from farmd.logs import log_event
from farmd.supervisor.connection import open_listeners
from farmd.tls import CertificateFiles, is_loopback

log = logging.getLogger("farmd.web")

HEAD_BYTES: Final = 16 * 1024  # a request's head (line and headers), at most
HANDSHAKE_TIMEOUT: Final = 10.0  # seconds, as the supervisor's port allows
KEEP_ALIVE_TIMEOUT: Final = 30.0  # seconds an idle connection is kept between requests


@attrs.frozen
class HttpBind:
    """An address to serve the app on, and whether as HTTPS."""

    where: Address
    https: bool


def https_for(where: Address, tls_mode: str, have_certificate: bool) -> bool:
    """Whether `where` is served as HTTPS (module docs)."""
    if tls_mode == "off" or not have_certificate:
        return False
    return tls_mode == "required" or not is_loopback(where.host)


def hypercorn_config(
    secure: Sequence[str], insecure: Sequence[str], tls: CertificateFiles | None
) -> Config:
    config = Config()
    if secure:
        assert tls is not None
        config.certfile, config.keyfile = str(tls.cert), str(tls.key)
        config.bind = list(secure)
        config.insecure_bind = list(insecure)
    else:
        config.bind = list(insecure)
    config.h11_max_incomplete_size = HEAD_BYTES
    config.ssl_handshake_timeout = HANDSHAKE_TIMEOUT
    config.keep_alive_timeout = KEEP_ALIVE_TIMEOUT
    config.include_server_header = False
    config.accesslog = None
    config.errorlog = logging.getLogger("farmd.web.hypercorn")
    return config


async def serve_http(
    app: ASGIApp,
    binds: Sequence[HttpBind],
    tls: CertificateFiles | None,
    *,
    task_status: trio.TaskStatus[list[Address]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `app` on each of `binds` until cancelled; started with the addresses bound
    (in the order of `binds`, a port 0 replaced by the one the kernel chose)."""
    secure: list[str] = []
    insecure: list[str] = []
    bound: list[Address] = []
    for bind in binds:
        listeners = await open_listeners(bind.where)
        bound.append(Address(bind.where.host, listeners[0].socket.getsockname()[1]))
        for listener in listeners:
            # hypercorn takes the socket over: this side lets go of its descriptor
            (secure if bind.https else insecure).append(f"fd://{listener.socket.detach()}")
    config = hypercorn_config(secure, insecure, tls)
    async with trio.open_nursery() as nursery:
        await nursery.start(hypercorn.trio.serve, app, config)
        for bind, address in zip(binds, bound, strict=True):
            scheme = "https" if bind.https else "http"
            log_event(log, "info", "http listening", url=f"{scheme}://{address}/")
        task_status.started(bound)
