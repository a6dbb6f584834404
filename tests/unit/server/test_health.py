"""The health check, unknown paths, and how Kelpie's errors become HTTP responses."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from fastapi import FastAPI

import kelpie
from kelpie.errors import CorruptData, StorageUnavailable, UnsupportedStorageURL
from kelpie.server import create_app
from kelpie.storage import Database, open_database

ASGI_BASE_URL = "http://kelpie.test"  # requests go to the app in process, never to a network


@pytest.fixture
async def db() -> AsyncIterator[Database]:
    database = await open_database("memory://")
    try:
        yield database
    finally:
        await database.close()


@pytest.fixture
def app(db: Database) -> FastAPI:
    return create_app(db, version=kelpie.__version__)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE_URL) as http:
        yield http


def test_app_keeps_the_database_on_its_state(app: FastAPI, db: Database) -> None:
    assert app.state.db is db


@pytest.mark.parametrize("path", ["/v1/health/", "/v1/health"])
async def test_health_answers_on_both_spellings_without_redirect(
    client: httpx.AsyncClient, path: str
) -> None:
    response = await client.get(path)
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "version": kelpie.__version__}


async def test_health_reports_the_version_it_was_given(db: Database) -> None:
    transport = httpx.ASGITransport(app=create_app(db, version="9.9.9-test"))
    async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE_URL) as http:
        response = await http.get("/v1/health")
    assert response.json()["version"] == "9.9.9-test"


async def test_unknown_path_is_404_with_detail(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/no-such-thing")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not Found"}


@pytest.mark.parametrize(
    ("error", "status_code"),
    [
        (UnsupportedStorageURL("bogus://x", "unknown scheme 'bogus'"), 400),
        (StorageUnavailable("the store is down"), 503),
        (CorruptData("checksum mismatch"), 500),
    ],
)
async def test_kelpie_errors_become_detail_responses(
    app: FastAPI, client: httpx.AsyncClient, error: Exception, status_code: int
) -> None:
    async def fail() -> None:
        raise error

    app.add_api_route("/v1/test-failure", fail)
    response = await client.get("/v1/test-failure")
    assert response.status_code == status_code
    assert response.json() == {"detail": str(error)}


async def test_unexpected_errors_are_500_without_internals(app: FastAPI) -> None:
    async def fail() -> None:
        raise RuntimeError("secret internals")

    app.add_api_route("/v1/test-failure", fail)
    # The edge re-raises unexpected errors after answering so that they are logged; let the
    # transport hand back the response instead of the exception.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url=ASGI_BASE_URL) as http:
        response = await http.get("/v1/test-failure")
    assert response.status_code == 500
    assert response.json() == {"detail": "Internal Server Error"}


async def test_request_validation_errors_are_422_with_detail_list(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    async def echo(limit: int) -> dict[str, int]:
        return {"limit": limit}

    app.add_api_route("/v1/test-validation", echo)
    response = await client.get("/v1/test-validation", params={"limit": "many"})
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list)
    assert detail[0]["loc"] == ["query", "limit"]
    assert detail[0]["input"] == "many"
