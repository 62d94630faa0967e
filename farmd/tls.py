"""TLS for farmd: the farm's certificates, how a peer trusts the supervisor, and the
supervisor's sans-IO TLS session.

Theory of operation
-------------------
*Certificates.* On its first start a supervisor with TLS on creates a farm CA and its
own certificate, signed by that CA, in STATE/tls (`farm_certificates`; ECDSA P-256 keys
made by `cryptography`, the keys 0600). The certificate names every name the supervisor
may be reached by: localhost, its loopback addresses, the host's names and the config's
`tls.names`; when those change it is issued again *with the same key*. A site may name
its own `tls.cert`/`tls.key` (and the `tls.ca` its peers are given) instead.

*Trust.* A peer (worker, CLI, `farmd.client`) trusts the supervisor at an address by
one of (`trust_for`, first that applies):

1. a CA file it is given (`--ca`, `$FARMD_CA`): the chain must verify and the
   certificate must name the address it dialled, as for HTTPS;
2. a pin (`--pin`, `$FARMD_PIN`, or the line `farmd trust HOST:PORT` wrote in
   $XDG_CONFIG_HOME/farmd/known_supervisors, like ssh's known_hosts): the SHA-256 of
   the certificate's public key (its SubjectPublicKeyInfo), so a certificate issued
   again with the same key keeps its pin; names and chain are not checked;
3. the CA of a supervisor on this host, STATE/tls/ca.pem of the default state dir.

With none of these a peer speaks plaintext to a loopback address and refuses any other
(`NotTrustedError`, one line saying to run `farmd trust`): it never sends a token in
clear over a network.

*The supervisor's side.* Each connection's first byte says what the peer speaks: a TLS
record starts with 0x16 (a handshake), and a farmd frame cannot (its 4-byte length would
be over 350 MiB, above any `max_frame_bytes`). Plaintext is accepted only where its
bytes never cross a network, on a connection to a loopback address, and only in
`tls.mode: auto`; elsewhere the peer is answered, in plaintext, with an `error` saying
TLS is required. A TLS connection is a `TlsSession`: an `ssl.SSLObject` over two memory
buffers, so the supervisor's own fast paths (writes straight to the socket, one poller
reading every worker's socket) move ciphertext exactly as they moved plaintext.
"""

from __future__ import annotations

import datetime
import hashlib
import ipaddress
import json
import os
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Final

import attrs

from farmd.config import Address, TlsSettings, default_state_dir
from farmd.errors import ConfigError, ConnectionLostError, UserError

HANDSHAKE_RECORD: Final = 0x16  # the first byte of a TLS connection (a handshake record)
TLS_DIR: Final = "tls"
CERT_DAYS: Final = 3650  # the farm CA and the supervisor's certificate: ten years
PIN_PREFIX: Final = "sha256:"
KNOWN_SUPERVISORS: Final = "known_supervisors"
MAX_KNOWN_BYTES: Final = 1 << 20  # a known_supervisors file larger than this is refused


class NotTrustedError(ConnectionLostError):
    """A peer has no way to trust the supervisor at a network address (no CA, no pin)."""

    code = "not_trusted"


class TlsError(ConnectionLostError):
    """A TLS connection could not be made: the handshake failed, the certificate did not
    verify, or the pin did not match."""

    code = "tls"


@attrs.frozen
class CertificateFiles:
    """Where the supervisor's certificate (with its chain), its key and its CA are."""

    cert: Path
    key: Path
    ca: Path | None


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address) is this machine's loopback."""
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


# ----------------------------------------------------------------------- certificates


def _own_names(extra: tuple[str, ...]) -> list[str]:
    names = ["localhost", "127.0.0.1", "::1", socket.gethostname(), socket.getfqdn()]
    names.extend(extra)
    seen: list[str] = []
    for name in names:
        if name and name.lower() not in (n.lower() for n in seen):
            seen.append(name)
    return seen


