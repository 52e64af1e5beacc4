"""vimark serve | keys: run the server and manage its key directory."""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from vimark.client.cli.common import dump
from vimark.client.errors import VimarkError
from vimark.server.cli import terminal_keys
from vimark.server.cli.preflight import check_key_directory, check_listen, check_readable, check_tls_pair
from vimark.server.policy import ROLE_NAMES
from vimark.server.store import check_database_url

if TYPE_CHECKING:
    from vimark.server.sync import CheckpointConfig

DEFAULT_DB = "sqlite:///vimark.db"
DEFAULT_KEYS = Path("vimark-keys")
DEFAULT_METRICS_HOST, DEFAULT_METRICS_PORT = "127.0.0.1", 9464


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("serve", help="run the vimark gRPC server")
    p.add_argument(
        "--db",
        default=DEFAULT_DB,
        metavar="URL",
        help=f"SQLAlchemy URL: sqlite:///FILE or postgresql+psycopg://... (default {DEFAULT_DB})",
    )
    p.add_argument("--listen", default="127.0.0.1:50051", metavar="HOST:PORT")
    p.add_argument(
        "--keys",
        default=DEFAULT_KEYS,
        type=Path,
        metavar="DIR",
        help=f"key directory, created on first start if absent (default {DEFAULT_KEYS})",
    )
    p.add_argument(
        "--metrics-listen",
        default=f"{DEFAULT_METRICS_HOST}:{DEFAULT_METRICS_PORT}",
        metavar="HOST:PORT",
        help=f"Prometheus metrics at http://HOST:PORT/metrics (default {DEFAULT_METRICS_HOST}:{DEFAULT_METRICS_PORT})",
    )
    p.add_argument("--metrics-port", type=int, metavar="N", help="only the port of --metrics-listen (0: no metrics)")
    p.add_argument(
        "--demo", default=0, type=int, metavar="N", help="seed N synthetic vehicles with marks into an empty database"
    )
    tls = p.add_argument_group("TLS (production): callers present client certificates naming their role")
    tls.add_argument("--tls-cert", type=Path, metavar="F", help="the server's certificate chain (PEM)")
    tls.add_argument("--tls-key", type=Path, metavar="F", help="the server's private key (PEM)")
    tls.add_argument("--client-ca", type=Path, metavar="F", help="the CA that signs callers' certificates (PEM)")
    tls.add_argument(
        "--client-crl",
        type=Path,
        metavar="F",
        help="revoked caller certificates (PEM CRL), re-read when it changes (default: crl.pem beside --client-ca)",
    )
    tls.add_argument(
        "--rate-limit",
        action="append",
        default=[],
        metavar="ROLE=RATE/BURST",
        help="per-caller token bucket for a role, e.g. public=0.5/10 (defaults: see docs/security.md)",
    )
    p.add_argument(
        "--role",
        default="any",
        choices=("any", *ROLE_NAMES),
        help="development mode only: the role every caller gets (default any: every RPC, full view)",
    )
    p.add_argument(
        "--workers",
        default=1,
        type=int,
        metavar="N",
        help="server processes sharing the port (SO_REUSEPORT); worker i serves metrics on the metrics port + i",
    )
    p.add_argument(
        "--presentation-lifetime",
        default=180,
        type=int,
        metavar="SECONDS",
        help="how long a live QR verifies (default 180)",
    )
    p.add_argument(
        "--shutdown-delay",
        default=1.0,
        type=float,
        metavar="SECONDS",
        help="on SIGTERM, report NOT_SERVING this long before draining (default 1)",
    )
    p.add_argument(
        "--terminal-keys",
        type=Path,
        metavar="DIR",
        help="the online key that signs police terminals' offline data (`vimark keys online-rotate`)",
    )
    ck = p.add_argument_group("index checkpoints: a start maps the last one and reads only the change log after it")
    ck.add_argument(
        "--checkpoint-dir",
        type=Path,
        metavar="DIR",
        help="where the index's checkpoint is kept (default: beside a SQLite file, FILE.index/; none for PostgreSQL)",
    )
    ck.add_argument("--no-checkpoint", action="store_true", help="read the whole store at every start")
    ck.add_argument(
        "--checkpoint-max-age",
        default=168.0,
        type=float,
        metavar="HOURS",
        help="an older checkpoint is ignored and the store read instead (default 168: a week)",
    )
    ck.add_argument(
        "--checkpoint-every",
        default=600.0,
        type=float,
        metavar="SECONDS",
        help="write a checkpoint this often while changes come, and at shutdown (default 600)",
    )
    p.set_defaults(func=serve)

    keys = commands.add_parser("keys", help="manage the issuing key directory")
    sub = keys.add_subparsers(dest="keys_command", required=True)
    for name, help_text in (
        ("init", "create a key directory with its first keys"),
        ("rotate", "retire the active issuing key and make a new one"),
        ("list", "show the trust list"),
    ):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("dir", nargs="?", default=DEFAULT_KEYS, type=Path)
        if name == "rotate":
            p.add_argument("--seal", action="store_true", help="also start a new seal key")
        p.set_defaults(func=manage_keys)
    p = sub.add_parser("revoke", help="revoke a compromised key: every mark it signed fails verification")
    p.add_argument("key_id", type=int)
    p.add_argument("dir", nargs="?", default=DEFAULT_KEYS, type=Path)
    p.set_defaults(func=manage_keys)
    terminal_keys.register(sub)


