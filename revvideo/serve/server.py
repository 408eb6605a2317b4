"""Running the service: a listening socket bound before uvicorn starts (so that a port in use
is one clear line), the uvicorn server, and the same server in a thread for tests and the
benchmark."""

from __future__ import annotations

import socket
import threading
import time

import uvicorn
from starlette.types import ASGIApp

from revvideo.utils.errors import UserError

# Seconds that Ctrl-C leaves the requests under way to finish.
GRACEFUL_SHUTDOWN_S = 5


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on `host`:`port` (0: a free port); UserError (one line) when the
    address cannot be had (a port in use, an unknown host)."""
    sock = None
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        # proto IPPROTO_TCP, as asyncio needs to set TCP_NODELAY on the connections (with proto
        # 0, Nagle's algorithm and delayed ACKs hold each answer on a kept-alive one 40 ms).
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen()
    except OSError as err:
        if sock is not None:
            sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {err.strerror or err}") from None
    return sock


def uvicorn_server(app: ASGIApp) -> uvicorn.Server:
    """uvicorn serving `app` on the sockets given to its `run`, its access log off (the app
    logs each request itself) and its own logging left to the caller's configuration."""
    config = uvicorn.Config(
        app,
        lifespan="on",
        access_log=False,
        log_config=None,
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return uvicorn.Server(config)


class BackgroundServer:
    """`app` served on a free port of `host` by uvicorn in a thread while inside `with`; `url`
    is its address (http://host:port)."""

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1") -> None:
        self.app = app
        self.host = host
        self.url = ""

    def __enter__(self) -> BackgroundServer:
        sock = listening_socket(self.host, 0)
        self.url = f"http://{self.host}:{sock.getsockname()[1]}"
        self._server = uvicorn_server(self.app)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, name="uvicorn", daemon=True
        )
        self._thread.start()
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(f"the server on {self.url} stopped while starting")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.should_exit = True
        self._thread.join()
