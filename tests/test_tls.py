"""`farmd.tls` without a network: the farm's certificates, pins, the trust rules, the
`tls:` settings, and the supervisor's sans-IO TLS session against a client's."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest

from farmd.config import Address, TlsSettings, parse_supervisor_config
from farmd.errors import ConfigError, UserError
from farmd.tls import (
    NotTrustedError,
    TlsClosed,
    TlsError,
    TlsSession,
    Trust,
    check_pin,
    farm_certificates,
    is_loopback,
    known_pins,
    pin_of_file,
    remember_pin,
    server_context,
    trust_for,
)


@pytest.fixture
def no_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An environment with no CA, no pin and no local supervisor's CA."""
    for name in ("FARMD_CA", "FARMD_PIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    monkeypatch.setenv("FARMD_STATE", str(tmp_path / "local-state"))
    return tmp_path


def test_the_farm_ca_and_certificate_are_made_once_with_private_keys(tmp_path: Path) -> None:
    files = farm_certificates(tmp_path, ("farm.example.com",))
    assert files.ca is not None
    for key in (files.key, tmp_path / "tls" / "ca.key"):
        assert oct(key.stat().st_mode & 0o777) == "0o600"
    assert oct((tmp_path / "tls").stat().st_mode & 0o777) == "0o700"
    pin = pin_of_file(files.cert)
    again = farm_certificates(tmp_path, ("farm.example.com",))
    assert again == files
    assert pin_of_file(again.cert) == pin
    # a new name: issued again, with the same key, so the pin holds
    before = files.cert.read_bytes()
    farm_certificates(tmp_path, ("farm.example.com", "10.1.2.3"))
    assert files.cert.read_bytes() != before
    assert pin_of_file(files.cert) == pin


def _pair(
    tmp_path: Path, trust: Trust
) -> tuple[TlsSession, ssl.SSLObject, ssl.MemoryBIO, ssl.MemoryBIO]:
    files = farm_certificates(tmp_path, ("farm.example.com",))
    server = TlsSession(server_context(files))
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = trust.context().wrap_bio(incoming, outgoing, server_hostname="farm.example.com")
    return server, client, incoming, outgoing


def _handshake(
    server: TlsSession, client: ssl.SSLObject, c_in: ssl.MemoryBIO, c_out: ssl.MemoryBIO
) -> None:
    done = False
    for _ in range(10):  # a TLS 1.3 handshake is two flights each way at most
        try:
            client.do_handshake()
            client_done = True
        except ssl.SSLWantReadError:
            client_done = False
        done, answer = server.handshake(c_out.read())
        c_in.write(answer)
        if done and client_done:
            return
    raise AssertionError("the handshake did not finish in 10 flights")


def test_a_session_carries_bytes_both_ways_and_verifies_by_the_ca(tmp_path: Path) -> None:
    ca = tmp_path / "tls" / "ca.pem"
    farm_certificates(tmp_path, ("farm.example.com",))
    server, client, c_in, c_out = _pair(tmp_path, Trust(ca=ca))
    _handshake(server, client, c_in, c_out)
    client.write(b"hello farm")
    assert server.decrypt(c_out.read()) == b"hello farm"
    c_in.write(server.encrypt(b"welcome"))
    assert client.read() == b"welcome"
    # a record that arrives in pieces gives its plaintext once whole
    client.write(b"x" * 1000)
    record = c_out.read()
    assert server.decrypt(record[:10]) == b""
    assert server.decrypt(record[10:]) == b"x" * 1000
    with pytest.raises(TlsClosed):
        server.decrypt(b"\x17\x03\x03\x00\x05garbage")


def test_a_client_checks_the_pin_of_the_key_not_the_name(tmp_path: Path) -> None:
    files = farm_certificates(tmp_path)
    pin = pin_of_file(files.cert)
    server, client, c_in, c_out = _pair(tmp_path, Trust(pin=pin))
    _handshake(server, client, c_in, c_out)
    der = client.getpeercert(binary_form=True)
    address = Address("farm.example.com", 7531)
    Trust(pin=pin).verify(der, address)
    with pytest.raises(TlsError, match=r"presented a key .* that is not the one pinned"):
        Trust(pin="sha256:" + "1" * 64, source="the pin given").verify(der, address)


def test_the_wrong_ca_fails_the_handshake(tmp_path: Path) -> None:
    other = tmp_path / "other"
    other.mkdir()
    wrong = farm_certificates(other).ca
    assert wrong is not None
    server, client, c_in, c_out = _pair(tmp_path, Trust(ca=wrong))
    with pytest.raises((ssl.SSLError, TlsClosed)):
        _handshake(server, client, c_in, c_out)


def test_pins_are_checked_and_kept_one_per_address(tmp_path: Path) -> None:
    path = tmp_path / "known"
    pin = "SHA256:" + "AB" * 32
    assert check_pin(pin) == "sha256:" + "ab" * 32
    with pytest.raises(UserError, match="bad pin 'sha256:12'"):
        check_pin("sha256:12")
    remember_pin(Address("a", 1), pin, path)
    remember_pin(Address("b", 2), "sha256:" + "cd" * 32, path)
    remember_pin(Address("a", 1), "sha256:" + "ef" * 32, path)
    assert known_pins(path) == {"a:1": "sha256:" + "ef" * 32, "b:2": "sha256:" + "cd" * 32}
    path.write_text("a:1 sha256:00\n")
    with pytest.raises(UserError, match=r"known:1: bad pin"):
        known_pins(path)
    path.write_text("just-one-word\n")
    with pytest.raises(UserError, match=r"known:1: expected 'HOST:PORT sha256:HEX'"):
        known_pins(path)


def test_trust_rules_plaintext_only_on_loopback(
    no_trust: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert trust_for(Address("127.0.0.1", 7531)) is None
    assert trust_for(Address("localhost", 7531)) is None
    assert trust_for(Address("::1", 7531)) is None
    with pytest.raises(NotTrustedError, match=r"run `farmd trust farm.example.com:7531`"):
        trust_for(Address("farm.example.com", 7531))
    # a pin kept by `farmd trust` for that address
    remember_pin(Address("farm.example.com", 7531), "sha256:" + "ab" * 32)
    kept = trust_for(Address("farm.example.com", 7531))
    assert kept is not None
    assert kept.pin == "sha256:" + "ab" * 32
    # the environment's CA wins over a kept pin
    monkeypatch.setenv("FARMD_CA", str(no_trust / "ca.pem"))
    env = trust_for(Address("farm.example.com", 7531))
    assert env is not None
    assert env.ca == no_trust / "ca.pem"
    # a supervisor on this host: its CA, in the default state dir
    monkeypatch.delenv("FARMD_CA")
    farm_certificates(_made(no_trust / "local-state"))
    local = trust_for(Address("127.0.0.1", 7531))
    assert local is not None
    assert local.ca == no_trust / "local-state" / "tls" / "ca.pem"


def _made(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_loopback_names() -> None:
    assert is_loopback("127.0.0.5")
    assert is_loopback("[::1]")
    assert not is_loopback("10.0.0.1")
    assert not is_loopback("farm.example.com")


def test_tls_settings_from_the_config_file(tmp_path: Path) -> None:
    name = str(tmp_path / "farm.yaml")
    config = parse_supervisor_config(
        "supervisor:\n  tls:\n    cert: site.pem\n    key: site.key\n    names: [a.example]\n",
        name,
    )
    assert config.tls == TlsSettings(
        cert=tmp_path / "site.pem", key=tmp_path / "site.key", names=("a.example",)
    )
    assert parse_supervisor_config("supervisor:\n  tls: {mode: off}\n", name).tls.mode == "off"
    bad = {
        "supervisor:\n  tls: {mode: maybe}\n": (
            "farm.yaml:2:15: supervisor.tls.mode: must be one of auto, required, off (got 'maybe')"
        ),
        "supervisor:\n  tls: {key: a.key}\n": "tls.cert and tls.key go together",
        "supervisor:\n  tls: {colour: blue}\n": "supervisor.tls: unknown key; allowed: mode",
        "supervisor:\n  tls: {names: a}\n": "supervisor.tls.names: must be a list",
    }
    for text, message in bad.items():
        with pytest.raises(ConfigError) as refused:
            parse_supervisor_config(text, name)
        assert message in str(refused.value), str(refused.value)
        assert str(refused.value).startswith(name + ":2:")
