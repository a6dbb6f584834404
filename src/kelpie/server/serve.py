"""Running the server: open the store, serve until SIGTERM or SIGINT, shut down gracefully, close."""

from __future__ import annotations

import signal
import socket
from types import FrameType

import uvicorn

from kelpie import __version__, limits
from kelpie.server.app import create_app
from kelpie.storage import open_database

__all__ = ["serve"]

READY_LINE_MARKER = "serving on"


class _Server(uvicorn.Server):
    """uvicorn's server, announcing on stdout the moment it accepts connections."""

    def __init__(self, config: uvicorn.Config, *, storage_url: str) -> None:
        super().__init__(config)
        self._storage_url = storage_url

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if not self.started:
            return
        host, port = self._bound_address()
        print(
            f"Kelpie {__version__} {READY_LINE_MARKER} http://{host}:{port} (storage: {self._storage_url})",
            flush=True,
        )

    def _bound_address(self) -> tuple[str, int]:
        # The real port, not the configured one, so that port 0 reports what the OS chose.
        for server in self.servers:
            for bound in server.sockets:
                address = bound.getsockname()
                if isinstance(address, tuple):
                    return self.config.host, int(address[1])
        return self.config.host, self.config.port


def _ignore_reraised_signal(signum: int, frame: FrameType | None) -> None:
    """Absorb the signal uvicorn re-raises after its graceful shutdown.

    uvicorn restores the previous handler and raises the signal again once it has stopped, so that
    the default action (die by SIGTERM, KeyboardInterrupt on SIGINT) follows. The shutdown has
    already happened by then; the database still has to be closed, and the process should exit 0.
    """


async def serve(*, host: str, port: int, storage_url: str, log_level: str = "info") -> None:
    """Serve Kelpie on ``host:port`` over the store at ``storage_url`` until SIGTERM or SIGINT.

    Prints one line containing ``serving on`` to stdout once connections are accepted. Must run in
    the main thread (it installs signal handlers). If the server cannot start (the port is taken),
    uvicorn logs why and raises ``SystemExit(1)``; the database is closed either way.

    Raises:
        UnsupportedStorageURL: ``storage_url`` is not a URL Kelpie can open.
        StorageUnavailable: the store cannot be reached or created.
        IncompatibleFormat: the store was written by a newer format version.
    """
    db = await open_database(storage_url)
    try:
        app = create_app(db, version=__version__)
        config = uvicorn.Config(
            app,
            host=host,
            port=port,
            lifespan="on",
            log_level=log_level,
            timeout_graceful_shutdown=int(limits.SERVER_SHUTDOWN_GRACE_S),
        )
        server = _Server(config, storage_url=db.url)
        handled_signals = (signal.SIGINT, signal.SIGTERM)
        previous_handlers = {sig: signal.signal(sig, _ignore_reraised_signal) for sig in handled_signals}
        try:
            await server.serve()
        finally:
            for sig, handler in previous_handlers.items():
                signal.signal(sig, handler)
    finally:
        await db.close()
