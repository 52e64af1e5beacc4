"""`vimark serve --workers N`: N server processes on one port, so every core verifies.

The gRPC-Python pattern for multi-core serving: the parent reserves the port with SO_REUSEPORT,
forks the workers before any gRPC object exists (gRPC's threads do not survive a fork), and each
worker builds its own server on the port with `grpc.so_reuseport` set; the kernel spreads new
connections over them. Each worker loads its own index and tails the change log, so a write made
through one worker is seen by the others within a poll interval.

Health: each worker says SERVING only while every worker has loaded its index (a shared flag per
worker); a worker that dies is started again and the others say NOT_SERVING until it is ready.
SIGTERM (or SIGINT) to the parent is passed to every worker; each drains its calls and exits.
"""

from __future__ import annotations

import ctypes
import dataclasses
import logging
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from contextlib import closing
from multiprocessing.sharedctypes import Synchronized
from types import FrameType
from typing import Any

from vimark.client.errors import VimarkError

log = logging.getLogger("vimark.server")
_fork = multiprocessing.get_context("fork")
_PR_SET_PDEATHSIG = 1
_QUICK, _GIVE_UP_AFTER = 10, 3  # a worker that dies within 10 s of starting, 3 times running, is broken


class SharedReadiness:
    """One flag per worker in shared memory."""

    def __init__(self, flags: Any, slot: int) -> None:
        self.flags = flags
        self.slot = slot

    def mark_ready(self) -> None:
        self.flags[self.slot] = 1

    def all_ready(self) -> bool:
        return all(self.flags[:])


def reserve_port(listen: str) -> tuple[socket.socket, int]:
    """Bind (without listening) with SO_REUSEPORT, so the port is ours and the workers can share it."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if int(port):
        # SO_REUSEPORT would let a second `vimark serve` on a taken port share its traffic: make
        # sure nobody holds the port first.
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            try:
                probe.bind((host, int(port)))
            except OSError as exc:
                raise VimarkError(f"cannot listen on {listen}: {exc}", reason="LISTEN_FAILED") from None
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise VimarkError(f"cannot listen on {listen}: {exc}", reason="LISTEN_FAILED") from None
    return sock, sock.getsockname()[1]


def run_workers(config: Any, workers: int, grace: float = 10.0) -> int:
    """Serve `config` (a ServerConfig) with `workers` processes until SIGTERM; returns the exit code.

    The caller must not have created any gRPC object in this process."""
    from vimark.server.app import prepare_store

    prepare_store(config)  # seed the demo once, before the workers start
    config = dataclasses.replace(config, demo_vehicles=0, reuse_port=True)
    sock, port = reserve_port(config.listen)
    host = config.listen.rpartition(":")[0]
    config = dataclasses.replace(config, listen=f"{host}:{port}")
    flags = _fork.Array("b", workers, lock=False)
    stopping = _fork.Value("b", 0, lock=False)
    processes: dict[int, multiprocessing.process.BaseProcess] = {}
    started = [0.0] * workers
    quick_deaths = [0] * workers
    exit_code = 0

    def start(slot: int) -> None:
        flags[slot] = 0
        metrics_port = config.metrics_port + slot if config.metrics_port else 0
        worker_config = dataclasses.replace(config, metrics_port=metrics_port)
        process = _fork.Process(
            target=_worker,
            args=(worker_config, slot, flags, stopping, grace, os.getpid()),
            name=f"vimark-worker-{slot}",
        )
        process.start()
        processes[slot] = process
        started[slot] = time.monotonic()

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("signal %d: draining %d workers", signum, workers)
        stopping.value = 1
        for process in processes.values():
            if process.pid and process.is_alive():
                os.kill(process.pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    with closing(sock):
        for slot in range(workers):
            start(slot)
        log.info("vimark: %d workers on port %d (SO_REUSEPORT)", workers, port)
        while processes:
            time.sleep(0.1)
            for slot, process in list(processes.items()):
                if process.is_alive():
                    continue
                del processes[slot]
                flags[slot] = 0
                if stopping.value:
                    continue
                quick_deaths[slot] = quick_deaths[slot] + 1 if time.monotonic() - started[slot] < _QUICK else 0
                if quick_deaths[slot] >= _GIVE_UP_AFTER:
                    # It cannot start (bad TLS files, a broken CRL, ...): stop all rather than loop.
                    log.error(
                        "worker %d exited %d times within %d s of starting; stopping", slot, _GIVE_UP_AFTER, _QUICK
                    )
                    exit_code = 1
                    on_signal(signal.SIGTERM, None)
                    continue
                log.error("worker %d exited with %s; starting it again", slot, process.exitcode)
                start(slot)
    return exit_code


def _worker(config: Any, slot: int, flags: Any, stopping: Synchronized[int], grace: float, parent: int) -> None:
    from vimark.server import hotpath
    from vimark.server.app import VimarkServer

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent turns ^C into one SIGTERM per worker
    server = VimarkServer(config, SharedReadiness(flags, slot))
    stop_once = threading.Lock()

    def on_term(_signum: int, _frame: FrameType | None) -> None:
        if not stop_once.acquire(blocking=False):
            return  # a second SIGTERM (the parent's and the death signal, or systemd's) must not cut the drain
        flags[slot] = 0
        server.stop(grace=grace)
        sys.exit(0)

    signal.signal(signal.SIGTERM, on_term)
    _term_when_parent_dies(parent)
    if stopping.value:
        return
    server.start()
    log.info(
        "worker %d (pid %d) listening on port %d (Verify: %s)",
        slot,
        os.getpid(),
        server.port,
        hotpath.described(),
    )
    server.wait()


def _term_when_parent_dies(parent: int) -> None:
    """A worker whose parent was killed (SIGKILL gives it no chance to pass SIGTERM on) must not
    keep serving the port alone: ask Linux to send it SIGTERM then (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
    except (OSError, AttributeError):  # not Linux: the parent's SIGTERM handler is all there is
        return
    if os.getppid() != parent:  # the parent died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)
