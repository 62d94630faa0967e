"""`TlsSettings`: the `tls:` part of the supervisor's settings, checked on construction
(what they mean for connections is `farmd.tls`)."""

from __future__ import annotations

from pathlib import Path
from typing import Final

import attrs

from farmd.errors import ConfigError

TLS_MODES: Final = ("auto", "required", "off")


@attrs.frozen(kw_only=True)
class TlsSettings:
    """The config's `tls:` section.

    - `mode`: `auto` (the default: TLS on every connection, plaintext accepted only on a
      loopback connection), `required` (TLS on every connection) or `off` (plaintext
      everywhere; a warning when listening on a network address).
    - `cert`, `key`: a site's certificate (with its chain) and key, PEM; both or none.
      None: the farm's own, made in STATE/tls on the first start.
    - `ca`: the site's CA file that peers are given (shown by `farmd serve`); only with
      `cert`.
    - `names`: more DNS names or addresses the farm's own certificate names (the names
      peers dial, such as `farm.studio.example`).
    """

    mode: str = "auto"
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    names: tuple[str, ...] = ()

    def __attrs_post_init__(self) -> None:
        if self.mode not in TLS_MODES:
            msg = f"tls.mode must be one of {', '.join(TLS_MODES)} (got {self.mode!r})"
            raise ConfigError(msg)
        if (self.cert is None) != (self.key is None):
            msg = "tls.cert and tls.key go together: name both, or neither"
            raise ConfigError(msg)
        if self.ca is not None and self.cert is None:
            msg = "tls.ca names the CA of a site's own tls.cert: name tls.cert and tls.key too"
            raise ConfigError(msg)
        for name in self.names:
            if not name or len(name) > 253 or any(c.isspace() or c in "/\0*" for c in name):
                msg = f"tls.names: {name!r} is not a host name or address"
                raise ConfigError(msg)