def _write_private(path: Path, data: bytes) -> None:
    """Write a file readable by its owner only, atomically: like every file of the
    state dir (the certificates are not secret, but whoever copies the CA out for the
    peers chooses its mode there)."""
    tmp = path.with_name(path.name + ".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def farm_certificates(state_dir: Path, names: tuple[str, ...] = ()) -> CertificateFiles:
    """The farm's own CA and the supervisor's certificate in STATE/tls, made on the first
    call; the certificate is issued again (same key) if it lacks one of the names."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = state_dir / TLS_DIR
    folder.mkdir(mode=0o700, exist_ok=True)
    ca_path, ca_key_path = folder / "ca.pem", folder / "ca.key"
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    now = datetime.datetime.now(datetime.UTC)
    pem = serialization.Encoding.PEM
    private = serialization.PrivateFormat.PKCS8
    plain = serialization.NoEncryption()

    if not (ca_path.exists() and ca_key_path.exists()):
        ca_key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "farmd"),
                x509.NameAttribute(NameOID.COMMON_NAME, f"farmd farm CA {os.urandom(4).hex()}"),
            ]
        )
        ca_cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(ca_key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(hours=1))
            .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
            )
            .sign(ca_key, hashes.SHA256())
        )
        _write_private(ca_key_path, ca_key.private_bytes(pem, private, plain))
        _write_private(ca_path, ca_cert.public_bytes(pem))
        for stale in (cert_path, key_path):  # a new CA: the old certificate is no good
            stale.unlink(missing_ok=True)
    ca_cert = x509.load_pem_x509_certificate(ca_path.read_bytes())
    ca_key_loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
    if not isinstance(ca_key_loaded, ec.EllipticCurvePrivateKey):
        msg = f"{ca_key_path} is not the farm CA's EC key: remove {folder} to make a new CA"
        raise ConfigError(msg)

    wanted = _own_names(names)
    if key_path.exists():
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            msg = f"{key_path} is not an EC key: remove it to make a new one"
            raise ConfigError(msg)
    else:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(key_path, key.private_bytes(pem, private, plain))
        cert_path.unlink(missing_ok=True)
    if cert_path.exists():
        current = x509.load_pem_x509_certificates(cert_path.read_bytes())[0]
        try:
            san = current.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            have = {str(v).lower() for v in san.value.get_values_for_type(x509.DNSName)}
            have |= {str(v) for v in san.value.get_values_for_type(x509.IPAddress)}
        except x509.ExtensionNotFound:
            have = set()
        fresh = current.not_valid_after_utc > now + datetime.timedelta(days=30)
        if fresh and all(_san_text(n) in have for n in wanted):
            return CertificateFiles(cert_path, key_path, ca_path)

    alt: list[x509.GeneralName] = []
    for name in wanted:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(name.strip("[]"))))
        except ValueError:
            alt.append(x509.DNSName(name))
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "farmd"),
                    x509.NameAttribute(NameOID.COMMON_NAME, wanted[3][:64] or "farmd"),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key_loaded.public_key()),
            critical=False,
        )
        .sign(ca_key_loaded, hashes.SHA256())
    )
    _write_private(cert_path, cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    return CertificateFiles(cert_path, key_path, ca_path)


def shared_farm_ca(state_dir: Path, names: tuple[str, ...], share: Callable[[str], str]) -> None:
    """Make STATE/tls hold the CA that every supervisor of an active/standby farm shares,
    so a peer that trusts the farm's CA (`--ca`, FARMD_CA) trusts whichever supervisor
    is active. `share(proposal)` returns the CA the farm already has (a JSON text of
    `cert` and `key`, kept in the farm database), or keeps `proposal`, this supervisor's
    own, as the farm's. When the farm's differs from the one on disk it replaces it,
    and this supervisor's certificate is issued again by it (its key, so its pin, kept)."""
    folder = state_dir / TLS_DIR
    farm_certificates(state_dir, names)
    own = json.dumps(
        {"cert": (folder / "ca.pem").read_text(), "key": (folder / "ca.key").read_text()}
    )
    farm = share(own)
    if farm == own:
        return
    try:
        found = json.loads(farm)
        cert, key = str(found["cert"]), str(found["key"])
    except (TypeError, ValueError, KeyError):
        msg = "the farm database holds an unreadable farm CA (secret:tls_ca): remove that row"
        raise ConfigError(msg) from None
    _write_private(folder / "ca.key", key.encode())
    _write_private(folder / "ca.pem", cert.encode())
    (folder / "cert.pem").unlink(missing_ok=True)  # issued by another CA: issue it again
    farm_certificates(state_dir, names)


def _san_text(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name.strip("[]")))
    except ValueError:
        return name.lower()


def certificate_files(settings: TlsSettings, state_dir: Path) -> CertificateFiles:
    """The site's certificate if the config names one, else the farm's own."""
    if settings.cert is not None and settings.key is not None:
        for path in (settings.cert, settings.key, settings.ca):
            if path is not None and not path.is_file():
                msg = f"tls: cannot read {path}: no such file"
                raise ConfigError(msg)
        return CertificateFiles(settings.cert, settings.key, settings.ca)
    return farm_certificates(state_dir, settings.names)


