"""`vimark serve`'s checks before it creates or binds anything: each mistake a user can fix is one
line naming the path or address and what to do (exit status 2), and nothing is left behind."""

from __future__ import annotations

import errno
import os
import socket
from pathlib import Path

from vimark.client.errors import TlsFileError, VimarkError


def check_listen(address: str, flag: str) -> None:
    """Can this process listen on HOST:PORT? (A port another server holds is the common case.)"""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    try:
        number = int(port)
        infos = socket.getaddrinfo(host or None, number, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except (ValueError, socket.gaierror) as exc:
        raise VimarkError(f"{flag} {address!r} is not HOST:PORT ({exc})", reason="USAGE") from None
    family, kind, proto, _, where = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as gRPC binds: TIME_WAIT is no obstacle
        try:
            probe.bind(where)
        except OSError as exc:
            why = (
                "it is in use: another server (another `vimark serve`?) holds it"
                if exc.errno == errno.EADDRINUSE
                else exc.strerror
            )
            raise VimarkError(
                f"cannot listen on {address}: {why}; stop that server or give {flag} HOST:PORT", reason="LISTEN_FAILED"
            ) from None


def check_key_directory(path: Path) -> None:
    """The key directory exists and is readable, or can be created where it is asked for."""
    if path.exists():
        if not path.is_dir():
            raise VimarkError(f"the key directory {path} is not a directory; give --keys DIR", reason="KEY_STORE")
        if not os.access(path, os.R_OK | os.X_OK):
            raise VimarkError(f"the key directory {path} cannot be read by this user", reason="KEY_STORE")
        return
    parent = path.absolute().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
        raise VimarkError(
            f"cannot create the key directory {path}: {parent} is not a writable directory; "
            "give --keys DIR in a writable place",
            reason="KEY_STORE",
        )


def check_readable(paths: dict[str, Path | None]) -> None:
    """TLS files given on the command line exist and can be read: flag -> path."""
    for flag, path in paths.items():
        if path is None:
            continue
        try:
            with path.open("rb"):
                pass
        except OSError as exc:
            raise TlsFileError(f"{flag} {path}: {exc.strerror or exc}") from None


def check_tls_pair(cert: Path, key: Path, crl: Path) -> None:
    """The server's certificate and key are PEM and belong together, and the CRL exists: each
    problem one line, before anything is created (gRPC itself would only say it cannot listen)."""
    from cryptography import x509
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        certificate = x509.load_pem_x509_certificate(cert.read_bytes())
    except ValueError as exc:
        raise TlsFileError(f"--tls-cert {cert} is not a PEM certificate ({exc})") from None
    try:
        private = load_pem_private_key(key.read_bytes(), password=None)
    except (ValueError, TypeError) as exc:
        raise VimarkError(
            f"--tls-key {key} is not an unencrypted PEM private key ({exc})", reason="TLS_FILES"
        ) from None
    if private.public_key() != certificate.public_key():
        raise TlsFileError(f"--tls-key {key} is not the key of --tls-cert {cert}")
    if not crl.is_file():
        # Without its CRL a server would accept every revoked (stolen) terminal's certificate.
        raise TlsFileError(f"no CRL at {crl}: give --client-crl, or create one with `vimark pki init`")
