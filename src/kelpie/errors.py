"""Kelpie's error hierarchy: one root, typed leaves that show the offending value.

Every error Kelpie raises on purpose derives from :class:`KelpieError`. Bad input raises a
subclass of :class:`InvalidArgument`, whose message names the value and what was expected.
Errors a caller may retry carry ``retryable = True``.

::

    KelpieError
    ├── InvalidArgument                 bad input from a caller (HTTP 4xx at the server edge)
    │   ├── InvalidKey                  a key that is not bytes
    │   ├── KeyTooLarge                 key longer than the key limit
    │   ├── ValueTooLarge               value longer than the value limit
    │   ├── InvalidTuple                a value the tuple encoding cannot pack, or bytes it cannot unpack
    │   ├── UnsupportedStorageURL       a storage URL with an unknown scheme or shape
    │   ├── InvalidActorId              an actor id that is not namespace/type/key
    │   ├── UnknownActorType            no actor class registered under that type name
    │   ├── NoHandler                   the actor has no handler for that message's type
    │   └── NotEncodable                state or a reply the actor codec cannot encode
    ├── StorageError                    the storage layer could not do what was asked
    │   ├── TransactionError            a problem with one transaction
    │   │   ├── Conflict                (retryable) a read was overwritten by a concurrent commit
    │   │   ├── TransactionTooOld       (retryable) the read version fell out of the conflict window
    │   │   ├── TransactionTimedOut     (retryable) the transaction outlived the transaction time limit
    │   │   ├── TransactionTooLarge     the transaction wrote more than the transaction size limit
    │   │   ├── TransactionClosed       an operation on a committed, failed or cancelled transaction
    │   │   ├── CommitFailed            (retryable) the commit did not happen and will not happen
    │   │   └── CommitUnknownResult     (retryable) the commit may or may not have happened
    │   ├── StorageUnavailable          the backend cannot be reached or opened
    │   ├── IncompatibleFormat          the store was written by a newer (or unknown) format version
    │   ├── DatabaseClosed              an operation on a closed database
    │   └── CorruptData                 data read back fails its own integrity check
    ├── ActorError                      the actor runtime could not complete a request
    │   ├── Overloaded                  (retryable) the actor's mailbox is full
    │   ├── ActivationFailed            on_activate raised; nothing stays activated
    │   ├── HandlerFailed               the handler raised; the turn was rolled back
    │   ├── TurnTimedOut                the turn ran past its limit; rolled back
    │   ├── RequestTimedOut             no reply within the caller's timeout (the turn may still run)
    │   ├── ActorActiveElsewhere        (retryable) another live node holds the activation
    │   ├── Fenced                      a newer activation exists; this one may not commit
    │   └── RuntimeStopped              the runtime is shutting down or stopped
    └── RetryLimitExceeded              a retried operation kept failing; wraps the last error

A body passed to :func:`kelpie.storage.transactional` may run more than once, so it must have no
side effects outside its transaction. ``CommitUnknownResult`` is retryable only for idempotent
bodies, exactly as in FoundationDB; the helper retries it because Kelpie's layers write
idempotently (they read before they write).
"""

from __future__ import annotations

__all__ = [
    "ActivationFailed",
    "ActorActiveElsewhere",
    "ActorError",
    "CommitFailed",
    "CommitUnknownResult",
    "Conflict",
    "CorruptData",
    "DatabaseClosed",
    "Fenced",
    "HandlerFailed",
    "IncompatibleFormat",
    "InvalidActorId",
    "InvalidArgument",
    "InvalidKey",
    "InvalidTuple",
    "KelpieError",
    "KeyTooLarge",
    "NoHandler",
    "NotEncodable",
    "Overloaded",
    "RequestTimedOut",
    "RetryLimitExceeded",
    "RuntimeStopped",
    "StorageError",
    "StorageUnavailable",
    "TransactionClosed",
    "TransactionError",
    "TransactionTimedOut",
    "TransactionTooLarge",
    "TransactionTooOld",
    "TurnTimedOut",
    "UnknownActorType",
    "UnsupportedStorageURL",
    "ValueTooLarge",
]


def shorten(value: object, chars_limit: int = 80) -> str:
    """The ``repr`` of ``value``, cut to ``chars_limit`` characters so error messages stay small."""
    text = repr(value)
    if len(text) <= chars_limit:
        return text
    return text[: chars_limit - 3] + "..."


class KelpieError(Exception):
    """Root of every error Kelpie raises on purpose."""

    retryable: bool = False


class InvalidArgument(KelpieError):
    """A caller passed a value that is not acceptable; the message names it and what was expected."""


