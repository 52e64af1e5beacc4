"""Locust scenarios: gRPC users that behave like vimark's real callers.

    python -m load.scenario [--duration 3m] [--users 60]      the documented headless run (starts servers)
    locust -f load/locustfile.py --host 127.0.0.1:PORT         against a server you run yourself

Users (weights): police terminals scan a mark and Verify it, and now and then look a plate up
(LookupVehicleStatus) when no QR is shown, with the think time of a checkpoint; the public app
Verifies a mark it was shown; partners send VerifyBatch of 50-256 marks; the registration system
Issues after a transfer or a change of particulars (a grant that carries the vehicle's validity
onto a new mark and supersedes the old one: a write); the owner-facing service Issues a
re-download (the vehicle's current mark handed back: no write). Both reasons are granted to any
vehicle within validity, so a scenario run has no refusals. Inspection stations are not simulated:
their reasons (inspection passed, exemption) are refused outside a vehicle's window. Every RPC is
reported by its name; a failure is reported by its gRPC status code (a verdict is an answer, not a
failure).

Environment (set by load/scenario.py): VIMARK_LOAD_DATASET (a built dataset directory),
VIMARK_LOAD_ISSUER_HOST (the server Issue goes to; default --host), VIMARK_LOAD_TLS (a `vimark pki`
directory: each user then presents its own client certificate, ROLE-ID.pem, and the server
decides the role from it), VIMARK_LOAD_CERTS_PER_ROLE.

gRPC under locust runs on gevent (grpc.experimental.gevent), as locust's own gRPC example does;
the benchmarks in load/bench/ use their own asyncio generator (load/loadgen.py) instead.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from pathlib import Path
from typing import Any

import grpc
import grpc.experimental.gevent as grpc_gevent
from locust import User, between, events, task
from locust.env import Environment

from vimark.v1 import certificate_pb2
from vimark.v1 import mark_service_pb2 as pb
from vimark.v1 import mark_service_pb2_grpc as pb_grpc

grpc_gevent.init_gevent()


class GrpcStatusError(Exception):
    """A failed call, named by its status code so locust groups failures by code."""

    def __init__(self, code: grpc.StatusCode) -> None:
        super().__init__(code.name)

    def __repr__(self) -> str:
        return f"gRPC {self.args[0]}"


class LocustInterceptor(grpc.UnaryUnaryClientInterceptor):  # type: ignore[misc]
    """Fires locust's request event for every unary call: name = RPC name, failure = status code."""

    def __init__(self, environment: Environment) -> None:
        self.env = environment

    def intercept_unary_unary(self, continuation: Any, details: Any, request: Any) -> Any:
        started = time.perf_counter()
        exception: Exception | None = None
        length = 0
        response = continuation(details, request)
        try:
            length = response.result().ByteSize()
        except grpc.RpcError as exc:
            exception = GrpcStatusError(exc.code())
        self.env.events.request.fire(
            request_type="grpc",
            name=details.method.rsplit("/", 1)[-1],
            response_time=(time.perf_counter() - started) * 1000,
            response_length=length,
            response=response,
            context=None,
            exception=exception,
        )
        return response


class _Data:
    """The dataset's marks and plates, read once per locust process."""

    def __init__(self) -> None:
        path = os.environ.get("VIMARK_LOAD_DATASET")
        if not path:
            raise RuntimeError("set VIMARK_LOAD_DATASET to a dataset directory (python -m load.dataset builds one)")
        data = json.loads((Path(path) / "dataset.json").read_text())
        self.marks: list[str] = [m[0] for m in data["marks"]]
        self.plates: list[tuple[str, str]] = [tuple(p) for p in data["plates"]]  # type: ignore[misc]
        self.issuable: list[tuple[str, str]] = [tuple(p) for p in data["issuable"]]  # type: ignore[misc]
        self.run = f"locust-{os.getpid()}-{int(time.time())}"
        self.issues = itertools.count()


_data: _Data | None = None
_cert_counters: dict[str, itertools.count[int]] = {}


def data() -> _Data:
    global _data
    if _data is None:
        _data = _Data()
    return _data


