"""farmd's HTTP side: the JSON API, its change notices, its OpenAPI document and
`/metrics`, served by the supervisor (`farmd.web.server`, hypercorn on trio).

- `app`: the Starlette app around a `FarmBackend` (the supervisor seen from outside);
- `api`: the endpoints, each a protocol request; `calls`: parameters, bodies, errors;
- `events`: the broadcaster of coalesced change notices (server-sent events);
- `openapi`: the OpenAPI 3.1 document, built from the endpoint table;
- `server`: binding the addresses and serving the app with hypercorn.
"""

from farmd.web.app import FarmBackend, create_app
from farmd.web.events import Broadcaster, Notice, Subscription

__all__ = ["Broadcaster", "FarmBackend", "Notice", "Subscription", "create_app"]
