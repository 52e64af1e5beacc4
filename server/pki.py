"""A development PKI for vimark's TLS: a CA, a server certificate, client certificates that
carry a role, and the CA's revocation list. All keys are ECDSA P-256.

    DIR/ca.pem, ca.key              the CA (10 years); the server trusts client certificates it signed
    DIR/server.pem, server.key      the server (1 year): DNS/IP SANs for its hosts, serverAuth
    DIR/ROLE-ID.pem, ROLE-ID.key    a client (1 year): URI SAN spiffe://vimark/role/ROLE/id/ID, clientAuth
    DIR/crl.pem                     the CA's CRL: serials of revoked client certificates

Private keys are PKCS#8 PEM, mode 0600, in a 0700 directory; every file is written to a temporary
name and renamed, so a server re-reading crl.pem never sees half a file. This is for development and
tests; production certificates come from the operator's own CA, in the same shape.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from vimark.client.domain import Clock, system_clock
from vimark.client.errors import PkiError
from vimark.server.auth import identity_uri
from vimark.server.policy import Role

CA_LIFETIME = dt.timedelta(days=3652)
LEAF_LIFETIME = dt.timedelta(days=365)
CRL_LIFETIME = dt.timedelta(days=365)  # nextUpdate; vimark re-reads the file on change, not on this date
BACKDATE = dt.timedelta(minutes=5)  # tolerate a little clock skew between the machines
DEFAULT_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Written:
    """What a PKI command wrote, for the command line to say."""

    certificate: Path
    key: Path | None
    serial: int


def init(
    directory: Path, hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS, *, clock: Clock = system_clock
) -> Written:
    """Create the CA, the server certificate for `hosts` and an empty CRL; refuses an existing CA."""
    directory = Path(directory)
    if (directory / "ca.key").exists() or (directory / "ca.pem").exists():
        raise PkiError(f"{directory} already holds a CA (ca.pem/ca.key); refusing to overwrite it")
    if not hosts:
        raise PkiError("the server certificate needs at least one host name or address")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(directory, 0o700)
    except OSError as exc:
        raise PkiError(f"cannot create the PKI directory {directory}: {exc}") from None
    now = clock()
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vimark"),
            x509.NameAttribute(NameOID.COMMON_NAME, "vimark development CA"),
        ]
    )
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + CA_LIFETIME)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    _write(directory / "ca.key", _private_pem(ca_key), secret=True, exclusive=True)
    _write(directory / "ca.pem", ca.public_bytes(serialization.Encoding.PEM), exclusive=True)
    server = _leaf(ca, ca_key, hosts[0], _host_names(hosts), ExtendedKeyUsageOID.SERVER_AUTH, now)
    _write_leaf(directory, "server", *server)
    _write_crl(directory, ca, ca_key, [], now)
    return Written(directory / "ca.pem", directory / "ca.key", ca.serial_number)


def issue(directory: Path, role: Role | str, caller_id: str, *, clock: Clock = system_clock) -> Written:
    """A client certificate naming (role, caller_id): ROLE-ID.pem and ROLE-ID.key.

    Refuses to replace a certificate of the same name that is still valid and not revoked."""
    directory = Path(directory)
    role = _role(role)
    uri = _identity(role, caller_id)
    ca, ca_key = _load_ca(directory)
    name = f"{role.value}-{caller_id}"
    existing = _read_certificate(directory / f"{name}.pem")
    now = clock()
    if existing is not None and existing.not_valid_after_utc > now:
        if existing.serial_number not in _revoked(directory):
            raise PkiError(
                f"{directory / name}.pem is already issued and not revoked; run `vimark pki revoke` first to replace it"
            )
    cert, key = _leaf(ca, ca_key, name, [x509.UniformResourceIdentifier(uri)], ExtendedKeyUsageOID.CLIENT_AUTH, now)
    return _write_leaf(directory, name, cert, key)


def revoke(directory: Path, role: Role | str, caller_id: str, *, clock: Clock = system_clock) -> Written:
    """Add ROLE-ID.pem's serial to crl.pem; revoking a revoked certificate changes nothing."""
    directory = Path(directory)
    role = _role(role)
    _identity(role, caller_id)
    path = directory / f"{role.value}-{caller_id}.pem"
    cert = _read_certificate(path)
    if cert is None:
        raise PkiError(f"no client certificate {path} to revoke")
    ca, ca_key = _load_ca(directory)
    if cert.issuer != ca.subject:
        raise PkiError(f"{path} was not issued by the CA in {directory}")
    crl = _load_crl(directory, ca)
    entries = list(crl) if crl is not None else []
    if cert.serial_number not in {e.serial_number for e in entries}:
        now = clock()
        entries.append(x509.RevokedCertificateBuilder().serial_number(cert.serial_number).revocation_date(now).build())
        _write_crl(directory, ca, ca_key, entries, now, _crl_number(crl) + 1)
    return Written(directory / "crl.pem", None, cert.serial_number)


