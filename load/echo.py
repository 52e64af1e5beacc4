"""The framework's floor: a no-op gRPC server answering vimark's method paths with the request
bytes, with no (de)serialization and no work, so what is left is Python gRPC itself.

    python -m load.echo --listen 127.0.0.1:PORT [--workers N] [--kind sync|aio]

`sync` is grpc.server on a thread pool of the size vimark uses; `aio` is grpc.aio; `signature` is
the sync server whose handler also checks one real Ed25519 signature per call (libsodium, as
vimark does, cycling through 10,000 distinct signed messages): the framework plus the one piece of
work every Verify must do, so the ceiling for vimark's Verify in Python. With N > 1
workers the parent forks N processes before any gRPC object exists, each binding the port with
SO_REUSEPORT, as `vimark serve --workers N` does. Health checking answers SERVING.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from collections.abc import Callable

METHODS = ("Verify", "VerifyBatch", "LookupVehicleStatus", "Issue")
SERVICE = "vimark.v1.MarkService"
THREADS = 16  # vimark's ServerConfig.max_workers
SIGNED_MESSAGES = 10_000
OPTIONS = [("grpc.so_reuseport", 1), ("grpc.max_receive_message_length", 2 * 1024 * 1024)]


def _echo(request: bytes, context: object) -> bytes:
    return request


def _echo_after_a_signature() -> Callable[[bytes, object], bytes]:
    import itertools

    from nacl.signing import SigningKey

    from vimark.client.trust import verify_signature

    key = SigningKey.generate()
    public_key = bytes(key.verify_key)
    signed = [key.sign(i.to_bytes(4, "big") * 40) for i in range(SIGNED_MESSAGES)]  # 160-byte bodies, like a mark's
    pool = itertools.cycle([(public_key, s.signature, s.message) for s in signed])

    def handler(request: bytes, context: object) -> bytes:
        if not verify_signature(*next(pool)):
            raise AssertionError("a signature made here did not verify")
        return request

    return handler


async def _echo_async(request: bytes, context: object) -> bytes:
    return request


def _serve_sync(listen: str, handler: Callable[[bytes, object], bytes] = _echo) -> None:
    from concurrent import futures

    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=THREADS), options=OPTIONS)
    handlers = {m: grpc.unary_unary_rpc_method_handler(handler) for m in METHODS}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    if not server.add_insecure_port(listen):
        sys.exit(f"echo: cannot listen on {listen}")
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(0))
    server.wait_for_termination()


def _serve_aio(listen: str) -> None:
    import grpc
    from grpc_health.v1 import health, health_pb2_grpc

    async def main() -> None:
        server = grpc.aio.server(options=OPTIONS)
        handlers = {m: grpc.unary_unary_rpc_method_handler(_echo_async) for m in METHODS}
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
        if not server.add_insecure_port(listen):
            sys.exit(f"echo: cannot listen on {listen}")
        await server.start()
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await server.stop(0)

    asyncio.run(main())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m load.echo", description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, metavar="HOST:PORT")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--kind", choices=("sync", "aio", "signature"), default="sync")
    args = parser.parse_args(argv)
    serve = {
        "sync": _serve_sync,
        "aio": _serve_aio,
        "signature": lambda listen: _serve_sync(listen, _echo_after_a_signature()),
    }[args.kind]
    if args.workers <= 1:
        serve(args.listen)
        return
    children = []
    for _ in range(args.workers):  # fork before any gRPC object exists
        pid = os.fork()
        if pid == 0:
            serve(args.listen)
            os._exit(0)
        children.append(pid)

    def stop(*_: object) -> None:
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    for pid in children:
        os.waitpid(pid, 0)


if __name__ == "__main__":
    main()
