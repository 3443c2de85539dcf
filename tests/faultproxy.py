"""A small TCP proxy that puts database faults between an app and a real server.

Pure Python, threads, loopback only, bounded (at most ``max_connections`` at once, one
daemon thread each, every wait a short poll so ``close()`` ends everything promptly). It
forwards bytes unchanged until told to misbehave:

- ``cut()``: close every open connection now (a server restart, a failover, a NAT that
  forgot the flow); new connections are accepted as usual.
- ``refuse()``: stop listening, so new connections are refused, and cut the open ones (the
  server is down). ``restore()`` listens again on the same port.
- ``stall()``: stop moving bytes in both directions, on open and new connections alike (a
  frozen server or a partitioned network: nothing is refused, nothing answers).
  ``restore()`` lets the held bytes through.

The benchmark ``benchmarks/load_and_fault.py`` drives the same class from another process.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import threading
from typing import Self

LOOPBACK = "127.0.0.1"


class FaultProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``; see the module docstring for faults."""

    def __init__(self, target_host: str, target_port: int, *, port: int = 0,
                 max_connections: int = 256) -> None:
        if target_host not in (LOOPBACK, "localhost", "::1"):
            raise ValueError("the fault proxy forwards to loopback only")
        self.target = (target_host, target_port)
        self.max_connections = max_connections
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._stalled = threading.Event()
        self._closing = threading.Event()
        self._listener: socket.socket | None = None
        self._acceptor: threading.Thread | None = None
        self.port = port
        self.accepted = 0
        self._listen()

    # -- faults ------------------------------------------------------------------------

    def cut(self) -> None:
        """Close every open connection (both ends)."""
        with self._lock:
            pairs, self._pairs = list(self._pairs), set()
        for pair in pairs:
            for sock in pair:
                _close(sock)

    def refuse(self) -> None:
        """Refuse new connections and cut the open ones."""
        self._stop_listening()
        self.cut()

    def stall(self) -> None:
        """Hold every byte, on open and new connections, until :meth:`restore`."""
        self._stalled.set()

    def restore(self) -> None:
        """Back to forwarding: listen again if refusing, release stalled bytes."""
        self._stalled.clear()
        if self._listener is None:
            self._listen()

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    # -- life --------------------------------------------------------------------------

    def close(self) -> None:
        self._closing.set()
        self._stop_listening()
        self.cut()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------

    def _listen(self) -> None:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((LOOPBACK, self.port))
        listener.listen(64)
        listener.settimeout(0.1)
        self.port = listener.getsockname()[1]
        self._listener = listener
        self._acceptor = threading.Thread(target=self._accept, args=(listener,), daemon=True,
                                          name=f"faultproxy-accept-{self.port}")
        self._acceptor.start()

    def _stop_listening(self) -> None:
        listener, self._listener = self._listener, None
        if listener is not None:
            _close(listener)
        acceptor, self._acceptor = self._acceptor, None
        if acceptor is not None and acceptor is not threading.current_thread():
            acceptor.join(2)

    def _accept(self, listener: socket.socket) -> None:
        while not self._closing.is_set() and self._listener is listener:
            try:
                client, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return  # closed: refusing or shutting down
            with self._lock:
                full = len(self._pairs) >= self.max_connections
            if full:
                _close(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _close(client)
                continue
            self.accepted += 1
            pair = (client, upstream)
            with self._lock:
                self._pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True,
                             name=f"faultproxy-pump-{self.port}").start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        peer = {client: upstream, upstream: client}
        peer_of_fd = {client.fileno(): client, upstream.fileno(): upstream}
        selector = selectors.DefaultSelector()  # select() refuses descriptors past 1024
        try:
            selector.register(client, selectors.EVENT_READ)
            selector.register(upstream, selectors.EVENT_READ)
            while not self._closing.is_set():
                with self._lock:
                    if pair not in self._pairs:
                        return  # cut
                if self._stalled.is_set():
                    self._closing.wait(0.05)
                    continue
                for key, _ in selector.select(0.1):
                    sock = peer_of_fd[key.fd]
                    if self._stalled.is_set():
                        break  # a stall began: hold this data too
                    data = sock.recv(65536)
                    if not data:
                        return
                    peer[sock].sendall(data)
        except (OSError, ValueError):
            return  # a socket closed under us (cut)
        finally:
            selector.close()
            with self._lock:
                self._pairs.discard(pair)
            _close(client)
            _close(upstream)


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()
