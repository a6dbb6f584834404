"""The ASGI application: routes, and the mapping from Kelpie's errors to HTTP responses.

Errors leave the server as ``{"detail": ...}`` bodies, as Letta's API does: bad input is a 400
(or FastAPI's 422 for a request that fails validation), a store that cannot be reached is a 503,
and any other failure is a 500. These handlers are the only catch-all handlers in Kelpie.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from kelpie.errors import InvalidArgument, KelpieError, StorageUnavailable
from kelpie.storage import Database

__all__ = ["create_app"]


def create_app(db: Database, *, version: str) -> FastAPI:
    """The Kelpie application over ``db``, which the caller opens and closes.

    ``db`` is kept on ``app.state.db`` for the routes; ``version`` is reported by the health check.
    """
    app = FastAPI(title="Kelpie", version=version, redirect_slashes=False)
    app.state.db = db
    app.state.version = version

    # Both spellings answer directly: Letta's clients use the trailing slash, people often don't.
    @app.get("/v1/health/", include_in_schema=False)
    @app.get("/v1/health")
    async def health() -> dict[str, str]:
        return {"status": "ok", "version": version}

    app.add_exception_handler(KelpieError, _kelpie_error_response)
    app.add_exception_handler(Exception, _unexpected_error_response)
    return app


async def _kelpie_error_response(request: Request, error: Exception) -> JSONResponse:
    if isinstance(error, InvalidArgument):
        status_code = 400
    elif isinstance(error, StorageUnavailable):
        status_code = 503
    else:
        status_code = 500
    return JSONResponse({"detail": str(error)}, status_code=status_code)


async def _unexpected_error_response(request: Request, error: Exception) -> JSONResponse:
    # Starlette logs the exception and re-raises it after sending this; the body says nothing more
    # than that, so internals never reach a client.
    return JSONResponse({"detail": "Internal Server Error"}, status_code=500)
