"""A database handle over one backend, and the bounded retry loop for transactional bodies."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TypeVar

from kelpie import limits
from kelpie.env import Env
from kelpie.errors import DatabaseClosed, InvalidArgument, KelpieError, RetryLimitExceeded, shorten
from kelpie.storage.backend import Backend
from kelpie.storage.transaction import Transaction

__all__ = ["Database", "transactional"]

T = TypeVar("T")


class Database:
    """An open store. Create transactions with :meth:`transaction`; close with :meth:`close`."""

    def __init__(self, backend: Backend, env: Env, *, url: str) -> None:
        self._backend = backend
        self._env = env
        self._url = url
        self._closed = False

    @property
    def backend_name(self) -> str:
        """``memory``, ``sqlite`` or ``postgresql``."""
        return self._backend.name

    @property
    def url(self) -> str:
        """The URL this database was opened with, password removed."""
        return self._url

    @property
    def env(self) -> Env:
        return self._env

    @property
    def backend(self) -> Backend:
        return self._backend

    def transaction(self) -> Transaction:
        """A new transaction; use it as ``async with db.transaction() as tr:``.

        Raises:
            DatabaseClosed: the database has been closed.
        """
        if self._closed:
            raise DatabaseClosed(f"database {self._url} is closed")
        return Transaction(self._backend, self._env)

    async def close(self) -> None:
        """Wait for in-flight commits, then release every connection. Idempotent."""
        if not self._closed:
            self._closed = True
            await self._backend.close()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<Database {self._url}>"


async def transactional(
    db: Database,
    body: Callable[[Transaction], Awaitable[T]],
    *,
    attempts_limit: int = limits.TRANSACTION_ATTEMPTS_LIMIT,
) -> T:
    """Run ``body`` in a transaction and commit, retrying retryable failures with backoff.

    ``body`` may run more than once, so it must have no side effects outside its transaction.
    Backoff is exponential with full jitter, drawn from the database's injected environment.

    Raises:
        RetryLimitExceeded: every one of ``attempts_limit`` attempts failed with a retryable error.
        KelpieError: a non-retryable error from ``body`` or the commit, unchanged.
    """
    if type(attempts_limit) is not int or not 1 <= attempts_limit <= 1000:
        raise InvalidArgument(f"attempts_limit must be an int in [1, 1000], got {shorten(attempts_limit)}")
    env = db.env
    backoff_s = limits.RETRY_BACKOFF_S_INITIAL
    last_error: KelpieError | None = None
    for _attempt in range(attempts_limit):
        tr = db.transaction()
        try:
            result = await body(tr)
            await tr.commit()
            return result
        except KelpieError as error:
            if not error.retryable:
                raise
            last_error = error
        finally:
            await tr.cancel()
        await env.clock.sleep(env.rng.uniform(0, backoff_s))
        backoff_s = min(backoff_s * 2, limits.RETRY_BACKOFF_S_MAX)
    assert last_error is not None
    raise RetryLimitExceeded(attempts_limit, last_error)
