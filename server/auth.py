"""Who is calling: a role and a caller id for every RPC.

In production both come from the caller's TLS client certificate: the server requires one signed
by its client CA, and the certificate names the caller in a URI SAN,

    spiffe://vimark/role/<role>/id/<caller_id>       e.g. spiffe://vimark/role/police/id/T-0571

A certificate's serial listed in the CA's CRL is refused from the next call on, without a restart.
In development mode (plaintext, loopback only) every caller gets the role fixed at start.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Protocol, cast

import grpc
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.x509.oid import ExtendedKeyUsageOID

from vimark.client.errors import TlsFileError, Unauthenticated
from vimark.server.policy import Role

log = logging.getLogger(__name__)

IDENTITY_PREFIX = "spiffe://vimark/role/"
CALLER_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
PEER_CERT_KEY = "x509_pem_cert"  # where gRPC's auth context holds the verified peer certificate (PEM)


@dataclass(frozen=True)
class Caller:
    role: Role
    caller_id: str  # e.g. a terminal number; what the audit log and the rate limiter key on
    unrestricted: bool = False  # development mode's default caller: every RPC, the full view
    # SHA-256 of the client certificate (hex): tells a revoked certificate from its replacement,
    # which share role and id. Empty in development mode.
    fingerprint: str = ""

    @property
    def name(self) -> str:
        """role/caller_id, as marks and the audit log record it."""
        return f"{self.role.value}/{self.caller_id}"


class Authenticator(Protocol):
    def identify(self, context: grpc.ServicerContext) -> Caller:
        """The caller of this RPC; raises Unauthenticated when there is none."""
        ...


class DevAuth:
    """Development mode: no TLS, so every caller gets the role fixed at start."""

    def __init__(self, role: Role | None) -> None:
        # No role: a developer's caller that may call everything and sees what operators see.
        self._caller = Caller(role, f"dev-{role.value}") if role else Caller(Role.OPERATOR, "dev", unrestricted=True)

    def identify(self, context: grpc.ServicerContext) -> Caller:
        return self._caller


# -- the identity a client certificate carries -------------------------------------------------
def identity_uri(role: Role, caller_id: str) -> str:
    """The URI SAN naming this caller; ValueError for a caller id outside [A-Za-z0-9._-]{1,64}."""
    if not CALLER_ID.fullmatch(caller_id):
        raise ValueError(f"caller id {caller_id!r} must be 1 to 64 of A-Z a-z 0-9 . _ -")
    return f"{IDENTITY_PREFIX}{role.value}/id/{caller_id}"


def caller_from_uri(uri: str) -> Caller:
    """The caller a vimark identity URI names; ValueError saying what is wrong otherwise."""
    if not uri.startswith(IDENTITY_PREFIX):
        raise ValueError(f"{uri!r} is not a vimark identity ({IDENTITY_PREFIX}<role>/id/<caller_id>)")
    parts = uri[len(IDENTITY_PREFIX) :].split("/")
    if len(parts) != 3 or parts[1] != "id":
        raise ValueError(f"{uri!r} is not of the form {IDENTITY_PREFIX}<role>/id/<caller_id>")
    try:
        role = Role(parts[0])
    except ValueError:
        raise ValueError(f"{uri!r} names an unknown role {parts[0]!r}") from None
    if not CALLER_ID.fullmatch(parts[2]):
        raise ValueError(f"{uri!r} has a caller id outside [A-Za-z0-9._-]{{1,64}}")
    return Caller(role, parts[2])


def caller_from_certificate(cert: x509.Certificate) -> Caller:
    """The caller named by the certificate's one vimark URI SAN; ValueError saying what is wrong otherwise.
    A CA certificate, or one whose extended key usage leaves out client authentication, names nobody."""
    try:
        if cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca:
            raise ValueError("it is a CA certificate, not a caller's")
    except x509.ExtensionNotFound:
        pass
    try:
        usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound:
        usages = None
    if usages is not None and ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        raise ValueError("its extended key usage does not include client authentication")
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        raise ValueError("it has no subject alternative name naming a vimark role") from None
    uris = [u for u in san.get_values_for_type(x509.UniformResourceIdentifier) if u.startswith("spiffe://vimark/")]
    if not uris:
        raise ValueError(f"it has no vimark identity URI ({IDENTITY_PREFIX}<role>/id/<caller_id>)")
    if len(uris) > 1:
        raise ValueError(f"it names {len(uris)} vimark identities, not one")
    return caller_from_uri(uris[0])


@dataclass(frozen=True)
class _Identity:
    """What one client certificate says, parsed once: the caller, or why it names none."""

    caller: Caller | None
    serial: int
    problem: str
    not_before: float = 0.0  # Unix seconds: the handshake checked them once, a call checks them again
    not_after: float = float("inf")


class CertificateAuth:
    """Production: the caller is named by its TLS client certificate, unless the CRL revokes it.

    The handshake (server_credentials, require_client_auth=True) has already checked the chain
    against the client CA; this reads the identity and checks revocation. Parsed certificates are
    cached by their PEM bytes, so a call costs a dict lookup plus one stat of the CRL file.
    `client_ca` verifies the CRL's signature; by default the ca.pem next to the CRL (the layout
    `vimark pki init` writes).
    """

    def __init__(
        self,
        crl_path: Path | None,
        *,
        client_ca: Path | None = None,
        cache_size: int = 10_000,
        now: Callable[[], float] = time.time,
    ) -> None:
        self._now = now  # real time, as the handshake's: a certificate expires by the wall clock
        self._crl_path = crl_path
        self._crl_file = os.fspath(crl_path) if crl_path is not None else ""
        self._cache: dict[bytes, _Identity] = {}
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._revoked: frozenset[int] = frozenset()
        self._crl_number = -1  # the CRL number last read: an older CRL put back must not un-revoke
        self._crl_version: tuple[int, int, int] | None = None
        self._ca: x509.Certificate | None = None
        if crl_path is not None:
            ca_path = client_ca if client_ca is not None else crl_path.parent / "ca.pem"
            try:
                self._ca = x509.load_pem_x509_certificate(ca_path.read_bytes())
            except (OSError, ValueError) as exc:
                raise TlsFileError(f"cannot read the client CA {ca_path} that signs the CRL: {exc}") from None
            self._refresh(initial=True)

    def identify(self, context: grpc.ServicerContext) -> Caller:
        # gRPC gives a list of values per key (grpc-stubs says bytes; it is list[bytes]).
        pems = cast("list[bytes]", context.auth_context().get(PEER_CERT_KEY))
        if not pems:
            raise Unauthenticated("no client certificate: call over TLS with a vimark client certificate")
        pem = pems[0]
        identity = self._cache.get(pem)
        if identity is None:
            identity = self._parse(pem)
        if identity.caller is None:
            raise Unauthenticated(f"client certificate {identity.serial:x} is refused: {identity.problem}")
        # A channel outlives its handshake by days: expiry is checked on every call, like the CRL.
        now = self._now()
        if not identity.not_before <= now <= identity.not_after:
            caller = identity.caller
            raise Unauthenticated(
                f"client certificate {identity.serial:x} ({caller.role.value}/{caller.caller_id}) is outside "
                f"its validity ({_utc(identity.not_before)} to {_utc(identity.not_after)})"
            )
        if self._crl_path is not None:
            self._refresh()
            if identity.serial in self._revoked:
                caller = identity.caller
                raise Unauthenticated(
                    f"client certificate {identity.serial:x} ({caller.role.value}/{caller.caller_id}) has been revoked"
                )
        return identity.caller

    def _parse(self, pem: bytes) -> _Identity:
        try:
            cert = x509.load_pem_x509_certificate(pem)
        except ValueError as exc:
            return _Identity(None, 0, f"unreadable certificate: {exc}")
        try:
            named = caller_from_certificate(cert)
            identity = _Identity(
                replace(named, fingerprint=cert.fingerprint(hashes.SHA256()).hex()),
                cert.serial_number,
                "",
                cert.not_valid_before_utc.timestamp(),
                cert.not_valid_after_utc.timestamp(),
            )
        except ValueError as exc:
            identity = _Identity(None, cert.serial_number, str(exc))
        with self._lock:
            if len(self._cache) >= self._cache_size:
                self._cache.pop(next(iter(self._cache)))  # the oldest entry
            self._cache[pem] = identity
        return identity

    def _refresh(self, *, initial: bool = False) -> None:
        """Re-read the CRL when the file changed (inode, mtime or size): a cheap stat per call."""
        assert self._crl_path is not None
        try:
            st = os.stat(self._crl_file)
        except FileNotFoundError:
            if initial:
                log.info("no CRL at %s: no client certificate is revoked", self._crl_path)
            elif self._crl_version is not None:
                log.error(
                    "CRL %s disappeared; keeping the %d revocations last read", self._crl_path, len(self._revoked)
                )
            self._crl_version = None
            return
        version = (st.st_ino, st.st_mtime_ns, st.st_size)
        if version == self._crl_version:
            return
        with self._lock:
            if version == self._crl_version:  # another thread has just read it
                return
            try:
                revoked, number = self._load_crl()
            except TlsFileError as exc:
                if initial:
                    raise
                log.error("%s; keeping the %d revocations last read", exc.message, len(self._revoked))
                self._crl_version = version  # log once per bad file, not once per call
                return
            # A file replaced again since the stat is read again on the next call: its version differs.
            self._revoked, self._crl_number, self._crl_version = revoked, number, version
            log.info("CRL %s read (number %d): %d revoked client certificates", self._crl_path, number, len(revoked))

    def _load_crl(self) -> tuple[frozenset[int], int]:
        """The revoked serials and the CRL's number; read after the stat, so never older than the
        version recorded. A CRL older than the one in force (a stale copy put back) is refused."""
        assert self._crl_path is not None and self._ca is not None
        try:
            crl = x509.load_pem_x509_crl(self._crl_path.read_bytes())
        except (OSError, ValueError) as exc:
            raise TlsFileError(f"CRL {self._crl_path} is unreadable: {exc}") from None
        try:
            valid = crl.issuer == self._ca.subject and crl.is_signature_valid(self._ca.public_key())  # type: ignore[arg-type]
        except (InvalidSignature, TypeError, ValueError):
            valid = False
        if not valid:
            raise TlsFileError(
                f"CRL {self._crl_path} is not signed by the client CA {self._ca.subject.rfc4514_string()}"
            )
        try:
            number = int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
        except x509.ExtensionNotFound:
            number = 0
        if number < self._crl_number:
            raise TlsFileError(
                f"CRL {self._crl_path} is number {number}, older than number {self._crl_number} in force"
                " (a stale copy?)"
            )
        next_update = crl.next_update_utc
        if next_update is not None and next_update.timestamp() < self._now():
            log.error("CRL %s is past its next update (%s): issue a fresh one", self._crl_path, next_update)
        return frozenset(r.serial_number for r in crl), number


def _utc(seconds: float) -> str:
    return dt.datetime.fromtimestamp(seconds, dt.UTC).isoformat(timespec="seconds")


def server_credentials(cert: Path, key: Path, client_ca: Path) -> grpc.ServerCredentials:
    """TLS that requires a client certificate signed by `client_ca`; CertificateAuth then reads the
    role from the verified certificate.

    gRPC Python can only not request a client certificate (require_client_auth=False: then no
    identity is possible) or request and require one. So a client without a certificate, or with
    one from another CA, fails the TLS handshake and never reaches an RPC: it sees UNAVAILABLE
    "failed to connect to all addresses; last error: UNAVAILABLE: ipv4:...: Socket closed", not
    UNAUTHENTICATED. UNAUTHENTICATED is for certificates the CA signed that name no vimark role or
    are revoked.
    """
    try:
        pair = (key.read_bytes(), cert.read_bytes())
        ca = client_ca.read_bytes()
    except OSError as exc:
        raise TlsFileError(f"cannot read the server's TLS files: {exc}") from None
    return grpc.ssl_server_credentials([pair], root_certificates=ca, require_client_auth=True)