def _channel(host: str, role: str) -> grpc.Channel:
    tls = os.environ.get("VIMARK_LOAD_TLS")
    if not tls:  # development mode: the server's --role decides
        return grpc.insecure_channel(host)
    directory = Path(tls)
    per_role = max(1, len(list(directory.glob(f"{role}-{role}*.pem"))))
    n = next(_cert_counters.setdefault(role, itertools.count())) % per_role
    credentials = grpc.ssl_channel_credentials(
        root_certificates=(directory / "ca.pem").read_bytes(),
        private_key=(directory / f"{role}-{role}{n}.key").read_bytes(),
        certificate_chain=(directory / f"{role}-{role}{n}.pem").read_bytes(),
    )
    return grpc.secure_channel(host, credentials)


class VimarkUser(User):
    abstract = True
    role = "police"
    issuer_host = False

    def __init__(self, environment: Environment) -> None:
        super().__init__(environment)
        host = (os.environ.get("VIMARK_LOAD_ISSUER_HOST") if self.issuer_host else None) or self.host
        if not host:
            raise RuntimeError("give --host 127.0.0.1:PORT")
        self.channel = grpc.intercept_channel(_channel(host, self.role), LocustInterceptor(environment))
        self.stub = pb_grpc.MarkServiceStub(self.channel)
        self.rng = random.Random()

    def on_stop(self) -> None:
        self.channel.close()

    def call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=10)
        except grpc.RpcError:
            return None  # already reported by the interceptor


class PoliceTerminal(VimarkUser):
    """A handheld at a checkpoint: scan, Verify; sometimes no QR is shown and the plate is looked up."""

    weight = 6
    role = "police"
    wait_time = between(2, 6)

    @task(5)
    def scan(self) -> None:
        self.call(self.stub.Verify, pb.VerifyRequest(qr_text=self.rng.choice(data().marks)))

    @task(1)
    def plate(self) -> None:
        plate_type, plate_number = self.rng.choice(data().plates)
        self.call(
            self.stub.LookupVehicleStatus,
            pb.LookupVehicleStatusRequest(plate_type=plate_type, plate_number=plate_number),
        )


class PublicApp(VimarkUser):
    """Someone checking a car's mark (an accident, a rental) in the public app."""

    weight = 3
    role = "public"
    wait_time = between(5, 15)

    @task
    def verify(self) -> None:
        self.call(self.stub.Verify, pb.VerifyRequest(qr_text=self.rng.choice(data().marks)))


class Partner(VimarkUser):
    """An insurer's or used-car platform's backend checking its book in batches."""

    weight = 1
    role = "partner"
    wait_time = between(1, 5)

    @task
    def batch(self) -> None:
        marks = data().marks
        size = self.rng.randint(50, 256)
        start = self.rng.randrange(max(1, len(marks) - size))
        self.call(self.stub.VerifyBatch, pb.VerifyBatchRequest(qr_texts=marks[start : start + size]))


class _Issuing(VimarkUser):
    """A system that Issues marks for the dataset's issuable vehicles, for one of `reasons`."""

    abstract = True
    issuer_host = True
    reasons: tuple[int, ...] = ()

    def issue(self) -> None:
        d = data()
        plate_type, plate_number = self.rng.choice(d.issuable)
        self.call(
            self.stub.Issue,
            pb.IssueRequest(
                request_id=f"{d.run}-{next(d.issues)}",
                plate_type=plate_type,
                plate_number=plate_number,
                reason=self.rng.choice(self.reasons),  # type: ignore[arg-type]
            ),
        )


class RegistrationSystem(_Issuing):
    """The registration system after a transfer or a change: a new mark, the old one superseded."""

    weight = 1
    role = "registration"
    wait_time = between(3, 10)
    reasons = (certificate_pb2.ISSUE_REASON_TRANSFER, certificate_pb2.ISSUE_REASON_CHANGE)

    @task
    def grant(self) -> None:
        self.issue()


class OwnerService(_Issuing):
    """The owner-facing service downloading a vehicle's current mark again (no new mark)."""

    weight = 1
    role = "owner_service"
    wait_time = between(3, 10)
    reasons = (certificate_pb2.ISSUE_REASON_REDOWNLOAD,)

    @task
    def redownload(self) -> None:
        self.issue()


@events.init.add_listener
def _check(environment: Environment, **_: Any) -> None:
    data()  # fail at start, not in every user, when the dataset is missing
