"""Shared fixtures: key directories, databases (SQLite file; PostgreSQL where reachable),
a real vimark server on a loopback port, and a movable clock for time travel."""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from vimark.client.sdk import VimarkClient
from vimark.server.app import ServerConfig, VimarkServer
from vimark.server.keys import KeyDirectory
from vimark.v1 import registry_service_pb2 as rpb

pytest_plugins = ["tls_fixtures"]  # the TLS server and role clients (tests/tls_fixtures.py)
POSTGRES_ADMIN_URL = os.environ.get("VIMARK_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


class MovableClock:
    """A clock tests can move; every server component reads time through it."""

    def __init__(self, start: dt.datetime) -> None:
        self.now = start

    def __call__(self) -> dt.datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += dt.timedelta(**delta)


@pytest.fixture
def clock() -> MovableClock:
    # 2026-11-25 10:00 in China: the day these tests were written.
    return MovableClock(dt.datetime(2026, 11, 25, 2, 0, tzinfo=dt.UTC))


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    KeyDirectory(tmp_path / "keys").init()
    return tmp_path / "keys"


def _postgres_database() -> Iterator[str]:
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import OperationalError

    admin = create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    name = f"vimark_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except OperationalError as exc:
        admin.dispose()
        reason = f"PostgreSQL unreachable at {POSTGRES_ADMIN_URL}: {exc.orig}"
        if os.environ.get("VIMARK_REQUIRE_POSTGRES"):  # CI: the database is part of the test, not optional
            pytest.fail(reason)
        pytest.skip(reason)
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """Each test that takes db_url runs on a SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'vimark.db'}"
    else:
        yield from _postgres_database()


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'vimark.db'}"


def start_server(db_url: str, keys_dir: Path, clock: MovableClock, **overrides: object) -> VimarkServer:
    config = ServerConfig(db_url=db_url, keys_dir=keys_dir, listen="127.0.0.1:0", clock=clock, **overrides)  # type: ignore[arg-type]
    server = VimarkServer(config)
    server.start()
    server.wait_ready()
    return server


@pytest.fixture
def server(db_url: str, keys_dir: Path, clock: MovableClock) -> Iterator[VimarkServer]:
    s = start_server(db_url, keys_dir, clock)
    yield s
    s.stop(grace=1)


@pytest.fixture
def client(server: VimarkServer) -> Iterator[VimarkClient]:
    with VimarkClient(f"127.0.0.1:{server.port}", timeout=10) as c:
        yield c


def vehicle(
    plate_number: str = "闽C12345",
    plate_type: str = "02",
    *,
    vin: str = "LSVAB2BJ5KN000001",
    category: str = "small_passenger",
    registered_on: str = "2022-06-15",
    valid_until: str = "",
    status_codes: str = "A",
    seats: int = 5,
) -> rpb.Vehicle:
    return rpb.Vehicle(
        plate_number=plate_number,
        plate_type=plate_type,
        vin=vin,
        category=category,
        registered_on=registered_on,
        valid_until=valid_until,
        status_codes=status_codes,
        seats=seats,
    )
