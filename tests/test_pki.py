"""TLS client certificates name the caller: the development PKI, CertificateAuth and revocation,
tested through real TLS on a real gRPC server on loopback.

The test server's one method does what every vimark RPC does first: CertificateAuth.identify(context),
a VimarkError becoming its gRPC status. It answers "role/caller_id".
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from vimark.client.cli.common import connect
from vimark.client.cli.main import build_parser
from vimark.client.errors import PkiError, ResourceExhausted, TlsFileError, Unauthenticated, VimarkError
from vimark.client.sdk import VimarkClient, error_from_rpc, tls_credentials
from vimark.server import pki
from vimark.server.auth import CertificateAuth, caller_from_certificate, server_credentials
from vimark.server.cli import pki as pki_cli
from vimark.server.cli.main import main
from vimark.server.policy import Role

WHO = "/vimark.test.Identity/Who"
THROTTLED = "/vimark.test.Identity/Throttled"
VIMARK = [sys.executable, "-m", "vimark.server.cli.main"]


class IdentityServer:
    """A TLS gRPC server requiring client certificates from DIR/ca.pem, identifying callers by CertificateAuth."""

    def __init__(self, directory: Path, auth: CertificateAuth) -> None:
        self.auth = auth
        self.calls = 0
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        handlers = {
            "Who": grpc.unary_unary_rpc_method_handler(self._who),
            "Throttled": grpc.unary_unary_rpc_method_handler(self._throttled),
        }
        self.server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("vimark.test.Identity", handlers),))
        credentials = server_credentials(directory / "server.pem", directory / "server.key", directory / "ca.pem")
        self.port = self.server.add_secure_port("localhost:0", credentials)
        self.server.start()

    def _who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self.calls += 1
        try:
            caller = self.auth.identify(context)
        except VimarkError as exc:
            context.abort(grpc.StatusCode.UNAUTHENTICATED, exc.message)
        return f"{caller.role.value}/{caller.caller_id}".encode()

    def _throttled(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        detail = any_pb2.Any()
        detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(seconds=2, nanos=500_000_000)))
        status = status_pb2.Status(code=code_pb2.RESOURCE_EXHAUSTED, message="over the rate", details=[detail])
        context.abort_with_status(rpc_status.to_status(status))
        raise AssertionError("abort_with_status returns only by raising")

    def channel(self, directory: Path, name: str | None) -> grpc.Channel:
        """A TLS channel trusting DIR/ca.pem, presenting DIR/NAME.pem (None: no client certificate)."""
        if name is None:
            credentials = tls_credentials(directory / "ca.pem", None, None)
        else:
            credentials = tls_credentials(directory / "ca.pem", directory / f"{name}.pem", directory / f"{name}.key")
        return grpc.secure_channel(f"localhost:{self.port}", credentials)


def who(channel: grpc.Channel) -> str:
    return bytes(channel.unary_unary(WHO, None, None)(b"", timeout=5)).decode()


def rpc_error(channel: grpc.Channel, method: str = WHO) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        channel.unary_unary(method, None, None)(b"", timeout=5)
    assert isinstance(info.value, grpc.Call)
    return info.value


def code(error: grpc.RpcError) -> grpc.StatusCode:
    assert isinstance(error, grpc.Call)
    return error.code()


@pytest.fixture
def ca_dir(tmp_path: Path) -> Path:
    pki.init(tmp_path / "pki")
    return tmp_path / "pki"


@pytest.fixture
def server(ca_dir: Path) -> Iterator[IdentityServer]:
    s = IdentityServer(ca_dir, CertificateAuth(ca_dir / "crl.pem"))
    yield s
    s.server.stop(None)


def test_every_role_is_identified_by_its_certificate(ca_dir: Path, server: IdentityServer) -> None:
    for role in Role:
        pki.issue(ca_dir, role.value, f"{role.value.upper()}-0571.a_b")
        with server.channel(ca_dir, f"{role.value}-{role.value.upper()}-0571.a_b") as channel:
            assert who(channel) == f"{role.value}/{role.value.upper()}-0571.a_b"
            assert who(channel) == f"{role.value}/{role.value.upper()}-0571.a_b"  # from the cache


def test_client_without_certificate_fails_the_handshake_as_unavailable(ca_dir: Path, server: IdentityServer) -> None:
    # gRPC Python cannot request a client certificate without requiring it, so a caller without one
    # never reaches identify(): the TLS handshake fails and the client sees UNAVAILABLE, not UNAUTHENTICATED.
    with server.channel(ca_dir, None) as channel:
        error = rpc_error(channel)
    assert isinstance(error, grpc.Call)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "Socket closed" in (error.details() or "")
    assert server.calls == 0


def test_certificate_from_another_ca_is_refused_at_the_handshake(
    tmp_path: Path, ca_dir: Path, server: IdentityServer
) -> None:
    other = tmp_path / "other"
    pki.init(other)
    pki.issue(other, "police", "T-1")
    credentials = tls_credentials(ca_dir / "ca.pem", other / "police-T-1.pem", other / "police-T-1.key")
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel:
        error = rpc_error(channel)
    assert isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAVAILABLE
    assert server.calls == 0


def ca_signed(
    directory: Path,
    san: list[x509.GeneralName] | None,
    *,
    is_ca: bool = False,
    usages: tuple[x509.ObjectIdentifier, ...] = (ExtendedKeyUsageOID.CLIENT_AUTH,),
) -> str:
    """A certificate the CA really signed, with the given SAN (None: no SAN), CA flag and extended
    key usages: DIR/NAME.pem and .key; returns NAME."""
    ca = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "stranger")]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.ExtendedKeyUsage(list(usages)), critical=False)
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if san is not None:
        builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
    name = f"stranger-{len(list(directory.iterdir()))}"
    (directory / f"{name}.pem").write_bytes(
        builder.sign(ca_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    )
    (directory / f"{name}.key").write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return name


@pytest.mark.parametrize(
    ("san", "problem"),
    [
        (None, "no subject alternative name"),
        ([x509.DNSName("terminal.example")], "no vimark identity URI"),
        ([x509.UniformResourceIdentifier("spiffe://other/role/police/id/T-1")], "no vimark identity URI"),
        ([x509.UniformResourceIdentifier("spiffe://vimark/role/admin/id/T-1")], "unknown role 'admin'"),
        ([x509.UniformResourceIdentifier("spiffe://vimark/role/police/T-1")], "is not of the form"),
        ([x509.UniformResourceIdentifier("spiffe://vimark/role/police/id/T 1")], "caller id outside"),
        (
            [
                x509.UniformResourceIdentifier("spiffe://vimark/role/police/id/T-1"),
                x509.UniformResourceIdentifier("spiffe://vimark/role/operator/id/T-1"),
            ],
            "names 2 vimark identities",
        ),
    ],
)
def test_certificate_naming_no_vimark_role_is_unauthenticated(
    ca_dir: Path, server: IdentityServer, san: list[x509.GeneralName] | None, problem: str
) -> None:
    with server.channel(ca_dir, ca_signed(ca_dir, san)) as channel:
        for _ in range(2):  # the second time from the cache, with the same answer
            error = rpc_error(channel)
            assert isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAUTHENTICATED
            assert problem in (error.details() or "")


POLICE_T1 = [x509.UniformResourceIdentifier("spiffe://vimark/role/police/id/T-1")]


def test_a_ca_certificate_or_one_not_for_client_authentication_names_nobody(
    ca_dir: Path, server: IdentityServer
) -> None:
    with server.channel(ca_dir, ca_signed(ca_dir, POLICE_T1, is_ca=True)) as channel:
        error = rpc_error(channel)
        assert code(error) == grpc.StatusCode.UNAUTHENTICATED and "CA certificate" in (error.details() or "")
    # The handshake already refuses a server-only certificate as a client's; the identity check would too.
    server_only = ca_dir / f"{ca_signed(ca_dir, POLICE_T1, usages=(ExtendedKeyUsageOID.SERVER_AUTH,))}.pem"
    with pytest.raises(ValueError, match="client authentication"):
        caller_from_certificate(x509.load_pem_x509_certificate(server_only.read_bytes()))


def test_an_expired_certificate_is_refused_on_a_channel_opened_before(ca_dir: Path) -> None:
    pki.issue(ca_dir, "police", "T-1")
    now = [dt.datetime.now(dt.UTC).timestamp()]
    s = IdentityServer(ca_dir, CertificateAuth(ca_dir / "crl.pem", now=lambda: now[0]))
    try:
        with s.channel(ca_dir, "police-T-1") as channel:
            assert who(channel) == "police/T-1"
            now[0] += (pki.LEAF_LIFETIME + dt.timedelta(minutes=1)).total_seconds()
            error = rpc_error(channel)
            assert code(error) == grpc.StatusCode.UNAUTHENTICATED
            assert "(police/T-1) is outside its validity" in (error.details() or "")
    finally:
        s.server.stop(None)


def test_an_older_crl_put_back_does_not_unrevoke(
    ca_dir: Path, server: IdentityServer, caplog: pytest.LogCaptureFixture
) -> None:
    pki.issue(ca_dir, "police", "T-1")
    stale = (ca_dir / "crl.pem").read_bytes()  # CRL number 1, revoking nothing
    with server.channel(ca_dir, "police-T-1") as channel:
        assert who(channel) == "police/T-1"
        pki.revoke(ca_dir, "police", "T-1")
        assert code(rpc_error(channel)) == grpc.StatusCode.UNAUTHENTICATED
        with caplog.at_level(logging.ERROR, logger="vimark.server.auth"):
            (ca_dir / "crl.pem").write_bytes(stale)
            assert code(rpc_error(channel)) == grpc.StatusCode.UNAUTHENTICATED
        assert "is number 1, older than number 2 in force" in caplog.text


def test_revocation_refuses_the_next_call_on_the_same_channel(ca_dir: Path, server: IdentityServer) -> None:
    revoked = pki.issue(ca_dir, "police", "T-1")
    pki.issue(ca_dir, "police", "T-2")
    with server.channel(ca_dir, "police-T-1") as t1, server.channel(ca_dir, "police-T-2") as t2:
        assert who(t1) == "police/T-1" and who(t2) == "police/T-2"
        pki.revoke(ca_dir, "police", "T-1")
        error = rpc_error(t1)
        assert isinstance(error, grpc.Call) and error.code() == grpc.StatusCode.UNAUTHENTICATED
        assert f"client certificate {revoked.serial:x} (police/T-1) has been revoked" == error.details()
        assert who(t2) == "police/T-2"

        crl = (ca_dir / "crl.pem").read_bytes()
        pki.revoke(ca_dir, "police", "T-1")  # harmless: nothing changes
        assert (ca_dir / "crl.pem").read_bytes() == crl
        assert code(rpc_error(t1)) == grpc.StatusCode.UNAUTHENTICATED
        assert who(t2) == "police/T-2"


def test_the_crl_is_a_real_x509_crl_signed_by_the_ca(ca_dir: Path) -> None:
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    empty = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert len(empty) == 0 and empty.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    a, b = pki.issue(ca_dir, "partner", "insurer-7"), pki.issue(ca_dir, "public", "app")
    pki.revoke(ca_dir, "partner", "insurer-7")
    pki.revoke(ca_dir, "public", "app")
    crl = x509.load_pem_x509_crl((ca_dir / "crl.pem").read_bytes())
    assert crl.is_signature_valid(ca.public_key())  # type: ignore[arg-type]
    assert crl.issuer == ca.subject
    assert {r.serial_number for r in crl} == {a.serial, b.serial}
    assert crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number == 3
    assert not [p for p in ca_dir.iterdir() if p.name.endswith(".tmp")]


def test_a_damaged_crl_keeps_the_previous_list(
    tmp_path: Path, ca_dir: Path, server: IdentityServer, caplog: pytest.LogCaptureFixture
) -> None:
    pki.issue(ca_dir, "police", "T-1")
    pki.issue(ca_dir, "police", "T-2")
    pki.issue(ca_dir, "police", "T-3")
    pki.revoke(ca_dir, "police", "T-1")
    good = (ca_dir / "crl.pem").read_bytes()
    other = tmp_path / "other"
    pki.init(other)
    with (
        server.channel(ca_dir, "police-T-1") as t1,
        server.channel(ca_dir, "police-T-2") as t2,
        caplog.at_level(logging.ERROR, logger="vimark.server.auth"),
    ):
        assert code(rpc_error(t1)) == grpc.StatusCode.UNAUTHENTICATED
        for damaged in (
            b"-----BEGIN X509 CRL-----\ngarbage\n-----END X509 CRL-----\n",
            (other / "crl.pem").read_bytes(),
        ):
            replace(ca_dir / "crl.pem", damaged)
            caplog.clear()
            assert code(rpc_error(t1)) == grpc.StatusCode.UNAUTHENTICATED
            assert who(t2) == "police/T-2"
            assert any("keeping the 1 revocations last read" in r.getMessage() for r in caplog.records)
        # a CRL that disappears while serving keeps the list too (only a missing file at start means none)
        (ca_dir / "crl.pem").unlink()
        assert code(rpc_error(t1)) == grpc.StatusCode.UNAUTHENTICATED
        assert who(t2) == "police/T-2"
        # a good CRL again: it is read, and a new revocation counts from the next call
        replace(ca_dir / "crl.pem", good)
        pki.revoke(ca_dir, "police", "T-2")
        assert code(rpc_error(t2)) == grpc.StatusCode.UNAUTHENTICATED
        assert code(rpc_error(t1)) == grpc.StatusCode.UNAUTHENTICATED
    with server.channel(ca_dir, "police-T-3") as t3:
        assert who(t3) == "police/T-3"


def replace(path: Path, data: bytes) -> None:
    tmp = path.with_name("crl.pem.test-tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def test_a_bad_crl_at_start_is_an_error(tmp_path: Path, ca_dir: Path) -> None:
    (ca_dir / "crl.pem").write_bytes(b"not a crl")
    with pytest.raises(TlsFileError, match="is unreadable"):
        CertificateAuth(ca_dir / "crl.pem")
    other = tmp_path / "other"
    pki.init(other)
    with pytest.raises(TlsFileError, match="is not signed by the client CA"):
        CertificateAuth(other / "crl.pem", client_ca=ca_dir / "ca.pem")
    with pytest.raises(TlsFileError, match="cannot read the client CA"):
        CertificateAuth(tmp_path / "nowhere" / "crl.pem")


def test_no_crl_file_means_nothing_is_revoked(ca_dir: Path) -> None:
    pki.issue(ca_dir, "station", "station-12")
    pki.revoke(ca_dir, "station", "station-12")
    (ca_dir / "crl.pem").unlink()
    s = IdentityServer(ca_dir, CertificateAuth(ca_dir / "crl.pem"))
    try:
        with s.channel(ca_dir, "station-station-12") as channel:
            assert who(channel) == "station/station-12"
    finally:
        s.server.stop(None)


def test_keys_are_owner_only_and_the_ca_is_never_overwritten(ca_dir: Path) -> None:
    pki.issue(ca_dir, "operator", "ops-1")
    assert stat.S_IMODE(ca_dir.stat().st_mode) == 0o700
    for name in ("ca.key", "server.key", "operator-ops-1.key"):
        assert stat.S_IMODE((ca_dir / name).stat().st_mode) == 0o600
        assert (ca_dir / name).read_text().startswith("-----BEGIN PRIVATE KEY-----")
    ca = (ca_dir / "ca.pem").read_bytes()
    with pytest.raises(PkiError, match="already holds a CA"):
        pki.init(ca_dir)
    assert (ca_dir / "ca.pem").read_bytes() == ca


def test_certificate_contents(ca_dir: Path) -> None:
    server_cert = x509.load_pem_x509_certificate((ca_dir / "server.pem").read_bytes())
    san = server_cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert [str(a) for a in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1", "::1"]
    eku = server_cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    client = x509.load_pem_x509_certificate(pki.issue(ca_dir, "police", "T-9").certificate.read_bytes())
    assert client.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
        x509.UniformResourceIdentifier
    ) == ["spiffe://vimark/role/police/id/T-9"]
    assert list(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert isinstance(client.public_key(), ec.EllipticCurvePublicKey)
    assert client.not_valid_after_utc - client.not_valid_before_utc < dt.timedelta(days=367)
    ca = x509.load_pem_x509_certificate((ca_dir / "ca.pem").read_bytes())
    assert ca.not_valid_after_utc - ca.not_valid_before_utc > dt.timedelta(days=3650)


def test_issue_refuses_bad_names_and_live_duplicates(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="unknown role 'admin'"):
        pki.issue(ca_dir, "admin", "x")
    for bad in ("", "a/b", "../x", "x" * 65, "T 1", "终端"):
        with pytest.raises(PkiError, match="must be 1 to 64"):
            pki.issue(ca_dir, "police", bad)
        with pytest.raises(PkiError, match="must be 1 to 64"):
            pki.revoke(ca_dir, "police", bad)
    first = pki.issue(ca_dir, "police", "T-1")
    with pytest.raises(PkiError, match="already issued and not revoked"):
        pki.issue(ca_dir, "police", "T-1")
    pki.revoke(ca_dir, "police", "T-1")
    second = pki.issue(ca_dir, "police", "T-1")  # a revoked one may be replaced; its serial stays revoked
    assert second.serial != first.serial
    with pytest.raises(PkiError, match="no client certificate"):
        pki.revoke(ca_dir, "public", "never-issued")
    with pytest.raises(PkiError, match="no CA in"):
        pki.issue(tmp_path / "empty", "police", "T-1")


def test_sdk_maps_unauthenticated_and_resource_exhausted_with_retry_info(ca_dir: Path, server: IdentityServer) -> None:
    with server.channel(ca_dir, ca_signed(ca_dir, None)) as channel:
        error = error_from_rpc(rpc_error(channel))
    assert isinstance(error, Unauthenticated) and "no subject alternative name" in error.message
    pki.issue(ca_dir, "partner", "p-1")
    with server.channel(ca_dir, "partner-p-1") as channel:
        throttled = error_from_rpc(rpc_error(channel, THROTTLED))
    assert isinstance(throttled, ResourceExhausted)
    assert throttled.retry_after == 2.5 and throttled.message == "over the rate"


def test_tls_credentials_refuse_unreadable_files(ca_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(VimarkError, match="cannot read the TLS file"):
        tls_credentials(tmp_path / "missing.pem", None, None)
    (tmp_path / "junk.pem").write_text("junk")
    with pytest.raises(VimarkError, match="is not PEM"):
        tls_credentials(ca_dir / "ca.pem", tmp_path / "junk.pem", ca_dir / "server.key")
    with pytest.raises(VimarkError, match="both its certificate and its key"):
        tls_credentials(ca_dir / "ca.pem", ca_dir / "server.pem", None)


def test_cli_connect_uses_tls_with_all_three_flags(
    ca_dir: Path, server: IdentityServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("VIMARK_CA", "VIMARK_CERT", "VIMARK_KEY"):
        monkeypatch.delenv(name, raising=False)
    pki.issue(ca_dir, "police", "T-1")
    base = ["lookup", "--plate-number", "x", "--server", f"localhost:{server.port}", "--timeout", "5"]
    with pytest.raises(VimarkError, match="missing --cert"):
        connect(build_parser().parse_args([*base, "--ca", str(ca_dir / "ca.pem")]))
    tls = ["--ca", str(ca_dir / "ca.pem"), "--cert", str(ca_dir / "police-T-1.pem")]
    args = build_parser().parse_args([*base, *tls, "--key", str(ca_dir / "police-T-1.key")])
    with connect(args) as client:
        # The handshake succeeds and the test server answers: it has no MarkService.
        with pytest.raises(VimarkError, match="UNIMPLEMENTED"):
            client.trust_list()
    # The environment supplies defaults for the flags.
    monkeypatch.setenv("VIMARK_CA", str(ca_dir / "ca.pem"))
    monkeypatch.setenv("VIMARK_CERT", str(ca_dir / "police-T-1.pem"))
    monkeypatch.setenv("VIMARK_KEY", str(ca_dir / "police-T-1.key"))
    with connect(build_parser().parse_args(base)) as client, pytest.raises(VimarkError, match="UNIMPLEMENTED"):
        client.trust_list()
    plain = VimarkClient(f"localhost:{server.port}", timeout=5)
    with plain, pytest.raises(VimarkError, match="unavailable"):
        plain.trust_list()


def test_cli_pki_commands(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "cli-pki"

    def vimark(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*VIMARK, "pki", *args], capture_output=True, text=True, timeout=60)

    result = vimark("init", str(directory), "--host", "verify.example", "--host", "10.1.2.3")
    assert result.returncode == 0, result.stderr
    assert str(directory / "ca.pem") in result.stdout and len(result.stdout.splitlines()) == 1
    assert {p.name for p in directory.iterdir()} == {"ca.pem", "ca.key", "server.pem", "server.key", "crl.pem"}
    san = x509.load_pem_x509_certificate((directory / "server.pem").read_bytes()).extensions
    names = san.get_extension_for_class(x509.SubjectAlternativeName).value
    assert names.get_values_for_type(x509.DNSName) == ["verify.example"]
    assert [str(a) for a in names.get_values_for_type(x509.IPAddress)] == ["10.1.2.3"]

    result = vimark("issue", str(directory), "--role", "police", "--id", "T-0571")
    assert result.returncode == 0, result.stderr
    assert str(directory / "police-T-0571.pem") in result.stdout and len(result.stdout.splitlines()) == 1
    assert stat.S_IMODE((directory / "police-T-0571.key").stat().st_mode) == 0o600
    serial = x509.load_pem_x509_certificate((directory / "police-T-0571.pem").read_bytes()).serial_number

    result = vimark("revoke", str(directory), "--role", "police", "--id", "T-0571")
    assert result.returncode == 0, result.stderr
    assert f"{serial:x}" in result.stdout and len(result.stdout.splitlines()) == 1
    assert [r.serial_number for r in x509.load_pem_x509_crl((directory / "crl.pem").read_bytes())] == [serial]

    # Refusals are one line on stderr and exit status 2 (in process: each `vimark` start costs a second).
    assert main(["pki", "init", str(directory)]) == 2
    assert "already holds a CA" in capsys.readouterr().err
    assert main(["pki", "issue", str(directory), "--role", "police", "--id", "a/b"]) == 2
    assert "must be 1 to 64" in capsys.readouterr().err


def test_cli_roles_are_the_role_enum() -> None:
    assert pki_cli.ROLE_NAMES == tuple(r.value for r in Role)
