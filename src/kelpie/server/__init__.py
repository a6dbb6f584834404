"""Kelpie's HTTP server: the FastAPI application and the uvicorn process that serves it.

::

    app = create_app(db, version=kelpie.__version__)  # an ASGI app over an open database
    await serve(host="127.0.0.1", port=9000, storage_url="sqlite:///.kelpie/kelpie.db")
"""

from __future__ import annotations

from kelpie.server.app import create_app
from kelpie.server.serve import serve

__all__ = ["create_app", "serve"]
