"""How an admin command reaches the supervisor: the options every admin command takes
(`--supervisor`, `--token-file`, `--ca`, `--pin`), the `farmd.client.Client` they name,
and `farmd trust`, which pins a supervisor's key the first time, as ssh does.
"""

from __future__ import annotations

import argparse
import socket
import ssl
import sys
from typing import Any

from farmd.errors import ConnectionLostError, UserError


def add_trust_options(sub: argparse.ArgumentParser) -> None:
    """`--ca` and `--pin`: how to trust the supervisor over TLS (`farmd.tls`)."""
    sub.add_argument(
        "--ca",
        metavar="FILE",
        help="the farm's CA file (STATE/tls/ca.pem on the supervisor; default $FARMD_CA)",
    )
    sub.add_argument(
        "--pin",
        metavar="sha256:HEX",
        help="the supervisor's key, as `farmd trust` prints it (default $FARMD_PIN, else "
        "the one `farmd trust` kept)",
    )


def add_connection_options(sub: argparse.ArgumentParser) -> None:
    sub.add_argument(
        "--supervisor",
        metavar="HOST:PORT[,HOST:PORT]",
        help="supervisor address, or the active one and its standbys, tried in turn "
        "(default $FARMD_SUPERVISOR or 127.0.0.1:7531)",
    )
    sub.add_argument(
        "--token-file",
        metavar="FILE",
        help="file holding the farm token (default $FARMD_TOKEN, else the local state dir's token)",
    )
    add_trust_options(sub)


def client_for(args: argparse.Namespace) -> Any:
    """A `farmd.client.Client` for the supervisor, token and trust the options name."""
    from farmd.client import Client

    return Client(args.supervisor, token_file=args.token_file, ca=args.ca, pin=args.pin)


TRUST_TIMEOUT = 10.0


def trust_command(args: argparse.Namespace) -> int:
    """Show the key of the supervisor at HOST:PORT and, once confirmed, keep its pin in
    known_supervisors: later commands and workers (run by the same account) trust it."""
    from farmd.client import resolve_address
    from farmd.tls import (
        check_pin,
        handshake_failure,
        known_supervisors_file,
        remember_pin,
        spki_pin,
    )

    address = resolve_address(args.address)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE  # what is checked is the key, by a person
    try:
        with (
            socket.create_connection((address.host, address.port), timeout=TRUST_TIMEOUT) as raw,
            context.wrap_socket(raw, server_hostname=address.host) as tls,
        ):
            der = tls.getpeercert(binary_form=True)
    except ssl.SSLError as exc:
        raise handshake_failure(exc, address) from None
    except OSError as exc:
        msg = f"cannot reach the supervisor at {address}: {exc.strerror or exc}"
        raise ConnectionLostError(msg) from None
    if not der:
        msg = f"the supervisor at {address} presented no certificate"
        raise ConnectionLostError(msg)
    pin = spki_pin(der)
    subject, names = _describe(der)
    print(f"the supervisor at {address} presents the certificate of {subject}")
    if names:
        print(f"  which names: {', '.join(names)}")
    print(f"  key fingerprint: {pin}")
    print("  (`farmd serve` logs it as 'tls ready pin=...'; compare before you trust it)")
    if args.expect is not None:
        if check_pin(args.expect) != pin:
            msg = f"the key is not the one expected ({args.expect}): not trusted"
            raise UserError(msg)
    elif not args.yes:
        if not sys.stdin.isatty():
            msg = "not trusted: confirm with --yes, or give the pin to expect with --expect"
            raise UserError(msg)
        answer = input("Trust this supervisor? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            print("not trusted")
            return 1
    path = remember_pin(address, pin, known_supervisors_file())
    print(f"trusted: {address} {pin} is kept in {path}")
    return 0


def _describe(der: bytes) -> tuple[str, list[str]]:
    """A certificate's common name and the names it holds, for a person to read."""
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_der_x509_certificate(der)
    common = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    subject = str(common[0].value) if common else cert.subject.rfc4514_string()
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return subject, []
    names = [str(n) for n in san.get_values_for_type(x509.DNSName)]
    names += [str(n) for n in san.get_values_for_type(x509.IPAddress)]
    return subject, names