def server_context(files: CertificateFiles) -> ssl.SSLContext:
    """The supervisor's TLS context: TLS 1.2 or later, its certificate, no client
    certificates (peers prove who they are with their token, inside the TLS session)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(files.cert, files.key)
    except (OSError, ssl.SSLError) as exc:
        msg = f"tls: cannot load the certificate {files.cert} with key {files.key}: {exc}"
        raise ConfigError(msg) from None
    context.num_tickets = 0  # peers do not resume sessions: no tickets to send
    return context


def spki_pin(der_certificate: bytes) -> str:
    """A certificate's pin: `sha256:` and the hex SHA-256 of its public key info."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_der_x509_certificate(der_certificate)
    spki = cert.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return PIN_PREFIX + hashlib.sha256(spki).hexdigest()


def pin_of_file(path: Path) -> str:
    """The pin of the first certificate in a PEM file (the supervisor's own)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    cert = x509.load_pem_x509_certificates(path.read_bytes())[0]
    return spki_pin(cert.public_bytes(serialization.Encoding.DER))


def check_pin(pin: str) -> str:
    """A pin as given on a command line or in a file: `sha256:` and 64 hex digits."""
    text = pin.strip().lower()
    digits = text.removeprefix(PIN_PREFIX)
    if len(digits) != 64 or any(c not in "0123456789abcdef" for c in digits):
        msg = f"bad pin {pin!r}: expected sha256: and 64 hex digits (as `farmd trust` prints)"
        raise UserError(msg)
    return PIN_PREFIX + digits


# ----------------------------------------------------------------------- trust


@attrs.frozen
class Trust:
    """How a peer trusts the supervisor: a CA file, or a pin (see the module docs)."""

    ca: Path | None = None
    pin: str | None = None
    source: str = ""  # where it came from, for messages

    def context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.ca is not None:
            try:
                context.load_verify_locations(cafile=self.ca)
            except (OSError, ssl.SSLError) as exc:
                msg = f"cannot read the CA file {self.ca}: {exc}"
                raise UserError(msg) from None
        else:  # a pin is checked after the handshake (`verify`): the key is the identity
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    def verify(self, der_certificate: bytes | None, address: Address) -> None:
        """After the handshake: with a pin, the certificate's key must be the pinned one."""
        if self.pin is None:
            return
        got = spki_pin(der_certificate) if der_certificate else "no certificate"
        if got != self.pin:
            msg = (
                f"the supervisor at {address} presented a key ({got}) that is not the one "
                f"pinned for it ({self.pin}, {self.source}): if its certificate was "
                f"replaced on purpose, run `farmd trust {address}` again"
            )
            raise TlsError(msg)


def known_supervisors_file() -> Path:
    """$XDG_CONFIG_HOME/farmd/known_supervisors, else ~/.config/farmd/known_supervisors."""
    base = os.environ.get("XDG_CONFIG_HOME", "").strip()
    return (Path(base) if base else Path.home() / ".config") / "farmd" / KNOWN_SUPERVISORS


def known_pins(path: Path | None = None) -> dict[str, str]:
    """The pins `farmd trust` wrote: `HOST:PORT sha256:HEX` a line; `#` comments."""
    path = path if path is not None else known_supervisors_file()
    try:
        with path.open("rb") as file:
            data = file.read(MAX_KNOWN_BYTES + 1)
    except FileNotFoundError:
        return {}
    except OSError as exc:
        msg = f"cannot read {path}: {exc.strerror}"
        raise UserError(msg) from None
    if len(data) > MAX_KNOWN_BYTES:
        msg = f"{path} is larger than {MAX_KNOWN_BYTES} bytes"
        raise UserError(msg)
    pins = {}
    for number, line in enumerate(data.decode("utf-8", "replace").splitlines(), 1):
        words = line.split("#", 1)[0].split()
        if not words:
            continue
        if len(words) != 2:
            msg = f"{path}:{number}: expected 'HOST:PORT sha256:HEX', got {line.strip()!r}"
            raise UserError(msg)
        try:
            pins[words[0]] = check_pin(words[1])
        except UserError as exc:
            raise UserError(f"{path}:{number}: {exc}") from None
    return pins


