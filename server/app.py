"""Assembling a running server: store, keys, index, services, health, reflection, metrics.

server = VimarkServer(ServerConfig(db_url=..., keys_dir=..., listen="127.0.0.1:0"))
server.start()            # binds; the index loads in the background (health NOT_SERVING)
server.wait_ready()
...
server.stop(grace=5)      # health NOT_SERVING, drain in-flight calls, close the store
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc

from vimark.client.domain import Clock, system_clock
from vimark.client.errors import FailedPrecondition, TlsFileError, Unavailable, VimarkError
from vimark.server import hotpath, rules
from vimark.server.audit import AuditLog
from vimark.server.audit_service import AuditService
from vimark.server.auth import Authenticator, CertificateAuth, DevAuth, server_credentials
from vimark.server.batcher import SignatureEngine
from vimark.server.demo import seed_demo
from vimark.server.gc_pauses import GcPauses, freeze_what_start_up_made
from vimark.server.guard import CallGuard
from vimark.server.index import ValidityIndex
from vimark.server.issuer import Issuer
from vimark.server.keys import KeyDirectory
from vimark.server.limits import RateLimiter
from vimark.server.metrics import Metrics, MetricsServer, serve_metrics
from vimark.server.policy import DEFAULT_RATES, Rate, Role
from vimark.server.service import MarkService, RegistryService
from vimark.server.store import Store, displayed
from vimark.server.sync import CheckpointConfig, IndexFollower, ReloadableKeyRing
from vimark.server.terminal_keys import OnlineKeyDirectory, OnlineSigner
from vimark.server.terminal_service import TerminalService
from vimark.server.terminal_status import TerminalData
from vimark.server.verifier import Verifier
from vimark.v1 import (
    audit_service_pb2,
    audit_service_pb2_grpc,
    mark_service_pb2,
    mark_service_pb2_grpc,
    registry_service_pb2,
    registry_service_pb2_grpc,
    terminal_service_pb2,
    terminal_service_pb2_grpc,
)

log = logging.getLogger("vimark.server")

# Large enough for a full VerifyBatch (1,000 x 1,024 characters); anything bigger is refused
# by gRPC before it is read into a message.
MAX_MESSAGE_BYTES = 2 * 1024 * 1024
DATABASE_WAIT_LOG_SECONDS = 60.0  # while the database does not answer at start, say so this often
MAX_DATABASE_RETRY_SECONDS = 10.0  # and try again after a growing pause, up to this
STOP_CHECK_SECONDS = 0.1  # the tail loop waits for changes in slices of this, so stop() is heard at once

SERVICE_NAMES = (
    mark_service_pb2.DESCRIPTOR.services_by_name["MarkService"].full_name,
    registry_service_pb2.DESCRIPTOR.services_by_name["RegistryService"].full_name,
    audit_service_pb2.DESCRIPTOR.services_by_name["AuditService"].full_name,
    terminal_service_pb2.DESCRIPTOR.services_by_name["TerminalService"].full_name,
)


@dataclass(frozen=True)
class TlsConfig:
    cert: Path  # the server's certificate chain (PEM)
    key: Path  # its private key
    client_ca: Path  # the CA that signs callers' certificates
    crl: Path | None = None  # revoked caller certificates (re-read when it changes); default: crl.pem beside client_ca

    @property
    def crl_path(self) -> Path:
        return self.crl or self.client_ca.with_name("crl.pem")


@dataclass
class ServerConfig:
    db_url: str = "sqlite:///vimark.db"
    keys_dir: Path = Path("vimark-keys")
    listen: str = "127.0.0.1:50051"
    tls: TlsConfig | None = None  # None: development mode (plaintext, loopback only)
    # Development mode: every caller has this role; None lets it call every RPC with the full view.
    dev_role: Role | None = None
    rate_limits: Mapping[Role, Rate] = field(default_factory=lambda: dict(DEFAULT_RATES))  # per caller, TLS only
    max_concurrent_rpcs: int = 512  # beyond this gRPC answers RESOURCE_EXHAUSTED at once
    reuse_port: bool = False  # True for `serve --workers N`: N processes share the port
    metrics_port: int = 0  # 0: no metrics endpoint
    metrics_host: str = "127.0.0.1"  # where /metrics listens (with --workers N, worker i on metrics_port + i)
    presentation_lifetime: dt.timedelta = dt.timedelta(minutes=3)
    poll_interval: float = 0.2  # seconds between change-log polls
    max_workers: int = 16
    max_waiting_per_caller: int = 8  # calls of one TLS caller that may be reading their request at once
    receive_timeout: float = 5.0  # seconds a call may take to send its request message (2 MiB: 3.4 Mbit/s)
    demo_vehicles: int = 0  # seed this many synthetic vehicles into an empty database before serving
    shutdown_delay: float = 0.0  # seconds between NOT_SERVING and draining, for balancers to notice
    clock: Clock = system_clock
    rule_config: rules.RuleConfig = field(default_factory=rules.RuleConfig)
    # The online key that signs police terminals' offline data (server/terminal_keys.py); None:
    # TerminalService refuses with NO_ONLINE_KEY. terminal_refresh: how long a snapshot is reused.
    terminal_keys_dir: Path | None = None
    terminal_refresh: dt.timedelta = dt.timedelta(minutes=1)
    checkpoints: CheckpointConfig | None = None  # None: the index is read from the store at each start
    freeze_heap: bool = False  # gc.freeze() once loaded (server/gc_pauses.py): `vimark serve` sets it


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def enable_reflection(service_names: tuple[str, ...], server: grpc.Server) -> None:
    """Server reflection as both grpc.reflection.v1 (what current tools such as grpcurl ask first)
    and v1alpha. grpcio-reflection implements only v1alpha; v1's messages are the same on the wire
    (the same fields and numbers under a new package name), so one servicer answers both."""
    servicer = reflection.ReflectionServicer((*service_names, reflection.SERVICE_NAME, REFLECTION_V1))
    reflection_pb2_grpc.add_ServerReflectionServicer_to_server(servicer, server)
    v1 = grpc.stream_stream_rpc_method_handler(
        servicer.ServerReflectionInfo,
        request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
        response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
    )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(REFLECTION_V1, {"ServerReflectionInfo": v1}),)
    )


def require_loopback(listen: str) -> None:
    host = listen.rsplit(":", 1)[0].strip("[]")
    try:
        loopback = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = False
    if not loopback:
        raise VimarkError(
            f"development mode serves plaintext without client authentication, so it listens on loopback only "
            f"(got {listen!r}); use 127.0.0.1:PORT",
            reason="DEV_MODE_LOOPBACK_ONLY",
        )


def prepare_store(config: ServerConfig) -> None:
    """Seed the demo vehicles once, before worker processes start. Without a demo nothing here needs
    the database: each worker migrates and loads in the background, so they can start while it is down."""
    if not config.demo_vehicles:
        return
    store = Store(config.db_url)
    try:
        keys = ReloadableKeyRing(KeyDirectory(config.keys_dir, config.clock))
        issuer = Issuer(store, keys.signer, config.clock, config.rule_config)
        log.info("demo: %s", seed_demo(store, issuer, config.demo_vehicles, config.clock))
    finally:
        store.close()


class Readiness(Protocol):
    """Whether the processes serving one port are ready (just this one, unless it has sibling workers)."""

    def mark_ready(self) -> None: ...
    def all_ready(self) -> bool: ...


class AloneReadiness:
    def __init__(self) -> None:
        self._ready = False

    def mark_ready(self) -> None:
        self._ready = True

    def all_ready(self) -> bool:
        return self._ready


class VimarkServer:
    def __init__(self, config: ServerConfig, readiness: Readiness | None = None) -> None:
        if config.tls is None:
            require_loopback(config.listen)
        self.config = config
        self.readiness = readiness or AloneReadiness()
        self.metrics = Metrics()
        # Migrated in the background with the index load: a server started while the database
        # is down waits, NOT_SERVING, instead of failing.
        self.store = Store(config.db_url, migrate=False)
        self.keys = ReloadableKeyRing(KeyDirectory(config.keys_dir, config.clock))
        self.index = ValidityIndex()
        self.sync = IndexFollower(self.store, self.index, self.metrics, config.checkpoints, config.clock)
        self.issuer = Issuer(self.store, self.keys.signer, config.clock, config.rule_config, vehicles=self.index)
        # Signatures of VerifyBatch are checked on worker threads (libsodium releases the GIL).
        self.signatures = SignatureEngine(
            observe=self.metrics.signature_batch_size.observe, check_many=hotpath.check_signatures
        )
        self.verifier = Verifier(self.index, self.keys, config.clock, config.rule_config, signatures=self.signatures)
        self.audit = AuditLog(self.store, self.metrics)
        self.gc_pauses = GcPauses(self.metrics.gc_pause_seconds)
        self.health = health.HealthServicer()
        self._stop = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        auth: Authenticator
        limiter = None
        if config.tls is None:
            auth = DevAuth(config.dev_role)
        else:
            if not config.tls.crl_path.is_file():
                # Without its CRL a server would accept every revoked (stolen) terminal's certificate.
                raise TlsFileError(
                    f"no CRL at {config.tls.crl_path}: give --client-crl, or create one with `vimark pki init`"
                )
            auth = CertificateAuth(config.tls.crl_path, client_ca=config.tls.client_ca)
            limiter = RateLimiter(config.rate_limits)
        threads = config.max_workers
        self.guard = CallGuard(
            auth,
            # Calls reading their request: each TLS caller is bounded (development mode has one
            # caller, so none), and calls stalled past the grace beyond half the threads (all but
            # one in development mode) are dropped, the biggest holder's newest first.
            total=max(1, threads // 2) if config.tls is not None else max(1, threads - 1),
            per_caller=config.max_waiting_per_caller if config.tls is not None else None,
            max_streams=max(1, threads // 4),
            receive_timeout=config.receive_timeout,
        )
        self.server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=config.max_workers, thread_name_prefix="vimark-rpc"),
            options=[
                ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                # One server per port unless its workers share it on purpose: a second `vimark serve`
                # on a taken port must fail, not silently share the traffic (gRPC's default is to share).
                ("grpc.so_reuseport", int(config.reuse_port)),
            ],
            maximum_concurrent_rpcs=config.max_concurrent_rpcs,
            # Every call is identified and bounded before it may wait on a handler thread for its
            # request; long-lived streams may hold at most a quarter of the threads (server/guard.py).
            interceptors=[self.guard],
        )
        mark_service_pb2_grpc.add_MarkServiceServicer_to_server(
            MarkService(
                self.metrics,
                self.sync,
                auth,
                limiter,
                audit=self.audit,
                store=self.store,
                index=self.index,
                issuer=self.issuer,
                verifier=self.verifier,
                trust=self.keys.ring,
                presentation_lifetime=config.presentation_lifetime,
            ),
            self.server,
        )
        registry_service_pb2_grpc.add_RegistryServiceServicer_to_server(
            RegistryService(
                self.metrics,
                self.sync,
                auth,
                limiter,
                store=self.store,
                clock=config.clock,
                rule_config=config.rule_config,
            ),
            self.server,
        )
        audit_service_pb2_grpc.add_AuditServiceServicer_to_server(
            AuditService(self.metrics, self.sync, auth, limiter, store=self.store, clock=config.clock), self.server
        )
        terminal_data = TerminalData(
            self.store, self.keys.current, self._online_signer, config.clock, refresh=config.terminal_refresh
        )
        terminal_service_pb2_grpc.add_TerminalServiceServicer_to_server(
            TerminalService(self.metrics, self.sync, auth, limiter, data=terminal_data), self.server
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self.server)
        enable_reflection((*SERVICE_NAMES, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name), self.server)
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        try:
            if config.tls is None:
                self.port = self.server.add_insecure_port(config.listen)
            else:
                tls = config.tls
                credentials = server_credentials(tls.cert, tls.key, tls.client_ca)
                self.port = self.server.add_secure_port(config.listen, credentials)
        except RuntimeError:  # grpcio raises it for an address it cannot bind
            self.port = 0
        if self.port == 0:
            raise VimarkError(
                f"cannot listen on {config.listen}: in use or not an address of this host", reason="LISTEN_FAILED"
            )
        self.metrics_port = 0
        self._http: MetricsServer | None = None

    def _online_signer(self) -> OnlineSigner:
        if self.config.terminal_keys_dir is None:
            raise FailedPrecondition(
                "this server has no online key for terminal data: start it with --terminal-keys DIR "
                "(`vimark keys online-rotate`)",
                reason="NO_ONLINE_KEY",
            )
        return OnlineKeyDirectory(self.config.terminal_keys_dir, self.config.clock).load()

    def _set_health(self, status: int) -> None:
        for name in ("", *SERVICE_NAMES):
            self.health.set(name, status)  # type: ignore[arg-type]

    def start(self) -> None:
        if self.config.metrics_port:
            where = f"{self.config.metrics_host}:{self.config.metrics_port}"
            try:
                http, self.metrics_port = serve_metrics(
                    self.config.metrics_host, self.config.metrics_port, self.metrics.registry
                )
            except OSError as exc:
                raise VimarkError(
                    f"cannot serve metrics on {where}: {exc.strerror or exc}; give --metrics-listen HOST:PORT "
                    "(or --metrics-port 0: no metrics)",
                    reason="LISTEN_FAILED",
                ) from None
            self._http = http
        self.audit.start()
        self.gc_pauses.start()
        self.signatures.start()
        self.server.start()
        self._spawn(self._load_then_tail, "vimark-index")
        self._spawn(self._watch_keys, "vimark-keys")

    def _watch_keys(self) -> None:
        """On its own thread: a key revocation must land even while the change log is stuck."""
        while not self._stop.wait(self.config.poll_interval):
            try:
                self.keys.refresh()
            except Exception as exc:
                log.error("key directory reload failed; keeping the previous keys: %s", exc)

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def _load_then_tail(self) -> None:
        pause, said = 0.5, -float("inf")
        while not self._stop.is_set():
            try:
                self.store.migrate()
                if self.config.demo_vehicles:  # seeded while health says NOT_SERVING
                    log.info(
                        "demo: %s", seed_demo(self.store, self.issuer, self.config.demo_vehicles, self.config.clock)
                    )
                self.sync.load()
                break
            except Exception as exc:  # the database may come up later: keep trying, NOT_SERVING
                if time.monotonic() - said >= DATABASE_WAIT_LOG_SECONDS:  # once a minute, not once a try
                    said = time.monotonic()
                    log.warning(
                        "database %s does not answer (%s); NOT_SERVING until it does, retrying every %.0f s at most",
                        displayed(self.config.db_url),
                        str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                        MAX_DATABASE_RETRY_SECONDS,
                        exc_info=not isinstance(exc, Unavailable),
                    )
                self._stop.wait(pause)
                pause = min(pause * 2, MAX_DATABASE_RETRY_SECONDS)
        if self._stop.is_set():
            return
        if self.config.freeze_heap:
            freeze_what_start_up_made()
        self.readiness.mark_ready()
        if self.config.checkpoints is not None:
            self._spawn(self._checkpoint_periodically, "vimark-checkpoint")
        serving = False
        while True:
            # Health says SERVING only while every worker sharing the port is ready, and not once
            # stop() has begun (it said NOT_SERVING so that balancers move away first).
            if serving != self.readiness.all_ready() and not self._stopping.is_set():
                serving = not serving
                self._set_health(
                    health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                log.info("SERVING" if serving else "NOT_SERVING: a worker sharing the port is not ready")
            if self._wait_for_change():
                return
            try:
                self.sync.catch_up()
            except Unavailable as exc:  # the database is down: keep verifying from the index
                log.warning("change log unreachable: %s", exc)
            except Exception:
                log.exception("index sync failed")
            self.metrics.index_sync_age.set(self.sync.sync_age())

    def _checkpoint_periodically(self) -> None:
        """On its own thread: writing a province's checkpoint takes seconds, the tail must not wait."""
        assert self.config.checkpoints is not None
        while not self._stop.wait(min(30.0, self.config.checkpoints.every)):
            try:
                self.sync.checkpoint_if_due()
            except Exception:
                log.exception("index checkpoint failed")

    def _wait_for_change(self) -> bool:
        """Until the change log grows (on PostgreSQL the store hears each commit at once) or
        poll_interval has passed: polling stays the fallback. Waits in slices of STOP_CHECK_SECONDS
        at most, so stop() is never held up longer. True once stop() has begun."""
        deadline = time.monotonic() + self.config.poll_interval
        while not self._stop.is_set():
            remaining = deadline - time.monotonic()
            if remaining <= 0 or self.store.wait_for_change(min(remaining, STOP_CHECK_SECONDS)):
                return self._stop.is_set()
        return True

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.sync.ready:
            if time.monotonic() > deadline:
                raise TimeoutError("index did not load in time")
            time.sleep(0.02)

    def stop(self, grace: float = 10.0) -> None:
        """NOT_SERVING first (balancers stop sending), then drain in-flight calls, then close."""
        self._stopping.set()
        self._set_health(health_pb2.HealthCheckResponse.NOT_SERVING)
        time.sleep(self.config.shutdown_delay)
        self._stop.set()
        self.server.stop(grace).wait()
        self.signatures.stop()
        for thread in self._threads:
            thread.join(timeout=5)
        if self.sync.ready and self.config.checkpoints is not None:  # the next start maps it
            self.sync.checkpoint_if_due(every=0.0)
        self.audit.close()  # what drained calls recorded is written before the store closes
        self.gc_pauses.stop()
        if self._http is not None:
            self._http.stop()
        self.store.close()

    def wait(self) -> None:
        self.server.wait_for_termination()
