"""vimark health: is the server SERVING (index loaded, not draining)? Exit 0 if so, 1 if not."""

from __future__ import annotations

import argparse

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from vimark.client.cli.common import add_client_flags, connect, dump
from vimark.client.errors import Unavailable


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = commands.add_parser("health", help="ask the server whether it is SERVING (gRPC health checking)")
    p.add_argument("--service", default="", help="one service, e.g. vimark.v1.MarkService (default: the server)")
    add_client_flags(p)
    p.set_defaults(func=health)


def health(args: argparse.Namespace) -> int:
    with connect(args) as client:
        stub = health_pb2_grpc.HealthStub(client.channel)
        try:
            answer = stub.Check(health_pb2.HealthCheckRequest(service=args.service), timeout=args.timeout)
        except grpc.RpcError as exc:
            code = exc.code() if isinstance(exc, grpc.Call) else None
            details = exc.details() if isinstance(exc, grpc.Call) else str(exc)
            why = f"{client.target} did not answer a health check ({code}: {details})"
            raise Unavailable(why + client.connection_hint(why)) from None
    status = health_pb2.HealthCheckResponse.ServingStatus.Name(answer.status)
    print(dump({"status": status, "server": client.target}) if args.json else f"{client.target}: {status}")
    return 0 if answer.status == health_pb2.HealthCheckResponse.SERVING else 1
