"""A TCP proxy on 127.0.0.1 that a test can take down: the outside world failing, with the code
under test running as it is.

It stands in front of any loopback service (the live test server for the SDK's tests, PostgreSQL
and Redis for tests/faults/), so "stopping" a service shared by everyone on the machine is closing
this proxy, never touching the service itself.

- ``down()``: the port is closed (new connections are refused) and every open connection is cut,
  as when the service stops or restarts;
- ``up()``: listens on the same port again, as when it comes back;
- ``cut()``: drops the open connections only (a connection reset mid-stream);
- ``hold()``: cuts the open connections, then accepts new ones and never answers them (a host
  gone from the network, a server wedged): what a client without a timeout waits on for ever.

The client speaks first in every protocol it fronts (HTTP, PostgreSQL, Redis): a connection is
passed on once its first bytes arrive. Subclasses may refuse a connection by its first bytes (``refuses``) or cut one when a chunk
passes (``cuts``); the SDK's gate refuses its release streams that way.
"""

from __future__ import annotations

import contextlib
import socket
import threading

CONNECT_TIMEOUT_SECONDS = 5.0


class TcpProxy:
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self.connections = 0  # accepted and passed on, over the proxy's life
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._stop = threading.Event()
        self._holding = False
        self.up()

    @property
    def address(self) -> tuple[str, int]:
        return ("127.0.0.1", self.port)

    def up(self) -> None:
        if self._holding:  # the held connections are reset; new ones pass again
            self._holding = False
            self.cut()
        if self._listener is not None:
            return
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", self.port))
        listener.listen(64)
        listener.settimeout(0.05)  # so the accept loop notices down() quickly
        self.port = listener.getsockname()[1]
        self._listener, self._stop = listener, threading.Event()
        threading.Thread(target=self._accept, args=(listener, self._stop), daemon=True).start()

    def down(self) -> None:
        # Under the lock: a connection accepted just before is either cut here or refused by
        # _serve, never left open.
        with self._lock:
            self._stop.set()
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self.cut()

    def hold(self) -> None:
        self._holding = True
        self.cut()

    def cut(self) -> None:
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    # -- what a subclass may change ---------------------------------------------------------

    def refuses(self, first: bytes) -> bool:
        """Whether to close a new connection, given the first bytes its client sent."""
        return False

    def cuts(self, data: bytes) -> bool:
        """Whether to cut a connection as ``data`` passes through it."""
        return False

    def accepted(self, first: bytes) -> None:
        """A connection was let through (for a subclass's own counts)."""

    # -- the pumps --------------------------------------------------------------------------

    def _accept(self, listener: socket.socket, stop: threading.Event) -> None:
        with contextlib.suppress(OSError), listener:
            while not stop.is_set():
                try:
                    client, _ = listener.accept()
                except TimeoutError:
                    continue
                except OSError:
                    return
                client.settimeout(None)
                threading.Thread(target=self._serve, args=(client, stop), daemon=True).start()

    def _serve(self, client: socket.socket, stop: threading.Event) -> None:
        if self._holding:
            with self._lock:
                self._open.add(client)  # silent until up() or down() cuts it
            return
        try:
            first = client.recv(65536)
            if not first or self.refuses(first):
                client.close()
                return
            upstream = socket.create_connection(self.target, timeout=CONNECT_TIMEOUT_SECONDS)
            upstream.settimeout(None)
        except OSError:
            client.close()
            return
        with self._lock:
            if stop.is_set():  # the proxy went down meanwhile
                client.close()
                upstream.close()
                return
            self._open |= {client, upstream}
            self.connections += 1
        self.accepted(first)
        threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()
        with contextlib.suppress(OSError):
            upstream.sendall(first)
            self._pump(client, upstream)

    def _pump(self, source: socket.socket, target: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                if self.cuts(data):
                    break
                target.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {source, target}
            for sock in (source, target):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                sock.close()
