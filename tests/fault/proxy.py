"""A cuttable TCP proxy for fault tests: put it between the code and a server (PostgreSQL, Redis),
then `cut()` to make the server go away and `restore()` to bring it back, without touching the
server itself (other tests share it).

    with TcpProxy(("127.0.0.1", 5432)) as proxy:
        url = proxy.via("postgresql+psycopg://postgres@127.0.0.1:5432/test")
        ...
        proxy.cut()      # every open connection is reset, new ones are reset at once
        proxy.restore()  # new connections reach the server again

The listener stays bound while cut (so the port is never taken by someone else); a connection
accepted while cut is closed at once, which a client sees as "server closed the connection
unexpectedly", as when the server process dies. (A silent network, where packets vanish and
nothing answers, is not what this simulates.) Threads, no asyncio: the code under test
may run its own event loop.
"""

from __future__ import annotations

import socket
import struct
import threading
from contextlib import suppress
from types import TracebackType
from urllib.parse import urlsplit, urlunsplit

__all__ = ["TcpProxy"]

_CHUNK = 65536


class TcpProxy:
    """Forwards 127.0.0.1:`port` to `upstream` until `cut()`; `restore()` undoes it."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._open: set[socket.socket] = set()
        self._cut = False
        self._closed = False
        self._acceptor = threading.Thread(target=self._accept, name="tcp-proxy", daemon=True)
        self._acceptor.start()

    def via(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's (user, path and query kept)."""
        parts = urlsplit(url)
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{self.port}" if user else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    @property
    def connections(self) -> int:
        """Client connections now forwarded (each has its upstream twin)."""
        with self._lock:
            return len(self._open) // 2

    def cut(self) -> None:
        """Reset every forwarded connection and every new one until `restore()`."""
        with self._lock:
            self._cut = True
            doomed, self._open = self._open, set()
        for sock in doomed:
            _reset(sock)

    def restore(self) -> None:
        with self._lock:
            self._cut = False

    def close(self) -> None:
        self._closed = True
        self.cut()
        with suppress(OSError):
            self._listener.close()
        self._acceptor.join(5)

    def __enter__(self) -> TcpProxy:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.close()

    def _accept(self) -> None:
        self._listener.settimeout(0.2)  # wake up to notice close()
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._serve(client)

    def _serve(self, client: socket.socket) -> None:
        with self._lock:
            cut = self._cut
        if cut:
            _reset(client)
            return
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            _reset(client)
            return
        server.settimeout(None)
        with self._lock:
            self._open |= {client, server}
        for source, sink in ((client, server), (server, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(_CHUNK):
                sink.sendall(data)
        except OSError:
            pass
        # One side ended (or was reset by cut): end both, so neither end waits on a dead peer.
        with self._lock:
            self._open -= {source, sink}
        _reset(source)
        _reset(sink)


def _reset(sock: socket.socket) -> None:
    """Close with SO_LINGER 0: the peer gets a RST at once instead of an orderly FIN."""
    with suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with suppress(OSError):
        sock.close()
