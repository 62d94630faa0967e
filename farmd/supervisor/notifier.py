"""Notifications: a JSON POST to a job's URL when it ends, the hook studios connect to
chat and pipelines (`farmd submit --notify URL`, or the farm's `notify:` per cluster).

The core says a job ended (`JobEnded`, carried out once the end is durable); this shell
part looks up where to tell (`url_for`: the job's own URL, else the farm's for the
deepest cluster above the job's) and queues the message. Sending never blocks the
loop's other work: `MAX_SENDERS` tasks take messages from a bounded queue (one that
would overflow it is dropped, with a log line), each POST has a timeout, and a message
that fails (no answer, or not a 2xx) is sent again after RETRY_FIRST seconds, doubling
up to RETRY_MAX, until RETRY_FOR seconds have passed since its job ended. A receiver is
told each end at least once while it answers within that time; a retried POST carries
the same `id`, so a receiver can drop repeats. The body:

    {"id": "farmd-JOB-ENDED_AT", "event": "job_ended", "farm": "HOST:PORT",
     "job": {... the job's summary, as `farmd job ID --json` shows it ...}}

httpx (which runs on trio through anyio) makes the requests: HTTP/1.1, https with the
system's CA store, redirects not followed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Final

import attrs
import trio

from farmd.cluster import ancestors
from farmd.logs import log_event

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("farmd.supervisor")

MAX_QUEUED: Final = 10_000  # messages waiting to be sent, at most
MAX_SENDERS: Final = 4  # POSTs in flight at once
POST_TIMEOUT: Final = 10.0  # seconds one POST may take
RETRY_FIRST: Final = 2.0
RETRY_MAX: Final = 300.0
RETRY_FOR: Final = 3600.0  # seconds after which an undelivered message is dropped


@attrs.frozen
class Message:
    url: str
    body: dict[str, Any]
    queued_at: float


def url_for(job_url: str, cluster: str, defaults: Mapping[str, str]) -> str:
    """Where to tell that a job in `cluster` ended: its own URL, else the farm's for the
    deepest cluster at or above it, else "" (nowhere)."""
    if job_url:
        return job_url
    for path in ancestors(cluster):
        if path in defaults:
            return defaults[path]
    return ""


class Notifier:
    """Queues and sends job-end notifications (module docs)."""

    def __init__(
        self,
        defaults: Mapping[str, str],
        farm: Callable[[], str],
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.defaults = dict(defaults)
        self._farm = farm  # the supervisor's address, for the body
        self._transport = transport  # tests hand in httpx.MockTransport
        self._send, self._receive = trio.open_memory_channel[Message](MAX_QUEUED)
        self.sent = 0
        self.dropped = 0
        self._http_error: type[Exception] = Exception  # httpx's, once it is loaded

    def job_ended(self, summary: Mapping[str, Any], job_url: str) -> None:
        """Queue the message for a job that ended (its summary), if anyone is told."""
        url = url_for(job_url, str(summary.get("cluster", "/")), self.defaults)
        if not url:
            return
        ended = summary.get("ended_at") or trio.current_time()
        body = {
            "id": f"farmd-{summary.get('id')}-{ended}",
            "event": "job_ended",
            "farm": self._farm(),
            "job": dict(summary),
        }
        try:
            self._send.send_nowait(Message(url, body, trio.current_time()))
        except trio.WouldBlock:
            self.dropped += 1
            log_event(log, "warning", "notification dropped", job=summary.get("id"), url=url)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        # httpx loads with the first message: a farm that notifies no one never pays for it
        first = await self._receive.receive()
        import httpx

        self._http_error = httpx.HTTPError
        async with (
            httpx.AsyncClient(
                timeout=POST_TIMEOUT, follow_redirects=False, transport=self._transport
            ) as client,
            trio.open_nursery() as nursery,
        ):
            for _ in range(MAX_SENDERS):
                nursery.start_soon(self._sender, client)
            await self._deliver(client, first)

    async def _sender(self, client: httpx.AsyncClient) -> None:
        async for message in self._receive:
            await self._deliver(client, message)

    async def _deliver(self, client: httpx.AsyncClient, message: Message) -> None:
        pause = RETRY_FIRST
        attempt = 0
        while True:
            attempt += 1
            why = await self._post(client, message)
            if why is None:
                self.sent += 1
                return
            waited = trio.current_time() - message.queued_at
            if waited + pause > RETRY_FOR:
                log_event(
                    log,
                    "warning",
                    "notification given up",
                    url=message.url,
                    attempts=attempt,
                    error=why,
                )
                return
            log_event(
                log,
                "info",
                "notification failed",
                url=message.url,
                attempt=attempt,
                retry_in=pause,
                error=why,
            )
            await trio.sleep(pause)
            pause = min(pause * 2, RETRY_MAX)

    async def _post(self, client: httpx.AsyncClient, message: Message) -> str | None:
        """POST once; None when the receiver took it (2xx), else why not."""
        try:
            response = await client.post(message.url, json=message.body)
        except self._http_error as exc:
            return f"{type(exc).__name__}: {exc}"[:300] or type(exc).__name__
        if 200 <= response.status_code < 300:
            return None
        return f"HTTP {response.status_code}"
