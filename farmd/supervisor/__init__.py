"""The supervisor (`farmd serve`): the trio shell that holds the scheduler core.

The package has one module per concern:

- `daemon`: the `Supervisor` (the handshake, worker and admin sessions, answering
  requests, applying the core's outcomes, timers and heartbeats) and `serve`, which
  runs it until a signal;
- `connection`: one peer's `Connection` (bounded outbox, its sender, receive, idle
  deadline, backpressure), the handshake's `expect`, and the listening sockets;
- `tokens`: the farm's tokens and who a presented one stands for (a core `Principal`);
- `translate`: requests to core events and queries, frame commands to worker messages,
  and how a large submission is drafted;
- `committer`: the group committer that makes outcomes durable before their effects;
- `web_backend`: the supervisor as the HTTP app's backend (`farmd.web`), and the change
  notices its event streams carry.

This module re-exports the names other code imports, so `from farmd.supervisor import X`
keeps working wherever X now lives.
"""

from farmd.supervisor.connection import open_listeners
from farmd.supervisor.daemon import (
    ADDRESS_FILE,
    HTTP_ADDRESS_FILE,
    METRICS_ADDRESS_FILE,
    Supervisor,
    serve,
)
from farmd.supervisor.tokens import TOKEN_FILE, USER_TOKEN_FILE, ensure_token, job_token
from farmd.supervisor.translate import draft_submission, is_large, submit_event

__all__ = [
    "ADDRESS_FILE",
    "HTTP_ADDRESS_FILE",
    "METRICS_ADDRESS_FILE",
    "TOKEN_FILE",
    "USER_TOKEN_FILE",
    "Supervisor",
    "draft_submission",
    "ensure_token",
    "is_large",
    "job_token",
    "open_listeners",
    "serve",
    "submit_event",
]
