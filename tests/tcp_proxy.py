"""A TCP forwarder a test controls, to put a network between vimark and its database.

    with TcpProxy("127.0.0.1", 5432) as proxy:      # listens on 127.0.0.1:proxy.port
        ...                                          # traffic flows
        proxy.cut()                                  # existing connections die; new ones hang
        proxy.cut(mode="refuse")                     # ...or new ones are refused at once
        proxy.restore()                              # new connections flow again

`cut` models the two ways a database disappears: "blackhole" (a partition or a dead host: the
connection is accepted but nothing ever answers, so only a client timeout ends the wait) and
"refuse" (the database process is gone: connection refused). Either way every open connection
is reset, as a restarted database or a failed-over address would do.
"""

from __future__ import annotations

import socket
import struct
import threading
from typing import Literal

Mode = Literal["blackhole", "refuse"]


def _reset(sock: socket.socket) -> None:
    """Drop a connection at once: the peer learns it is gone, and our pump thread blocked in
    recv() on it wakes up (close() alone would not wake it)."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    sock.close()


class TcpProxy:
    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._sockets: set[socket.socket] = set()  # every open accepted or upstream socket
        self._state: Literal["open", "blackhole", "refuse"] = "open"
        self._closed = False
        self._listener: socket.socket | None = None
        self.port = 0
        self.accepted = 0  # connections accepted, forwarded or not
        self._listen()

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- control -------------------------------------------------------------------------------
    def cut(self, mode: Mode = "blackhole") -> None:
        with self._lock:
            self._state = mode
            if mode == "refuse" and self._listener is not None:
                _reset(self._listener)  # nobody listens on the port: connects are refused
                self._listener = None
            doomed, self._sockets = self._sockets, set()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._state = "open"
            doomed, self._sockets = self._sockets, set()  # blackholed clients gave up long ago
        for sock in doomed:
            _reset(sock)
        if self._listener is None:
            self._listen()

    def close(self) -> None:
        self._closed = True
        self.cut("refuse")

    # -- forwarding ----------------------------------------------------------------------------
    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))  # the same port after a refuse-cut
        listener.listen(64)
        self.port = listener.getsockname()[1]
        with self._lock:
            self._listener = listener
        threading.Thread(target=self._accept, args=(listener,), name="tcp-proxy-accept", daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:  # the listener was closed
                return
            with self._lock:
                self.accepted += 1
                state = self._state
                self._sockets.add(client)
            if state == "open":
                threading.Thread(target=self._connect, args=(client,), name="tcp-proxy-conn", daemon=True).start()
            # blackhole: held open, never read, never answered; reset at restore()

    def _connect(self, client: socket.socket) -> None:
        try:
            upstream = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            self._drop(client)
            return
        upstream.settimeout(None)
        with self._lock:
            if client not in self._sockets:  # cut while connecting
                _reset(upstream)
                return
            self._sockets.add(upstream)
        for src, dst in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(src, dst), name="tcp-proxy-pump", daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        self._drop(src, dst)

    def _drop(self, *socks: socket.socket) -> None:
        with self._lock:
            owned = [s for s in socks if s in self._sockets]
            self._sockets.difference_update(owned)
        for sock in owned:
            _reset(sock)
