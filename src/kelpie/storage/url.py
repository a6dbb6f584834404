"""Opening a store from a URL: ``memory://``, ``sqlite:///path``, ``postgresql://...``."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

from kelpie.env import Env, real_env
from kelpie.errors import InvalidArgument, UnsupportedStorageURL
from kelpie.storage.database import Database
from kelpie.storage.memory import MemoryBackend, MemoryStore

__all__ = ["open_database", "redact_url", "sqlite_url_for_data_dir"]

_SQLITE_SYNCHRONOUS_MODES = ("FULL", "NORMAL", "EXTRA")


def redact_url(url: str) -> str:
    """``url`` with any password replaced by ``***``, for logs and error messages."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def sqlite_url_for_data_dir(data_dir: Path) -> str:
    """The default store inside a data directory: ``sqlite:///<data_dir>/kelpie.db``."""
    return f"sqlite:///{(data_dir / 'kelpie.db').as_posix()}"


def _sqlite_path(url: str, parts: urllib.parse.SplitResult) -> Path:
    if parts.netloc not in ("", "localhost"):
        raise UnsupportedStorageURL(url, f"SQLite URLs name a file, not a host ({parts.netloc!r})")
    raw_path = urllib.parse.unquote(parts.path)
    if not raw_path or raw_path == "/":
        raise UnsupportedStorageURL(url, "the SQLite URL has no file path")
    # sqlite:///relative.db and sqlite:////absolute.db, as SQLAlchemy spells them.
    return Path(raw_path[1:])


async def open_database(url: str, *, env: Env | None = None) -> Database:
    """Open the store at ``url``, creating it if needed.

    - ``memory://``: a fresh in-process store (tests and simulation).
    - ``sqlite:///path/to/file.db`` (``?synchronous=NORMAL`` trades power-loss durability for speed).
    - ``postgresql://user:password@host:port/dbname``.

    Raises:
        UnsupportedStorageURL: an unknown scheme or a malformed URL.
        StorageUnavailable: the store cannot be reached or created.
        IncompatibleFormat: the store was written by a newer format version.
    """
    if not isinstance(url, str):
        raise InvalidArgument(f"storage URL must be a string, got {type(url).__name__} {url!r}")
    env = env or real_env()
    parts = urllib.parse.urlsplit(url)
    scheme = parts.scheme.lower()
    display_url = redact_url(url)
    if scheme == "memory":
        if parts.netloc or parts.path not in ("", "/"):
            raise UnsupportedStorageURL(url, "memory:// takes no host or path")
        return Database(MemoryBackend(MemoryStore(env)), env, url="memory://")
    if scheme == "sqlite":
        from kelpie.storage.sqlite import open_sqlite  # imported lazily: memory users need none of it

        path = _sqlite_path(url, parts)
        query = urllib.parse.parse_qs(parts.query)
        unknown = set(query) - {"synchronous"}
        if unknown:
            raise UnsupportedStorageURL(
                url, f"unknown SQLite option(s) {sorted(unknown)}; known: ['synchronous']"
            )
        synchronous = query.get("synchronous", ["FULL"])[-1].upper()
        if synchronous not in _SQLITE_SYNCHRONOUS_MODES:
            raise UnsupportedStorageURL(
                url, f"synchronous={synchronous!r} is not one of {list(_SQLITE_SYNCHRONOUS_MODES)}"
            )
        backend = await open_sqlite(path, env=env, synchronous=synchronous)
        return Database(backend, env, url=f"sqlite:///{path.as_posix()}")
    if scheme in ("postgresql", "postgres"):
        from kelpie.storage.postgres import open_postgres

        if not parts.hostname and "host=" not in parts.query:
            raise UnsupportedStorageURL(url, "the PostgreSQL URL names no host")
        postgres_backend = await open_postgres(url, display_url=display_url, env=env)
        return Database(postgres_backend, env, url=display_url)
    raise UnsupportedStorageURL(url, f"unknown scheme {parts.scheme!r}")