# -- building ----------------------------------------------------------------------------------
def _leaf(
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    common_name: str,
    names: list[x509.GeneralName],
    usage: x509.ObjectIdentifier,
    now: dt.datetime,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, "vimark"),
                    x509.NameAttribute(NameOID.COMMON_NAME, common_name),
                ]
            )
        )
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(min(now + LEAF_LIFETIME, ca.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return cert, key


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _authority_key_id(ca: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _host_names(hosts: tuple[str, ...] | list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if not host or any(c.isspace() or c in "/:@" for c in host):
                raise PkiError(f"{host!r} is neither a host name nor an IP address") from None
            names.append(x509.DNSName(host))
    return names


def _write_crl(
    directory: Path,
    ca: x509.Certificate,
    ca_key: ec.EllipticCurvePrivateKey,
    entries: list[x509.RevokedCertificate],
    now: dt.datetime,
    number: int = 1,
) -> None:
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - BACKDATE)
        .next_update(now + CRL_LIFETIME)
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(_authority_key_id(ca), critical=False)
    )
    for entry in entries:
        builder = builder.add_revoked_certificate(entry)
    _write(directory / "crl.pem", builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM))


def _write_leaf(directory: Path, name: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> Written:
    _write(directory / f"{name}.key", _private_pem(key), secret=True)
    _write(directory / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM))
    return Written(directory / f"{name}.pem", directory / f"{name}.key", cert.serial_number)


def _private_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, secret: bool = False, exclusive: bool = False) -> None:
    """Write-then-rename, so a reader never sees half a file; a `secret` is 0600, the rest 0644.
    `exclusive`: refuse if `path` already exists."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(fd, 0o600 if secret else 0o644)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if exclusive:
            os.link(tmp, path)  # fails if path exists
            os.unlink(tmp)
        else:
            os.replace(tmp, path)
    except FileExistsError:
        tmp.unlink(missing_ok=True)
        raise PkiError(f"{path} already exists; refusing to overwrite it") from None
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PkiError(f"cannot write {path}: {exc}") from None


# -- reading -----------------------------------------------------------------------------------
def _role(role: Role | str) -> Role:
    if isinstance(role, Role):
        return role
    try:
        return Role(role)
    except ValueError:
        raise PkiError(f"unknown role {role!r}: one of {', '.join(r.value for r in Role)}") from None


def _identity(role: Role, caller_id: str) -> str:
    try:
        return identity_uri(role, caller_id)
    except ValueError as exc:
        raise PkiError(str(exc)) from None


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    try:
        ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    except FileNotFoundError:
        raise PkiError(f"no CA in {directory}: run `vimark pki init {directory}` first") from None
    except (OSError, ValueError, TypeError) as exc:
        raise PkiError(f"the CA in {directory} is unreadable: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.public_key() != ca.public_key():
        raise PkiError(f"{directory}/ca.key is not the private key of {directory}/ca.pem")
    return ca, key


def _read_certificate(path: Path) -> x509.Certificate | None:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{path} is unreadable: {exc}") from None


def _load_crl(directory: Path, ca: x509.Certificate) -> x509.CertificateRevocationList | None:
    try:
        crl = x509.load_pem_x509_crl((directory / "crl.pem").read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise PkiError(f"{directory}/crl.pem is unreadable: {exc}; move it aside to start a new one") from None
    if not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise PkiError(f"{directory}/crl.pem is not signed by {directory}/ca.pem")
    return crl


def _revoked(directory: Path) -> set[int]:
    ca, _ = _load_ca(directory)
    crl = _load_crl(directory, ca)
    return {e.serial_number for e in crl} if crl is not None else set()


def _crl_number(crl: x509.CertificateRevocationList | None) -> int:
    if crl is None:
        return 0
    try:
        return int(crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number)
    except x509.ExtensionNotFound:
        return 0
