"""Kelpie's storage layer: an ordered, strictly serializable key-value store in FoundationDB's shape.

::

    db = await open_database("sqlite:///.kelpie/kelpie.db")
    async with db.transaction() as tr:
        value = await tr.get(b"key")
        tr.set(b"key", b"value")
    # committed here; a Conflict means a concurrent commit changed what this one read

    await transactional(db, body)  # retries retryable failures, bounded, with backoff

Backends: ``memory://`` (tests, simulation), ``sqlite:///path`` (embedded default),
``postgresql://...`` (several nodes share it). One contract suite runs against all three.
"""

from __future__ import annotations

from kelpie.storage.backend import Backend, CommitRequest, KeyRange, KeyValue, Snapshot
from kelpie.storage.blob import BlobStore
from kelpie.storage.database import Database, transactional
from kelpie.storage.memory import CommitFault, MemoryBackend, MemoryFaults, MemoryStore
from kelpie.storage.subspace import Subspace
from kelpie.storage.transaction import Transaction, TransactionState
from kelpie.storage.tuple import TupleItem, pack, range_of, strinc, unpack
from kelpie.storage.url import open_database, redact_url, sqlite_url_for_data_dir

__all__ = [
    "Backend",
    "BlobStore",
    "CommitFault",
    "CommitRequest",
    "Database",
    "KeyRange",
    "KeyValue",
    "MemoryBackend",
    "MemoryFaults",
    "MemoryStore",
    "Snapshot",
    "Subspace",
    "Transaction",
    "TransactionState",
    "TupleItem",
    "open_database",
    "pack",
    "range_of",
    "redact_url",
    "sqlite_url_for_data_dir",
    "strinc",
    "transactional",
    "unpack",
]