def manage_keys(args: argparse.Namespace) -> int:
    from vimark.server.keys import KeyDirectory

    directory = KeyDirectory(args.dir)
    if args.keys_command == "init":
        key = directory.init()
        print(f"created {args.dir} with issuing key {key.key_id}")
    elif args.keys_command == "rotate":
        key = directory.rotate(seal=args.seal)
        print(f"issuing key {key.key_id} is now active; earlier keys are retired and still verify")
    elif args.keys_command == "revoke":
        key = directory.revoke(args.key_id)
        print(
            f"key {key.key_id} revoked: its marks now fail verification"
            + (
                "; run `vimark keys rotate` to issue again"
                if not any(k.status == "active" for k in directory.trusted().values())
                else ""
            )
        )
    else:
        for key in sorted(directory.trusted().values(), key=lambda k: k.key_id):
            print(dump(key.as_json()))
    return 0


def checkpoint_config(args: argparse.Namespace) -> CheckpointConfig | None:
    """The checkpoint directory: given, or beside a SQLite file; none for PostgreSQL unless given
    (each replica keeps its own, on its own disk)."""
    from vimark.server.sync import CheckpointConfig

    if args.no_checkpoint:
        return None
    directory = args.checkpoint_dir
    if directory is None and args.db.startswith("sqlite:///") and args.db != "sqlite:///:memory:":
        directory = Path(args.db.removeprefix("sqlite:///") + ".index")
    if directory is None:
        logging.info("no --checkpoint-dir: the index is read from the store at every start")
        return None
    if args.checkpoint_max_age <= 0 or args.checkpoint_every <= 0:
        raise VimarkError("--checkpoint-max-age and --checkpoint-every must be positive", reason="USAGE")
    return CheckpointConfig(directory, dt.timedelta(hours=args.checkpoint_max_age), args.checkpoint_every)


def serve(args: argparse.Namespace) -> int:
    from vimark.server import hotpath
    from vimark.server.app import ServerConfig, TlsConfig, VimarkServer, require_loopback
    from vimark.server.keys import KeyDirectory
    from vimark.server.policy import DEFAULT_RATES, Rate, Role

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    tls_files = (args.tls_cert, args.tls_key, args.client_ca)
    if any(tls_files) and not all(tls_files):
        raise VimarkError("TLS needs all three of --tls-cert, --tls-key and --client-ca", reason="USAGE")
    if args.workers < 1:
        raise VimarkError("--workers must be at least 1", reason="USAGE")
    rates = dict(DEFAULT_RATES)
    for item in args.rate_limit:
        role, _, rate = item.partition("=")
        try:
            rates[Role(role)] = Rate.parse(rate)
        except ValueError as exc:
            raise VimarkError(f"--rate-limit {item}: {exc}", reason="USAGE") from None
    # Everything a user can get wrong is checked before anything is created or bound.
    check_database_url(args.db)
    check_readable(
        {
            "--tls-cert": args.tls_cert,
            "--tls-key": args.tls_key,
            "--client-ca": args.client_ca,
            "--client-crl": args.client_crl,
        }
    )
    if all(tls_files):
        check_tls_pair(args.tls_cert, args.tls_key, args.client_crl or args.client_ca.parent / "crl.pem")
    else:
        require_loopback(args.listen)  # development mode: plaintext, loopback only
    check_listen(args.listen, "--listen")
    metrics_host, _, metrics_port = args.metrics_listen.rpartition(":")
    try:
        port = int(metrics_port) if args.metrics_port is None else args.metrics_port
    except ValueError:
        raise VimarkError(f"--metrics-listen {args.metrics_listen!r} is not HOST:PORT", reason="USAGE") from None
    if port:
        check_listen(f"{metrics_host}:{port}", "--metrics-listen")
    check_key_directory(args.keys)
    directory = KeyDirectory(args.keys)
    if not directory.exists():
        try:
            directory.init()
        except OSError as exc:
            raise VimarkError(
                f"cannot create the key directory {args.keys}: {exc.strerror or exc}", reason="KEY_STORE"
            ) from None
        logging.info("created key directory %s (private keys mode 0600)", args.keys)
    checkpoints = checkpoint_config(args)
    config = ServerConfig(
        checkpoints=checkpoints,
        db_url=args.db,
        keys_dir=args.keys,
        listen=args.listen,
        tls=TlsConfig(args.tls_cert, args.tls_key, args.client_ca, args.client_crl) if all(tls_files) else None,
        dev_role=None if args.role == "any" else Role(args.role),
        rate_limits=rates,
        metrics_port=port,
        metrics_host=metrics_host.strip("[]") or DEFAULT_METRICS_HOST,
        presentation_lifetime=dt.timedelta(seconds=args.presentation_lifetime),
        demo_vehicles=args.demo,
        shutdown_delay=args.shutdown_delay,
        terminal_keys_dir=args.terminal_keys,
        freeze_heap=True,  # this process only serves: its start-up objects need no collecting
    )
    if config.tls is None:
        logging.warning(
            "DEVELOPMENT MODE: plaintext gRPC on %s, loopback only, no client authentication; every caller is "
            "treated as role %r. Production serves TLS: --tls-cert, --tls-key, --client-ca (see `vimark pki`)",
            args.listen,
            args.role,
        )
    if args.workers > 1:
        from vimark.server.workers import run_workers

        return run_workers(config, args.workers, grace=10)
    server = VimarkServer(config)

    stop_once = threading.Lock()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        if not stop_once.acquire(blocking=False):
            return  # a second signal must not cut the first one's drain and audit flush short
        logging.info("signal %d: draining in-flight calls", signum)
        server.stop(grace=10)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    logging.info(
        "vimark listening on port %d (%s; metrics: %s; Verify: %s); health says NOT_SERVING until the index is loaded",
        server.port,
        "TLS, client certificates required" if config.tls else "plaintext",
        server.metrics_port or "off",
        hotpath.described(),
    )
    server.wait()
    return 0