def remember_pin(address: Address, pin: str, path: Path | None = None) -> Path:
    """Add (or replace) the pin of the supervisor at `address` in known_supervisors."""
    path = path if path is not None else known_supervisors_file()
    pins = known_pins(path)
    pins[str(address)] = check_pin(pin)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    body = "# farmd supervisors trusted by `farmd trust`: HOST:PORT and the key's pin\n"
    body += "".join(f"{where} {value}\n" for where, value in sorted(pins.items()))
    _write_private(path, body.encode())
    return path


def trust_for(
    address: Address,
    *,
    ca: str | os.PathLike[str] | None = None,
    pin: str | None = None,
) -> Trust | None:
    """How to trust the supervisor at `address` (module docs), or None: plaintext, which
    only a loopback address may use."""
    ca = ca or os.environ.get("FARMD_CA", "").strip() or None
    pin = pin or os.environ.get("FARMD_PIN", "").strip() or None
    if ca is not None:
        return Trust(ca=Path(ca), source=f"CA file {ca}")
    if pin is not None:
        return Trust(pin=check_pin(pin), source="the pin given")
    known = known_pins()
    if str(address) in known:
        return Trust(pin=known[str(address)], source=str(known_supervisors_file()))
    try:
        local_ca = default_state_dir() / TLS_DIR / "ca.pem"
    except UserError:
        local_ca = None
    if local_ca is not None and local_ca.is_file():
        return Trust(ca=local_ca, source=f"the local supervisor's CA {local_ca}")
    if is_loopback(address.host):
        return None
    msg = (
        f"the supervisor at {address} is not trusted yet: run `farmd trust {address}` "
        "(it shows its key's fingerprint and asks), or give its CA with --ca FILE"
    )
    raise NotTrustedError(msg)


def handshake_failure(exc: BaseException, address: Address) -> TlsError:
    """One line for a failed client handshake, saying what most likely went wrong."""
    reason = getattr(exc, "reason", None) or getattr(exc, "verify_message", None)
    text = str(reason or exc)
    if isinstance(exc, ssl.SSLCertVerificationError):
        text = exc.verify_message or text
        if "hostname" in text.lower() or "ip address mismatch" in text.lower():
            text += (
                f"; the certificate does not name {address.host}: add it to the "
                "supervisor's tls.names, or pin the key with `farmd trust`"
            )
    elif "WRONG_VERSION_NUMBER" in text.upper() or "record layer" in text.lower():
        text = "it answered in plaintext (is TLS off there, or is it an older farmd?)"
    msg = f"cannot speak TLS to the supervisor at {address}: {text}"
    return TlsError(msg)


# ----------------------------------------------------------------------- sessions


class TlsClosed(Exception):
    """The peer ended its TLS session (close_notify), or broke it."""


class TlsSession:
    """The supervisor's side of one TLS connection, without I/O: ciphertext in and out
    through memory buffers (`ssl.MemoryBIO`), plaintext to and from the caller."""

    __slots__ = ("_incoming", "_object", "_outgoing")

    def __init__(self, context: ssl.SSLContext) -> None:
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(self._incoming, self._outgoing, server_side=True)

    def handshake(self, data: bytes | bytearray) -> tuple[bool, bytes]:
        """Feed the peer's bytes; whether the handshake is done, and what to send it."""
        if data:
            self._incoming.write(data)
        try:
            self._object.do_handshake()
            done = True
        except ssl.SSLWantReadError:
            done = False
        except ssl.SSLError as exc:
            raise TlsClosed(f"TLS handshake failed: {exc.reason or exc}") from None
        return done, self._outgoing.read()

    def encrypt(self, data: bytes) -> bytes:
        """The records that carry `data` (and anything the session owed the peer)."""
        self._object.write(data)
        return self._outgoing.read()

    def decrypt(self, data: bytes) -> bytes:
        """The plaintext in `data` (possibly none yet: a record arrives in pieces)."""
        self._incoming.write(data)
        chunks = []
        # read while there is something to read: a final read that only finds "want
        # more" costs an exception, at every message of every session
        while self._incoming.pending or self._object.pending():
            try:
                chunk = self._object.read(1 << 16)
            except ssl.SSLWantReadError:
                break
            except ssl.SSLZeroReturnError:
                raise TlsClosed("the peer closed its TLS session") from None
            except ssl.SSLError as exc:
                raise TlsClosed(f"bad TLS record: {exc.reason or exc}") from None
            if not chunk:
                raise TlsClosed("the peer closed its TLS session")
            chunks.append(chunk)
        return b"".join(chunks)

    def owed(self) -> bytes:
        """What the session must send the peer unasked (an alert, a key update's answer)."""
        return self._outgoing.read()
