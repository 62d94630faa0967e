"""`/metrics` over HTTP: Prometheus's text format, on an address of its own.

Scrapes run in the supervisor's trio thread (the core's), so the statistics one scrape
reads are consistent with each other; `FarmMetrics` turns them into the exposition.

Design debt: this is a hand-written HTTP/1.1 server that reads one request head (up to
HTTP_REQUEST_LIMIT bytes, within HTTP_TIMEOUT), answers `GET /metrics` (or `GET /`)
and closes the connection. It is just enough for a Prometheus scraper and no more: no
keep-alive, no chunked bodies, no HEAD, no other paths. A later issue replaces it with
hypercorn and starlette (a real HTTP stack, which a web dashboard also needs); until
then it is kept as it is.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import socket
import ssl
from pathlib import Path

import trio

from farmd.config import Address
from farmd.logs import log_event
from farmd.metrics import FarmMetrics
from farmd.store import write_state_file
from farmd.supervisor.connection import open_listeners
from farmd.tls import HANDSHAKE_RECORD, is_loopback

# the supervisor's logger: these lines are the supervisor's, as before the split
log = logging.getLogger("farmd.supervisor")

METRICS_ADDRESS_FILE = "metrics_address"
HTTP_REQUEST_LIMIT = 8192
HTTP_TIMEOUT = 5.0


async def serve_metrics(
    metrics: FarmMetrics,
    where: Address,
    state_dir: Path,
    tls: ssl.SSLContext | None = None,
    plaintext: bool = True,
    *,
    task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `metrics` on `where`; started with the address it listens on (a port 0
    is chosen by the kernel), which is also written to STATE/metrics_address.

    With a `tls` context a scrape may come over HTTPS (`farmd.tls`: the first byte says
    which); plain HTTP is answered only where `plaintext` is allowed (`tls.mode: auto`)
    and the connection is to a loopback address, else with a 400 saying to use HTTPS."""
    listeners = await open_listeners(where)
    address = Address(where.host, listeners[0].socket.getsockname()[1])
    write_state_file(state_dir / METRICS_ADDRESS_FILE, f"{address}\n")
    log_event(log, "info", "metrics listening", address=str(address), tls=tls is not None)
    task_status.started(address)
    handler = functools.partial(_metrics_connection, metrics, tls, plaintext)
    await trio.serve_listeners(handler, listeners)


async def _metrics_connection(
    metrics: FarmMetrics, tls: ssl.SSLContext | None, plaintext: bool, stream: trio.SocketStream
) -> None:
    """HTTPS or HTTP, by the first byte; then one scrape."""
    if tls is None:
        await _metrics_request(metrics, stream)
        return
    first = b""
    with trio.move_on_after(HTTP_TIMEOUT):
        with contextlib.suppress(OSError):
            first = await stream.socket.recv(1, socket.MSG_PEEK)
    if not first:
        await stream.aclose()
    elif first[0] == HANDSHAKE_RECORD:
        secure = trio.SSLStream(stream, tls, server_side=True)
        try:
            with trio.fail_after(HTTP_TIMEOUT):
                await secure.do_handshake()
        except (trio.BrokenResourceError, trio.TooSlowError):
            await trio.aclose_forcefully(secure)
            return
        await _metrics_request(metrics, secure)
    elif plaintext and is_loopback(str(stream.socket.getsockname()[0])):
        await _metrics_request(metrics, stream)
    else:
        await _metrics_request(metrics, stream, refuse="this endpoint speaks HTTPS only\n")


async def _metrics_request(
    metrics: FarmMetrics, stream: trio.abc.Stream, refuse: str | None = None
) -> None:
    """One scrape: read the request head, answer it, close."""
    async with stream:
        request = b""
        with trio.move_on_after(HTTP_TIMEOUT):
            while b"\r\n\r\n" not in request and len(request) < HTTP_REQUEST_LIMIT:
                try:
                    chunk = await stream.receive_some(4096)
                except trio.BrokenResourceError:
                    return
                if not chunk:
                    break
                request += chunk
        line = request.split(b"\r\n", 1)[0].split()
        if refuse is not None:
            body, kind, status = refuse.encode(), "text/plain", "400 Bad Request"
        elif line[:1] == [b"GET"] and line[1:2] in ([b"/metrics"], [b"/"]):
            try:
                body, kind = metrics.exposition()
                status = "200 OK"
            except Exception as exc:  # a scrape must not take the supervisor down
                log_event(log, "error", "metrics failed", error=repr(exc))
                body, kind, status = (
                    b"metrics failed\n",
                    "text/plain",
                    "500 Internal Server Error",
                )
        else:
            body, kind, status = b"not found: GET /metrics\n", "text/plain", "404 Not Found"
        head = (
            f"HTTP/1.1 {status}\r\nContent-Type: {kind}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.send_all(head.encode() + body)