class InvalidKey(InvalidArgument):
    """A key that is not ``bytes``."""

    def __init__(self, key: object) -> None:
        super().__init__(f"key must be bytes, got {type(key).__name__} {shorten(key)}")
        self.key = key


class KeyTooLarge(InvalidArgument):
    """A key longer than the key limit."""

    def __init__(self, key: bytes, key_bytes_limit: int) -> None:
        super().__init__(
            f"key of {len(key)} bytes exceeds the limit of {key_bytes_limit} bytes: {shorten(key)}"
        )
        self.key_bytes = len(key)
        self.key_bytes_limit = key_bytes_limit


class ValueTooLarge(InvalidArgument):
    """A value longer than the value limit (use the blob layer for large values)."""

    def __init__(self, key: bytes, value_bytes: int, value_bytes_limit: int) -> None:
        super().__init__(
            f"value of {value_bytes} bytes for key {shorten(key)} exceeds the limit of "
            f"{value_bytes_limit} bytes; store large values with kelpie.storage.BlobStore"
        )
        self.value_bytes = value_bytes
        self.value_bytes_limit = value_bytes_limit


class InvalidTuple(InvalidArgument):
    """A value the tuple encoding cannot pack, or bytes that are not a packed tuple."""


class UnsupportedStorageURL(InvalidArgument):
    """A storage URL whose scheme or shape Kelpie does not know."""

    def __init__(self, url: str, reason: str) -> None:
        super().__init__(
            f"unsupported storage URL {shorten(url)}: {reason}; expected memory://, "
            "sqlite:///path/to/file.db or postgresql://user@host:port/dbname"
        )
        self.url = url


class InvalidActorId(InvalidArgument):
    """An actor id that is not ``namespace/type/key`` with non-empty parts within limits."""


class UnknownActorType(InvalidArgument):
    """No actor class is registered under the type name."""


class NoHandler(InvalidArgument):
    """The actor has no handler for the message's type."""


class NotEncodable(InvalidArgument):
    """State or a reply that the actor codec cannot encode; nothing was committed."""


class StorageError(KelpieError):
    """The storage layer could not do what was asked."""


class TransactionError(StorageError):
    """A problem with one transaction."""


class Conflict(TransactionError):
    """A key or range this transaction read was changed by a commit after its read version."""

    retryable = True


class TransactionTooOld(TransactionError):
    """The transaction's read version is older than the conflict history the store keeps."""

    retryable = True


class TransactionTimedOut(TransactionError):
    """The transaction ran longer than the transaction time limit."""

    retryable = True


class TransactionTooLarge(TransactionError):
    """The transaction wrote more bytes than the transaction size limit."""


class TransactionClosed(TransactionError):
    """An operation on a transaction that was already committed, failed or cancelled."""


class CommitFailed(TransactionError):
    """The commit did not happen and never will; nothing was written."""

    retryable = True


class CommitUnknownResult(TransactionError):
    """The commit may or may not have happened (FoundationDB's ``commit_unknown_result``)."""

    retryable = True


class StorageUnavailable(StorageError):
    """The backend cannot be reached or opened."""


class IncompatibleFormat(StorageError):
    """The store was written by a format version this Kelpie does not understand."""


class DatabaseClosed(StorageError):
    """An operation on a database that has been closed."""


class CorruptData(StorageError):
    """Data read back fails its own integrity check."""


class ActorError(KelpieError):
    """The actor runtime could not complete a request."""


class Overloaded(ActorError):
    """The actor's mailbox is full; retry later."""

    retryable = True


class ActivationFailed(ActorError):
    """``on_activate`` raised (or state could not be loaded); the actor is not activated."""


class HandlerFailed(ActorError):
    """The message handler raised; the turn's writes were rolled back. ``__cause__`` is the error."""


class TurnTimedOut(ActorError):
    """The turn ran longer than its limit and was aborted; its writes were rolled back."""


class RequestTimedOut(ActorError):
    """No reply within the caller's timeout. The message may still be processed."""


class ActorActiveElsewhere(ActorError):
    """Another live node holds this actor's activation."""

    retryable = True

    def __init__(self, actor_id: object, node_id: str) -> None:
        super().__init__(f"actor {actor_id} is active on live node {node_id}")
        self.node_id = node_id


class Fenced(ActorError):
    """A newer activation of the actor exists elsewhere; this activation may not commit."""


class RuntimeStopped(ActorError):
    """The actor runtime is shutting down or has stopped."""


class RetryLimitExceeded(KelpieError):
    """A retried operation kept failing with retryable errors; ``last_error`` is the final one."""

    def __init__(self, attempts: int, last_error: KelpieError) -> None:
        super().__init__(f"gave up after {attempts} attempts; last error: {last_error}")
        self.attempts = attempts
        self.last_error = last_error
